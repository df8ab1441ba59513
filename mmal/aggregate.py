"""The report of a sweep: read every job's results from disk (no network) and write tables, curves with
95 % bands over seeds, and a pairwise comparison of strategies (paired t-tests across seeds per setting,
win/tie/loss counts and the penalty matrix of Ash et al. 2020 as used by Lüth et al. 2023).

    python scripts/aggregate.py <sweep dir> [--out <dir>] [--alpha 0.05] [--focus <strategy>] [--cross <key>]
    (also: mmal-aggregate). The directory may hold several sweeps (e.g. one per dataset): every job under it
    counts.

A *setting* is everything a job's overrides set except the strategy and the seed (e.g. pitfall=synergy,
fusion=late); strategies are compared within a setting, paired by seed. Jobs that are missing, crashed
or unfinished are listed in the report, never dropped silently.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from scipy import stats  # noqa: E402

from mmal.log import read_jsonl  # noqa: E402
from mmal.metrics import aubc_of  # noqa: E402
from mmal.metrics.names import (  # noqa: E402
    ACC,
    BAYES_ACC,
    BAYES_ACC_ALL,
    DEFICIT,
    DEFICIT_REPR,
    ENSEMBLE_ACC,
    FINAL_PREFIX,
    GAP_ENSEMBLE,
    GAP_NEGLECT,
    GAP_NEGLECT_REPR,
    GAP_SHAPLEY,
    GROUND_TRUTH_PREFIX,
    HEAD_ACC,
    MASKED_ACC,
    MASKED_IN_DISTRIBUTION,
    N_LABELED,
    REF_ACC,
    aubc_key,
    ci_hi,
    ci_lo,
    per_modality,
    prefix,
)

# Summary keys in the tables, and whether higher is better.
METRICS = {aubc_key(ACC): True, aubc_key(GAP_ENSEMBLE): False, aubc_key(ENSEMBLE_ACC): True,
           aubc_key(GAP_NEGLECT): False, aubc_key(GAP_NEGLECT_REPR): False, aubc_key(GAP_SHAPLEY): False,
           FINAL_PREFIX + ACC: True}
# The pairwise comparison: accuracy, and the masking-free neglect measure (mmal.metrics.references).
COMPARED = {aubc_key(ACC): True, aubc_key(GAP_ENSEMBLE): False}
NEGLECT = (aubc_key(GAP_ENSEMBLE), FINAL_PREFIX + GAP_ENSEMBLE)  # the neglect-costs-accuracy table
PER_MODALITY = (DEFICIT, DEFICIT_REPR, REF_ACC, HEAD_ACC, MASKED_ACC)  # the per-modality table, in this order


@dataclass
class Job:
    """One job of the sweep: its directory, overrides, and results if it finished."""

    path: Path | None
    overrides: list[str]
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    setting: str = "default"  # set by load_jobs

    @property
    def strategy(self) -> str:
        return _value(self.overrides, "query", "default")

    @property
    def seed(self) -> str:
        return _value(self.overrides, "seed", "0")



def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _value(overrides: list[str], key: str, default: str) -> str:
    return next((o.split("=", 1)[1] for o in overrides if _key(o) == key), default)


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides as Hydra's basic sweeper expands them from ``multirun.yaml`` (sweeper params,
    then the command line), or None when the sweep directory has no such file."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = yaml.safe_load(path.read_text())["hydra"]
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg["overrides"]["task"])
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under ``sweep_dir`` (one with ``.hydra/overrides.yaml``), plus an entry for each
    expected job that has no directory."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        job = Job(path, [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []])
        if (path / "metrics.jsonl").exists():
            job.records = read_jsonl(path / "metrics.jsonl")
        if (path / "summary.json").exists():
            job.summary = json.loads((path / "summary.json").read_text())
        elif (path / "error.txt").exists():
            job.problem = "crashed: " + (path / "error.txt").read_text().strip().splitlines()[0]
        else:
            job.problem = f"unfinished: {len(job.records)} cycles logged"
        jobs.append(job)
    expected = expected_overrides(sweep_dir)
    if expected is not None:
        found = {tuple(sorted(j.overrides)) for j in jobs}
        jobs += [Job(None, o, problem="missing: no job directory") for o in expected if tuple(sorted(o)) not in found]
    return assign_settings(jobs)


def assign_settings(jobs: list[Job]) -> list[Job]:
    """Set each job's ``setting``: what its overrides set beyond strategy and seed, leaving out what every job
    of ``jobs`` shares (the experiment, too, unless they hold sweeps of several); returns ``jobs``."""
    shared = set.intersection(*(set(j.overrides) for j in jobs)) if jobs else set()
    for job in jobs:
        rest = [o for o in job.overrides if _key(o) not in ("query", "seed") and o not in shared]
        job.setting = ",".join(sorted(rest)) or "default"
    return jobs


def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and half-width of the 95 % t-interval along ``axis`` (0 half-width for a single value)."""
    n = values.shape[axis]
    mean = values.mean(axis)
    if n < 2:
        return mean, np.zeros_like(mean)
    return mean, stats.t.ppf(0.975, n - 1) * values.std(axis, ddof=1) / math.sqrt(n)


def band(values: np.ndarray, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % t-interval of the mean over seeds (axis 0), clipped to the metric's ``bounds``."""
    mean, half = mean_ci(values)
    low, high = np.clip(mean - half, *bounds), np.clip(mean + half, *bounds)
    return low, high


def grouped(jobs: list[Job]) -> list[tuple[tuple[str, str], list[Job]]]:
    """The finished jobs by (setting, strategy), sorted."""
    groups: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        if job.summary is not None:
            groups[(job.setting, job.strategy)].append(job)
    return sorted(groups.items())


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summary_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per (setting, strategy): mean and std over seeds of each of ``METRICS``."""
    rows = []
    for (setting, strategy), members in grouped(jobs):
        row: dict[str, Any] = {"setting": setting, "strategy": strategy, "seeds": len(members)}
        for key in METRICS:
            row[f"{key} mean"], row[f"{key} std"] = mean_std([j.summary.get(key, np.nan) for j in members])
        rows.append(row)
    return rows


def by_setting(jobs: list[Job], key: str) -> dict[str, dict[str, dict[str, float]]]:
    """setting -> strategy -> seed -> the summary value ``key`` of every finished job."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        if job.summary is not None and key in job.summary:  # a run without references has no gap/neglect
            out[job.setting][job.strategy][job.seed] = job.summary[key]
    return out


def paired_test(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, float, int]:
    """Mean of a - b over the seeds both have, the half-width of its 95 % t-interval, the paired t-test's
    p-value (NaN with fewer than 2 seeds; 1 for no difference, 0 for one that every seed shows alike) and
    the seed count."""
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in seeds])
    if len(seeds) < 2:
        return (float(diff.mean()) if len(seeds) else math.nan), math.nan, math.nan, len(seeds)
    mean, half = mean_ci(diff)
    return float(mean), float(half), one_sample_p(diff), len(seeds)


def pairwise(jobs: list[Job], key: str, higher_is_better: bool, alpha: float) -> dict[tuple[str, str], list[int]]:
    """(i, j) -> [wins, ties, losses] of strategy i against j over settings: a paired t-test across the
    seeds both ran; a win is a significant difference (p < alpha) in i's favour."""
    result: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for strategies in by_setting(jobs, key).values():
        for a in strategies:
            for b in strategies:
                if a == b:
                    continue
                mean, _, p, n = paired_test(strategies[a], strategies[b])
                if n < 2:
                    continue
                better = mean > 0 if higher_is_better else mean < 0
                outcome = 1 if p >= alpha or np.isnan(p) else (0 if better else 2)
                result[(a, b)][outcome] += 1
    return result


def focus_section(jobs: list[Job], focus: str, alpha: float) -> list[str]:
    """Markdown: per setting, ``focus`` against every other strategy on each of ``COMPARED``: the paired
    difference (focus - other) over seeds with its 95 % interval and p-value, and the verdict."""
    md = ["", f"## `{focus}` against every other strategy, per setting", "",
          f"Difference = {focus} − other, mean over the seeds both ran ± 95 % t-interval, paired t-test p-value. "
          f"**better** / *worse*: significant at p < {alpha} in {focus}'s favour / against it; · no significant "
          "difference. The `best` marks the other strategy with the best mean on that metric.", ""]
    tables = {key: by_setting(jobs, key) for key in COMPARED}
    for setting in sorted(tables[aubc_key(ACC)]):
        values = {key: table[setting] for key, table in tables.items()}
        if focus not in values[aubc_key(ACC)]:
            continue
        others = sorted(s for s in values[aubc_key(ACC)] if s != focus)
        best = {key: (max if higher else min)(others, key=lambda s: np.mean(list(values[key][s].values())))
                for key, higher in COMPARED.items() if others}
        md += [f"**{setting}**", "", "| other | " + " | ".join(f"{key} of other | {focus} − other" for key in COMPARED)
               + " |", "|---|" + "---|---|" * len(COMPARED)]
        for other in others:
            cells = []
            for key, higher in COMPARED.items():
                mean, half, p, _ = paired_test(values[key][focus], values[key][other])
                verdict = "·" if not p < alpha else ("**better**" if (mean > 0) == higher else "*worse*")
                tag = " (best)" if best.get(key) == other else ""
                cells += [f"{np.mean(list(values[key][other].values())):.4f}{tag}",
                          f"{mean:+.4f} ± {half:.4f}, p = {p:.3f} {verdict}"]
            md.append(f"| {other} | " + " | ".join(cells) + " |")
        md.append("")
    return md


def crossed(jobs: list[Job], cross: str, key: str) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """rest -> (value of ``cross``, strategy) -> seed -> summary ``key``: the settings split into the crossed
    key's value (e.g. ``balance=pmr``) and the rest (e.g. ``pitfall=none``)."""
    out: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        if job.summary is None or key not in job.summary:
            continue
        value = _value(job.overrides, cross, "default")
        rest = ",".join(part for part in job.setting.split(",") if _key(part) != cross) or "default"
        out[rest][(value, job.strategy)][job.seed] = job.summary[key]
    return out


def cross_section(jobs: list[Job], cross: str, alpha: float, baseline: str = "none") -> list[str]:
    """Markdown: for each setting apart from ``cross`` (e.g. each pitfall), the values of ``cross`` (rows)
    against the strategies (columns) on each of ``COMPARED``. Each cell: the mean over seeds, the rank of
    the strategy within its row, and for rows other than ``baseline`` the paired difference against the
    baseline row's same strategy. Then the pairs within noise of the best pair, and the pairs that beat
    both the best strategy under the baseline and the best value of ``cross`` under random sampling; and
    across settings, for each pair, in how many it is within noise of the best (the penalty matrix of Ash
    et al. along two axes)."""
    tables = {key: crossed(jobs, cross, key) for key in COMPARED}
    md = ["", f"## `{cross}` × strategy", "",
          f"Rows: `{cross}`; columns: query strategies. Cell: mean AUBC over seeds (rank of the strategy within "
          f"the row, 1 = best), and below the `{baseline}` row the paired difference against `{baseline}` with the "
          f"same strategy (± 95 % t-interval; **bold** = significant at p < {alpha} in the row's favour, *italic* = "
          "against it).", ""]
    near_counts = {key: defaultdict(int) for key in COMPARED}
    present = {key: defaultdict(int) for key in COMPARED}  # in how many settings each pair ran
    for rest in sorted(tables[aubc_key(ACC)]):
        for key, higher in COMPARED.items():
            pairs = tables[key][rest]
            values = sorted({v for v, _ in pairs}, key=lambda v: (v != baseline, v))
            strategies = sorted({s for _, s in pairs})
            means = {pair: float(np.mean(list(seeds.values()))) for pair, seeds in pairs.items()}
            md += [f"**{rest}, `{key}`** ({'higher' if higher else 'lower'} is better)", "",
                   f"| {cross} | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
            for value in values:
                row = [s for s in strategies if (value, s) in pairs]
                order = sorted(row, key=lambda s: means[(value, s)], reverse=higher)
                cells = []
                for s in strategies:
                    if (value, s) not in pairs:
                        cells.append("—")
                        continue
                    cell = f"{means[(value, s)]:.4f} ({order.index(s) + 1})"
                    if value != baseline and (baseline, s) in pairs:
                        mean, half, p, _ = paired_test(pairs[(value, s)], pairs[(baseline, s)])
                        text = f"{mean:+.4f} ± {half:.4f}"
                        if p < alpha:
                            text = f"**{text}**" if (mean > 0) == higher else f"*{text}*"
                        cell += f"<br>{text}"
                    cells.append(cell)
                md.append(f"| {value} | " + " | ".join(cells) + " |")
            text, near = _beaters(pairs, means, higher, alpha, baseline)
            for pair in pairs:
                near_counts[key][pair] += pair in near
                present[key][pair] += 1
            md += ["", text, ""]
    settings = len(tables[aubc_key(ACC)])
    for key in COMPARED:
        pairs = sorted(near_counts[key])
        values = sorted({v for v, _ in pairs}, key=lambda v: (v != baseline, v))
        strategies = sorted({s for _, s in pairs})
        md += [f"**Across the {settings} settings, `{key}`**: in how many of the settings where a pair ran it is "
               "within noise of the setting's best pair (not significantly worse).", "",
               f"| {cross} | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
        md += [f"| {v} | " + " | ".join(f"{near_counts[key][(v, s)]} of {present[key][(v, s)]}"
                                        if (v, s) in present[key] else "—" for s in strategies) + " |"
               for v in values]
        md.append("")
    return md


def _beaters(pairs: dict[tuple[str, str], dict[str, float]], means: dict[tuple[str, str], float], higher: bool,
             alpha: float, baseline: str) -> tuple[str, list[tuple[str, str]]]:
    """One paragraph, and the pairs not significantly worse than the best pair: the paragraph names them and
    the pairs significantly better than both the best strategy under ``baseline`` and the best value under
    random sampling."""
    pick = max if higher else min
    best = pick(pairs, key=lambda pair: means[pair])

    def beats(a: tuple[str, str], b: tuple[str, str]) -> bool:
        mean, _, p, _ = paired_test(pairs[a], pairs[b])
        return p < alpha and (mean > 0) == higher

    near = [pair for pair in pairs if pair == best or not beats(best, pair)]
    text = f"Best pair: {best[0]} + {best[1]}; within noise of it: {len(near)} of {len(pairs)} pairs."
    plain = [pair for pair in pairs if pair[0] == baseline]
    randoms = [pair for pair in pairs if pair[1] == "random"]
    if plain and randoms:
        best_plain, best_random = pick(plain, key=lambda p: means[p]), pick(randoms, key=lambda p: means[p])
        winners = [pair for pair in pairs if beats(pair, best_plain) and beats(pair, best_random)]
        text += (f" Best strategy with `{baseline}`: {best_plain[1]}; best method with random sampling: "
                 f"{best_random[0]}. Pairs significantly better than both: "
                 + (", ".join(f"{v} + {s}" for v, s in winners) or "none") + ".")
    return text, near


def neglect_section(jobs: list[Job]) -> list[str]:
    """Markdown: per setting and strategy, does joint training lose accuracy against the unimodal references'
    ensemble? ``gap/ensemble`` (ensemble accuracy − the fused model's, on the same test rows) as AUBC and at
    the last cycle: mean over seeds ± the half-width of its 95 % t-interval and the p-value of the paired
    t-test of the ensemble's against the fused model's accuracy across seeds (a one-sample t-test of the gap);
    beside it the mean width of the per-cycle paired-bootstrap interval over test rows (the test set's own
    share of the uncertainty), and whether the masked numbers (``deficit``) were in distribution."""
    done = [j for j in jobs if j.summary is not None and aubc_key(GAP_ENSEMBLE) in j.summary]
    if not done:
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
    for (setting, strategy), members in grouped(done):
        cells = []
        for key in NEGLECT:
            values = np.array([j.summary.get(key, np.nan) for j in members], dtype=float)
            mean, half = mean_ci(values)
            p = one_sample_p(values)
            cells.append(f"{mean:+.4f} ± {half:.4f} (p = {p:.3f})")
        widths = [r[ci_hi(GAP_ENSEMBLE)] - r[ci_lo(GAP_ENSEMBLE)] for j in members for r in j.records
                  if ci_hi(GAP_ENSEMBLE) in r]
        exact = all(j.summary.get(MASKED_IN_DISTRIBUTION, False) for j in members)
        cells += [f"{np.mean(widths):.4f}" if widths else "—", "yes" if exact else "no"]
        md.append(f"| {setting} | {strategy} | {len(members)} | " + " | ".join(cells) + " |")
    return md


def one_sample_p(values: np.ndarray) -> float:
    """p-value of the t-test that the mean of ``values`` (NaNs left out) is 0: NaN with fewer than 2 values; with
    the same value everywhere, no variance to test, 1 for 0 and 0 for anything else."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan
    if np.allclose(values, values[0], rtol=0, atol=1e-12):
        return 1.0 if abs(values[0]) <= 1e-12 else 0.0
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def modality_section(jobs: list[Job]) -> list[str]:
    """Markdown: AUBC of each modality's deficit against its unimodal reference, and of the accuracies it is
    built from (mean ± std over seeds, from the per-cycle records). ``gap/neglect`` is the largest deficit;
    this table tells which modality it is and whether the reference or the fused model moved."""
    done = [j for j in jobs if j.summary is not None and j.records]
    last = {k for j in done for k in j.records[-1]}
    keys = [k for family in PER_MODALITY for k in sorted(last) if k.startswith(prefix(family))]
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
    for (setting, strategy), members in grouped(done):
        values = {key: [aubc_of(j.records, key) for j in members] for key in keys}
        cells = ["—" if np.isnan(v).all() else " ± ".join(f"{x:.4f}" for x in mean_std(v)) for v in values.values()]
        md.append(f"| {setting} | {strategy} | " + " | ".join(cells) + " |")
    return md


def yardstick_section(jobs: list[Job]) -> list[str]:
    """Markdown, for data that knows its Bayes accuracies: each modality's final reference accuracy next to
    the best achievable from that modality alone, i.e. how good the yardstick of the deficits is."""
    done = [j for j in jobs if j.summary is not None and any(k.startswith(GROUND_TRUTH_PREFIX) for k in j.summary)]
    bayes = sorted({k for j in done for k in j.summary if k.startswith(GROUND_TRUTH_PREFIX + prefix(BAYES_ACC))
                    and "+" not in k and k != GROUND_TRUTH_PREFIX + BAYES_ACC_ALL})
    modalities = [k.removeprefix(GROUND_TRUTH_PREFIX + prefix(BAYES_ACC)) for k in bayes]
    if not modalities:
        return []
    md = ["", "## The yardstick: each unimodal reference against the best achievable (data with known Bayes "
          "accuracies)", "", "Final `ref_acc/<m>` (mean over seeds) / `bayes_acc/<m>`. A reference far below its "
          "Bayes accuracy is still learning: deficits are relative to what the labels allow, not to the ideal.", "",
          "| setting | strategy | " + " | ".join(modalities) + " |", "|---|---|" + "---|" * len(modalities)]
    for (setting, strategy), members in grouped(done):
        cells = [f"{np.mean([j.summary.get(FINAL_PREFIX + per_modality(REF_ACC, m), np.nan) for j in members]):.4f}"
                 f" / {np.mean([j.summary[GROUND_TRUTH_PREFIX + per_modality(BAYES_ACC, m)] for j in members]):.4f}"
                 for m in modalities]
        md.append(f"| {setting} | {strategy} | " + " | ".join(cells) + " |")
    return md


def write_report(sweep_dir: Path, out: Path, alpha: float = 0.05, focus: str | None = None,
                 cross: str | None = None) -> Path:
    """Write ``results.csv``, ``report.md``, ``curves_*.png`` and ``penalty_*.png`` into ``out``; returns the
    Markdown report's path. ``focus``: a strategy to compare with every other one, setting by setting.
    ``cross``: a key of the settings (e.g. ``balance``) to cross with the strategies (``cross_section``)."""
    jobs = load_jobs(sweep_dir)
    strategies = sorted({j.strategy for j in jobs})
    if focus is not None and focus not in strategies:
        raise ValueError(f"--focus={focus!r}: not a strategy of this sweep, which has {strategies}")
    keys = sorted({_key(o) for j in jobs for o in j.overrides} - {"query", "seed", "experiment"})
    if cross is not None and cross not in keys:
        raise ValueError(f"--cross={cross!r}: not a key the sweep's jobs set, which are {keys}")
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(jobs)
    columns = ["setting", "strategy", "seeds"] + [f"{k} {s}" for k in METRICS for s in ("mean", "std")]
    lines = [",".join(columns)] + [",".join(_csv(r[c]) for c in columns) for r in rows]
    (out / "results.csv").write_text("\n".join(lines) + "\n")

    md = [f"# Report of `{sweep_dir}`", "", f"{sum(j.summary is not None for j in jobs)} finished jobs, "
          f"{sum(j.summary is None for j in jobs)} missing, crashed or unfinished.", ""]
    md += ["## AUBC and final accuracy (mean ± std over seeds)", "",
           "| setting | strategy | seeds | " + " | ".join(METRICS) + " |",
           "|---|---|---|" + "---|" * len(METRICS)]
    for r in rows:
        cells = " | ".join(f"{r[f'{k} mean']:.4f} ± {r[f'{k} std']:.4f}" for k in METRICS)
        md.append(f"| {r['setting']} | {r['strategy']} | {r['seeds']} | {cells} |")
    if cross is not None:
        md += cross_section(jobs, cross, alpha)
    if focus is not None:
        md += focus_section(jobs, focus, alpha)
    md += neglect_section(jobs)
    md += modality_section(jobs)
    md += yardstick_section(jobs)
    for key, higher in COMPARED.items():
        md += _pairwise_section(jobs, key, higher, alpha, out)
    md += ["", "## Curves", ""]
    for setting in sorted({j.setting for j in jobs if j.summary is not None}):
        name = _plot_curves([j for j in jobs if j.setting == setting and j.summary is not None], setting, out)
        md.append(f"- {setting}: ![{setting}]({name})")
    problems = [j for j in jobs if j.summary is None]
    md += ["", "## Missing, crashed or unfinished jobs", ""]
    md += [f"- `{' '.join(j.overrides)}` ({j.path or 'no directory'}): {j.problem}" for j in problems] or ["None."]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"


def _csv(value: Any) -> str:
    text = f"{value:.6f}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text else text


def _pairwise_section(jobs: list[Job], key: str, higher: bool, alpha: float, out: Path) -> list[str]:
    counts = pairwise(jobs, key, higher, alpha)
    strategies = sorted({j.strategy for j in jobs if j.summary is not None})
    settings = len({j.setting for j in jobs if j.summary is not None})
    better = "higher" if higher else "lower"
    md = ["", f"## Pairwise comparison on `{key}` ({better} is better)", "",
          f"Paired t-test across seeds per setting, p < {alpha}. Cell (row, column) = wins / ties / losses of the "
          f"row strategy against the column strategy over {settings} setting(s).", "",
          "| | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    penalty = np.zeros((len(strategies), len(strategies)))
    for i, a in enumerate(strategies):
        cells = []
        for j, b in enumerate(strategies):
            w, t, loss = counts.get((a, b), [0, 0, 0])
            cells.append("—" if a == b else f"{w} / {t} / {loss}")
            penalty[i, j] = loss / settings if settings else 0.0
        md.append(f"| **{a}** | " + " | ".join(cells) + " |")
    name = f"penalty_{key.replace('/', '_')}.png"
    # At least 4.5 x 4 inches: with 2 strategies the title and labels would not fit.
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 + 0.7 * len(strategies)), max(4.0, 0.8 + 0.6 * len(strategies))))
    im = ax.imshow(penalty, cmap="Reds", vmin=0, vmax=1)
    ax.set(xticks=range(len(strategies)), yticks=range(len(strategies)), xlabel="beaten by (column)",
           ylabel="strategy (row)", title=f"Penalty matrix, {key}:\nshare of settings where the row loses")
    ax.set_xticklabels(strategies, rotation=45, ha="right")
    ax.set_yticklabels(strategies)
    for (i, j), v in np.ndenumerate(penalty):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out / name, dpi=120)
    plt.close(fig)
    md += ["", f"Penalty matrix (share of settings in which the row strategy significantly loses): ![]({name})"]
    return md


def _plot_curves(jobs: list[Job], setting: str, out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    # Accuracy lies in [0, 1]: its band is clipped there (a t-interval over 2 seeds can reach far beyond).
    for ax, key, ylabel, bounds in [(axes[0], ACC, "test accuracy", (0.0, 1.0)),
                                    (axes[1], GAP_ENSEMBLE, "gap/ensemble: references' ensemble − fused accuracy",
                                     (-1.0, 1.0))]:
        by_strategy: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_strategy[job.strategy].append(job)
        for strategy, members in sorted(by_strategy.items()):
            length = min(len(j.records) for j in members)
            x = [r[N_LABELED] for r in members[0].records[:length]]
            values = np.array([[r.get(key, np.nan) for r in j.records[:length]] for j in members])
            ax.plot(x, values.mean(0), marker=".", label=f"{strategy} (n={len(members)})")
            ax.fill_between(x, *band(values, bounds), alpha=0.2)
        ax.set(xlabel="labeled samples", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{setting}: mean over seeds with 95 % confidence band")
    fig.tight_layout()
    name = "curves_" + "".join(c if c.isalnum() or c in "-_=" else "_" for c in setting)[:120] + ".png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


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


if __name__ == "__main__":
    main()
