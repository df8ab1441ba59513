"""The sweep report: tables, paired comparisons, and jobs that are missing or crashed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY, compose_config
from PIL import Image
from scipy import stats

from mmal.aggregate.jobs import expected_overrides, load_jobs
from mmal.aggregate.report import main, write_report
from mmal.aggregate.statistics import band, cross_tables, pairwise
from mmal.train import run


def _job(sweep, num, overrides, summary=None, records=None, error=None):
    path = sweep / f"{num}_{','.join(overrides)}"
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if records is not None:
        (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    if error is not None:
        (path / "error.txt").write_text(error)
    return path


def _records(acc):
    return [{"cycle": c, "n_labeled": 10 * (c + 1), "acc": acc - 0.1 * (2 - c), "gap/neglect": 0.1,
             "gap/ensemble": 0.1} for c in range(3)]


def _summary(acc, gap):
    return {"aubc/acc": acc, "aubc/gap_ensemble": gap, "aubc/ensemble_acc": acc + gap, "aubc/gap_neglect": gap,
            "aubc/gap_neglect_repr": gap, "aubc/gap_shapley": gap, "final/acc": acc + 0.05}


def test_paired_comparison_counts_significant_wins_and_ties(tmp_path):
    num = 0
    for pitfall in ("none", "synergy"):
        for seed in range(5):
            noise = [0.003, -0.002, 0.001, -0.004, 0.002][seed]
            for query, acc in [("good", 0.80 + noise), ("bad", 0.70 + noise), ("same", 0.80 - noise)]:
                overrides = [f"pitfall={pitfall}", f"query={query}", f"seed={seed}", "trainer.epochs=3"]
                _job(tmp_path, num, overrides, _summary(acc, 0.1), _records(acc))
                num += 1
    jobs = load_jobs(tmp_path)
    assert {j.setting for j in jobs} == {"pitfall=none", "pitfall=synergy"}  # shared overrides left out
    counts = pairwise(jobs, "aubc/acc", True, 0.05)
    assert counts[("good", "bad")] == [2, 0, 0] and counts[("bad", "good")] == [0, 0, 2]
    assert counts[("good", "same")] == [0, 2, 0]  # differences of +-0.005 around zero: not significant
    gap = pairwise(jobs, "aubc/gap_ensemble", False, 0.05)
    assert gap[("good", "bad")] == [0, 2, 0]  # identical gaps: a tie

    report = write_report(tmp_path, tmp_path / "report")
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    good = next(r for r in rows if r["strategy"] == "good")
    assert good["setting"] == "pitfall=none" and good["seeds"] == "5"
    assert float(good["aubc/acc mean"]) == pytest.approx(0.80, abs=1e-6)
    assert float(good["aubc/acc std"]) == pytest.approx(0.002915, abs=1e-5)
    text = report.read_text()
    assert "| **good** | 2 / 0 / 0 | — | 0 / 2 / 0 |" in text  # columns: bad, good, same
    assert (tmp_path / "report" / "curves_pitfall=none.png").exists()
    assert (tmp_path / "report" / "penalty_aubc_acc.png").exists()

    # One strategy against every other, setting by setting: bad - good = -0.1 on every seed.
    text = write_report(tmp_path, tmp_path / "focus", focus="bad").read_text()
    section = text.split("## `bad` against every other strategy, per setting")[1].split("## Pairwise")[0]
    assert section.count("**pitfall=none**") == 1 and section.count("**pitfall=synergy**") == 1
    assert ("| good | 0.8000 (best) | -0.1000 ± 0.0000, p = 0.000 *worse* | 0.1000 (best) | +0.0000 ± 0.0000, "
            "p = 1.000 · |") in section
    assert "| same | 0.8000 | -0.1000 ± 0.0072, p = 0.000 *worse* |" in section  # t(4) x sd(2 x noise) / sqrt 5
    with pytest.raises(ValueError, match="--focus='nope': not a strategy of this sweep, which has"):
        write_report(tmp_path, tmp_path / "nope", focus="nope")
    assert not (tmp_path / "nope").exists()  # refused before anything is written


def test_missing_and_crashed_jobs_are_listed(tmp_path):
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "overrides": {"task": ["query=random,entropy", "seed=0,1"]}, "sweeper": {"params": None}}}))
    assert expected_overrides(tmp_path) == [["query=random", "seed=0"], ["query=random", "seed=1"],
                                            ["query=entropy", "seed=0"], ["query=entropy", "seed=1"]]
    _job(tmp_path, 0, ["query=random", "seed=0"], _summary(0.8, 0.1), _records(0.8))
    _job(tmp_path, 1, ["query=random", "seed=1"], records=_records(0.8)[:1])
    _job(tmp_path, 2, ["query=entropy", "seed=0"], error="RuntimeError: out of memory\n\nTraceback ...")
    text = write_report(tmp_path, tmp_path / "report").read_text()
    assert "1 finished jobs, 3 missing, crashed or unfinished." in text
    assert "`query=random seed=1` " in text and "unfinished: 1 cycles logged" in text
    assert "crashed: RuntimeError: out of memory" in text
    assert "`query=entropy seed=1` (no directory): missing: no job directory" in text


@pytest.mark.slow
def test_smoke_grid_with_joblib_and_the_aggregate_command(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "mmal.train", "-m", "+experiment=smoke", "hydra/launcher=joblib",
                             "hydra.launcher.n_jobs=2", "trainer.device=cpu", f"hydra.sweep.dir={sweep}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "scripts/aggregate.py", str(sweep), "--out", str(tmp_path / "report")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "8 finished jobs, 0 missing, crashed or unfinished." in result.stdout
    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert {(r["setting"], r["strategy"], r["seeds"]) for r in rows} == {
        (f"pitfall={p}", q, "2") for p in ("none", "synergy") for q in ("random", "entropy")}  # device: shared
    # Each job's directory is named by its overrides.
    first = sorted(p.name for p in sweep.iterdir() if p.is_dir())[0]
    assert first == "0_pitfall=none,query=random,seed=0,trainer.device=cpu"
    with Image.open(tmp_path / "report" / "penalty_aubc_acc.png") as image:  # 2 strategies: title and labels fit
        assert image.size[0] >= 540 and image.size[1] >= 480
    # The jobs drew no figures (plots=auto in a sweep); the report drew its curves from their metrics.jsonl.
    assert not list(sweep.glob("*/*.png"))
    job = sorted(p for p in sweep.iterdir() if p.is_dir())[0]  # one run's own figures, drawn afterwards
    result = subprocess.run([sys.executable, "-m", "mmal.plots", str(job)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in job.glob("*.png")} == {"learning_curve.png", "modality_imbalance.png"}
    for pitfall in ("none", "synergy"):
        with Image.open(tmp_path / "report" / f"curves_pitfall={pitfall}.png") as image:
            assert image.size[0] > 400 and len(set(image.convert("L").getdata())) > 10  # drawn, not blank


def test_the_accuracy_band_is_clipped_to_0_and_1():
    # Two seeds at 0.2 and 1.0: the t-interval of their mean spans -4.5 to 5.7.
    low, high = band(np.array([[0.2, 0.5], [1.0, 0.5]]), (0.0, 1.0))
    assert low.tolist() == [0.0, 0.5] and high.tolist() == [1.0, 0.5]
    low, high = band(np.array([[0.2], [1.0]]), (-np.inf, np.inf))
    half = 12.706 * 0.4  # t(0.975, 1 dof) x std / sqrt(2), std = 0.566
    assert (low[0], high[0]) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-3)


def test_the_yardstick_puts_each_final_reference_next_to_its_bayes_accuracy(tmp_path):
    for seed, ref in enumerate([0.80, 0.84]):
        truth = {"ground_truth/bayes_acc/a": 0.9, "ground_truth/bayes_acc/b": 0.6, "ground_truth/bayes_acc/all": 0.95}
        finals = {"final/ref_acc/a": ref, "final/ref_acc/b": 0.5}
        _job(tmp_path, seed, ["pitfall=none", "query=margin", f"seed={seed}"],
             {**_summary(0.8, 0.1), **truth, **finals}, _records(0.8))
    _job(tmp_path, 2, ["pitfall=none", "query=random", "seed=0"], _summary(0.7, 0.3), _records(0.7))  # no truth
    text = write_report(tmp_path, tmp_path / "report").read_text()
    section = text.split("## The yardstick")[1].split("## Pairwise")[0]
    assert "| default | margin | 0.8200 / 0.9000 | 0.5000 / 0.6000 |" in section
    assert "| default | random |" not in section


def test_each_modality_deficit_aubc_comes_from_the_records_that_have_it(tmp_path):
    for seed, shift in enumerate([0.0, 0.02]):
        records = [{"cycle": c, "n_labeled": 10 * (c + 1), "acc": 0.8, "gap/neglect": 0.1,
                    "deficit/a": 0.5 + 0.2 * c + shift, "deficit/b": 0.6, "ref_acc/a": 0.9} for c in range(3)]
        del records[1]["deficit/a"]  # a cycle without references: the AUBC runs over cycles 0 and 2
        _job(tmp_path, seed, ["query=margin", f"seed={seed}"], _summary(0.8, 0.1), records)
    text = write_report(tmp_path, tmp_path / "report").read_text()
    # AUBC of 0.5, 0.9 on budgets 0, 1 is 0.7 (0.72 with the shift): mean 0.71, std 0.0141
    assert "| setting | strategy | deficit/a | deficit/b | ref_acc/a |" in text
    assert "| default | margin | 0.7100 ± 0.0141 | 0.6000 ± 0.0000 | 0.9000 ± 0.0000 |" in text


def test_crossing_balance_with_strategies_ranks_pairs_and_finds_pairs_that_beat_both_best_baselines(tmp_path):
    """Two sweeps of two experiments under one directory, which must not mix though both set pitfall=none;
    accuracies by construction: with `none`, margin
    (0.80) beats random (0.70); `ogm` adds 0.05 to random and 0.10 to margin; `pmr` changes nothing."""
    noise = [0.003, -0.002, 0.001, -0.004, 0.002]
    gain = {("none", "random"): 0.0, ("none", "margin"): 0.0, ("ogm", "random"): 0.05, ("ogm", "margin"): 0.10,
            ("pmr", "random"): 0.0, ("pmr", "margin"): 0.0}
    num = 0
    for sweep, extra in (("synthetic", ["+experiment=study"]), ("mfeat", ["+experiment=study_mfeat"])):
        for (balance, query), plus in gain.items():
            for seed in range(5):
                acc = {"random": 0.70, "margin": 0.80}[query] + plus + noise[seed] * (1 + (balance == "pmr"))
                overrides = [*extra, f"balance={balance}", "pitfall=none", f"query={query}", f"seed={seed}"]
                _job(tmp_path / sweep, num, overrides, _summary(acc, 0.1), _records(acc))
                num += 1
    text = write_report(tmp_path, tmp_path / "report", cross="balance").read_text()
    section = text.split("## `balance` × strategy")[1].split("## Each modality")[0]
    table = section.split("**+experiment=study_mfeat, `aubc/acc`**")[1]
    assert "| balance | margin | random |" in table
    assert "| none | 0.8000 (1) | 0.7000 (2) |" in table  # the baseline row: means and ranks only
    assert "| ogm | 0.9000 (1)<br>**+0.1000 ± 0.0000** | 0.7500 (2)<br>**+0.0500 ± 0.0000** |" in table
    assert "| pmr | 0.8000 (1)<br>+0.0000 ± 0.0036 | 0.7000 (2)<br>+0.0000 ± 0.0036 |" in table  # t(4) sd / sqrt 5
    assert ("Best pair: ogm + margin; within noise of it: 1 of 6 pairs. Best strategy with `none`: margin; best "
            "method with random sampling: ogm. Pairs significantly better than both: ogm + margin.") in table
    assert section.count("**+experiment=study, `aubc/acc`**") == 1  # pitfall=none, shared by all, left out
    across = section.split("**Across the 2 settings, `aubc/acc`**")[1]
    assert "| none | 0 of 2 | 0 of 2 |" in across and "| ogm | 2 of 2 | 0 of 2 |" in across
    with pytest.raises(ValueError, match=r"--cross='fusion': not a key the sweep's jobs set, which are "
                                         r"\['balance', 'pitfall'\]"):
        write_report(tmp_path, tmp_path / "nope", cross="fusion")

    # The same numbers, as the statistics give them to the report to format.
    numbers = cross_tables(load_jobs(tmp_path), "balance", 0.05, "none")["+experiment=study_mfeat"]["aubc/acc"]
    assert numbers.values == ["none", "ogm", "pmr"] and numbers.ranks[("ogm", "random")] == 2
    ogm = numbers.against_baseline[("ogm", "margin")]
    assert ogm.mean == pytest.approx(0.1) and ogm.seeds == 5 and ogm.verdict == 1
    assert (numbers.best, numbers.best_plain, numbers.best_random) == (("ogm", "margin"), ("none", "margin"),
                                                                       ("ogm", "random"))
    assert numbers.winners == [("ogm", "margin")]


def test_crossing_a_sweep_where_a_setting_has_no_gap_ensemble_reports_what_exists(tmp_path, capsys):
    """A real sweep: balance=none,ogm_ge x diagnostics.every=0,1. Jobs with every=0 train no references, so their
    summaries have no gap/ensemble; crossing either key reports the numbers the other jobs have."""
    base = [o for o in TINY if not o.startswith("diagnostics.every")]
    gap = {}
    for num, (balance, every) in enumerate([("none", 0), ("ogm_ge", 0), ("none", 1), ("ogm_ge", 1)]):
        overrides = [f"balance={balance}", f"diagnostics.every={every}", "query=random", "seed=0"]
        summary = run(compose_config([*base, "al.cycles=1", *overrides]), tmp_path / "sweep" / str(num),
                      provenance={"overrides.yaml": yaml.safe_dump(overrides)})
        assert ("aubc/gap_ensemble" in summary) == (every == 1)
        gap[balance, every] = summary.get("aubc/gap_ensemble")

    main([str(tmp_path / "sweep"), "--out", str(tmp_path / "report"), "--cross", "balance"])
    section = capsys.readouterr().out.split("## `balance` × strategy")[1].split("## Neglect")[0]
    settings = section.split("**Across")[0]
    assert settings.count("| balance | random |") == 3  # accuracy for both settings, gap/ensemble for every=1
    assert ("**diagnostics.every=0, `aubc/gap_ensemble`** (lower is better)\n\n"
            "No job of this setting has `aubc/gap_ensemble`.") in section
    table = section.split("**diagnostics.every=1, `aubc/gap_ensemble`**")[1].split("**")[0]
    assert f"| none | {gap['none', 1]:.4f} (1) |" in table
    assert f"| ogm_ge | {gap['ogm_ge', 1]:.4f} (1)<br>{gap['ogm_ge', 1] - gap['none', 1]:+.4f} ± nan |" in table
    across = section.split("**Across the 1 settings, `aubc/gap_ensemble`**")[1]
    assert "| none | 1 of 1 |" in across and "| ogm_ge | 1 of 1 |" in across

    # Crossed with diagnostics.every itself: its every=0 row has no gap/ensemble, an empty cell.
    text = write_report(tmp_path / "sweep", tmp_path / "by_every", cross="diagnostics.every").read_text()
    table = text.split("**balance=ogm_ge, `aubc/gap_ensemble`**")[1].split("Best pair")[0]
    assert f"| 0 | — |\n| 1 | {gap['ogm_ge', 1]:.4f} (1) |" in table
    tables = cross_tables(load_jobs(tmp_path / "sweep"), "balance", 0.05, "none")
    assert tables["diagnostics.every=0"]["aubc/gap_ensemble"] is None
    assert tables["diagnostics.every=1"]["aubc/gap_ensemble"].means == {
        ("none", "random"): gap["none", 1], ("ogm_ge", "random"): gap["ogm_ge", 1]}


def _gap_sweep(sweep, gaps, extra=()):
    """Jobs of one setting, one per seed, whose aubc/gap_ensemble (and final) are ``gaps``; each record has a
    bootstrap interval of width 0.02."""
    for seed, gap in enumerate(gaps):
        records = [{"cycle": 0, "n_labeled": 20, "acc": 0.8, "gap/ensemble": gap, "ci_lo/gap/ensemble": gap - 0.01,
                    "ci_hi/gap/ensemble": gap + 0.01}]
        summary = {**_summary(0.8, 0.1), "aubc/gap_ensemble": gap, "final/gap/ensemble": gap,
                   "masked_in_distribution": True}
        _job(sweep, seed, ["pitfall=competition", "query=random", f"seed={seed}", *extra], summary, records)


def test_neglect_table_tests_the_gap_against_zero_across_seeds(tmp_path):
    gaps = [0.04, 0.05, 0.03, 0.045, 0.035]
    _gap_sweep(tmp_path, gaps, ["balance=none"])
    _gap_sweep(tmp_path, [-g for g in gaps], ["balance=modality_dropout"])
    text = write_report(tmp_path, tmp_path / "report").read_text()
    section = text.split("## Neglect that costs accuracy")[1].split("## ")[0]
    half = stats.t.ppf(0.975, 4) * np.std(gaps, ddof=1) / np.sqrt(5)
    p = stats.ttest_1samp(gaps, 0.0).pvalue
    assert (f"| balance=none | random | 5 | +0.0400 ± {half:.4f} (p = {p:.3f}) | +0.0400 ± {half:.4f} "
            f"(p = {p:.3f}) | 0.0200 | yes |") in section
    assert f"| balance=modality_dropout | random | 5 | -0.0400 ± {half:.4f} (p = {p:.3f}) |" in section


def test_budget_table_says_which_conclusions_hold_at_twice_the_budget(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    from budget_table import table

    _gap_sweep(tmp_path / "e50", [0.04, 0.05, 0.03, 0.045, 0.035], ["balance=none"])
    _gap_sweep(tmp_path / "e50", [0.0, 0.01, -0.01, 0.005, -0.005], ["balance=ogm_ge"])
    _gap_sweep(tmp_path / "e100", [0.03, 0.04, 0.05, 0.035, 0.045], ["balance=none"])  # none only, as in the study
    rows = table([("50", tmp_path / "e50"), ("100", tmp_path / "e100")], ("aubc/gap_ensemble",), ["balance=none"])
    assert len(rows) == 3  # header, rule, and the one setting both budgets ran
    assert rows[2].startswith("| default | random | +0.0400 ± ")  # every kept job shares the pitfall
    assert rows[2].count(" + |") == 2 and rows[2].endswith("| yes |")  # significantly above 0 at both
    rows = table([("50", tmp_path / "e50"), ("100", tmp_path / "e100")], ("aubc/gap_ensemble",))
    assert rows[2:] == []  # without --where the settings differ (balance varies at 50 epochs only)


# Imports every module of the report and writes one; prints matplotlib's backend and whether pyplot was loaded.
BACKEND_PROBE = """
import importlib, pkgutil, sys
from pathlib import Path
import matplotlib
import mmal.aggregate
for module in pkgutil.iter_modules(getattr(mmal.aggregate, "__path__", []), "mmal.aggregate."):
    if not module.name.endswith("__main__"):  # that one runs the command
        importlib.import_module(module.name)
print("imported", "matplotlib.pyplot" in sys.modules, matplotlib.get_backend())
mmal.aggregate.write_report(Path(sys.argv[1]), Path(sys.argv[2]))
print("reported", "matplotlib.pyplot" in sys.modules, matplotlib.get_backend())
"""


def test_the_report_neither_sets_a_matplotlib_backend_nor_loads_pyplot(tmp_path):
    """A notebook or script that imports the report keeps its own backend (here MPLBACKEND=svg)."""
    _job(tmp_path / "sweep", 0, ["query=random", "seed=0"], _summary(0.8, 0.1), _records(0.8))
    result = subprocess.run([sys.executable, "-c", BACKEND_PROBE, str(tmp_path / "sweep"), str(tmp_path / "report")],
                            cwd=tmp_path, env={**os.environ, "MPLBACKEND": "svg"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["imported False svg", "reported False svg"]
    assert (tmp_path / "report" / "penalty_aubc_acc.png").exists()


def test_python_dash_m_mmal_aggregate_writes_the_report(tmp_path):
    _job(tmp_path / "sweep", 0, ["query=random", "seed=0"], _summary(0.8, 0.1), _records(0.8))
    result = subprocess.run([sys.executable, "-m", "mmal.aggregate", str(tmp_path / "sweep"), "--out",
                             str(tmp_path / "report")], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 finished jobs, 0 missing, crashed or unfinished." in result.stdout
    assert (tmp_path / "report" / "curves_default.png").exists()


def test_remedy_pairs_compares_every_training_and_strategy_with_the_reference_pair_and_badge(tmp_path):
    """scripts/remedy_pairs.py on accuracies set by construction: with modality dropout BADGE gains 0.05 and
    ensemble_badge 0.06; a run with the auxiliary heads is its own training (``+heads``) in the same setting."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from remedy_pairs import against_table, pairs_by_setting, short, table

    noise = [0.003, -0.002, 0.001, -0.004, 0.002]
    acc = {("none", "badge", ()): 0.70, ("none", "ensemble_badge", ()): 0.70,
           ("modality_dropout", "badge", ()): 0.75, ("modality_dropout", "ensemble_badge", ()): 0.76,
           ("mmpareto", "badge", ("model.aux_heads=True",)): 0.72}
    num = 0
    for (balance, query, extra), value in acc.items():
        for seed in range(5):
            overrides = ["+experiment=remedy_study", "pitfall=competition", "dataset.num_classes=10",
                         f"balance={balance}", *extra, f"query={query}", f"seed={seed}", "trainer.num_threads=1"]
            sweep = tmp_path / ("heads" if extra else "plain")
            _job(sweep, num, overrides, _summary(value + noise[seed] * (query == "ensemble_badge"), 0.01))
            num += 1
    by_setting = pairs_by_setting(tmp_path)
    (setting, pairs), = by_setting.items()  # one setting: the heads do not make another
    assert short(setting) == "synthetic, competition, 10 classes"
    assert sorted(pairs) == ["mmpareto+heads+badge", "modality_dropout+badge", "modality_dropout+ensemble_badge",
                             "none+badge", "none+ensemble_badge"]
    rows = table(pairs, "modality_dropout+badge", "badge")
    assert rows[2].startswith("| modality_dropout+ensemble_badge | 5 | 0.7600 | +0.0100 | **+0.0100 ± 0.0036**")
    assert rows[3] == "| modality_dropout+badge | 5 | 0.7500 | +0.0100 |  |  |  |"
    assert rows[4].startswith("| mmpareto+heads+badge | 5 | 0.7200 | +0.0100 | *-0.0300 ± 0.0000* (p = 0.000)")
    across = against_table(by_setting, "badge")
    assert "| modality_dropout+ensemble_badge | **+0.0100 ± 0.0036** |" in across
    assert "| none+ensemble_badge | +0.0000 ± 0.0036 |" in across
