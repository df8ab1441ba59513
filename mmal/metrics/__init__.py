"""Metrics (their keys, the names in ``metrics.jsonl``, ``summary.json`` and W&B: :mod:`mmal.metrics.names`)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score
from torch import Tensor

from mmal.metrics.names import ACC, MACRO_F1, N_LABELED


def classification_metrics(probs: Tensor, y: Tensor) -> dict[str, float]:
    """``acc`` and ``macro_f1`` (over all classes, a class never predicted scores 0) of argmax(probs)."""
    pred = probs.argmax(1)
    labels = list(range(probs.shape[1]))
    return {
        ACC: (pred == y).float().mean().item(),
        MACRO_F1: float(f1_score(y.cpu().numpy(), pred.cpu().numpy(), labels=labels, average="macro",
                                 zero_division=0)),
    }


def aubc(n_labeled: list[int], values: list[float]) -> float:
    """Area under the budget curve: trapezoid rule with the labeled count scaled to [0, 1]
    (first budget -> 0, last -> 1). A single point gives its own value."""
    if len(values) == 1:
        return float(values[0])
    x = np.asarray(n_labeled, dtype=float)
    x = (x - x[0]) / (x[-1] - x[0])
    return float(np.trapezoid(values, x))


def aubc_of(records: list[dict], key: str) -> float:
    """AUBC of ``key`` over the per-cycle records that have it (x: their ``n_labeled``); NaN when none has."""
    points = [(r[N_LABELED], r[key]) for r in records if key in r]
    return aubc(*map(list, zip(*points))) if points else float("nan")


__all__ = ["aubc", "aubc_of", "classification_metrics"]
