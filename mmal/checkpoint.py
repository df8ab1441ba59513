"""What a run directory holds for the run that owns it: an exclusive lock for the run's life, so that two
runs never write into one directory, and the AL state, written atomically after every cycle, so a killed
run resumes from its last complete cycle and a finished one is not run again."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmal.errors import ConfigError

STATE_FILE = "al_state.pt"
LOCK_FILE = ".lock"


class RunDirectoryError(ConfigError):
    """The run directory belongs to another run (one still running, or one of another config): nothing may be
    written into it, not even an error file."""


@contextlib.contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created if needed) until the block ends; the operating system
    releases it when the process dies, so a killed run can be resumed at once. Raises ``RunDirectoryError``
    when another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirectoryError("run directory", str(run_dir), "is in use by another mmal run; wait for it to "
                                "end or choose another directory (hydra.run.dir / hydra.sweep.dir)") from None
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class ALState:
    """What a run continues from: the state after its last complete cycle (``mmal.loop`` saves one per cycle,
    and once more with the summary when the run has finished).

    Attributes:
        cycle: the last complete cycle.
        labeled: (N,) bool on the CPU, the labeled pool rows after that cycle's query.
        model: the fused model's weights after that cycle's training (on the CPU).
        records: every cycle's record so far (what ``metrics.jsonl`` holds).
        fingerprint: the run's config as ``fingerprint`` writes it; another config cannot resume this run.
        run_id: the external logger's run id, so a resumed run continues the same run there (None: no logger).
        summary: the run's summary once it has finished; None before.
    """

    cycle: int
    labeled: Tensor
    model: dict[str, Tensor]
    records: list[dict[str, Any]]
    fingerprint: str
    run_id: str | None = None
    summary: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.summary is not None


def save_state(run_dir: Path, state: ALState) -> None:
    """Write ``state`` to ``run_dir/al_state.pt`` via a temporary file and an atomic rename: a kill at any
    moment leaves either the previous state or the new one, never a torn file. The file holds a plain dict of
    the fields (tensors, lists and strings: what ``torch.load`` reads back without this class)."""
    path = Path(run_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save({f.name: getattr(state, f.name) for f in dataclasses.fields(ALState)}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(run_dir: Path) -> ALState | None:
    """The saved state of ``run_dir``, or None when it has none. A file that cannot be read (truncated,
    empty, another program's) raises ``RunDirectoryError`` naming it."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as err:  # torch raises pickle, zip and EOF errors alike for a damaged file
        detail = str(err).splitlines()[0] if str(err) else "no detail"
        raise RunDirectoryError("run directory", str(run_dir), f"holds an unreadable {STATE_FILE} "
                                f"({type(err).__name__}: {detail}); move it away to start the run over") from None
    required = {f.name for f in dataclasses.fields(ALState) if f.default is dataclasses.MISSING}
    if not isinstance(state, dict) or not required <= set(state):
        raise RunDirectoryError("run directory", str(run_dir), f"holds a {STATE_FILE} that is no mmal AL state; "
                                "move it away to start the run over")
    return ALState(**{f.name: state[f.name] for f in dataclasses.fields(ALState) if f.name in state})


def resumable_state(run_dir: Path, config: dict[str, Any]) -> ALState | None:
    """The saved state of ``run_dir`` when it is a run of ``config`` (None when the directory holds no run);
    raises ``RunDirectoryError`` naming the differing keys when it holds a run of another config."""
    state = load_state(run_dir)
    if state is not None and state.fingerprint != fingerprint(config):
        keys = differing_keys(state.fingerprint, fingerprint(config))
        raise RunDirectoryError("run directory", str(run_dir), f"holds a run of another config (differing: "
                                f"{', '.join(keys)}); resume it with that config or choose another directory "
                                "(hydra.run.dir / hydra.sweep.dir)")
    return state


def differing_keys(saved: str, current: str, most: int = 8) -> list[str]:
    """The dotted keys whose values differ between two fingerprints (at most ``most``, sorted)."""
    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, child in node.items() for k, v in flat(child, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): node}
    a, b = flat(json.loads(saved)), flat(json.loads(current))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))[:most]


def fingerprint(config: dict[str, Any]) -> str:
    """What must not change between a run and its resumption: the experiment config, without the parts
    that do not change results (logger, figures, device, inference batch size)."""
    config = {k: v for k, v in config.items() if k not in ("logger", "hydra", "plots")}
    trainer = {k: v for k, v in config.get("trainer", {}).items() if k not in ("device", "eval_batch_size")}
    return json.dumps({**config, "trainer": trainer}, sort_keys=True, default=str)
