"""Gap-split sampling, mmal's modality-aware strategy (rule, cost and evidence: docs/strategies.md).

Each round the model's own pool predictions estimate how far each modality trails the strongest one;
that share of the batch goes to samples that teach the trailing modality, the rest to fused margin."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.errors import check_choice, check_number
from mmal.query.base import QueryContext, QueryStrategy, Selection, top_unexcluded
from mmal.query.uncertainty import margin

WITHIN = ("joint", "margin")  # how a trailing modality's share is picked (GapSplit)


def modality_agreement(fused: Tensor, modality_probs: Tensor, rows: Tensor) -> Tensor:
    """(M,) label-free quality of each modality: among ``rows`` (N, M) (a sample counts for the modalities
    it has), the fraction whose unimodal prediction (N, M, C) agrees with the ``fused`` one (N, C).
    NaN for a modality no row has."""
    agree = (modality_probs.argmax(2) == fused.argmax(1)[:, None]) & rows
    count = rows.sum(0)
    return torch.where(count > 0, agree.sum(0) / count.clamp_min(1), torch.nan)


def gap_shares(quality: Tensor, k: int, scale: float) -> list[int]:
    """How many of a batch of k go to each modality: ``scale * (best quality - quality_m)`` of k, rounded by
    largest remainders; if the shares add up to more than the batch they are scaled down to fill it. The
    strongest modality, and one with NaN quality, gets none."""
    gap = (quality.nan_to_num(-1.0).max() - quality).nan_to_num(0.0).clamp_min(0) * scale
    exact = gap / max(1.0, float(gap.sum())) * k
    shares = exact.floor().long()
    left = round(float(exact.sum())) - int(shares.sum())
    for m in torch.argsort(exact - shares, descending=True, stable=True)[:left]:
        shares[m] += 1
    return shares.tolist()


class GapSplit(QueryStrategy):
    """Split each batch across modalities in proportion to the modality gap the model shows on the pool.

    Quality of modality m: agreement of its own prediction (auxiliary head, or late fusion with only m) with
    the fused prediction on the unlabeled pool rows that have m; no label is used. With ``coverage`` it is
    multiplied by the fraction of labeled rows that have m, so a modality often missing from the labeled set
    counts as trailing. A modality trailing the strongest by g gets ``round(scale * g * k)`` of the batch,
    picked among the rows where it is present by the smallest sum of its own margin and the fused margin
    (``within=joint``: samples that modality is unsure about and the fused model cannot settle either) or
    its own margin alone (``within=margin``). The rest of the batch is fused margin sampling, so without a
    gap the strategy is margin sampling.

    Args:
        scale: share of the batch per unit of gap (1: a gap of 0.3 takes 30 % of the batch).
        within: how a trailing modality's share is picked: joint | margin.
        coverage: count labeled-set coverage in each modality's quality.
    """

    needs = frozenset({"modality_predictions"})

    def __init__(self, scale: float = 1.0, within: str = "joint", coverage: bool = True):
        self.scale = check_number("query.scale", scale, 0)
        self.within = check_choice("query.within", within, WITHIN)
        self.coverage = check_choice("query.coverage", coverage, [True, False])

    def select(self, ctx: QueryContext, k: int) -> Selection:
        probs, modality_probs, present = ctx.predict().probs, ctx.modality_probs(), ctx.pool.mask
        quality = modality_agreement(probs, modality_probs, present & ~ctx.labeled[:, None])
        if self.coverage and ctx.labeled.any():
            quality = quality * present[ctx.labeled].float().mean(0)
        shares = gap_shares(quality, k, self.scale)
        taken, per_modality = ctx.labeled.clone(), {}
        for m in sorted(range(len(shares)), key=lambda m: -shares[m]):  # the largest share picks first
            if shares[m]:
                uncertain = margin(modality_probs[:, m]) + (margin(probs) if self.within == "joint" else 0)
                per_modality[m] = top_unexcluded(-uncertain, taken | ~present[:, m], shares[m], ctx.generator)
                taken[per_modality[m]] = True
        fused = top_unexcluded(-margin(probs), taken, k - sum(len(p) for p in per_modality.values()), ctx.generator)
        names = ctx.pool.modalities
        statistics = {**{f"query/quality/{n}": float(q) for n, q in zip(names, quality)},
                      **{f"query/share/{n}": len(per_modality.get(m, ())) / k for m, n in enumerate(names)}}
        return Selection(torch.cat([*per_modality.values(), fused]), statistics)

