"""The stacked launcher (hydra/launcher=stacked) end to end on the command line: every job's metrics bitwise
those of the joblib launcher, a balancing method's job beside the stack, one W&B run per job, and a killed
sweep that resumes every unfinished job on rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from mmal.log import log_records, read_jsonl

# Two strategies (bald draws MC dropout from the global generator), two seeds, a balancing method whose fused
# model trains alone beside the stack; references every cycle, so each job stacks three models.
GRID = ["query=random,bald", "seed=0,1", "balance=none,ogm_ge"]
SMALL = ["dataset.num_samples=300", "dataset.num_val=50", "dataset.num_test=200", "dataset.bayes_samples=1000",
         "al.initial_size=20", "al.query_size=10", "al.cycles=2", "trainer.epochs=4", "trainer.device=cpu",
         "model.encoder.dropout=0.2", "logger=none", "hydra.sweep.subdir=${hydra.job.num}"]


def _sweep(sweep_dir: Path, launcher: list[str], extra: list[str] = (), **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return subprocess.Popen([sys.executable, "-m", "mmal.train", "-m", *launcher, *GRID, *SMALL, *extra,
                             f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate()
    assert process.returncode == 0, output
    return output


def _metrics(sweep_dir: Path) -> dict[str, list[dict]]:
    """Each job's records without their timings (a stacked job's clock also runs while others work)."""
    return {job.name: [{k: v for k, v in r.items() if not k.startswith("time/")}
                       for r in read_jsonl(job / "metrics.jsonl")] for job in sorted(sweep_dir.iterdir())
            if job.is_dir()}


@pytest.fixture(scope="module")
def joblib_dir(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("joblib")
    _finish(_sweep(sweep_dir, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]))
    return sweep_dir


@pytest.fixture(scope="module")
def joblib_sweep(joblib_dir) -> dict[str, list[dict]]:
    return _metrics(joblib_dir)


@pytest.mark.slow
def test_every_job_of_a_stacked_sweep_has_the_metrics_of_the_joblib_launcher(joblib_sweep, joblib_dir, tmp_path):
    output = _finish(_sweep(tmp_path, ["hydra/launcher=stacked", "hydra.launcher.n_jobs=2"]))
    assert "stacked launcher: 8 jobs in 2 process(es), 1 trainer setting(s)" in output
    assert "sweep done: 8 of 8 jobs finished, 0 failed, 0 refused" in output
    stacked = _metrics(tmp_path)
    assert sorted(stacked) == [str(i) for i in range(8)]
    assert stacked == joblib_sweep
    assert len({json.dumps(records) for records in stacked.values()}) == 8  # eight different runs
    for job in range(8):  # the configs the sweeper composed to check them, not composed again: the same
        for provenance in ("config.yaml", "overrides.yaml"):
            assert ((tmp_path / str(job) / ".hydra" / provenance).read_text()
                    == (joblib_dir / str(job) / ".hydra" / provenance).read_text())
    for job in range(8):  # each job logs to its own file; every model stacks, a balanced job's fused model too
        log = (tmp_path / str(job) / "train.log").read_text()
        assert log.count("cycle 2/2") == 1 and "final acc" in log
        assert "trains alone" not in log
        assert not list((tmp_path / str(job)).glob("*.png"))  # a sweep's jobs draw no figures unless asked


@pytest.mark.slow
def test_a_killed_stacked_sweep_resumes_every_unfinished_job_on_rerun(joblib_sweep, tmp_path):
    # One process, longer trainings, so that the kill lands while every job is between its first and last cycle
    process = _sweep(tmp_path, ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"], start_new_session=True)
    first = tmp_path / "0" / "metrics.jsonl"
    while process.poll() is None and not (first.exists() and len(first.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    unfinished = [job for job in range(8) if not (tmp_path / str(job) / "summary.json").exists()]
    assert unfinished, "the sweep ended before the kill; nothing was left to resume"
    output = _finish(_sweep(tmp_path, ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"]))
    assert output.count("resuming after cycle") >= 1
    assert _metrics(tmp_path) == joblib_sweep


@pytest.mark.slow
def test_each_job_of_a_stacked_sweep_is_its_own_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    process = _sweep(tmp_path / "sweep", ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"],
                     ["logger=wandb", "logger.mode=offline", "seed=0", "balance=none"])
    _finish(process)
    runs = {}
    for job in sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir()):
        (log_file,) = job.glob("wandb/offline-run-*/run-*.wandb")
        records = list(log_records(log_file))
        steps = [r.history.step.num for r in records if r.HasField("history")]
        assert steps == [0, 1, 2], job  # every cycle once, in this job's run only
        config = next(r.run.config for r in records if r.HasField("run"))
        query = next(json.loads(item.value_json) for item in config.update if item.key == "query")
        runs[log_file.parent.name.rsplit("-", 1)[1]] = query["_target_"]
    assert len(runs) == 2 and len(set(runs.values())) == 2  # two runs, one per job, each with its own config
    assert not list(tmp_path.glob("wandb")) and not list((tmp_path / ".cache").glob("wandb*"))


def test_the_launcher_runs_the_configs_the_sweeper_composed_without_composing_them_again(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from hydra_plugins.mmal_launcher.stacked_launcher import StackedLauncher

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        config = compose("config", overrides=["seed=3", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=job"],
                         return_hydra_config=True)
    launcher = StackedLauncher()  # no Hydra context: composing a job would fail
    launcher.take_configs({("seed=3",): config})
    try:
        job = launcher._job(5, ["seed=3"])
    finally:
        HydraConfig.instance().cfg = None
    assert job.config is config and job.num == 5 and job.config.hydra.job.num == 5
    assert job.config.hydra.runtime.output_dir == str(tmp_path / "job")
    with pytest.raises(AttributeError):  # a job the sweeper did not compose is composed here
        launcher._job(6, ["seed=4"])


@pytest.mark.slow
def test_a_stacked_job_whose_models_train_alone_says_so_in_its_own_log_naming_itself(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    short = [*(o for o in SMALL if not o.startswith(("al.cycles=", "trainer.epochs="))), "al.cycles=1",
             "trainer.epochs=2"]
    result = subprocess.run([sys.executable, "-m", "mmal.train", "-m", "hydra/launcher=stacked",
                             "hydra.launcher.n_jobs=1", "seed=0,1", "trainer.optimizer._target_=torch.optim.NAdam",
                             *short, "plots=true", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    why = ("trains alone, not stacked with other models: the fused model, the unimodal reference of a, the unimodal "
           "reference of b: the optimizer NAdam is not one that stacks")
    for job in (0, 1):
        log = (tmp_path / str(job) / "train.log").read_text()
        assert log.count("trains alone") == 1, log  # once, though both cycles train them alone
        assert f"job #{job} (seed={job} trainer.optimizer._target_=torch.optim.NAdam " in log and why in log
        assert f"job #{1 - job} " not in log
        # plots=true: a sweep's job draws its figures as a single run does
        assert {p.name for p in (tmp_path / str(job)).glob("*.png")} == {"learning_curve.png", "modality_imbalance.png"}
