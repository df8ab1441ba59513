"""The stacked launcher (``hydra/launcher=stacked``): the jobs of a multirun run in lockstep in a few processes,
every step training all their models whose shapes agree as one stacked model (``mmal.lockstep``).

    python -m mmal.train -m hydra/launcher=stacked query=random,margin,badge seed=0,1,2,3,4

Jobs are grouped by their trainer config (jobs that train alike can stack) and the groups spread over
``n_jobs`` processes. Each job keeps what it has under the other launchers: its seed-derived randomness, run
directory, ``metrics.jsonl``, log file, W&B run, resume state and outcome (bitwise the joblib launcher's
metrics on CPU, ``tests/test_stacked_launcher.py``). Fused models with a balancing method stack with those of
the other jobs with the same method and settings. A job whose models cannot stack (a CNN encoder, an optimizer
that does not stack, MLA where a labeled row lacks a modality; a unimodal reference whose modality some labeled
rows lack, where no other model trains on as many rows) trains them alone within its process, and says which and
why in its log, once per model and reason, naming the job. Hydra imports every module of ``hydra_plugins`` at
start-up, hence mmal's imports inside the functions."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger("mmal")


class StackedLauncher(Launcher):
    """Runs a batch of jobs in lockstep in ``n_jobs`` processes (null: one per CPU core the process may use,
    or one when the jobs train on a GPU; never more than there are jobs)."""

    def __init__(self, n_jobs: int | None = None) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def take_configs(self, composed: dict[tuple[str, ...], DictConfig]) -> None:
        """Jobs' configs as the sweeper composed them to check them (overrides -> config): ``launch`` uses them
        rather than composing each job again (a fifth of a second each, in the parent, before any job starts)."""
        self._composed = composed

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = [self._job(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        chunks = _spread(jobs, self._processes(jobs))
        log.info("stacked launcher: %d jobs in %d process(es), %d trainer setting(s); sweep output dir: %s",
                 len(jobs), len(chunks), len({job.key for job in jobs}), self.config.hydra.sweep.dir)
        for job in jobs:
            log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
        state = Singleton.get_state()
        if len(chunks) == 1:  # no worker process to start
            returns = [run_chunk(chunks[0], self.hydra_context, self.task_function, state, spawned=False)]
        else:
            returns = Parallel(n_jobs=len(chunks), backend="loky")(
                delayed(run_chunk)(chunk, self.hydra_context, self.task_function, state) for chunk in chunks)
        by_num = {ret.hydra_cfg.hydra.job.num: ret for chunk in returns for ret in chunk}
        return [by_num[job.num] for job in jobs]

    def _job(self, num: int, overrides: Sequence[str]) -> StackedJob:
        """A job's config, composed and numbered as the joblib launcher does it, its run directory resolved."""
        config = self._composed.pop(tuple(overrides), None)
        if config is None:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{num}"
            config.hydra.job.num = num
        HydraConfig.instance().set_config(config)  # the run directory may interpolate hydra's own keys
        output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(output_dir.absolute())
        trainer = OmegaConf.to_container(config.trainer, resolve=True, enum_to_str=True)
        return StackedJob(num, list(overrides), config, json.dumps(trainer, sort_keys=True, default=str),
                          str(trainer["device"]))

    def _processes(self, jobs: list[StackedJob]) -> int:
        if self.n_jobs is not None:
            return max(1, min(int(self.n_jobs), len(jobs)))
        import torch

        on_gpu = any(job.device == "cuda" or (job.device == "auto" and torch.cuda.is_available()) for job in jobs)
        return 1 if on_gpu else max(1, min(len(os.sched_getaffinity(0)), len(jobs)))


class StackedJob(NamedTuple):  # not a dataclass: Hydra's plugin scan runs this module outside sys.modules
    """One job of the batch: its number, overrides, whole config (``hydra`` included), the key of its trainer
    config (jobs of one key can stack) and its ``trainer.device``."""

    num: int
    overrides: list[str]
    config: DictConfig
    key: str
    device: str


def _spread(jobs: list[StackedJob], processes: int) -> list[list[StackedJob]]:
    """``jobs`` in ``processes`` chunks of near-equal size, jobs of one trainer setting side by side (so that as
    many as possible share a process and stack)."""
    ordered = sorted(jobs, key=lambda job: job.key)  # stable: within a setting, in the sweep's order
    size, extra = divmod(len(ordered), processes)
    chunks, start = [], 0
    for i in range(processes):
        end = start + size + (i < extra)
        chunks.append(ordered[start:end])
        start = end
    return [chunk for chunk in chunks if chunk]


def run_chunk(chunk: list[StackedJob], hydra_context: HydraContext, task_function: TaskFunction,
              singleton_state: dict[Any, Any], spawned: bool = True) -> list[JobReturn]:
    """Run ``chunk``'s jobs in lockstep in this process; their ``JobReturn``s, as ``hydra.core.utils.run_job``
    makes them (status, return value or error, configs)."""
    from mmal.lockstep import LockstepRun, run_in_lockstep
    from mmal.sweep import task_config
    from mmal.train import Job, job_cycles
    from mmal.training import resolve_device

    if spawned:  # a fresh worker process: Hydra's global state as the parent's
        setup_globals()
        Singleton.set_state(singleton_state)
    for stacked in chunk:  # before logging is configured: Hydra's file handler opens the first job's file
        Path(stacked.config.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
    file_format = _job_logging(chunk[0].config)
    runs, handlers, tasks = [], [], []
    for stacked in chunk:
        config = stacked.config
        handler = logging.FileHandler(Path(config.hydra.runtime.output_dir) / f"{config.hydra.job.name}.log",
                                      delay=True)
        handler.setFormatter(file_format)
        handlers.append(handler)
        HydraConfig.instance().set_config(config)
        tasks.append(task_config(config))
        job = Job.of(tasks[-1], HydraConfig.get())
        hydra_context.callbacks.on_job_start(config=config, task_function=task_function)
        runs.append(LockstepRun(job_cycles(job), stacked.key, resolve_device(stacked.device),
                                context=lambda config=config, handler=handler: _as_job(config, handler),
                                name=f"job #{stacked.num} ({' '.join(filter_overrides(stacked.overrides))})"))
    outcomes = run_in_lockstep(runs)
    returns = []
    for stacked, outcome, handler, task in zip(chunk, outcomes, handlers, tasks):
        ret = JobReturn(overrides=stacked.overrides, cfg=task,
                        hydra_cfg=OmegaConf.masked_copy(stacked.config, "hydra"), working_dir=os.getcwd(),
                        task_name=stacked.config.hydra.job.name)
        ret.return_value = outcome
        ret.status = JobStatus.FAILED if isinstance(outcome, BaseException) else JobStatus.COMPLETED
        hydra_context.callbacks.on_job_end(config=stacked.config, job_return=ret)
        handler.close()
        returns.append(ret)
    return returns


def _job_logging(config: DictConfig) -> logging.Formatter:
    """Hydra's job logging for this process (console), without its file handler: each job writes its own file
    (``_as_job``), in the format Hydra's handler would have used."""
    configure_log(config.hydra.job_logging, config.hydra.verbose)
    root = logging.getLogger()
    files = [handler for handler in root.handlers if isinstance(handler, logging.FileHandler)]
    for handler in files:
        root.removeHandler(handler)
        handler.close()
    return files[0].formatter if files else logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")


@contextlib.contextmanager
def _as_job(config: DictConfig, handler: logging.Handler) -> Iterator[None]:
    """While a job's own code runs: Hydra's config is the job's, and log lines also go to the job's file."""
    HydraConfig.instance().set_config(config)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
