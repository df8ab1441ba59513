"""The one entry point: compose the config, prepare every component (``mmal.experiment``), run the AL loop.

    python -m mmal.train [group=option ...] [key=value ...]      # one run
    python -m mmal.train -m query=random,entropy seed=0,1,2       # a sweep
"""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

import mmal.schema  # noqa: F401  (registers the typed configs before Hydra composes)
from mmal.checkpoint import RunDirectoryError, fingerprint, locked, resumable_state
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.log import RunLog
from mmal.loop import Cycles, active_learning, train_through
from mmal.sweep import JobFailed
from mmal.training import DivergenceError

log = logging.getLogger("mmal")


def run(cfg: DictConfig, run_dir: Path, name: str = "run", group: str | None = None,
        provenance: dict[str, str] | None = None, sweep: bool = False) -> dict[str, Any]:
    """Run one experiment from a composed config, writing into ``run_dir``; returns the summary.
    ``name`` and ``group`` label the run for the external logger. ``provenance`` (file name -> text, e.g.
    Hydra's ``config.yaml`` and ``overrides.yaml``) is written into ``run_dir/.hydra`` once the directory is
    this run's: locked, and holding no run of another config. ``sweep``: the run is a job of a sweep, so it
    draws its figures only with ``plots=true`` (``draws_plots``)."""
    return train_through(run_cycles(cfg, run_dir, name, group, provenance, sweep))


def draws_plots(plots: str | bool, sweep: bool) -> bool:
    """Whether a run draws its PNG figures: ``plots=true`` always, ``false`` never, ``auto`` when it is a single
    run. A sweep's report draws its curves from the jobs' ``metrics.jsonl``, and each job's two PNGs cost
    about as much as a cycle of the references' probes (docs/benchmarks.md, "Stacked sweeps")."""
    return plots is True or (plots == "auto" and not sweep)


def run_cycles(cfg: DictConfig, run_dir: Path, name: str = "run", group: str | None = None,
               provenance: dict[str, str] | None = None, sweep: bool = False) -> Cycles:
    """``run`` as a generator that yields each cycle's training (``mmal.loop.active_learning``), so that the
    stacked launcher can train it with other runs' (``mmal.lockstep``); returns the summary."""
    with locked(run_dir):
        config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
        resume = resumable_state(run_dir, config)
        if resume is None:  # a fresh run says what runs here; a resumed one keeps what its first start wrote
            write_provenance(run_dir, provenance)
        exp = prepare(cfg)
        if resume is not None and resume.finished:
            log.info("already finished, nothing to do: %s", run_dir)
            return resume.summary
        if resume is not None:
            log.info("resuming after cycle %d: %s", resume.cycle, run_dir)
        exp.sink.start(run_dir, config, name, group, run_id=resume.run_id if resume else None,
                       records=resume.records if resume else [])
        data = exp.data
        log.info("data: pool %d, val %d, test %d, %d classes, modalities %s; device %s",
                 len(data.pool), len(data.val), len(data.test), data.num_classes, data.dims, exp.trainer.device)
        try:
            run_log = RunLog(run_dir, exp.sink, records=resume.records if resume else [])
            return (yield from active_learning(data, exp.build_model, exp.trainer, exp.strategy, run_log,
                                               exp.protocol, seed=cfg.seed, references=exp.references,
                                               balance=exp.balance, resume=resume, fingerprint=fingerprint(config),
                                               plots=draws_plots(cfg.plots, sweep)))
        except BaseException:
            exp.sink.abort()  # close the external run as failed; metrics.jsonl keeps every finished cycle
            raise


def write_provenance(run_dir: Path, provenance: dict[str, str] | None) -> None:
    """``run_dir/.hydra/<file>`` for each item (what Hydra itself writes, held back until mmal has accepted
    the directory: ``hydra.output_subdir`` is null in ``conf/config.yaml``)."""
    for file, text in (provenance or {}).items():
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        (run_dir / ".hydra" / file).write_text(text)


# An absolute path: Hydra resolves a relative one against the caller's module, which for the mmal-train console
# script is no file of mmal ("Primary config module 'conf' not found").
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
MMAL_SWEEPER = "hydra_plugins.mmal_sweeper.checked_sweeper.CheckedSweeper"  # conf/hydra/sweeper/mmal.yaml


@dataclass
class Job:
    """One job of the command line, as Hydra composed it: its task config, run directory, the name and group
    the external logger shows, the provenance written into ``run_dir/.hydra``, and how it reports an error
    (``multirun``; ``mmal_sweeper``: mmal's sweeper reads a failed job's ``JobFailed``, another gets nan)."""

    cfg: DictConfig
    run_dir: Path
    name: str
    group: str | None
    provenance: dict[str, str]
    multirun: bool
    mmal_sweeper: bool

    @classmethod
    def of(cls, cfg: DictConfig, hydra_cfg: DictConfig) -> Job:
        """The job of a task config and its Hydra config (``hydra.runtime.output_dir`` set)."""
        choices = hydra_cfg.runtime.choices
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        sweep = Path(hydra_cfg.sweep.dir)
        provenance = {"config.yaml": OmegaConf.to_yaml(cfg),
                      "hydra.yaml": OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg})),
                      "overrides.yaml": OmegaConf.to_yaml(list(hydra_cfg.overrides.task))}
        name = f"{choices.query}-{choices.pitfall}-{choices.fusion}-s{cfg.seed}"
        return cls(cfg, Path(hydra_cfg.runtime.output_dir), name,
                   f"{sweep.parent.name}_{sweep.name}" if multirun else None, provenance, multirun,
                   hydra_cfg.sweeper._target_ == MMAL_SWEEPER)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    return train_through(job_cycles(Job.of(cfg, HydraConfig.get())))


def job_cycles(job: Job) -> Cycles:
    """The job's run (``run_cycles``), returning what the job returns to Hydra: the summary's
    ``optimized_metric`` (the value a Hydra sweeper optimises). A single run that fails exits (status 2 for a
    config error, 1 for a diverged training) or raises; a multirun job that fails raises ``JobFailed`` for
    mmal's sweeper (or returns nan to a sweeper that optimises), so that one failed job does not stop a sweep."""
    cfg, run_dir = job.cfg, job.run_dir
    try:
        summary = yield from run_cycles(cfg, run_dir, job.name, job.group, job.provenance, job.multirun)
    except RunDirectoryError as err:  # another run's directory: write nothing into it
        log.error("config error: %s", err)
        if not job.multirun:
            sys.exit(2)
        failure = JobFailed(str(err), refused=True)
    except Exception as err:
        if not job.multirun:
            if isinstance(err, ConfigError):
                log.error("config error: %s", err)
                sys.exit(2)
            if isinstance(err, DivergenceError):  # the cycle and the keys to look at; a traceback adds nothing
                log.error("%s", err)
                sys.exit(1)
            raise
        failure = job_failure(err, run_dir, job.provenance)
    else:
        return summary[cfg.optimized_metric]
    if not job.mmal_sweeper:  # one that optimises (Optuna's) records nan as a failed trial
        return float("nan")
    # Raised here, not inside a handler, so that it holds no frame of the failed run (a multirun keeps every
    # job's return, this error included, until the sweep ends); Hydra hands it to mmal's sweeper.
    raise failure


def job_failure(err: Exception, run_dir: Path, provenance: dict[str, str]) -> JobFailed:
    """A failed multirun job's error, logged and written to ``run_dir/error.txt`` (where the report finds it),
    as the job returns it to mmal's sweeper."""
    cause = err.__cause__ or err  # Hydra wraps errors raised while instantiating a component
    if isinstance(err, (ConfigError, DivergenceError)):  # they name what to change: no traceback
        log.error("job %s: %s", run_dir, err)
        detail = ""
    else:
        log.exception("job %s failed", run_dir)
        detail = "\n\n" + traceback.format_exc()
    if not (run_dir / ".hydra").exists():  # so that the report lists this job as crashed
        write_provenance(run_dir, provenance)
    error = f"{type(cause).__name__}: {cause}"
    (run_dir / "error.txt").write_text(error + detail)
    return JobFailed(error.splitlines()[0])


if __name__ == "__main__":
    main()
