"""The PNG figures each run writes: the learning curve and the modality-gap curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: runs on clusters without a display
import matplotlib.pyplot as plt  # noqa: E402


def _modalities(records: list[dict[str, Any]]) -> list[str]:
    return [k.split("/", 1)[1] for k in records[0] if k.startswith("probe_acc/")]


def save_plots(records: list[dict[str, Any]], ground_truth: dict[str, float], run_dir: Path) -> list[Path]:
    """Write ``learning_curve.png`` and ``modality_gap.png`` into ``run_dir``; returns their paths."""
    x = [r["n_labeled"] for r in records]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [r["acc"] for r in records], marker="o", label="accuracy")
    ax.plot(x, [r["macro_f1"] for r in records], marker="s", label="macro-F1")
    if "bayes_acc/all" in ground_truth:
        ax.axhline(ground_truth["bayes_acc/all"], ls="--", color="gray", label="best achievable (Bayes)")
    ax.set(xlabel="labeled samples", ylabel="test score", title="Learning curve of the fused model")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = [Path(run_dir) / "learning_curve.png"]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    panels = [
        ("probe_acc", "linear-probe accuracy on modality m's embedding", "What the representation holds"),
        ("unimodal_acc", "test accuracy with only modality m present", "What the fused model uses"),
        ("shapley", "Shapley value of modality m for accuracy", "Contribution to the fused accuracy"),
    ]
    for ax, (key, ylabel, title) in zip(axes.flat, panels):
        for i, m in enumerate(_modalities(records)):
            color = colors[i % len(colors)]
            ax.plot(x, [r[f"{key}/{m}"] for r in records], marker="o", color=color, label=m)
            if key != "shapley" and f"bayes_acc/{m}" in ground_truth:
                ax.axhline(ground_truth[f"bayes_acc/{m}"], ls="--", color=color, label=f"{m}: best achievable")
        ax.set(ylabel=ylabel, title=title)
    gap_ax = axes.flat[3]
    # With two modalities the Shapley gap equals the unimodal one (phi_a - phi_b = v(a) - v(b)): dashed
    # so that both lines stay visible.
    for key, label, style in [("gap/probe", "probe", "-o"), ("gap/unimodal", "unimodal accuracy", "-s"),
                              ("gap/shapley", "Shapley", "--x")]:
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
