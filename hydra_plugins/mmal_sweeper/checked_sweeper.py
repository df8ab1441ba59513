"""mmal's Hydra sweeper (``hydra/sweeper: mmal`` in ``conf/config.yaml``): Hydra's basic sweeper, which
before launching a batch of jobs has mmal check every one of them (``mmal.sweep.check_jobs``). A grid with
a bad job starts no job, and the refusal lists every bad job, one line each; a sweep of valid jobs runs as
with the basic sweeper. Hydra finds sweepers only in the ``hydra_plugins`` package, hence this module."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.errors import HydraException
from omegaconf import open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger("mmal")


class CheckedSweeper(BasicSweeper):
    """``BasicSweeper`` (same arguments, same order of jobs) that refuses a batch with any bad job before
    launching it; with ``max_batch_size: null`` (the default) the batch is the whole grid."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self._next_job = 0  # the number of the batch's first job, as the launcher will number it

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from mmal.sweep import check_jobs  # here, not at the top: Hydra imports every plugin module at start-up

        loader = self.hydra_context.config_loader
        errors, jobs = {}, []  # job number -> error message; the jobs that compose
        for num, overrides in enumerate(batch, start=self._next_job):
            try:
                config = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as err:  # a wrong type, an unknown option
                errors[num] = str(err).strip().splitlines()[0]
                continue
            with open_dict(config):
                config.hydra.job.num = num
            run_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
            task = copy.deepcopy(config)
            with read_write(task), open_dict(task):
                del task["hydra"]
            jobs.append((num, task, run_dir))
        errors |= check_jobs(jobs)
        if errors:
            lines = [f"job {num} ({' '.join(batch[num - self._next_job])}): {errors[num]}" for num in sorted(errors)]
            log.error("sweep refused, no job started: %d of %d jobs have config errors\n  %s",
                      len(errors), len(batch), "\n  ".join(lines))
            sys.exit(2)
        self._next_job += len(batch)

