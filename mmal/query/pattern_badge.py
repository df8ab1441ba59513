"""``pattern_badge``: the batch split across presence patterns by where the fused model and the unimodal references'
ensemble disagree, BADGE within each (docs/strategies.md)."""

from __future__ import annotations

import torch

from mmal.metrics.references import pattern_name
from mmal.query.badge import gradient_factor
from mmal.query.base import QueryContext, QueryStrategy, Selection
from mmal.query.selection import kmeanspp_factored


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
