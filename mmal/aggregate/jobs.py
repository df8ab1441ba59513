"""The jobs of a sweep as they lie on disk, and their grouping into settings, strategies and seeds.

A job is a directory with ``.hydra/overrides.yaml``; its results are ``summary.json`` (finished),
``metrics.jsonl`` (one record per cycle) and ``error.txt`` (crashed). A *setting* is everything a job's
overrides set except the strategy and the seed, less what every job shares.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmal.log import read_jsonl


@dataclass
class Job:
    """One job of the sweep: its directory, overrides, and results if it finished."""

    path: Path | None
    overrides: list[str]
    summary: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    setting: str = "default"  # set by load_jobs

    @property
    def strategy(self) -> str:
        return override_value(self.overrides, "query", "default")

    @property
    def seed(self) -> str:
        return override_value(self.overrides, "seed", "0")


def override_key(override: str) -> str:
    """The key an override sets: ``+experiment=study`` -> ``experiment``."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(overrides: list[str], key: str, default: str) -> str:
    """The value ``overrides`` give ``key``, or ``default``."""
    return next((o.split("=", 1)[1] for o in overrides if override_key(o) == key), default)


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """Every job's overrides as Hydra's basic sweeper expands them from ``multirun.yaml`` (sweeper params,
    then the command line), or None when the sweep directory has no such file."""
    path = sweep_dir / "multirun.yaml"
    if not path.exists():
        return None
    # Hydra's private API, used here only: the jobs that never got a directory have no files to read, and
    # the sweeper's own expansion (ranges, choices, order) is the one that launched the others.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra_cfg = yaml.safe_load(path.read_text())["hydra"]
    params = (hydra_cfg.get("sweeper") or {}).get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(hydra_cfg["overrides"]["task"])
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under ``sweep_dir`` (one with ``.hydra/overrides.yaml``), plus an entry for each
    expected job that has no directory."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        job = Job(path, [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []])
        if (path / "metrics.jsonl").exists():
            job.records = read_jsonl(path / "metrics.jsonl")
        if (path / "summary.json").exists():
            job.summary = json.loads((path / "summary.json").read_text())
        elif (path / "error.txt").exists():
            job.problem = "crashed: " + (path / "error.txt").read_text().strip().splitlines()[0]
        else:
            job.problem = f"unfinished: {len(job.records)} cycles logged"
        jobs.append(job)
    expected = expected_overrides(sweep_dir)
    if expected is not None:
        found = {tuple(sorted(j.overrides)) for j in jobs}
        jobs += [Job(None, o, problem="missing: no job directory") for o in expected if tuple(sorted(o)) not in found]
    return assign_settings(jobs)


def assign_settings(jobs: list[Job]) -> list[Job]:
    """Set each job's ``setting``: what its overrides set beyond strategy and seed, leaving out what every job
    of ``jobs`` shares (the experiment, too, unless they hold sweeps of several); returns ``jobs``."""
    shared = set.intersection(*(set(j.overrides) for j in jobs)) if jobs else set()
    for job in jobs:
        rest = [o for o in job.overrides if override_key(o) not in ("query", "seed") and o not in shared]
        job.setting = ",".join(sorted(rest)) or "default"
    return jobs


def grouped(jobs: list[Job]) -> list[tuple[tuple[str, str], list[Job]]]:
    """The finished jobs by (setting, strategy), sorted."""
    groups: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        if job.summary is not None:
            groups[(job.setting, job.strategy)].append(job)
    return sorted(groups.items())


def by_setting(jobs: list[Job], key: str) -> dict[str, dict[str, dict[str, float]]]:
    """setting -> strategy -> seed -> the summary value ``key`` of every finished job."""
    out: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        if job.summary is not None and key in job.summary:  # a run without references has no gap/neglect
            out[job.setting][job.strategy][job.seed] = job.summary[key]
    return out


def crossed(jobs: list[Job], cross: str, key: str) -> dict[str, dict[tuple[str, str], dict[str, float]]]:
    """rest -> (value of ``cross``, strategy) -> seed -> summary ``key``: the settings split into the crossed
    key's value (e.g. ``balance=pmr``) and the rest (e.g. ``pitfall=none``)."""
    out: dict[str, dict[tuple[str, str], dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for job in jobs:
        if job.summary is None or key not in job.summary:
            continue
        value = override_value(job.overrides, cross, "default")
        rest = ",".join(part for part in job.setting.split(",") if override_key(part) != cross) or "default"
        out[rest][(value, job.strategy)][job.seed] = job.summary[key]
    return out
