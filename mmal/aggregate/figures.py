"""The figures of a sweep's report: the penalty matrix of each compared metric and each setting's curves.

Drawn on ``matplotlib.figure.Figure`` objects, never through pyplot: saving a PNG needs no backend, so
importing or running the report leaves the caller's matplotlib backend as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mmal.aggregate.jobs import Job
from mmal.aggregate.statistics import curves
from mmal.metrics.names import ACC, GAP_ENSEMBLE

# The panels of a setting's curves: per-cycle metric, axis label, and the bounds its band is clipped to (a
# t-interval over 2 seeds can reach far beyond [0, 1]).
CURVE_PANELS = ((ACC, "test accuracy", (0.0, 1.0)),
                (GAP_ENSEMBLE, "gap/ensemble: references' ensemble − fused accuracy", (-1.0, 1.0)))


def save_penalty(penalty: np.ndarray, strategies: list[str], key: str, out: Path) -> str:
    """Draw the penalty matrix of metric ``key`` (row loses to column, share of settings) into ``out``;
    returns the file's name."""
    # At least 4.5 x 4 inches: with 2 strategies the title and labels would not fit.
    fig = Figure(figsize=(max(4.5, 1.0 + 0.7 * len(strategies)), max(4.0, 0.8 + 0.6 * len(strategies))))
    ax = fig.subplots()
    im = ax.imshow(penalty, cmap="Reds", vmin=0, vmax=1)
    ax.set(xticks=range(len(strategies)), yticks=range(len(strategies)), xlabel="beaten by (column)",
           ylabel="strategy (row)", title=f"Penalty matrix, {key}:\nshare of settings where the row loses")
    ax.set_xticklabels(strategies, rotation=45, ha="right")
    ax.set_yticklabels(strategies)
    for (i, j), v in np.ndenumerate(penalty):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    name = f"penalty_{key.replace('/', '_')}.png"
    fig.savefig(out / name, dpi=120)
    return name


def save_curves(jobs: list[Job], setting: str, out: Path) -> str:
    """Draw the finished ``jobs`` of one setting, accuracy and ``gap/ensemble`` against the labeled-set size,
    one line per strategy with its 95 % band over seeds, into ``out``; returns the file's name."""
    fig = Figure(figsize=(12, 4.5))
    for ax, (key, ylabel, bounds) in zip(fig.subplots(1, 2), CURVE_PANELS):
        for strategy, curve in curves(jobs, key, bounds).items():
            ax.plot(curve.n_labeled, curve.mean, marker=".", label=f"{strategy} (n={curve.seeds})")
            ax.fill_between(curve.n_labeled, curve.low, curve.high, alpha=0.2)
        ax.set(xlabel="labeled samples", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{setting}: mean over seeds with 95 % confidence band")
    fig.tight_layout()
    name = "curves_" + "".join(c if c.isalnum() or c in "-_=" else "_" for c in setting)[:120] + ".png"
    fig.savefig(out / name, dpi=110)
    return name
