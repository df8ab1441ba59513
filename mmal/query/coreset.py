"""Core-set selection by k-center greedy (Sener & Savarese, 2018), on the fused embedding or on all
modalities' embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.query.base import QueryContext, QueryStrategy, Selection
from mmal.query.selection import kcenter_greedy


class Coreset(QueryStrategy):
    """k-center greedy on the fused embedding, the labeled samples as initial centres."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        return Selection(kcenter_greedy(ctx.predict().fused, ctx.labeled, k, ctx.generator))


def balanced_modality_embedding(embeddings: list[Tensor], mask: Tensor) -> Tensor:
    """Concatenate per-modality embeddings M x (N, D_m), each divided by its average norm over the samples
    where the modality is present, so every modality weighs the same in a distance. (N, sum D_m)."""
    parts = []
    for i, e in enumerate(embeddings):
        present = mask[:, i]
        scale = e[present].norm(dim=1).mean() if present.any() else torch.ones((), device=e.device)
        parts.append(e / scale.clamp_min(1e-12))
    return torch.cat(parts, dim=1)


class MultimodalCoreset(QueryStrategy):
    """k-center greedy on the concatenated per-modality embeddings, each scaled to unit average norm, so
    that a modality with large embeddings cannot dominate the coverage."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        points = balanced_modality_embedding(ctx.predict().embeddings, ctx.pool.mask)
        return Selection(kcenter_greedy(points, ctx.labeled, k, ctx.generator))
