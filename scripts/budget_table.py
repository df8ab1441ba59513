"""The same study at two training budgets, side by side: does a conclusion hold at twice the epochs?

    python scripts/budget_table.py --at 50 SWEEP_E50 --at 100 SWEEP_E100 [--where balance=none] [--metric ...]

For every setting and strategy that both sweeps ran, each metric's mean over seeds ± the half-width of its
95 % t-interval and the p-value of the t-test against 0 (for gap/ensemble: the paired test of the references'
ensemble against the fused model across seeds), and a verdict per budget: ``+`` significantly above 0
(p < 0.05), ``−`` significantly below, ``·`` neither. ``holds`` says whether the two verdicts agree.
``--where`` keeps the jobs that set these overrides (e.g. the ``balance=none`` column of a grid whose run at
twice the budget has only that column); settings are then what the kept jobs do not all share.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmal.aggregate.jobs import Job, assign_settings, grouped, load_jobs
from mmal.aggregate.statistics import mean_ci, one_sample_p

METRICS = ("aubc/gap_ensemble", "final/gap/ensemble")


def verdict(mean: float, p: float, alpha: float = 0.05) -> str:
    """``+`` / ``−`` for a mean significantly above / below 0, ``·`` otherwise."""
    return "·" if not p < alpha else ("+" if mean > 0 else "−")


def cells(values: list[float]) -> tuple[str, str]:
    """``mean ± half (p)`` and the verdict of one metric over seeds."""
    array = np.asarray(values, dtype=float)
    mean, half = mean_ci(array)
    p = one_sample_p(array)
    return f"{mean:+.4f} ± {half:.4f} (p = {p:.3f})", verdict(float(mean), p)


def kept(jobs: list[Job], where: list[str]) -> list[Job]:
    """The finished jobs that set every override in ``where``, their settings recomputed among themselves."""
    return assign_settings([j for j in jobs if j.summary is not None and set(where) <= set(j.overrides)])


def table(sweeps: list[tuple[str, Path]], metrics: tuple[str, ...], where: list[str] = ()) -> list[str]:
    """Markdown rows: per (setting, strategy) both budgets' cells for each metric, and whether they agree."""
    groups = [dict(grouped(kept(load_jobs(path), list(where)))) for _, path in sweeps]
    labels = [label for label, _ in sweeps]
    header = ["setting", "strategy"] + [f"{m} at {label} epochs" for m in metrics for label in labels] + ["holds"]
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in sorted(set(groups[0]) & set(groups[1])):
        row, verdicts = list(key), []
        for metric in metrics:
            for group in groups:
                text, mark = cells([j.summary.get(metric, np.nan) for j in group[key]])
                row.append(f"{text} {mark}")
                verdicts.append(mark)
        pairs = [verdicts[i:i + len(groups)] for i in range(0, len(verdicts), len(groups))]
        row.append("yes" if all(len(set(p)) == 1 for p in pairs) else "**no**")
        md.append("| " + " | ".join(row) + " |")
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", nargs=2, action="append", metavar=("EPOCHS", "SWEEP"), required=True,
                        help="a budget's label and its sweep directory (twice)")
    parser.add_argument("--metric", action="append", default=None, help=f"summary keys (default {METRICS})")
    parser.add_argument("--where", action="append", default=[], help="keep the jobs that set this override")
    args = parser.parse_args()
    if len(args.at) != 2:
        parser.error("--at: exactly two budgets")
    sweeps = [(label, Path(path)) for label, path in args.at]
    print("\n".join(table(sweeps, tuple(args.metric or METRICS), args.where)))


if __name__ == "__main__":
    main()
