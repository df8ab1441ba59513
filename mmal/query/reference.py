"""Strategies that read the unimodal references the neglect measure trains every cycle (``needs =
{"references"}``; docs/strategies.md, "Strategies that read the references")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmal.metrics.references import pattern_name
from mmal.query.badge import gradient_factor
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


class PatternBadge(QueryStrategy):
    """A budget split across presence patterns (the sets of modalities a row has), following where the fused
    model and the references' ensemble disagree, with BADGE inside each pattern.

    Per pattern p, D_p = the unlabeled rows of p where the fused model's class differs from the ensemble's
    (``ctx.ensemble_probs()``): a count, without labels, of the rows where joint training and the modalities
    trained apart part ways, which bounds the pattern's ``gap/ensemble`` on the pool. Pattern p gets
    round(k · D_p / Σ D) of the batch (largest remainders, at most its unlabeled rows; what a pattern cannot
    take goes to the others by the same rule), and BADGE's k-means++ picks its share among its unlabeled rows.
    On ``pitfall=competition`` the rows that lack the dominant modality are where the gap sits, and this gives
    them their share of the disagreements rather than their share of the pool. Without a disagreement, or with
    every row of one pattern, it is BADGE pick for pick (tested). mmal's own rule, after issue 33's "budget
    split across presence patterns"; cost: BADGE's plus one forward pass per reference over the pool. Logs
    ``query/share/<pattern>`` and ``query/disagreement/<pattern>`` (D_p over the pattern's unlabeled rows).
    """

    needs = frozenset({"references"})

    def select(self, ctx: QueryContext, k: int) -> Selection:
        pred = ctx.predict()
        gradient = gradient_factor(pred.probs)
        present, unlabeled = ctx.pool.mask, ~ctx.labeled
        disagree = (pred.probs.argmax(1) != ctx.ensemble_probs().argmax(1)) & unlabeled
        patterns, which = present.unique(dim=0, return_inverse=True)
        counts = which[disagree].bincount(minlength=len(patterns)).tolist()
        available = which[unlabeled].bincount(minlength=len(patterns)).tolist()
        shares = split_budget(counts, available, k)
        if shares is None:  # no disagreement anywhere: nothing to split by, BADGE over the whole pool
            picked = kmeanspp_factored(gradient, pred.fused, k, ctx.generator, candidates=unlabeled)
        else:
            picked = torch.cat([kmeanspp_factored(gradient, pred.fused, share, ctx.generator,
                                                  candidates=unlabeled & (which == p))
                                for p, share in enumerate(shares) if share])
        statistics = {}
        for p, pattern in enumerate(patterns):
            name = pattern_name(ctx.pool.modalities, pattern)
            statistics[f"query/share/{name}"] = (which[picked] == p).sum().item() / k
            statistics[f"query/disagreement/{name}"] = counts[p] / max(available[p], 1)
        return Selection(picked, statistics)


def split_budget(weights: list[int], capacity: list[int], k: int) -> list[int] | None:
    """k split in proportion to ``weights`` by largest remainders, no part above its ``capacity``; what a full
    part cannot take goes to the others by the same rule (to any with room once the weighted ones are full).
    The parts sum to min(k, sum(capacity)); None when every weight is 0."""
    if not any(weights):
        return None
    parts, left = [0] * len(weights), min(k, sum(capacity))
    while left:
        room = [i for i in range(len(weights)) if parts[i] < capacity[i]]
        weight = {i: weights[i] for i in room if weights[i]} or dict.fromkeys(room, 1)
        exact = {i: left * w / sum(weight.values()) for i, w in weight.items()}
        add = {i: min(int(x), capacity[i] - parts[i]) for i, x in exact.items()}
        for i in sorted(weight, key=lambda i: (int(exact[i]) - exact[i], i)):  # the largest remainders first
            if sum(add.values()) == left:
                break
            add[i] += add[i] < capacity[i] - parts[i]
        for i, n in add.items():
            parts[i] += n
        left -= sum(add.values())
    return parts


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
