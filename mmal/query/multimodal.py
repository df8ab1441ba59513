"""Strategies that read each modality's own prediction (they need auxiliary heads or late fusion)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mmal.query.base import QueryContext, ScoringStrategy
from mmal.query.uncertainty import entropy


class ModalityEntropy(ScoringStrategy):
    """Highest mean entropy of the per-modality predictions, over the modalities present in the sample
    (a sample with none present scores the entropy of a uniform prediction)."""

    needs = frozenset({"modality_predictions"})

    def score(self, ctx: QueryContext) -> Tensor:
        probs = ctx.modality_probs()  # (N, M, C)
        keep = ctx.pool.mask.to(probs.dtype)  # (N, M)
        mean = (entropy(probs) * keep).sum(1) / keep.sum(1).clamp_min(1)
        return torch.where(keep.sum(1) > 0, mean, math.log(probs.shape[2]))


class Disagreement(ScoringStrategy):
    """Highest generalised Jensen-Shannon divergence between the per-modality predictions of the present
    modalities: H(mean_m p_m) - mean_m H(p_m). Zero for a sample with fewer than two modalities."""

    needs = frozenset({"modality_predictions"})

    def score(self, ctx: QueryContext) -> Tensor:
        probs = ctx.modality_probs()  # (N, M, C)
        keep = ctx.pool.mask.to(probs.dtype)  # (N, M)
        count = keep.sum(1).clamp_min(1)
        mixture = (probs * keep[..., None]).sum(1) / count[:, None]
        return entropy(mixture) - (entropy(probs) * keep).sum(1) / count
