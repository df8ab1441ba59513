"""Strategies that read the unimodal references' ensemble (``needs = {"references"}``; docs/strategies.md,
"Strategies that read the references"): its disagreement with the fused model, and BADGE with its class."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mmal.query.base import QueryContext, QueryStrategy, ScoringStrategy, Selection
from mmal.query.selection import kmeanspp_factored


class EnsembleDisagreement(ScoringStrategy):
    """Where the modalities trained apart know more than the fused model: the highest
    c · (1 − p(ŷ)), where ŷ is the references' ensemble's class for the row, c the ensemble's probability of
    it and p the fused model's prediction (``ctx.ensemble_probs()``: the ensemble ``gap/ensemble`` measures
    against, on the pool). 0 where the fused model gives ŷ all its mass, large where the ensemble is sure and
    the fused model is not: the rows whose labels carry what joint training left out. mmal's own rule, no
    published method; cost: one forward pass per reference over the pool, besides the fused model's."""

    needs = frozenset({"references"})

    def score(self, ctx: QueryContext) -> Tensor:
        ensemble = ctx.ensemble_probs()  # (N, C)
        confidence, choice = ensemble.max(1)
        fused = ctx.predict().probs.gather(1, choice[:, None]).squeeze(1)
        return confidence * (1 - fused)


class EnsembleBadge(QueryStrategy):
    """BADGE (``mmal.query.badge``) with the references' ensemble as the hallucinated label: k-means++ seeding
    over the gradient embeddings (p − onehot(ŷ)) ⊗ fused, where ŷ is the ensemble's class for the row
    (``ctx.ensemble_probs()``) instead of the fused model's own. Where the two agree the embedding is BADGE's;
    where the fused model misses what the modalities trained apart predict, its norm grows by the mass the
    fused model puts elsewhere, so those rows are drawn more often, and k-means++ keeps the batch diverse. Pick
    for pick BADGE when every row's ŷ is the fused model's argmax (tested). mmal's own rule; cost: BADGE's
    plus one forward pass per reference over the pool."""

    needs = frozenset({"references"})

    def select(self, ctx: QueryContext, k: int) -> Selection:
        pred = ctx.predict()
        target = F.one_hot(ctx.ensemble_probs().argmax(1), pred.probs.shape[1]).to(pred.probs.dtype)
        return Selection(kmeanspp_factored(pred.probs - target, pred.fused, k, ctx.generator,
                                           candidates=~ctx.labeled))
