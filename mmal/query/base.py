"""The one calling convention of every query strategy.

A strategy gets a ``QueryContext`` (the trained model, the pool, which pool rows are labeled, the
trainer for batched inference, a seeded generator) and returns the pool positions to label:

    strategy.select(ctx, k) -> Selection     # .indices: k distinct, unlabeled pool positions (LongTensor)
                                             # .statistics: numbers about the batch, logged with it

Scoring strategies (entropy, margin, BALD, ...) subclass ``ScoringStrategy`` and only write
``score(ctx) -> Tensor[N_pool]``; the base class takes the top k among the unlabeled rows with seeded
random tie-breaks. Batch strategies (coreset, k-means, BADGE, BMMAL, ...) override ``select``.
A strategy checks its hyperparameters in its constructor (``mmal.errors``, keys ``query.<name>``) and
declares what it needs of the model in ``needs`` (``MultimodalClassifier.capabilities``), which the run
checks before any work.

What the context offers, all on the whole pool (row i = pool position i, labeled rows included):
``ctx.predict()`` probabilities, the fused embedding (input of the final linear layer) and the
per-modality embeddings; ``ctx.predict(mask)`` the same with another presence mask;
``ctx.modality_probs()`` per-modality predictions (N, M, C); ``ctx.mc_dropout(T)`` T stochastic
forward passes; ``ctx.reference_probs()`` the predictions (N, M, C) of the unimodal references the cycle
trained for the neglect measure (each on its modality alone, on the labeled rows that have it) and
``ctx.ensemble_probs()`` their ensemble's (N, C), for a strategy that declares ``needs = {"references"}``
(the run then refuses ``diagnostics.every`` other than 1, before any work). Nothing the context offers
comes from test rows or test labels. Every random choice must draw from ``ctx.generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmal.data.multimodal import MultimodalData
from mmal.metrics.references import ensemble_probs
from mmal.models.classifier import MultimodalClassifier
from mmal.training import Predictions, Trainer


@dataclass
class QueryContext:
    """What a strategy may look at. ``labeled`` is a (N_pool,) bool mask over ``pool`` rows. ``references``:
    modality -> the cycle's trained unimodal reference (none in a cycle without references); ``joined``: the
    modalities whose reference joins the references' ensemble (decided on the labeled rows,
    ``mmal.metrics.references``)."""

    model: MultimodalClassifier
    trainer: Trainer
    pool: MultimodalData
    labeled: Tensor
    generator: torch.Generator
    references: dict[str, MultimodalClassifier] = field(default_factory=dict)
    joined: frozenset[str] = frozenset()
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def unlabeled(self) -> Tensor:
        """Pool positions not yet labeled, ascending, LongTensor (n,)."""
        return (~self.labeled).nonzero().squeeze(1)

    def predict(self, mask: Tensor | None = None) -> Predictions:
        """Model outputs on every pool row, cached per presence mask (N_pool, M); default the pool's own."""
        if mask is not None and torch.equal(mask, self.pool.mask):
            mask = None  # the pool's own mask explicitly (BMMAL's full subset): the same inference
        key = None if mask is None else mask.cpu().numpy().tobytes()
        if key not in self._cache:
            self._cache[key] = self.trainer.predict(self.model, self.pool, mask=mask)
        return self._cache[key]

    def modality_probs(self) -> Tensor:
        """(N_pool, M, C) class probabilities from each modality alone: the auxiliary heads when the model
        has them, else (late fusion) the model with only that modality present. Rows of a missing modality
        are uniform. Raises ValueError for a model that has neither."""
        pred = self.predict()
        if pred.aux_probs is not None:
            return pred.aux_probs
        if "modality_predictions" not in self.model.capabilities:
            raise ValueError("per-modality predictions need fusion=late or model.aux_heads=true")
        eye = torch.eye(self.pool.mask.shape[1], dtype=torch.bool, device=self.pool.mask.device)
        return torch.stack([self.predict(self.pool.mask & eye[m]).probs for m in range(eye.shape[0])], dim=1)

    def reference_probs(self) -> Tensor:
        """(N_pool, M, C) class probabilities of each modality's unimodal reference on the pool with only that
        modality present: one forward pass per reference. Rows that lack the modality, and a modality without
        a reference, are uniform. Raises ValueError in a cycle without references."""
        if "references" not in self._cache:
            if not self.references:
                raise ValueError("no unimodal references this cycle: they are trained when diagnostics.every "
                                 "says (1 = every cycle)")
            modalities = self.pool.modalities
            uniform = torch.full((len(self.pool), self.model.num_classes), 1 / self.model.num_classes,
                                 device=self.pool.mask.device)
            per_modality = []
            for i, m in enumerate(modalities):
                probs = uniform if m not in self.references else self.trainer.predict(
                    self.references[m], self.pool.only(i)).probs
                per_modality.append(torch.where(self.pool.mask[:, i, None], probs, uniform))
            self._cache["references"] = torch.stack(per_modality, dim=1)
        return self._cache["references"]

    def ensemble_probs(self) -> Tensor:
        """(N_pool, C) the references' ensemble, as ``gap/ensemble`` predicts a row: the normalised product of
        the joined references of the modalities the row has (every reference it has when none joined)."""
        probs = self.reference_probs()
        log_probs = [probs[:, i].clamp_min(1e-12).log() if m in self.references else None
                     for i, m in enumerate(self.pool.modalities)]
        usable = [m in self.joined for m in self.pool.modalities]
        return ensemble_probs(log_probs, usable, self.pool.mask)

    def mc_dropout(self, samples: int) -> Tensor:
        """(T, N_pool, C) probabilities of ``samples`` forward passes with dropout active, seeded by the
        context's generator."""
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        with torch.random.fork_rng(devices=[self.trainer.device] if self.trainer.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return torch.stack([self.trainer.predict(self.model, self.pool, dropout=True).probs
                                for _ in range(samples)])

    def random_state(self) -> int:
        """A seed for a library that wants an int (e.g. scikit-learn), drawn from the generator."""
        return int(torch.randint(2**31 - 1, (1,), generator=self.generator))


@dataclass
class Selection:
    """What a strategy picked: ``indices`` (k,) distinct unlabeled pool positions, and ``statistics``,
    numbers about this batch (e.g. how it was split, ``query/share/<m>``), logged with the cycle."""

    indices: Tensor
    statistics: dict[str, float] = field(default_factory=dict)


class QueryStrategy:
    """Base class: ``select(ctx, k)`` returns a ``Selection`` of k distinct unlabeled pool positions.

    ``needs``: capabilities the strategy requires of the model, from ``modality_predictions`` (it reads
    ``ctx.modality_probs()``) and ``dropout`` (it reads ``ctx.mc_dropout``), and ``references`` (it reads
    ``ctx.reference_probs()`` or ``ctx.ensemble_probs()``: the run must train them every cycle); checked
    before any work.
    """

    needs: frozenset[str] = frozenset()

    def select(self, ctx: QueryContext, k: int) -> Selection:
        raise NotImplementedError


class ScoringStrategy(QueryStrategy):
    """Scores every pool sample and labels the k best unlabeled ones; ties broken by a seeded permutation."""

    higher_is_better: bool = True

    def score(self, ctx: QueryContext) -> Tensor:
        """One score per pool row, (N_pool,)."""
        raise NotImplementedError

    def select(self, ctx: QueryContext, k: int) -> Selection:
        scores = self.score(ctx)
        return Selection(top_unexcluded(scores if self.higher_is_better else -scores, ctx.labeled, k, ctx.generator))


def top_k(scores: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Positions of the k highest ``scores`` (n,), ties in a seeded random order."""
    shuffle = torch.randperm(scores.shape[0], generator=generator)
    order = torch.sort(scores[shuffle], descending=True, stable=True).indices
    return shuffle[order[:k]]


def top_unexcluded(scores: Tensor, excluded: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """The k highest-scoring pool rows (``scores`` (N,)) that are not ``excluded`` (N,) bool, fewer if fewer
    remain; ties in a seeded random order."""
    candidates = (~excluded).nonzero().squeeze(1)
    return candidates[top_k(scores[candidates].float().cpu(), k, generator).to(candidates.device)]
