"""``hydra/launcher=slurm``: its config takes plain overrides, and sweeps run on a real Slurm cluster -- a 2-job
multirun on a single-node cluster started for the test (tests/slurm_cluster.py). Mid-run one job is preempted
(submitit requeues it from its signal handler) and the other is requeued by the cluster (``scontrol requeue``); both
resume after their last complete cycle and end with the results of uninterrupted runs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from slurm_cluster import slurm_cluster, unavailable

from mmal.log import read_jsonl

pytestmark = pytest.mark.xdist_group("slurm")  # one test cluster at a time (pyproject.toml: --dist loadgroup)

# Tiny data, 16 trainings of 300 epochs (0.4-1.5 s each on an idle core): the job the test requeues after two cycles
# keeps running for the 5 s between Slurm's SIGTERM and SIGKILL and must not reach its end before that.
ARGS = [o for o in TINY if not o.startswith(("al.cycles", "trainer.epochs"))] + ["al.cycles=15", "trainer.epochs=300"]
# One CPU and the cluster's default memory per job, so both jobs of the sweep run at once on the 2-CPU node.
LAUNCHER = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
            "hydra.launcher.timeout_min=30"]  # submitit: a USR2 in the first 20 of 30 min is a preemption


def _without_times(record):
    return {k: v for k, v in record.items() if "time/" not in k}


def _job_dirs(sweep: Path) -> dict[int, Path]:
    """The sweep's job directories by seed, from each job's .hydra/overrides.yaml (whatever the subdir name)."""
    jobs = {}
    for overrides in sweep.glob("*/.hydra/overrides.yaml"):
        seed = re.search(r"^- seed=(\d+)$", overrides.read_text(), re.MULTILINE)  # None while Hydra writes it
        if seed:
            jobs[int(seed[1])] = overrides.parent.parent
    return jobs


def _wait_for(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen (sweep exit code {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return found


def _submitit_log(sweep: Path, slurm_id: str) -> str:
    """What submitit logged in the job (its signal handling and requeue), across every run of the job."""
    return "".join(p.read_text() for p in (sweep / ".submitit" / slurm_id).glob("*_log.*"))


def test_slurm_launcher_takes_plain_overrides():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                 "hydra.launcher.gpus_per_node=1", "+hydra.launcher.additional_parameters.mail-type=FAIL"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        launcher = compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 90, 1)
    assert launcher.additional_parameters == {"mail-type": "FAIL"} and launcher.max_num_timeout > 0


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_slurm_sweep_runs_both_jobs_and_requeued_jobs_resume(tmp_path):
    sweep, straight, log = tmp_path / "sweep", tmp_path / "straight", tmp_path / "sweep.log"
    with slurm_cluster() as env, open(log, "w") as out:
        command = [sys.executable, "-m", "mmal.train", "-m", *LAUNCHER, *ARGS, "seed=0,1", f"hydra.sweep.dir={sweep}"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            def two_cycles_done():
                jobs = _job_dirs(sweep)
                metrics = [job / "metrics.jsonl" for job in jobs.values()]
                done = len(jobs) == 2 and all(m.exists() and m.read_text().count("\n") >= 2 for m in metrics)
                return jobs if done else None

            jobs = _wait_for(two_cycles_done, "two cycles of both jobs", proc, log)
            ids = {seed: OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.id for seed, job in jobs.items()}
            # seed 0 is preempted the way submitit's job._interrupt() simulates it: SIGTERM, then the USR2 Slurm
            # sends before a time limit; submitit calls the launcher's checkpoint() and requeues the job itself.
            for sig in ("TERM", "USR2"):
                subprocess.run(["scancel", f"--signal={sig}", ids[0]], env=env, check=True, timeout=30)
            # seed 1 is requeued by the cluster, as an operator or a preempting job would: killed, started again.
            subprocess.run(["scontrol", "requeue", ids[1]], env=env, check=True, capture_output=True, timeout=30)
            assert not any((job / "summary.json").exists() for job in jobs.values()), "a job ended before requeue"

            # The same runs without interruption, here while the sweep goes on; one thread, as the launcher's setup
            # gives a job with one CPU (the thread count can change float sums).
            subprocess.run([sys.executable, "-m", "mmal.train", "-m", *ARGS, "seed=0,1", f"hydra.sweep.dir={straight}"],
                           cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, timeout=300)
            assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
            assert "sweep done: 2 of 2 jobs finished, 0 failed, 0 refused" in log.read_text()
            shown = {seed: subprocess.run(["scontrol", "show", "job", i], env=env, capture_output=True, text=True,
                                          timeout=30).stdout for seed, i in ids.items()}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert "is preempted" in _submitit_log(sweep, ids[0]) and f"Requeued job {ids[0]}" in _submitit_log(sweep, ids[0])
    assert "DUE TO JOB REQUEUE" in _submitit_log(sweep, ids[1])
    jobs, references = _job_dirs(sweep), _job_dirs(straight)
    assert sorted(jobs) == sorted(references) == [0, 1]
    for seed, job in jobs.items():
        # Each job ran twice, the second time resuming after its last complete cycle, and ended where the
        # uninterrupted run ended: the same metrics every cycle and the same summary.
        assert "Restarts=1" in shown[seed]
        assert "resuming after cycle" in (job / "train.log").read_text()
        records = read_jsonl(job / "metrics.jsonl")
        assert [r["n_labeled"] for r in records] == list(range(20, 171, 10))
        assert [_without_times(r) for r in records] == \
            [_without_times(r) for r in read_jsonl(references[seed] / "metrics.jsonl")]
        summary, reference = (json.loads((d / "summary.json").read_text()) for d in (job, references[seed]))
        assert _without_times(summary) == _without_times(reference)
        assert not (job / "error.txt").exists()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_a_slurm_sweep_with_a_failing_job_ends_with_a_summary_and_exit_status_1(tmp_path):
    # lr 1e6 passes every check and diverges in cycle 0 inside its Slurm job; the error comes back through submitit.
    sweep = tmp_path / "sweep"
    args = [o for o in TINY if not o.startswith("al.cycles")] + ["al.cycles=1", "fusion=early", "trainer.lr=1e6,0.001"]
    with slurm_cluster() as env:
        result = subprocess.run([sys.executable, "-m", "mmal.train", "-m", *LAUNCHER, *args, f"hydra.sweep.dir={sweep}",
                                 "hydra.sweep.subdir=${hydra.job.num}"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    closing = output[output.index("sweep done: "):].splitlines()
    assert closing[0] == "sweep done: 1 of 2 jobs finished, 1 failed, 0 refused (exit status 1)"
    assert closing[1].startswith(f"  failed: {sweep / '0'}: DivergenceError: cycle 0: training diverged: non-finite")
    assert len(closing) == 2
    assert (sweep / "0" / "error.txt").exists() and (sweep / "1" / "summary.json").exists()
