"""The report of a sweep and its command: ``results.csv``, ``report.md`` and the figures.

``write_report`` loads the jobs (``mmal.aggregate.jobs``), computes (``mmal.aggregate.statistics``), saves
the figures (``mmal.aggregate.figures``) and formats the numbers as Markdown here; the ``*_section``
functions only format.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmal.aggregate import figures
from mmal.aggregate.jobs import Job, load_jobs, override_key
from mmal.aggregate.statistics import (
    COMPARED,
    METRICS,
    NEGLECT,
    Against,
    CrossTable,
    NeglectRow,
    cross_tables,
    focus_comparisons,
    modality_keys,
    modality_rows,
    near_best_counts,
    neglect_rows,
    pairwise,
    penalty_matrix,
    summary_rows,
    yardstick_modalities,
    yardstick_rows,
)
from mmal.metrics.names import DEFICIT, DEFICIT_REPR, GAP_ENSEMBLE, HEAD_ACC, MASKED_ACC, REF_ACC, per_modality

BASELINE = "none"  # the row of --cross that the others are compared with (balance=none: plain training)


def write_report(sweep_dir: Path, out: Path, alpha: float = 0.05, focus: str | None = None,
                 cross: str | None = None) -> Path:
    """Write ``results.csv``, ``report.md``, ``curves_*.png`` and ``penalty_*.png`` into ``out``; returns the
    Markdown report's path. ``focus``: a strategy to compare with every other one, setting by setting.
    ``cross``: a key of the settings (e.g. ``balance``) to cross with the strategies (``cross_section``)."""
    jobs = load_jobs(sweep_dir)
    strategies = sorted({j.strategy for j in jobs})
    if focus is not None and focus not in strategies:
        raise ValueError(f"--focus={focus!r}: not a strategy of this sweep, which has {strategies}")
    keys = sorted({override_key(o) for j in jobs for o in j.overrides} - {"query", "seed", "experiment"})
    if cross is not None and cross not in keys:
        raise ValueError(f"--cross={cross!r}: not a key the sweep's jobs set, which are {keys}")
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(jobs)
    columns = ["setting", "strategy", "seeds"] + [f"{k} {s}" for k in METRICS for s in ("mean", "std")]
    lines = [",".join(columns)] + [",".join(_csv(r[c]) for c in columns) for r in rows]
    (out / "results.csv").write_text("\n".join(lines) + "\n")

    finished = [j for j in jobs if j.summary is not None]
    md = summary_section(sweep_dir, jobs, rows)
    if cross is not None:
        md += cross_section(cross_tables(jobs, cross, alpha, BASELINE), cross, alpha, BASELINE)
    if focus is not None:
        md += focus_section(focus_comparisons(jobs, focus, alpha), focus, alpha)
    md += neglect_section(neglect_rows(jobs))
    per_modality_keys = modality_keys(jobs)
    md += modality_section(per_modality_keys, modality_rows(jobs, per_modality_keys))
    modalities = yardstick_modalities(jobs)
    md += yardstick_section(modalities, yardstick_rows(jobs, modalities))
    compared = sorted({j.strategy for j in finished})
    settings = sorted({j.setting for j in finished})
    for key, higher in COMPARED.items():
        counts = pairwise(jobs, key, higher, alpha)
        picture = figures.save_penalty(penalty_matrix(counts, compared, len(settings)), compared, key, out)
        md += pairwise_section(counts, compared, len(settings), key, higher, alpha, picture)
    md += ["", "## Curves", ""]
    for setting in settings:
        picture = figures.save_curves([j for j in finished if j.setting == setting], setting, out)
        md.append(f"- {setting}: ![{setting}]({picture})")
    md += problems_section([j for j in jobs if j.summary is None])
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"


def _csv(value: Any) -> str:
    text = f"{value:.6f}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text else text


def summary_section(sweep_dir: Path, jobs: list[Job], rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: the job counts and, per setting and strategy, each of ``METRICS`` (mean ± std over seeds)."""
    md = [f"# Report of `{sweep_dir}`", "", f"{sum(j.summary is not None for j in jobs)} finished jobs, "
          f"{sum(j.summary is None for j in jobs)} missing, crashed or unfinished.", ""]
    md += ["## AUBC and final accuracy (mean ± std over seeds)", "",
           "| setting | strategy | seeds | " + " | ".join(METRICS) + " |",
           "|---|---|---|" + "---|" * len(METRICS)]
    for r in rows:
        cells = " | ".join(f"{r[f'{k} mean']:.4f} ± {r[f'{k} std']:.4f}" for k in METRICS)
        md.append(f"| {r['setting']} | {r['strategy']} | {r['seeds']} | {cells} |")
    return md


def focus_section(comparisons: dict[str, dict[str, dict[str, Against]]], focus: str, alpha: float) -> list[str]:
    """Markdown of ``statistics.focus_comparisons``: per setting, ``focus`` against every other strategy on
    each of ``COMPARED``, the paired difference with its 95 % interval, p-value and verdict."""
    md = ["", f"## `{focus}` against every other strategy, per setting", "",
          f"Difference = {focus} − other, mean over the seeds both ran ± 95 % t-interval, paired t-test p-value. "
          f"**better** / *worse*: significant at p < {alpha} in {focus}'s favour / against it; · no significant "
          "difference. The `best` marks the other strategy with the best mean on that metric.", ""]
    for setting, others in comparisons.items():
        md += [f"**{setting}**", "", "| other | " + " | ".join(f"{key} of other | {focus} − other" for key in COMPARED)
               + " |", "|---|" + "---|---|" * len(COMPARED)]
        for other, by_key in others.items():
            cells = []
            for against in by_key.values():
                c = against.comparison
                cells += [f"{against.mean:.4f}" + (" (best)" if against.best else ""),
                          f"{c.mean:+.4f} ± {c.half:.4f}, p = {c.p:.3f} "
                          + {1: "**better**", -1: "*worse*"}.get(c.verdict, "·")]
            md.append(f"| {other} | " + " | ".join(cells) + " |")
        md.append("")
    return md


def cross_section(tables: dict[str, dict[str, CrossTable | None]], cross: str, alpha: float,
                  baseline: str) -> list[str]:
    """Markdown of ``statistics.cross_tables``: for each setting apart from ``cross`` (e.g. each pitfall), the
    values of ``cross`` (rows) against the strategies (columns) on each of ``COMPARED``. Each cell: the mean
    over seeds, the rank of the strategy within its row, and for rows other than ``baseline`` the paired
    difference against the baseline row's same strategy. Then the pairs within noise of the best pair, and
    the pairs that beat both the best strategy under the baseline and the best value of ``cross`` under
    random sampling; and across settings, for each pair, in how many it is within noise of the best. A pair
    without the metric (e.g. ``gap/ensemble`` with ``diagnostics.every=0``) gets an empty cell, a setting where
    no pair has it a line that says so."""
    md = ["", f"## `{cross}` × strategy", "",
          f"Rows: `{cross}`; columns: query strategies. Cell: mean AUBC over seeds (rank of the strategy within "
          f"the row, 1 = best), and below the `{baseline}` row the paired difference against `{baseline}` with the "
          f"same strategy (± 95 % t-interval; **bold** = significant at p < {alpha} in the row's favour, *italic* = "
          "against it).", ""]
    for rest, by_key in tables.items():
        for key, higher in COMPARED.items():
            table = by_key[key]
            title = f"**{rest}, `{key}`** ({'higher' if higher else 'lower'} is better)"
            if table is None:
                md += [title, "", f"No job of this setting has `{key}`.", ""]
                continue
            md += [title, "", f"| {cross} | " + " | ".join(table.strategies) + " |",
                   "|---|" + "---|" * len(table.strategies)]
            for value in table.values:
                cells = []
                for s in table.strategies:
                    if (value, s) not in table.means:
                        cells.append("—")
                        continue
                    cell = f"{table.means[(value, s)]:.4f} ({table.ranks[(value, s)]})"
                    if (value, s) in table.against_baseline:
                        c = table.against_baseline[(value, s)]
                        text = f"{c.mean:+.4f} ± {c.half:.4f}"
                        cell += "<br>" + {1: f"**{text}**", -1: f"*{text}*"}.get(c.verdict, text)
                    cells.append(cell)
                md.append(f"| {value} | " + " | ".join(cells) + " |")
            md += ["", _standouts(table, baseline), ""]
    for key in COMPARED:
        counts = near_best_counts(tables, key)
        settings = sum(by_key[key] is not None for by_key in tables.values())
        if not settings:
            md += [f"**Across the settings, `{key}`**: no job has it.", ""]
            continue
        values = sorted({v for v, _ in counts}, key=lambda v: (v != baseline, v))
        strategies = sorted({s for _, s in counts})
        md += [f"**Across the {settings} settings, `{key}`**: in how many of the settings where a pair ran it is "
               "within noise of the setting's best pair (not significantly worse).", "",
               f"| {cross} | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
        md += [f"| {v} | " + " | ".join("{} of {}".format(*counts[(v, s)]) if (v, s) in counts else "—"
                                        for s in strategies) + " |" for v in values]
        md.append("")
    return md


def _standouts(table: CrossTable, baseline: str) -> str:
    text = (f"Best pair: {table.best[0]} + {table.best[1]}; within noise of it: {len(table.near)} of "
            f"{len(table.means)} pairs.")
    if table.best_plain is not None:
        text += (f" Best strategy with `{baseline}`: {table.best_plain[1]}; best method with random sampling: "
                 f"{table.best_random[0]}. Pairs significantly better than both: "
                 + (", ".join(f"{v} + {s}" for v, s in table.winners) or "none") + ".")
    return text


def neglect_section(rows: list[NeglectRow]) -> list[str]:
    """Markdown of ``statistics.neglect_rows``: per setting and strategy, does joint training lose accuracy
    against the unimodal references' ensemble? Nothing without rows."""
    if not rows:
        return []
    md = ["", "## Neglect that costs accuracy: the fused model against the references' ensemble", "",
          f"`{GAP_ENSEMBLE}` = accuracy of the unimodal references' ensemble (mean of their log-probabilities over "
          "the modalities a row has) − the fused model's, on the same test rows; positive = joint training lost "
          "accuracy that the modalities trained apart give. Mean over seeds ± 95 % t-interval, paired t-test "
          "p-value across seeds. Bootstrap: the mean width of each cycle's 95 % paired-bootstrap interval over "
          "test rows. Masked in distribution: whether `deficit/<m>` (the masked numbers) are the fused model's "
          "own predictions from m (late or additive fusion, or modality dropout) for every seed.", "",
          "| setting | strategy | seeds | " + " | ".join(NEGLECT) + " | bootstrap width | masked in distribution |",
          "|---|---|---|" + "---|" * (len(NEGLECT) + 2)]
    for row in rows:
        cells = [f"{mean:+.4f} ± {half:.4f} (p = {p:.3f})" for mean, half, p in row.gaps.values()]
        cells += ["—" if row.bootstrap_width is None else f"{row.bootstrap_width:.4f}",
                  "yes" if row.masked_in_distribution else "no"]
        md.append(f"| {row.setting} | {row.strategy} | {row.seeds} | " + " | ".join(cells) + " |")
    return md


def modality_section(keys: list[str], rows: list[tuple[str, str, dict[str, tuple[float, float] | None]]]) -> list[str]:
    """Markdown of ``statistics.modality_rows``: AUBC of each modality's deficit against its unimodal
    reference, and of the accuracies it is built from (mean ± std over seeds). Nothing without ``keys``."""
    if not keys:
        return []
    md = ["", "## Each modality against its unimodal reference (AUBC, mean ± std over seeds)", "",
          f"`{per_modality(DEFICIT, '<m>')}` = (`{per_modality(REF_ACC, '<m>')}` − "
          f"`{per_modality(MASKED_ACC, '<m>')}`) / (`{per_modality(REF_ACC, '<m>')}` − chance), on the test rows that "
          f"have m: the reference trained on m alone against the fused model with only m present. "
          f"`{per_modality(DEFICIT_REPR, '<m>')}` compares linear probes on the two encoders m. 0 = the fused model "
          f"does with m what m alone allows, 1 = nothing. `{per_modality(HEAD_ACC, '<m>')}`: the auxiliary head of m "
          "(models with aux heads; — for models without).", "",
          "| setting | strategy | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for setting, strategy, values in rows:
        cells = ["—" if v is None else f"{v[0]:.4f} ± {v[1]:.4f}" for v in values.values()]
        md.append(f"| {setting} | {strategy} | " + " | ".join(cells) + " |")
    return md


def yardstick_section(modalities: list[str], rows: list[tuple[str, str, dict[str, tuple[float, float]]]]) -> list[str]:
    """Markdown of ``statistics.yardstick_rows``: each modality's final reference accuracy next to the best
    achievable from that modality alone. Nothing without ``modalities``."""
    if not modalities:
        return []
    md = ["", "## The yardstick: each unimodal reference against the best achievable (data with known Bayes "
          "accuracies)", "", "Final `ref_acc/<m>` (mean over seeds) / `bayes_acc/<m>`. A reference far below its "
          "Bayes accuracy is still learning: deficits are relative to what the labels allow, not to the ideal.", "",
          "| setting | strategy | " + " | ".join(modalities) + " |", "|---|---|" + "---|" * len(modalities)]
    for setting, strategy, values in rows:
        cells = [f"{ref:.4f} / {bayes:.4f}" for ref, bayes in values.values()]
        md.append(f"| {setting} | {strategy} | " + " | ".join(cells) + " |")
    return md


def pairwise_section(counts: dict[tuple[str, str], list[int]], strategies: list[str], settings: int, key: str,
                     higher: bool, alpha: float, picture: str) -> list[str]:
    """Markdown of ``statistics.pairwise``: the wins / ties / losses of each strategy against each other over
    ``settings`` settings, and the penalty matrix's ``picture``."""
    md = ["", f"## Pairwise comparison on `{key}` ({'higher' if higher else 'lower'} is better)", "",
          f"Paired t-test across seeds per setting, p < {alpha}. Cell (row, column) = wins / ties / losses of the "
          f"row strategy against the column strategy over {settings} setting(s).", "",
          "| | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    for a in strategies:
        cells = ["—" if a == b else "{} / {} / {}".format(*counts.get((a, b), [0, 0, 0])) for b in strategies]
        md.append(f"| **{a}** | " + " | ".join(cells) + " |")
    md += ["", f"Penalty matrix (share of settings in which the row strategy significantly loses): ![]({picture})"]
    return md


def problems_section(problems: list[Job]) -> list[str]:
    """Markdown: the jobs that are missing, crashed or unfinished, or ``None.``."""
    md = ["", "## Missing, crashed or unfinished jobs", ""]
    return md + ([f"- `{' '.join(j.overrides)}` ({j.path or 'no directory'}): {j.problem}" for j in problems]
                 or ["None."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Aggregate an mmal sweep into tables, curves and comparisons.")
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (holds multirun.yaml and job dirs)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: <sweep>/report)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests")
    parser.add_argument("--focus", default=None, help="a strategy to compare with every other, setting by setting")
    parser.add_argument("--cross", default=None, help="a key of the settings to cross with the strategies, "
                                                      "e.g. balance")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f"sweep_dir={str(args.sweep_dir)!r}: not a directory")
    try:
        report = write_report(args.sweep_dir, args.out or args.sweep_dir / "report", args.alpha, args.focus,
                              args.cross)
    except ValueError as error:
        parser.error(str(error))
    print(report.read_text())
    print(f"written: {report.parent}")
