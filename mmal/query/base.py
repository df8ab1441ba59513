"""The one calling convention of every query strategy.

A strategy gets a ``QueryContext`` (the trained model, the pool, which pool rows are labeled, the
trainer for batched inference, a seeded generator) and returns the pool indices to label:

    strategy.select(ctx, k) -> LongTensor[k]   # distinct, unlabeled pool positions

Scoring strategies (entropy, margin, ...) subclass ``ScoringStrategy`` and only write
``score(predictions) -> Tensor[n]``; the base class takes the top k among the unlabeled rows with
seeded random tie-breaks. Batch strategies (coreset, BADGE, BMMAL, k-means) override ``select``
and use the same context: ``ctx.predict()`` gives the fused embedding, the per-modality embeddings and
the auxiliary per-modality predictions of every unlabeled sample; ``ctx.predict(mask=...)`` gives them
with modalities masked out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmal.data.multimodal import MultimodalData
from mmal.models.classifier import MultimodalClassifier
from mmal.training import Predictions, Trainer


@dataclass
class QueryContext:
    """What a strategy may look at. ``labeled`` is a (N,) bool mask over ``pool`` rows."""

    model: MultimodalClassifier
    trainer: Trainer
    pool: MultimodalData
    labeled: Tensor
    generator: torch.Generator
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def unlabeled(self) -> Tensor:
        """Pool positions not yet labeled, ascending, LongTensor (n,)."""
        return (~self.labeled).nonzero().squeeze(1)

    def predict(self, mask: Tensor | None = None) -> Predictions:
        """Model outputs on the unlabeled rows (row i = ``unlabeled[i]``), cached per presence mask
        (n_unlabeled, M) given, default the pool's own."""
        key = None if mask is None else mask.cpu().numpy().tobytes()
        if key not in self._cache:
            self._cache[key] = self.trainer.predict(self.model, self.pool, self.unlabeled, mask)
        return self._cache[key]


class QueryStrategy:
    """Base class: ``select(ctx, k)`` returns k distinct unlabeled pool positions (LongTensor[k])."""

    def select(self, ctx: QueryContext, k: int) -> Tensor:
        raise NotImplementedError


class ScoringStrategy(QueryStrategy):
    """Scores every unlabeled sample and labels the k best; ties are broken by a seeded permutation."""

    higher_is_better: bool = True

    def score(self, pred: Predictions) -> Tensor:
        """One score per unlabeled sample, (n,), from the model's predictions on them."""
        raise NotImplementedError

    def select(self, ctx: QueryContext, k: int) -> Tensor:
        candidates = ctx.unlabeled
        scores = self.score(ctx.predict()).cpu()
        if not self.higher_is_better:
            scores = -scores
        return candidates[top_k(scores, k, ctx.generator).to(candidates.device)]


def top_k(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Positions of the k highest ``scores`` (n,), ties in a seeded random order."""
    shuffle = torch.randperm(scores.shape[0], generator=generator)
    order = torch.sort(scores[shuffle], descending=True, stable=True).indices
    return shuffle[order[:k]]
