"""Where results go: ``metrics.jsonl`` and ``summary.json`` in the run directory (always), the console,
and an optional external sink (``conf/logger``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mmal")


class Sink:
    """An external logger; this base class logs nothing (``logger=none``). Subclasses override the three
    calls and must never raise: a failing sink may not stop an experiment."""

    def start(self, run_dir: Path, config: dict[str, Any], name: str, group: str | None) -> None:
        """Open the run: ``config`` is the resolved config, ``name`` e.g. ``entropy-synergy-intermediate-s0``,
        ``group`` the sweep it belongs to (None for a single run)."""

    def log(self, record: dict[str, Any]) -> None:
        """One cycle's record (the line just written to ``metrics.jsonl``)."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Close the run with the summary (``summary.json``); the run directory's plots exist by now."""


class RunLog:
    """Writes one JSON object per cycle to ``metrics.jsonl`` (flushed at once, so a crash keeps every
    finished cycle), ``summary.json`` at the end, a progress line per cycle, and forwards to ``sink``."""

    def __init__(self, run_dir: Path, sink: Sink | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.metrics_path.write_text("")
        self.sink = sink or Sink()

    def cycle(self, record: dict[str, Any], total_cycles: int) -> None:
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            "cycle %d/%d  labeled %d  acc %.4f  macro_f1 %.4f  train %.2fs  select %.3fs",
            record["cycle"], total_cycles, record["n_labeled"], record["acc"], record["macro_f1"],
            record["time/train"], record["time/select"],
        )
        self.sink.log(record)

    def finish(self, summary: dict[str, Any]) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("final acc %.4f  AUBC(acc) %.4f  -> %s", summary["final/acc"], summary["aubc/acc"], self.run_dir)
        self.sink.finish(summary)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
