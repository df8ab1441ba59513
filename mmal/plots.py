"""The PNG figures each run writes: the learning curve and the modality-gap curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters without a display
import matplotlib.pyplot as plt  # noqa: E402

from mmal.metrics.names import (  # noqa: E402
    ACC,
    BAYES_ACC,
    BAYES_ACC_ALL,
    GAP_PROBE,
    GAP_SHAPLEY,
    GAP_UNIMODAL,
    MACRO_F1,
    N_LABELED,
    PROBE_ACC,
    SHAPLEY,
    UNIMODAL_ACC,
    per_modality,
    prefix,
)


def _modalities(records: list[dict[str, Any]]) -> list[str]:
    return [k.removeprefix(prefix(PROBE_ACC)) for k in records[0] if k.startswith(prefix(PROBE_ACC))]


def save_plots(records: list[dict[str, Any]], ground_truth: dict[str, float], run_dir: Path) -> list[Path]:
    """Write ``learning_curve.png`` and ``modality_gap.png`` into ``run_dir``; returns their paths."""
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
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    panels = [
        (PROBE_ACC, "linear-probe accuracy on modality m's embedding", "What the representation holds"),
        (UNIMODAL_ACC, "test accuracy with only modality m present", "What the fused model uses"),
        (SHAPLEY, "Shapley value of modality m for accuracy", "Contribution to the fused accuracy"),
    ]
    for ax, (family, ylabel, title) in zip(axes.flat, panels):
        for i, m in enumerate(_modalities(records)):
            color = colors[i % len(colors)]
            ax.plot(x, [r[per_modality(family, m)] for r in records], marker="o", color=color, label=m)
            bayes = per_modality(BAYES_ACC, m)
            if family != SHAPLEY and bayes in ground_truth:
                ax.axhline(ground_truth[bayes], ls="--", color=color, label=f"{m}: best achievable")
        ax.set(ylabel=ylabel, title=title)
    gap_ax = axes.flat[3]
    # With two modalities the Shapley gap equals the unimodal one (phi_a - phi_b = v(a) - v(b)): dashed
    # so that both lines stay visible.
    for key, label, style in [(GAP_PROBE, "probe", "-o"), (GAP_UNIMODAL, "unimodal accuracy", "-s"),
                              (GAP_SHAPLEY, "Shapley", "--x")]:
        gap_ax.plot(x, [r[key] for r in records], style, label=label)
    gap_ax.set(ylabel="max - min over modalities", title="Modality gap")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("labeled samples")
    fig.suptitle("Modality-gap diagnostics per AL cycle (dashed: best achievable from the modality alone)")
    fig.tight_layout()
    paths.append(Path(run_dir) / "modality_gap.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths
