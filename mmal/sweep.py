"""Checking every job of a sweep before the first one starts (``check_jobs``, called by mmal's Hydra sweeper,
``hydra_plugins.mmal_sweeper``): a grid with a bad job starts none, and the refusal lists every bad job. And how
a job that did not finish tells the sweeper so (``JobFailed``).

Each job gets the checks a run makes before work (``mmal.experiment``): every component built from its
config, the data built once per dataset config (the seed aside) for the checks that need its sizes (the
budget, the model), and its run directory, which must not hold a run of another config. What only a job's
own data can show (a split with one class for one seed) is still checked when that job starts.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Hashable, Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mmal.checkpoint import resumable_state
from mmal.errors import ConfigError
from mmal.experiment import build_components, build_data, model_builder


def task_config(config: DictConfig) -> DictConfig:
    """A job's config as its task sees it: a copy without the ``hydra`` node."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def check_jobs(jobs: Iterable[tuple[Hashable, DictConfig, Path]]) -> dict[Hashable, ConfigError]:
    """The error of each job (key, config, run directory) that mmal would refuse, by key; {} when all pass."""
    sizes: dict[str, tuple | ConfigError] = {}  # dataset config without its seed -> data sizes, or its error
    errors = {}
    for key, cfg, run_dir in jobs:
        try:
            parts = build_components(cfg)
            data_key = _data_key(cfg)
            if data_key not in sizes:
                try:
                    data = build_data(cfg, parts.pitfall)
                    sizes[data_key] = (len(data.pool), data.shapes, data.num_classes)
                except ConfigError as err:
                    sizes[data_key] = err
            if isinstance(sizes[data_key], ConfigError):
                raise sizes[data_key]
            model_builder(cfg, parts, *sizes[data_key])
            check_run_dir_name(run_dir)
            resumable_state(run_dir, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        except ConfigError as err:
            errors[key] = err
    return errors


class JobFailed(Exception):
    """What a multirun job that did not finish raises (``mmal.train``), for mmal's sweeper to count and list:
    ``error``, one line; ``refused``, whether its run directory belongs to another run (nothing was written into
    it), else the job failed while running (its ``error.txt`` holds the whole error). Only strings and a bool, so
    that it pickles through every launcher (joblib's workers, submitit's result files)."""

    def __init__(self, error: str, refused: bool = False):
        super().__init__(error, refused)
        self.error, self.refused = error, refused

    def __str__(self) -> str:
        return self.error


NAME_MAX = 255  # bytes in one file or directory name (Linux: ext4, xfs, btrfs, tmpfs)


def check_run_dir_name(run_dir: Path) -> None:
    """A job directory named after many overrides (``hydra.sweep.subdir``'s default,
    ``<num>_<override_dirname>``) can exceed what a file system accepts; the job would die creating it."""
    for part in run_dir.parts:
        if len(part.encode()) > NAME_MAX:
            raise ConfigError("hydra.sweep.subdir", f"{part[:40]}...", f"the job's directory name is "
                              f"{len(part.encode())} bytes, more than the {NAME_MAX} a file system accepts; name jobs "
                              "by number (hydra.sweep.subdir=${hydra.job.num}) or leave keys out of the name "
                              "(hydra.job.config.override_dirname.exclude_keys=[...])")


def _data_key(cfg: DictConfig) -> str:
    """What the data's sizes depend on: the dataset and pitfall configs, without the seed."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True, enum_to_str=True)
    dataset.pop("seed", None)
    return json.dumps([dataset, OmegaConf.to_container(cfg.pitfall, resolve=True, enum_to_str=True)],
                      sort_keys=True, default=str)
