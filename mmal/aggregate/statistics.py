"""The numbers of a sweep's report: means and 95 % t-intervals over seeds, paired t-tests across seeds per
setting, win/tie/loss counts and the penalty matrix of Ash et al. 2020 (as used by Lüth et al. 2023).

Every function here returns numbers; ``mmal.aggregate.report`` formats them and ``mmal.aggregate.figures``
draws them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from mmal.aggregate.jobs import Job, by_setting, crossed, grouped
from mmal.metrics import aubc_of
from mmal.metrics.names import (
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

Pair = tuple[str, str]  # (value of the crossed key, strategy)


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


def mean_std(values: list[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def one_sample_p(values: np.ndarray) -> float:
    """p-value of the t-test that the mean of ``values`` (NaNs left out) is 0: NaN with fewer than 2 values; with
    the same value everywhere, no variance to test, 1 for 0 and 0 for anything else."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan
    if np.allclose(values, values[0], rtol=0, atol=1e-12):
        return 1.0 if abs(values[0]) <= 1e-12 else 0.0
    return float(stats.ttest_1samp(values, 0.0).pvalue)


def verdict(mean: float, p: float, alpha: float, higher_is_better: bool) -> int:
    """1: a difference ``mean`` significant at ``p < alpha`` that favours its first term, -1: one against it,
    0: none (a NaN p included)."""
    if not p < alpha:
        return 0
    return 1 if (mean > 0) == higher_is_better else -1


@dataclass(frozen=True)
class Comparison:
    """a − b over the seeds both ran: the mean, the half-width of its 95 % t-interval, the paired t-test's
    p-value (NaN with fewer than 2 seeds), the seed count, and the ``verdict`` at the report's alpha."""

    mean: float
    half: float
    p: float
    seeds: int
    verdict: int


def compare(a: dict[str, float], b: dict[str, float], higher_is_better: bool, alpha: float) -> Comparison:
    """The paired comparison of two strategies' values by seed (``a`` and ``b``: seed -> value)."""
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[s] - b[s] for s in seeds])
    if len(seeds) < 2:
        return Comparison(float(diff.mean()) if len(seeds) else math.nan, math.nan, math.nan, len(seeds), 0)
    mean, half = mean_ci(diff)
    p = one_sample_p(diff)
    return Comparison(float(mean), float(half), p, len(seeds), verdict(float(mean), p, alpha, higher_is_better))


def summary_rows(jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per (setting, strategy): mean and std over seeds of each of ``METRICS``."""
    rows = []
    for (setting, strategy), members in grouped(jobs):
        row: dict[str, Any] = {"setting": setting, "strategy": strategy, "seeds": len(members)}
        for key in METRICS:
            row[f"{key} mean"], row[f"{key} std"] = mean_std([j.summary.get(key, np.nan) for j in members])
        rows.append(row)
    return rows


def pairwise(jobs: list[Job], key: str, higher_is_better: bool, alpha: float) -> dict[Pair, list[int]]:
    """(i, j) -> [wins, ties, losses] of strategy i against j over settings: a paired t-test across the
    seeds both ran; a win is a significant difference (p < alpha) in i's favour."""
    result: dict[Pair, list[int]] = defaultdict(lambda: [0, 0, 0])
    for strategies in by_setting(jobs, key).values():
        for a in strategies:
            for b in strategies:
                if a == b:
                    continue
                comparison = compare(strategies[a], strategies[b], higher_is_better, alpha)
                if comparison.seeds < 2:
                    continue
                result[(a, b)][1 - comparison.verdict] += 1  # verdict 1, 0, -1: index 0, 1, 2
    return result


def penalty_matrix(counts: dict[Pair, list[int]], strategies: list[str], settings: int) -> np.ndarray:
    """(i, j): the share of the ``settings`` in which strategy i significantly loses against j."""
    penalty = np.zeros((len(strategies), len(strategies)))
    for i, a in enumerate(strategies):
        for j, b in enumerate(strategies):
            penalty[i, j] = counts.get((a, b), [0, 0, 0])[2] / settings if settings else 0.0
    return penalty


@dataclass(frozen=True)
class Against:
    """Another strategy on one metric, seen from the focus strategy: its mean over seeds, whether it has the
    best mean of the others, and the comparison focus − other."""

    mean: float
    best: bool
    comparison: Comparison


def focus_comparisons(jobs: list[Job], focus: str, alpha: float) -> dict[str, dict[str, dict[str, Against]]]:
    """setting -> other strategy -> metric of ``COMPARED`` -> ``focus`` against the other, for each setting
    in which ``focus`` ran."""
    tables = {key: by_setting(jobs, key) for key in COMPARED}
    out: dict[str, dict[str, dict[str, Against]]] = {}
    for setting in sorted(tables[aubc_key(ACC)]):
        values = {key: table[setting] for key, table in tables.items()}
        if focus not in values[aubc_key(ACC)]:
            continue
        others = sorted(s for s in values[aubc_key(ACC)] if s != focus)
        means = {key: {s: float(np.mean(list(values[key][s].values()))) for s in others} for key in COMPARED}
        best = {key: (max if higher else min)(others, key=means[key].__getitem__)
                for key, higher in COMPARED.items() if others}
        out[setting] = {other: {key: Against(means[key][other], best.get(key) == other,
                                             compare(values[key][focus], values[key][other], higher, alpha))
                                for key, higher in COMPARED.items()}
                        for other in others}
    return out


@dataclass
class CrossTable:
    """One setting's (value of the crossed key, strategy) pairs on one metric, and the pairs that stand out."""

    values: list[str]  # the rows: the baseline first
    strategies: list[str]  # the columns
    means: dict[Pair, float]  # over seeds
    ranks: dict[Pair, int]  # of the strategy within its row, 1 = best
    against_baseline: dict[Pair, Comparison]  # rows but the baseline: against the baseline's same strategy
    best: Pair
    near: list[Pair]  # not significantly worse than the best pair (the best included)
    best_plain: Pair | None  # the best strategy under the baseline; None unless random sampling ran too
    best_random: Pair | None  # the best value of the crossed key under random sampling
    winners: list[Pair]  # significantly better than both best_plain and best_random


def cross_table(pairs: dict[Pair, dict[str, float]], higher: bool, alpha: float, baseline: str,
                ran: Iterable[Pair] = ()) -> CrossTable | None:
    """The ``CrossTable`` of one setting's pairs (pair -> seed -> value); its rows and columns also hold the
    pairs of ``ran`` (those that ran, e.g. without this metric: empty cells). None when no pair has a value."""
    if not pairs:  # e.g. gap/ensemble where no job trained references (diagnostics.every=0)
        return None
    means = {pair: float(np.mean(list(seeds.values()))) for pair, seeds in pairs.items()}
    layout = {*pairs, *ran}
    values = sorted({v for v, _ in layout}, key=lambda v: (v != baseline, v))
    strategies = sorted({s for _, s in layout})
    ranks = {}
    for value in values:
        row = [s for s in strategies if (value, s) in pairs]
        order = sorted(row, key=lambda s: means[(value, s)], reverse=higher)
        ranks.update({(value, s): order.index(s) + 1 for s in row})
    against_baseline = {(v, s): compare(pairs[(v, s)], pairs[(baseline, s)], higher, alpha)
                        for v, s in pairs if v != baseline and (baseline, s) in pairs}

    def beats(a: Pair, b: Pair) -> bool:
        return compare(pairs[a], pairs[b], higher, alpha).verdict == 1

    pick = max if higher else min
    best = pick(pairs, key=means.__getitem__)
    near = [pair for pair in pairs if pair == best or not beats(best, pair)]
    plain = [pair for pair in pairs if pair[0] == baseline]
    randoms = [pair for pair in pairs if pair[1] == "random"]
    best_plain = best_random = None
    winners = []
    if plain and randoms:
        best_plain, best_random = pick(plain, key=means.__getitem__), pick(randoms, key=means.__getitem__)
        winners = [pair for pair in pairs if beats(pair, best_plain) and beats(pair, best_random)]
    return CrossTable(values, strategies, means, ranks, against_baseline, best, near, best_plain, best_random,
                      winners)


def cross_tables(jobs: list[Job], cross: str, alpha: float, baseline: str
                 ) -> dict[str, dict[str, CrossTable | None]]:
    """rest of the setting -> metric of ``COMPARED`` -> the values of ``cross`` against the strategies, over
    the pairs that ran (they all have accuracy); None where no job of the setting has the metric."""
    tables = {key: crossed(jobs, cross, key) for key in COMPARED}
    ran = tables[aubc_key(ACC)]
    return {rest: {key: cross_table(tables[key].get(rest, {}), higher, alpha, baseline, ran[rest])
                   for key, higher in COMPARED.items()}
            for rest in sorted(ran)}


def near_best_counts(tables: dict[str, dict[str, CrossTable | None]], key: str) -> dict[Pair, tuple[int, int]]:
    """pair -> (in how many settings it is within noise of the setting's best pair, in how many it has metric
    ``key``): the penalty matrix of Ash et al. along two axes."""
    counts: dict[Pair, list[int]] = defaultdict(lambda: [0, 0])
    for by_key in tables.values():
        table = by_key[key]
        for pair in table.means if table is not None else ():
            counts[pair][0] += pair in table.near
            counts[pair][1] += 1
    return {pair: (near, ran) for pair, (near, ran) in counts.items()}


@dataclass(frozen=True)
class NeglectRow:
    """One (setting, strategy) of the neglect table."""

    setting: str
    strategy: str
    seeds: int
    gaps: dict[str, tuple[float, float, float]]  # key of NEGLECT -> mean, 95 % half-width, p-value against 0
    bootstrap_width: float | None  # mean width of the per-cycle bootstrap intervals; None without any
    masked_in_distribution: bool  # for every seed


def neglect_rows(jobs: list[Job]) -> list[NeglectRow]:
    """Per setting and strategy of the jobs with ``gap/ensemble``: each of ``NEGLECT`` over seeds with the
    one-sample t-test against 0 (the paired test of the references' ensemble against the fused model), the
    mean width of the per-cycle paired-bootstrap intervals over test rows, and whether the masked numbers
    were in distribution for every seed."""
    rows = []
    for (setting, strategy), members in grouped([j for j in jobs if j.summary is not None
                                                 and aubc_key(GAP_ENSEMBLE) in j.summary]):
        gaps = {}
        for key in NEGLECT:
            values = np.array([j.summary.get(key, np.nan) for j in members], dtype=float)
            mean, half = mean_ci(values)
            gaps[key] = (float(mean), float(half), one_sample_p(values))
        widths = [r[ci_hi(GAP_ENSEMBLE)] - r[ci_lo(GAP_ENSEMBLE)] for j in members for r in j.records
                  if ci_hi(GAP_ENSEMBLE) in r]
        exact = all(j.summary.get(MASKED_IN_DISTRIBUTION, False) for j in members)
        rows.append(NeglectRow(setting, strategy, len(members), gaps, float(np.mean(widths)) if widths else None,
                               exact))
    return rows


def modality_keys(jobs: list[Job]) -> list[str]:
    """The per-modality keys of ``PER_MODALITY`` in the last records of the finished jobs, family by family."""
    last = {k for j in jobs if j.summary is not None and j.records for k in j.records[-1]}
    return [k for family in PER_MODALITY for k in sorted(last) if k.startswith(prefix(family))]


def modality_rows(jobs: list[Job], keys: list[str]) -> list[tuple[str, str, dict[str, tuple[float, float] | None]]]:
    """Per (setting, strategy) of the finished jobs with records: AUBC of each of ``keys`` from the per-cycle
    records, mean and std over seeds (None where no seed has it)."""
    rows = []
    for (setting, strategy), members in grouped([j for j in jobs if j.summary is not None and j.records]):
        values = {key: [aubc_of(j.records, key) for j in members] for key in keys}
        rows.append((setting, strategy, {key: None if np.isnan(v).all() else mean_std(v)
                                         for key, v in values.items()}))
    return rows


def yardstick_modalities(jobs: list[Job]) -> list[str]:
    """The modalities whose Bayes accuracy the finished jobs know, sorted."""
    keys = {k for j in jobs if j.summary is not None for k in j.summary}
    bayes = GROUND_TRUTH_PREFIX + prefix(BAYES_ACC)
    return sorted(k.removeprefix(bayes) for k in keys
                  if k.startswith(bayes) and "+" not in k and k != GROUND_TRUTH_PREFIX + BAYES_ACC_ALL)


def yardstick_rows(jobs: list[Job], modalities: list[str]) -> list[tuple[str, str, dict[str, tuple[float, float]]]]:
    """Per (setting, strategy) of the jobs that know ground truth: each modality's final reference accuracy
    and its Bayes accuracy, means over seeds."""
    done = [j for j in jobs if j.summary is not None and any(k.startswith(GROUND_TRUTH_PREFIX) for k in j.summary)]
    return [(setting, strategy, {
        m: (float(np.mean([j.summary.get(FINAL_PREFIX + per_modality(REF_ACC, m), np.nan) for j in members])),
            float(np.mean([j.summary[GROUND_TRUTH_PREFIX + per_modality(BAYES_ACC, m)] for j in members])))
        for m in modalities}) for (setting, strategy), members in grouped(done)]


@dataclass(frozen=True)
class Curve:
    """One strategy's metric against the labeled-set size: mean over seeds and its clipped 95 % band."""

    n_labeled: list[int]
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


def curves(jobs: list[Job], key: str, bounds: tuple[float, float]) -> dict[str, Curve]:
    """strategy -> its ``Curve`` of the per-cycle metric ``key`` over the cycles every seed logged, sorted."""
    by_strategy: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_strategy[job.strategy].append(job)
    out = {}
    for strategy, members in sorted(by_strategy.items()):
        length = min(len(j.records) for j in members)
        x = [r[N_LABELED] for r in members[0].records[:length]]
        values = np.array([[r.get(key, np.nan) for r in j.records[:length]] for j in members])
        out[strategy] = Curve(x, values.mean(0), *band(values, bounds), len(members))
    return out
