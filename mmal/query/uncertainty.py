"""Uncertainty sampling on the fused model (Settles, 2009) and BALD (Houlsby et al., 2011; Gal et al., 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.errors import check_int
from mmal.query.base import QueryContext, ScoringStrategy


def entropy(p: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy (nats) of probability vectors along ``dim``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


def margin(p: Tensor) -> Tensor:
    """Top-1 minus top-2 probability along the last dim (small = uncertain)."""
    top2 = p.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


class Entropy(ScoringStrategy):
    """Highest predictive entropy -sum_c p_c log p_c."""

    def score(self, ctx: QueryContext) -> Tensor:
        return entropy(ctx.predict().probs)


class Margin(ScoringStrategy):
    """Smallest margin between the two most probable classes."""

    higher_is_better = False

    def score(self, ctx: QueryContext) -> Tensor:
        return margin(ctx.predict().probs)


class LeastConfidence(ScoringStrategy):
    """Lowest probability of the predicted class (scored as 1 - max_c p_c)."""

    def score(self, ctx: QueryContext) -> Tensor:
        return 1 - ctx.predict().probs.max(1).values


def mutual_information(mc_probs: Tensor) -> Tensor:
    """BALD score from (T, N, C) MC-dropout probabilities: H(mean_t p_t) - mean_t H(p_t), (N,)."""
    return entropy(mc_probs.mean(0)) - entropy(mc_probs).mean(0)


class BALD(ScoringStrategy):
    """Highest mutual information between the label and the weights, estimated with ``mc_samples``
    MC-dropout passes (needs dropout in the model).

    Args:
        mc_samples: number of stochastic forward passes T.
    """

    needs = frozenset({"dropout"})

    def __init__(self, mc_samples: int = 20):
        self.mc_samples = check_int("query.mc_samples", mc_samples, 1)

    def score(self, ctx: QueryContext) -> Tensor:
        return mutual_information(ctx.mc_dropout(self.mc_samples))
