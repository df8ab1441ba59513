"""The AL state checkpoint: written atomically after every cycle, so a killed run resumes from its last
complete cycle and a finished one is not run again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "al_state.pt"


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``run_dir/al_state.pt`` via a temporary file and an atomic rename: a kill at any
    moment leaves either the previous state or the new one, never a torn file."""
    path = Path(run_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state(run_dir: Path) -> dict[str, Any] | None:
    """The saved state of ``run_dir``, or None when it has none."""
    path = Path(run_dir) / STATE_FILE
    return torch.load(path, weights_only=False) if path.exists() else None


def fingerprint(config: dict[str, Any]) -> str:
    """What must not change between a run and its resumption: the experiment config, without the parts
    that do not change results (logger, device, inference batch size)."""
    config = {k: v for k, v in config.items() if k not in ("logger", "hydra")}
    trainer = {k: v for k, v in config.get("trainer", {}).items() if k not in ("device", "eval_batch_size")}
    return json.dumps({**config, "trainer": trainer}, sort_keys=True, default=str)
