"""mmal's Hydra sweeper (``hydra/sweeper: mmal`` in ``conf/config.yaml``): Hydra's basic sweeper, which
before launching a batch of jobs has mmal check every one of them (``mmal.sweep.check_jobs``), and which ends
every sweep with a closing summary. A grid with a bad job starts no job, and the refusal lists every bad job,
one line each (exit status 2); a sweep of valid jobs runs as with the basic sweeper, whatever the launcher, and
ends with one line that counts the jobs finished, failed and refused, then one line per job that did not finish
with its directory and error (exit status 1 when there is one). Hydra finds sweepers only in the
``hydra_plugins`` package, hence this module."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger("mmal")


class CheckedSweeper(BasicSweeper):
    """``BasicSweeper`` (same arguments, same order of jobs) that refuses a batch with any bad job before
    launching it; with ``max_batch_size: null`` (the default) the batch is the whole grid."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._next_job = 0  # the number of the batch's first job, as the launcher will number it
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        """``BasicSweeper.sweep``, except at a failed job: the basic sweeper raises its error once the job's batch
        has run and launches no further batch; this one runs every batch, then closes with ``report``."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides([*self._parse_config(), *arguments]),
                                              self.max_batch_size)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # Hydra's record of the grid (mmal-aggregate)
        returns = []
        while not self.is_done():
            batch = self.get_job_batch()
            first = self._next_job
            self.validate_batch_is_legal(batch)
            if hasattr(self.launcher, "take_configs"):  # the stacked launcher: no second composition per job
                self.launcher.take_configs(self._composed)
            try:
                returns.append(self.launcher.launch(batch, initial_job_idx=first))
            except Exception as err:  # e.g. submitit's UncompletedJobError: a Slurm job cancelled or killed
                log.error("sweep stopped: the launcher failed on jobs %d-%d (%s); rerun the same command with "
                          "hydra.sweep.dir=%s: finished jobs return at once, the others resume", first,
                          first + len(batch) - 1, _first_line(err), sweep_dir)
                raise
        report([r for batch in returns for r in batch])
        return returns

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        # here, not at the top: Hydra imports every plugin module at start-up
        from mmal.sweep import check_jobs, task_config

        loader = self.hydra_context.config_loader
        errors, jobs = {}, []  # job number -> error message; the jobs that compose
        self._composed = {}  # overrides -> the job's whole config, for a launcher that takes them
        for num, overrides in enumerate(batch, start=self._next_job):
            try:
                config = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as err:  # a wrong type, an unknown option
                errors[num] = str(err).strip().splitlines()[0]
                continue
            with open_dict(config):
                config.hydra.job.num = num
            self._composed[tuple(overrides)] = config
            run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            jobs.append((num, task_config(config), run_dir))
        errors |= check_jobs(jobs)
        if errors:
            lines = [f"job {num} ({' '.join(batch[num - self._next_job])}): {errors[num]}" for num in sorted(errors)]
            log.error("sweep refused, no job started: %d of %d jobs have config errors\n  %s",
                      len(errors), len(batch), "\n  ".join(lines))
            sys.exit(2)
        self._next_job += len(batch)


def report(results: Sequence[JobReturn]) -> None:
    """Log the sweep's closing lines: how many jobs finished, failed and were refused, then each failed or
    refused job's directory and error; exit with status 1 when any job did not finish, so that a script or a
    Slurm job running the sweep can tell."""
    from mmal.sweep import JobFailed

    unfinished = []  # (outcome, directory, error)
    for result in results:
        if result.status == JobStatus.COMPLETED:
            continue
        err = result._return_value  # the job's exception (the return_value property would raise it)
        if isinstance(err, JobFailed):
            outcome, error = ("refused" if err.refused else "failed"), err.error
        else:  # raised outside mmal's own handling of a job, e.g. while Hydra set it up
            outcome, error = "failed", _first_line(err)
        unfinished.append((outcome, result.hydra_cfg.hydra.runtime.output_dir, error))
    failed = sum(outcome == "failed" for outcome, _, _ in unfinished)
    counts = (f"sweep done: {len(results) - len(unfinished)} of {len(results)} jobs finished, {failed} failed, "
              f"{len(unfinished) - failed} refused")
    if not unfinished:
        log.info("%s", counts)
        return
    log.error("%s (exit status 1)\n  %s", counts,
              "\n  ".join(f"{outcome}: {directory}: {error}" for outcome, directory, error in unfinished))
    sys.exit(1)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
