"""Strategies that read the unimodal references the neglect measure trains every cycle (``needs =
{"references"}``; docs/strategies.md, "Strategies that read the references")."""

from __future__ import annotations

from torch import Tensor

from mmal.query.base import QueryContext, ScoringStrategy


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
