"""The PNG figures a run writes: the learning curve, the modality-imbalance curves, and with a balancing
method its own state per cycle. A single run draws them when it ends; a sweep's jobs do not unless
``plots=true``, and any finished run's figures can be drawn afterwards from its files:

    python -m mmal.plots <run dir> [<run dir> ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmal.log import read_jsonl
from mmal.metrics.names import (
    ACC,
    BALANCE_PREFIX,
    BAYES_ACC,
    BAYES_ACC_ALL,
    CHANCE,
    DEFICIT,
    DEFICIT_REPR,
    ENSEMBLE_ACC,
    GAP_ENSEMBLE,
    GAP_NEGLECT,
    GROUND_TRUTH_PREFIX,
    HEAD_ACC,
    MACRO_F1,
    MASKED_ACC,
    N_LABELED,
    REF_ACC,
    REF_REPR_ACC,
    REPR_ACC,
    SHAPLEY,
    ci_hi,
    ci_lo,
    per_modality,
    prefix,
)


def _modalities(records: list[dict[str, Any]]) -> list[str]:
    return [k.removeprefix(prefix(CHANCE)) for k in records[0] if k.startswith(prefix(CHANCE))]


def _curve(ax: Any, records: list[dict[str, Any]], key: str, **style: Any) -> None:
    """``key`` against the labeled count over the cycles that have it (references may skip cycles)."""
    points = [(r[N_LABELED], r[key]) for r in records if key in r]
    if points:
        ax.plot(*zip(*points), **style)


def _with_band(ax: Any, records: list[dict[str, Any]], key: str, **style: Any) -> None:
    """``key``'s curve and, where the records hold it, its 95 % paired-bootstrap interval as a band."""
    _curve(ax, records, key, **style)
    points = [(r[N_LABELED], r[ci_lo(key)], r[ci_hi(key)]) for r in records if ci_lo(key) in r]
    if points:
        ax.fill_between(*zip(*points), color=style.get("color"), alpha=0.15, lw=0)


def _pyplot() -> Any:
    """matplotlib's pyplot, imported when a figure is drawn (0.4 s that a process drawing none never pays),
    on the file-only backend: runs on clusters without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plots(records: list[dict[str, Any]], ground_truth: dict[str, float], run_dir: Path) -> list[Path]:
    """Write ``learning_curve.png`` and ``modality_imbalance.png`` into ``run_dir``, and ``balance.png`` for a
    run with a balancing method; returns their paths."""
    plt = _pyplot()
    x = [r[N_LABELED] for r in records]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [r[ACC] for r in records], marker="o", label="accuracy")
    ax.plot(x, [r[MACRO_F1] for r in records], marker="s", label="macro-F1")
    if BAYES_ACC_ALL in ground_truth:
        ax.axhline(ground_truth[BAYES_ACC_ALL], ls="--", color="gray", label="best achievable (Bayes)")
    ax.set(xlabel="labeled samples", ylabel="test score", title="Learning curve of the fused model")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = [Path(run_dir) / "learning_curve.png"]
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 3, figsize=(16, 8), sharex=True)
    gap, deficits, decision, accuracy, representation, contribution = axes.flat
    _with_band(gap, records, GAP_ENSEMBLE, color="black", lw=2, label=f"{GAP_ENSEMBLE} (all test rows)")
    patterns = [k for k in records[-1] if k.startswith(prefix(GAP_ENSEMBLE))]
    for i, key in enumerate(patterns):
        _with_band(gap, records, key, color=colors[i % len(colors)], ls="--", label=key)
    _curve(accuracy, records, ACC, marker="o", color="black", label="fused model")
    _curve(accuracy, records, ENSEMBLE_ACC, marker="s", ls=":", color="black", label="references' ensemble")
    for i, m in enumerate(_modalities(records)):
        color = colors[i % len(colors)]
        _with_band(deficits, records, per_modality(DEFICIT, m), marker="o", color=color, label=f"{m}: decision")
        _curve(deficits, records, per_modality(DEFICIT_REPR, m), marker="x", ls=":", color=color,
               label=f"{m}: representation")
        _curve(decision, records, per_modality(REF_ACC, m), marker="o", color=color, label=f"{m}: reference")
        _curve(decision, records, per_modality(MASKED_ACC, m), marker="s", ls=":", color=color,
               label=f"{m}: fused, only {m} present")
        _curve(decision, records, per_modality(HEAD_ACC, m), marker="^", ls="-.", color=color, lw=0.8,
               label=f"{m}: auxiliary head")
        _curve(representation, records, per_modality(REF_REPR_ACC, m), marker="o", color=color,
               label=f"{m}: reference")
        _curve(representation, records, per_modality(REPR_ACC, m), marker="s", ls=":", color=color,
               label=f"{m}: fused")
        _curve(contribution, records, per_modality(SHAPLEY, m), marker="o", color=color, label=m)
        if per_modality(BAYES_ACC, m) in ground_truth:
            decision.axhline(ground_truth[per_modality(BAYES_ACC, m)], ls="--", color=color, lw=0.8,
                             label=f"{m}: best achievable")
    if BAYES_ACC_ALL in ground_truth:
        accuracy.axhline(ground_truth[BAYES_ACC_ALL], ls="--", color="gray", lw=0.8, label="best achievable")
    _curve(deficits, records, GAP_NEGLECT, color="black", lw=2, label=f"{GAP_NEGLECT} (largest)")
    for ax in (gap, deficits):
        ax.axhline(0, color="gray", lw=0.8)
    gap.set(ylabel="ensemble accuracy - fused accuracy",
            title="Accuracy lost to joint training (95 % bootstrap band)")
    deficits.set(ylabel="(reference - fused) / (reference - chance)",
                 title="Neglect of each modality (masked; 95 % band)")
    decision.set(ylabel="test accuracy from modality m alone", title="Decision level: reference vs fused model")
    accuracy.set(ylabel="test accuracy", title="Fused model vs the references' ensemble")
    representation.set(ylabel="linear probe on encoder m (fit on labeled rows)",
                       title="Representation level: reference vs fused encoder")
    contribution.set(ylabel="Shapley value of m for accuracy", title="Contribution to the fused accuracy")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # diagnostics.every=0 leaves the reference panels empty
            ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("labeled samples")
    fig.suptitle("Modality imbalance per AL cycle, on the test rows that have each modality")
    fig.subplots_adjust(left=0.045, right=0.99, bottom=0.07, top=0.91, wspace=0.22, hspace=0.22)
    paths.append(Path(run_dir) / "modality_imbalance.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    if any(key.startswith(BALANCE_PREFIX) for key in records[0]):
        paths.append(_balance_plot(plt, records, Path(run_dir) / "balance.png"))
    return paths


def _balance_plot(plt: Any, records: list[dict[str, Any]], path: Path) -> Path:
    """One panel per quantity of the balancing method's state (``balance/<quantity>/<modality>``), one line
    per modality."""
    keys = [k for k in records[0] if k.startswith(BALANCE_PREFIX)]
    quantities = sorted({k.removeprefix(BALANCE_PREFIX).rpartition("/")[0] for k in keys})
    fig, axes = plt.subplots(1, len(quantities), figsize=(5.5 * len(quantities), 4), squeeze=False)
    for ax, quantity in zip(axes[0], quantities):
        for key in keys:
            if key.removeprefix(BALANCE_PREFIX).rpartition("/")[0] == quantity:
                _curve(ax, records, key, marker="o", label=key.rpartition("/")[2])
        ax.set(xlabel="labeled samples", ylabel=quantity, title=f"{quantity}, mean over the cycle's training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("The balancing method's state per AL cycle")
    fig.subplots_adjust(left=0.6 / (5.5 * len(quantities)), right=0.98, bottom=0.13, top=0.84, wspace=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def redraw(run_dir: Path) -> list[Path]:
    """Draw a finished run's figures into ``run_dir`` from its ``metrics.jsonl`` and ``summary.json`` (the
    ground truth): the figures the run itself draws (``save_plots``)."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    truth = {k.removeprefix(GROUND_TRUTH_PREFIX): v for k, v in summary.items() if k.startswith(GROUND_TRUTH_PREFIX)}
    return save_plots(read_jsonl(Path(run_dir) / "metrics.jsonl"), truth, Path(run_dir))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw finished runs' figures from their metrics.jsonl.")
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run directories (each holds summary.json)")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        if not (run_dir / "summary.json").is_file():
            parser.error(f"{run_dir}: no summary.json: not a finished run's directory")
        for path in redraw(run_dir):
            print(path)


if __name__ == "__main__":
    main()
