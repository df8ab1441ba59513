"""Uniform random sampling, the baseline every strategy must beat."""

from __future__ import annotations

import torch

from mmal.query.base import QueryContext, QueryStrategy, Selection


class RandomSampling(QueryStrategy):
    """k unlabeled pool samples drawn uniformly without replacement."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        candidates = ctx.unlabeled
        return Selection(candidates[torch.randperm(len(candidates), generator=ctx.generator)[:k].to(candidates.device)])
