"""BMMAL (Shen et al., 2023, "Towards balanced active learning for multimodal classification", ACM MM):
per-modality gradient embeddings scaled by each modality's contribution, then k-means++ seeding."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.metrics.modality import shapley_values, subsets
from mmal.query.badge import gradient_factor
from mmal.query.base import QueryContext, QueryStrategy
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
    """(N, M) BMMAL scales: the strongest modality keeps 1, modality m gets 1 - (phi_max - phi_m), clipped
    to [0, 1]. For two modalities this is BMMAL's rule (the weaker gets 1 - (phi_strong - phi_weak)); for
    M modalities every one is measured against the strongest."""
    return (1 - (phi.max(1, keepdim=True).values - phi)).clamp(0, 1)


class BMMAL(QueryStrategy):
    """k-means++ seeding over concatenated per-modality gradient embeddings w_m (p - onehot(y_hat)) ⊗ h_m,
    with h_m modality m's encoder embedding and w_m its contribution weight. This is exact for a linear head
    over concatenated embeddings (BMMAL's architecture); for other heads h_m stands in for the head input."""

    def select(self, ctx: QueryContext, k: int) -> Tensor:
        pred = ctx.predict()
        weights = contribution_weights(modality_contributions(ctx))  # (N, M)
        scaled = torch.cat([w[:, None] * e for w, e in zip(weights.T, pred.embeddings)], dim=1)
        return kmeanspp_factored(gradient_factor(pred.probs), scaled, k, ctx.generator, candidates=~ctx.labeled)
