"""The W&B sink on real offline W&B runs, read back from the run log wandb writes (no mocks of wandb)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import wandb
from conftest import ROOT, TINY, compose_config
from PIL import Image

from mmal.checkpoint import load_state
from mmal.log import WandbSink, kept_steps, read_jsonl
from mmal.train import run

WANDB = [*TINY, "al.cycles=1", "trainer.epochs=1", "logger=wandb", "logger.mode=offline"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """An empty home and working directory and no WANDB_* variables, so a file wandb leaves there shows."""
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    (tmp_path / "home").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home"


def read_wandb_run(run_dir: Path) -> dict[str, Any]:
    """The one offline W&B run in ``run_dir`` (``read_wandb_log``)."""
    (log_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    return read_wandb_log(log_file)


def read_wandb_log(log_file: Path) -> dict[str, Any]:
    """An offline W&B run's ``.wandb`` log as ``wandb leet inspect --json`` prints it (one JSON record per line):
    the run record, history rows, config, summary, exit code, files folder."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log_file)],
                         capture_output=True, text=True, check=True).stdout
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    runs = [r["run"] for r in records if r["type"] == "run"]
    assert len(runs) == 1, f"{log_file} holds {len(runs)} run records; wandb sync refuses a log without one"
    (run_record,) = runs
    config, summary = dict(run_record["config"]["update"]), {}
    for r in records:
        config.update(r["config"]["update"] if r["type"] == "config" else {})
        summary.update(r["summary"].get("update", {}) if r["type"] == "summary" else {})
    exits = [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"]
    return {"run": run_record, "config": config, "summary": summary, "exit_code": exits[0] if exits else None,
            "history": [r["history"]["item"] for r in records if r["type"] == "history"],
            "files": log_file.parent / "files"}


def mmal_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mmal" and r.levelno >= logging.WARNING]


def test_an_offline_run_holds_every_cycle_the_config_and_summary_and_stays_in_the_run_dir(tmp_path, home, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Image.new("RGB", (8, 8)).save(run_dir / "planted.png")  # a plot, whatever the loop itself draws
    summary = run(compose_config([*WANDB, "logger.tags=[a,b]"]), run_dir, "entropy-none-s0", "sweep-1")

    assert not mmal_warnings(caplog)
    assert not [p for p in home.rglob("*") if "wandb" in p.name], "wandb wrote into the home directory"
    assert not any(Path.cwd().iterdir()), "wandb wrote into the working directory"
    assert not [k for k in os.environ if k.startswith("WANDB_")], "the sink left WANDB_* variables set"

    wb = read_wandb_run(run_dir)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert len(wb["history"]) == len(records) == 2
    for row, record in zip(wb["history"], records):
        for key in ("cycle", "n_labeled", "acc", "macro_f1"):
            assert row[key] == record[key], key
        for key, value in record.items():  # query/class_hist: one scalar per class
            if isinstance(value, list):
                assert [row[f"{key}/{c}"] for c in range(len(value))] == value
    assert wb["run"]["display_name"] == "entropy-none-s0"
    assert wb["run"]["run_group"] == "sweep-1"
    assert wb["run"]["tags"] == ["a", "b"]
    assert wb["config"]["al"] == {"initial_size": 20, "query_size": 10, "cycles": 1, "warm_start": False}
    assert wb["config"]["logger"]["mode"] == "offline"
    assert wb["summary"]["final/acc"] == json.loads((run_dir / "summary.json").read_text())["final/acc"]
    assert wb["summary"]["final/acc"] == summary["final/acc"]
    assert wb["summary"]["aubc/acc"] == summary["aubc/acc"]
    assert wb["exit_code"] == 0
    pngs = {p.stem for p in run_dir.glob("*.png")}
    assert "planted" in pngs
    assert {k.split(".")[0] for k in wb["history"][-1] if k.startswith("plots/")} == {f"plots/{s}" for s in pngs}
    assert wb["history"][-1]["plots/planted._type"] == "image-file"


def test_lists_become_one_scalar_per_class_and_per_modality_metrics_become_line_charts(tmp_path):
    records = [
        {"cycle": 0, "n_labeled": 20, "acc": 0.5, "repr_acc/a": 0.6, "repr_acc/b": 0.4, "query/class_hist": [3, 7]},
        {"cycle": 1, "n_labeled": 30, "acc": 0.7, "repr_acc/a": 0.8, "repr_acc/b": 0.45},
    ]
    sink = WandbSink(mode="offline", project="unit", job_type="test", notes="a note")
    sink.start(tmp_path, {"seed": 3}, "direct", None)
    for record in records:
        sink.log(record)
    sink.finish({"final/acc": 0.7}, records)
    wb = read_wandb_run(tmp_path)

    assert [row["acc"] for row in wb["history"]] == [0.5, 0.7]
    assert (wb["history"][0]["query/class_hist/0"], wb["history"][0]["query/class_hist/1"]) == (3, 7)
    assert "run_group" not in wb["run"] and wb["run"]["job_type"] == "test" and wb["run"]["notes"] == "a note"
    assert wb["config"]["seed"] == 3 and wb["summary"]["final/acc"] == 0.7

    chart = wb["config"]["_wandb.visualize.charts/repr_acc"]["panel_config"]
    assert chart["panelDefId"] == "wandb/lineseries/v0"
    assert chart["stringSettings"] == {"title": "probe accuracy per modality vs labeled samples", "xname": "n_labeled"}
    assert not [k for k in wb["config"] if k.startswith("_wandb.visualize.charts/shapley")]  # no shapley/ metrics
    last = wb["history"][-1]
    points = json.loads((wb["files"] / last["charts/repr_acc_table.path"]).read_text())
    assert sorted(map(tuple, points["data"])) == [(20, "a", 0.6), (20, "b", 0.4), (30, "a", 0.8), (30, "b", 0.45)]
    table = json.loads((wb["files"] / last["cycle_table.path"]).read_text())
    assert table["columns"][:3] == ["cycle", "n_labeled", "acc"]
    assert [dict(zip(table["columns"], row))["query/class_hist/1"] for row in table["data"]] == [7, None]


def test_the_headline_and_its_interval_are_logged_every_cycle_and_charted_together(tmp_path):
    records = [
        {"cycle": 0, "n_labeled": 20, "acc": 0.5, "gap/ensemble": 0.02, "ci_lo/gap/ensemble": -0.01,
         "ci_hi/gap/ensemble": 0.05},
        {"cycle": 1, "n_labeled": 30, "acc": 0.7, "gap/ensemble": -0.03, "ci_lo/gap/ensemble": -0.06,
         "ci_hi/gap/ensemble": 0.0},
    ]
    sink = WandbSink(mode="offline", project="unit")
    sink.start(tmp_path, {}, "band", None)
    for record in records:
        sink.log(record)
    sink.finish({}, records)
    wb = read_wandb_run(tmp_path)

    for row, record in zip(wb["history"], records):
        for key in ("gap/ensemble", "ci_lo/gap/ensemble", "ci_hi/gap/ensemble"):
            assert row[key] == record[key], key
    points = json.loads((wb["files"] / wb["history"][-1]["charts/gap/ensemble_table.path"]).read_text())
    assert sorted(map(tuple, points["data"])) == [
        (20, "ci_hi/gap/ensemble", 0.05), (20, "ci_lo/gap/ensemble", -0.01), (20, "gap/ensemble", 0.02),
        (30, "ci_hi/gap/ensemble", 0.0), (30, "ci_lo/gap/ensemble", -0.06), (30, "gap/ensemble", -0.03)]


def test_runs_one_after_another_in_one_process_are_separate_wandb_runs(tmp_path):
    first, second = tmp_path / "job0", tmp_path / "job1"  # as a Hydra multirun runs its jobs
    run(compose_config(WANDB), first, "first", "sweep")
    run(compose_config([*WANDB, "al.cycles=2"]), second, "second", "sweep")

    a, b = read_wandb_run(first), read_wandb_run(second)
    assert a["run"]["run_id"] != b["run"]["run_id"]
    assert (a["run"]["display_name"], b["run"]["display_name"]) == ("first", "second")
    for wb, run_dir, n_labeled in ((a, first, [20, 30]), (b, second, [20, 30, 40])):
        records = read_jsonl(run_dir / "metrics.jsonl")
        assert [row["n_labeled"] for row in wb["history"]] == [r["n_labeled"] for r in records] == n_labeled
        assert [row["acc"] for row in wb["history"]] == [r["acc"] for r in records]
        assert wb["exit_code"] == 0


def test_a_run_left_open_does_not_swallow_the_next_jobs_run(tmp_path):
    # The stacked launcher keeps many jobs' runs open at once in one process: a run still open (here: a job that
    # has not finished) must not be handed to the next job, nor be finished by it.
    open_run = WandbSink(mode="offline")
    open_run.start(tmp_path / "open", {}, "open", "sweep")
    open_run.log({"cycle": 0, "n_labeled": 20, "acc": 0.5})
    run(compose_config(WANDB), tmp_path / "next", "next", "sweep")

    b = read_wandb_run(tmp_path / "next")
    assert b["run"]["display_name"] == "next" and b["exit_code"] == 0
    assert [row["n_labeled"] for row in b["history"]] == [20, 30]
    assert open_run.run is not None
    open_run.abort()  # what mmal does when a job fails
    a = read_wandb_run(tmp_path / "open")
    assert [row["acc"] for row in a["history"]] == [0.5] and a["exit_code"] == 1


@pytest.mark.parametrize("mode", ["bogus", "online"])  # online: no API key in the empty home
def test_wandb_that_cannot_start_warns_once_and_the_run_carries_on(mode, tmp_path, caplog):
    summary = run(compose_config([*WANDB, f"logger.mode={mode}"]), tmp_path, "broken", None)

    (warning,) = mmal_warnings(caplog)
    assert "W&B init failed" in warning
    assert ("bogus" if mode == "bogus" else "API key") in warning
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert not [k for k in os.environ if k.startswith("WANDB_")]


def test_an_error_inside_wandb_warns_once_closes_the_wandb_run_and_the_run_carries_on(tmp_path, caplog, monkeypatch):
    def broken_log(self, *args, **kwargs):
        raise RuntimeError("wandb broke")

    monkeypatch.setattr(wandb.Run, "log", broken_log)
    summary = run(compose_config(WANDB), tmp_path, "broken", None)

    (warning,) = mmal_warnings(caplog)
    assert "W&B log failed" in warning and "RuntimeError: wandb broke" in warning
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    wb = read_wandb_run(tmp_path)
    assert wb["history"] == [] and wb["exit_code"] == 1  # closed as failed, not left open


def test_a_balancing_methods_state_reaches_wandb_as_curves_and_its_plot(tmp_path):
    run(compose_config([*WANDB, "balance=ogm_ge"]), tmp_path)
    wb = read_wandb_run(tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    for row, record in zip(wb["history"], records):
        for key in ("balance/ogm_coeff/a", "balance/ogm_ratio/b"):
            assert row[key] == record[key], key
    assert wb["history"][-1]["plots/balance._type"] == "image-file"



# mmal.train, SIGKILLed at one point as a kill from outside could be at any moment: right after cycle 1's state is
# saved, or after the W&B run has finished but before the final state (the one with the summary) is saved.
KILLED_RUN = """
import os, runpy, signal, sys
import mmal.loop
from mmal.checkpoint import save_state
when = sys.argv.pop(1)

def save_state_then_die(run_dir, state):
    if when == "before the final state" and state.finished:
        os.kill(os.getpid(), signal.SIGKILL)
    save_state(run_dir, state)
    if when == "after cycle 1" and state.cycle == 1:
        os.kill(os.getpid(), signal.SIGKILL)

mmal.loop.save_state = save_state_then_die
runpy.run_module("mmal.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after cycle 1", "before the final state"])
def test_a_killed_and_resumed_run_syncs_to_one_history_with_every_cycle_once(when, tmp_path):
    run_dir, args = tmp_path / "run", [o for o in WANDB if not o.startswith("al.cycles")] + ["al.cycles=3"]
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, when, *args, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    summary = run(compose_config(args), run_dir)  # resumed: the same W&B run id, a second offline directory
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 2

    # `wandb sync <run dir>/wandb` syncs every run-*.wandb there, a run's one after the other in the order of their
    # starts: their rows, in that order, are the run's history. (A start that kept nothing has no such file left.)
    parts = [read_wandb_log(f) for f in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))]
    assert {part["run"]["run_id"] for part in parts} == {load_state(run_dir).run_id}
    rows = [row for part in parts for row in part["history"]]
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [row["_step"] for row in rows] == [r["cycle"] for r in records] == [0, 1, 2, 3]  # every cycle, once
    for row, record in zip(rows, records):
        assert (row["n_labeled"], row["acc"]) == (record["n_labeled"], record["acc"])
    assert [row["_step"] for row in rows if any(k.startswith("plots/") for k in row)] == [3]  # the plots, once
    assert parts[-1]["exit_code"] == 0 and parts[-1]["summary"]["final/acc"] == summary["final/acc"]


@pytest.mark.parametrize("steps", [0, 2, 400], ids=["nothing", "two rows", "rows past a block"])
def test_the_steps_a_killed_start_kept_are_read_from_its_log_and_a_log_that_kept_nothing_is_moved_aside(
        steps, tmp_path):
    dead = WandbSink(mode="offline")
    dead.start(tmp_path, {}, "dead", None)
    for step in range(steps):
        dead.log({"cycle": step, "n_labeled": step, "acc": 0.5, "padding": "x" * 200})
    dead.run.finish()  # the whole log; a killed start leaves what wandb had written of it by then:
    dead._close()
    (log_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # its 7-byte header alone; or the log but the last bytes; or its first 32 KiB block (wandb writes whole blocks)
    log_file.write_bytes(log_file.read_bytes()[:{0: 7, 2: -5, 400: 32 * 1024}[steps]])
    written = [row["_step"] for row in read_wandb_log(log_file)["history"]] if steps else []

    assert kept_steps(tmp_path, dead.run_id) == written == list(range(len(written)))
    assert {0: 0, 2: 2, 400: 10}[steps] <= len(written) <= steps
    assert log_file.exists() == bool(steps) and log_file.with_name(log_file.name + ".empty").exists() == (not steps)
