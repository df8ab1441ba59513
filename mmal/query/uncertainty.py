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


# Elements of the (T, columns) slab that ``mutual_information`` handles at a time: its log and product stay
# in the last-level cache (4 MB in float32) and the T x N x C terms are read from memory once. On one thread
# 2**20 was 1.47x the log pass, 2**18 1.53x; on two the ratio moves with the machine's load (docs/benchmarks.md).
_BALD_CHUNK = 2**20


def mutual_information(mc_probs: Tensor) -> Tensor:
    """BALD score from (T, N, C) MC-dropout probabilities: H(mean_t p_t) - mean_t H(p_t), (N,).

    One pass over the T x N x C probabilities, in slabs of columns (n, c) small enough to stay in cache:
    per slab one ``log``, one product and two sums over T (of p log p and of p); the (N, C) rest is small.
    Equal to ``entropy(mc_probs.mean(0)) - entropy(mc_probs).mean(0)`` up to float rounding (the sums run
    in another order) and except that p log p is taken as 0 at p = 0 (``nansum``) where ``entropy`` clamps
    p at 1e-12: for 0 < p < 1e-12 the terms differ by under 3e-11. A NaN probability still gives a NaN
    score (through the mean). See docs/benchmarks.md, "Selection kernels".
    """
    t, n, c = mc_probs.shape
    flat = mc_probs.reshape(t, n * c)  # (T, N·C), a view when contiguous
    plogp = flat.new_empty(n * c)  # sum_t p log p, per (n, c)
    mean = flat.new_empty(n * c)  # sum_t p, then the mean
    cols = max(1, _BALD_CHUNK // t)
    slab = flat.new_empty(t * min(cols, n * c))
    for s in range(0, n * c, cols):
        p = flat[:, s:s + cols]  # (T, w)
        terms = slab[:t * p.shape[1]].view(t, -1)
        torch.log(p, out=terms).mul_(p)  # p log p; NaN where p = 0 (0 · -inf), dropped by nansum
        torch.nansum(terms, 0, out=plogp[s:s + cols])
        torch.sum(p, 0, out=mean[s:s + cols])
    mean.div_(t)
    # per (n, c): -pm log pm + (1/T) sum_t p log p; then the sum over classes
    per_class = plogp.div_(t).sub_(mean.clamp_min(1e-12).log_().mul_(mean))
    return per_class.view(n, c).sum(1)


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
