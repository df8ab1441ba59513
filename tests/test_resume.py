"""Resume: a run killed with SIGKILL mid-cycle, or after its last cycle, continues from its last complete cycle
to the same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, TINY, compose_config

from mmal.checkpoint import ALState, RunDirectoryError, load_state, locked, save_state
from mmal.log import read_jsonl
from mmal.train import run

ARGS = ["al.cycles=8", "trainer.epochs=150", "trainer.device=cpu", "logger=wandb", "logger.mode=offline"]


def _command(run_dir, args=ARGS):
    return [sys.executable, "-m", "mmal.train", *args, f"hydra.run.dir={run_dir}"]


def _without_times(records):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def _summary(run_dir):
    return _without_times_summary(json.loads((run_dir / "summary.json").read_text()))


def _without_times_summary(summary):
    return {k: v for k, v in summary.items() if "time/" not in k}


@pytest.mark.slow
def test_killed_run_resumes_to_the_results_of_an_uninterrupted_one(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(straight), cwd=ROOT, check=True, capture_output=True)

    proc = subprocess.Popen(_command(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = killed / "metrics.jsonl"
    # Wait for the third cycle however slow the machine is (no deadline: tests must not depend on wall time).
    while proc.poll() is None and not (metrics.exists() and len(read_jsonl(metrics)) >= 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # somewhere inside cycle 3 or 4: training, evaluation or selection
    proc.wait()
    done_before = len(read_jsonl(metrics))
    assert 3 <= done_before < 9 and not (killed / "summary.json").exists()

    result = subprocess.run(_command(killed), cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming after cycle" in result.stderr + result.stdout
    assert _without_times(read_jsonl(metrics)) == _without_times(read_jsonl(straight / "metrics.jsonl"))
    assert _summary(killed) == _summary(straight)

    # The W&B run resumes too: both parts logged into one run id.
    ids = {p.name.rsplit("-", 1)[1] for p in (killed / "wandb").glob("offline-run-*")}
    assert len(list((killed / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1

    # Launching a finished run again does nothing.
    before = metrics.read_text()
    again = subprocess.run(_command(killed), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "already finished" in again.stderr + again.stdout
    assert metrics.read_text() == before


@pytest.mark.slow
def test_a_run_directory_refuses_another_config(tmp_path):
    subprocess.run(_command(tmp_path, ["al.cycles=1", "logger=none"]), cwd=ROOT, check=True, capture_output=True)
    result = subprocess.run(_command(tmp_path, ["al.cycles=2", "logger=none"]), cwd=ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "holds a run of another config (differing: al.cycles)" in result.stderr + result.stdout
    # The refused rerun wrote nothing: the directory still says which config ran in it.
    assert "al.cycles=1" in (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert "cycles: 1" in (tmp_path / ".hydra" / "config.yaml").read_text()
    assert not (tmp_path / "error.txt").exists()
    # A rerun of the same experiment with a setting that does not change results keeps the provenance of
    # the run that owns the directory.
    again = subprocess.run(_command(tmp_path, ["al.cycles=1", "logger=none", "trainer.eval_batch_size=100"]),
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "already finished" in again.stderr + again.stdout
    assert "eval_batch_size" not in (tmp_path / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow
def test_a_run_directory_in_use_is_refused_and_nothing_is_written_into_it(tmp_path):
    run_dir = tmp_path / "run"
    with locked(run_dir):  # as a running mmal process holds it
        result = subprocess.run(_command(run_dir, ["al.cycles=1", "logger=none"]), cwd=ROOT, capture_output=True,
                                text=True)
    assert result.returncode == 2
    assert "is in use by another mmal run" in result.stderr + result.stdout
    assert sorted(p.name for p in run_dir.iterdir() if p.name != "train.log") == [".lock"]
    # Released (as when the other run ends or dies), the directory is free.
    subprocess.run(_command(run_dir, ["al.cycles=1", "logger=none"]), cwd=ROOT, check=True, capture_output=True)
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == 2


def test_the_lock_is_held_for_the_whole_run(tmp_path, monkeypatch):
    seen = []

    def try_to_lock(*args, **kwargs):  # called at the end of the run, while the run still owns the directory
        with pytest.raises(RunDirectoryError, match="is in use"), locked(tmp_path):
            pass
        seen.append(True)

    monkeypatch.setattr("mmal.loop.save_plots", try_to_lock)
    run(compose_config(TINY), tmp_path)
    assert seen == [True]
    with locked(tmp_path):  # and released after it
        pass


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no handler catches it."""


def _die(*args, **kwargs):
    raise Killed


@pytest.mark.parametrize("phase", ["plots", "logger finish", "final state save"])
def test_a_run_killed_after_its_last_cycle_finishes_on_rerun_with_the_same_results(phase, tmp_path, monkeypatch):
    cfg = compose_config([*TINY, "diagnostics.every=1"])
    straight = run(cfg, tmp_path / "straight")
    target = {"plots": ("mmal.loop.save_plots", _die), "logger finish": ("mmal.log.RunLog.finish", _die),
              "final state save": ("mmal.loop.save_state",
                                   lambda run_dir, state: _die() if state.finished else save_state(run_dir, state))}
    name, replacement = target[phase]
    with monkeypatch.context() as patch:
        patch.setattr(name, replacement)
        with pytest.raises(Killed):
            run(cfg, tmp_path / "killed")
    assert load_state(tmp_path / "killed").cycle == 2 and not load_state(tmp_path / "killed").finished

    resumed = run(cfg, tmp_path / "killed")
    assert _without_times_summary(resumed) == _without_times_summary(straight)
    assert _without_times(read_jsonl(tmp_path / "killed" / "metrics.jsonl")) == _without_times(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    assert load_state(tmp_path / "killed").finished
    assert (tmp_path / "killed" / "modality_imbalance.png").exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None], ids=["empty", "garbage", "truncated"])
def test_a_damaged_state_file_is_refused_naming_it(content, tmp_path):
    cfg = compose_config(TINY)
    run(cfg, tmp_path / "done")
    state = tmp_path / "run" / "al_state.pt"
    state.parent.mkdir()
    whole = (tmp_path / "done" / "al_state.pt").read_bytes()
    state.write_bytes(whole[: len(whole) // 2] if content is None else content)
    with pytest.raises(RunDirectoryError, match=r"holds an unreadable al_state.pt .*move it away"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_state_file_is_a_plain_dict_of_the_typed_state_and_reads_back_equal(tmp_path):
    state = ALState(3, torch.tensor([True, False]), {"w": torch.ones(2)}, [{"cycle": 0}], "{}", run_id="abc")
    save_state(tmp_path, state)
    raw = torch.load(tmp_path / "al_state.pt", weights_only=False)  # readable without mmal's class
    assert sorted(raw) == ["cycle", "fingerprint", "labeled", "model", "records", "run_id", "summary"]
    back = load_state(tmp_path)
    assert (back.cycle, back.labeled.tolist(), back.model["w"].tolist(), back.records, back.run_id, back.finished) == \
        (3, [True, False], [1.0, 1.0], [{"cycle": 0}], "abc", False)
    del raw["model"]  # a file of another program, or a torn write of an older format
    torch.save(raw, tmp_path / "al_state.pt")
    with pytest.raises(RunDirectoryError, match="holds a al_state.pt that is no mmal AL state"):
        load_state(tmp_path)
