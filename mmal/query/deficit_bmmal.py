"""``deficit_bmmal``: BMMAL's per-modality gradient embedding with each block scaled by the modality's label-free
deficit against its unimodal reference (docs/strategies.md)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.query.badge import gradient_factor
from mmal.query.base import QueryContext, QueryStrategy, Selection
from mmal.query.selection import kmeanspp_factored


def pool_deficits(ctx: QueryContext) -> Tensor:
    """(M,) per modality m, how much less the fused model with only m present believes what m's reference
    predicts than the reference does, on the unlabeled pool rows that have m: the mean of
    relu(r(ŷ) − f_m(ŷ)), with r the reference's probabilities, ŷ its class and f_m the fused model's with
    every other modality masked. A label-free stand-in for ``deficit/<m>`` (which is measured on test labels
    that no strategy may read); 0 for a modality without a reference or without an unlabeled row that has it."""
    references, present = ctx.reference_probs(), ctx.pool.mask & ~ctx.labeled[:, None]
    out = torch.zeros(present.shape[1], device=present.device)
    for i, m in enumerate(ctx.pool.modalities):
        rows = present[:, i]
        if m not in ctx.references or not rows.any():
            continue
        alone = ctx.predict(ctx.pool.mask & (torch.arange(present.shape[1], device=present.device) == i)).probs
        own, choice = references[rows, i].max(1)
        out[i] = (own - alone[rows].gather(1, choice[:, None]).squeeze(1)).clamp_min(0).mean()
    return out


class DeficitBMMAL(QueryStrategy):
    """BMMAL's per-modality gradient embedding (``mmal.query.bmmal``) with each modality's block scaled by
    1 + its pool deficit (``pool_deficits``) instead of BMMAL's Shapley shares: k-means++ seeding over
    (p − onehot(ŷ)) ⊗ [w_1 h_1, ..., w_M h_M], w_m = 1 + δ_m. The block of a modality the fused model
    uses less than its reference grows, so rows that differ in it are drawn more often. With no deficit it is
    BMMAL with every weight 1 (tested). After issue 33's "BMMAL's gradient embedding with the weak modality's
    block scaled by its measured deficit"; departures from BMMAL: one weight per modality for the whole pool,
    not per row, and no Shapley inferences. Cost: BADGE's plus one masked pool inference per modality and one
    forward pass per reference. Logs ``query/deficit/<m>``."""

    needs = frozenset({"references"})

    def select(self, ctx: QueryContext, k: int) -> Selection:
        pred = ctx.predict()
        deficits = pool_deficits(ctx)
        scaled = torch.cat([(1 + d) * e for d, e in zip(deficits.tolist(), pred.embeddings)], dim=1)
        picked = kmeanspp_factored(gradient_factor(pred.probs), scaled, k, ctx.generator, candidates=~ctx.labeled)
        return Selection(picked, {f"query/deficit/{m}": d for m, d in zip(ctx.pool.modalities, deficits.tolist())})
