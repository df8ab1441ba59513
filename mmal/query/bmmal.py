"""BMMAL (Shen et al., 2023, "Towards balanced active learning for multimodal classification", ACM MM):
per-modality gradient embeddings scaled by each modality's contribution, then k-means++ seeding."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.metrics.modality import shapley_values, subsets
from mmal.query.badge import gradient_factor
from mmal.query.base import QueryContext, QueryStrategy, Selection
from mmal.query.selection import kmeanspp_factored


def modality_contributions(ctx: QueryContext) -> Tensor:
    """(N, M) per-sample Shapley value of each modality for the probability of the predicted class, with
    v(S) = that probability when only S is present (2^M masked pool inferences). A modality missing from
    the sample contributes 0."""
    pool_mask = ctx.pool.mask
    num_modalities = pool_mask.shape[1]
    predicted = ctx.predict().probs.argmax(1, keepdim=True)  # (N, 1)
    value = {}
    for s in subsets(num_modalities):
        keep = torch.zeros(num_modalities, dtype=torch.bool, device=pool_mask.device)
        keep[list(s)] = True
        value[s] = ctx.predict(pool_mask & keep).probs.gather(1, predicted)[:, 0]  # (N,)
    return torch.stack(shapley_values(value, num_modalities), dim=1)


def contribution_weights(phi: Tensor) -> Tensor:
    """(N, M) BMMAL scales, as in the authors' code (MengShen0709/bmmal, run/runner.py): each modality's
    contribution is its share of the absolute Shapley values, c_m = |phi_m| / sum_j |phi_j|; the strongest
    keeps 1 and modality m gets 1 - (c_max - c_m). A sample whose modalities all contribute nothing gets 1
    everywhere (the authors' code divides by zero there)."""
    total = phi.abs().sum(1, keepdim=True)
    share = torch.where(total > 0, phi.abs() / total.clamp_min(1e-12), 1.0 / phi.shape[1])
    return 1 - (share.max(1, keepdim=True).values - share)


class BMMAL(QueryStrategy):
    """k-means++ seeding over concatenated per-modality gradient embeddings w_m (p - onehot(y_hat)) ⊗ h_m,
    with h_m modality m's encoder embedding and w_m its contribution weight. This is exact for a linear head
    over concatenated embeddings (BMMAL's architecture); for other heads h_m stands in for the head input.
    The first centre is the embedding of largest norm, as in the authors' ``init_centers_torch``. Departure:
    the authors split pools too large for their GPU into chunks seeded separately; mmal never builds the
    embeddings, so it seeds the whole pool at once."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        pred = ctx.predict()
        weights = contribution_weights(modality_contributions(ctx))  # (N, M)
        scaled = torch.cat([w[:, None] * e for w, e in zip(weights.T, pred.embeddings)], dim=1)
        return Selection(kmeanspp_factored(gradient_factor(pred.probs), scaled, k, ctx.generator,
                                           candidates=~ctx.labeled))
