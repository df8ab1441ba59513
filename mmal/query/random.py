"""Uniform random sampling, the baseline every strategy must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.query.base import QueryContext, QueryStrategy


class RandomSampling(QueryStrategy):
    """k unlabeled pool samples drawn uniformly without replacement."""

    def select(self, ctx: QueryContext, k: int) -> Tensor:
        candidates = ctx.unlabeled
        return candidates[torch.randperm(len(candidates), generator=ctx.generator)[:k].to(candidates.device)]
