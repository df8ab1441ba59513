"""Where results go: ``metrics.jsonl`` and ``summary.json`` in the run directory (always), the console,
and an optional external sink (``conf/logger``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mmal.metrics.names import (
    ACC,
    CYCLE,
    DEFICIT,
    FINAL_PREFIX,
    GAP_ENSEMBLE,
    GAP_NEGLECT,
    MACRO_F1,
    MASKED_ACC,
    N_LABELED,
    REF_ACC,
    REPR_ACC,
    SHAPLEY,
    TIME_REFERENCE,
    TIME_SELECT,
    TIME_TRAIN,
    aubc_key,
    ci_hi,
    ci_lo,
    prefix,
)

log = logging.getLogger("mmal")


class Sink:
    """An external logger; this base class logs nothing (``logger=none``). Subclasses override the three
    calls and must never raise: a failing sink may not stop an experiment."""

    run_id: str | None = None  # the external run's id once started; a resumed experiment reopens it

    def start(self, run_dir: Path, config: dict[str, Any], name: str, group: str | None,
              run_id: str | None = None, records: Sequence[dict[str, Any]] = ()) -> None:
        """Open the run: ``config`` is the resolved config, ``name`` e.g. ``entropy-synergy-intermediate-s0``,
        ``group`` the sweep it belongs to (None for a single run), ``run_id`` the id of the run to resume and
        ``records`` the cycles it has finished (which its earlier starts logged, or began to log)."""

    def log(self, record: dict[str, Any]) -> None:
        """One cycle's record (the line just written to ``metrics.jsonl``)."""

    def finish(self, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
        """Close the run with the summary (``summary.json``) and every cycle's record (a resumed run's
        earlier cycles included); the run directory's plots exist by now."""

    def abort(self) -> None:
        """Close the run as failed: the experiment raised before ``finish``."""


_WANDB_DIRS = {"WANDB_DIR": "", "WANDB_CACHE_DIR": "wandb_cache", "WANDB_CONFIG_DIR": "wandb_config",
               "WANDB_DATA_DIR": "wandb_data"}
_PER_MODALITY = {DEFICIT: "deficit against the unimodal reference", REF_ACC: "unimodal reference accuracy",
                 MASKED_ACC: "masked accuracy", REPR_ACC: "probe accuracy", SHAPLEY: "Shapley value"}


class WandbSink(Sink):
    """Logs a run to Weights & Biases (``logger=wandb``): each cycle's metrics charted against ``n_labeled``
    (a list such as ``query/class_hist`` as one scalar per index, ``query/class_hist/<c>``), then the summary,
    a table ``cycle_table`` of all records, a line chart per modality for each of ``deficit/``, ``ref_acc/``,
    ``masked_acc/``, ``repr_acc/`` and ``shapley/`` (``charts/<metric>``) and every PNG of the run directory
    (``plots/<stem>``).

    Everything wandb writes stays inside the run directory: the run in ``<run_dir>/wandb``, its caches and
    settings in ``<run_dir>/wandb_{cache,config,data}``. A W&B failure (a bad ``mode``, no API key, no
    network, an error inside wandb) logs one warning and turns the sink off for the rest of the run.

    A resumed run continues the same W&B run (same id) and logs each cycle once across its starts: it begins
    after the last step its earlier starts kept (offline: the rows in their ``offline-run-*-<id>`` directories,
    ``kept_steps``; online: the server's), first logging the finished cycles they lost. A killed offline start
    keeps little: wandb writes its log in 32 KiB blocks and the rest dies with the process, and a start killed
    before its first block leaves a log that ``wandb sync`` refuses, which is renamed ``*.wandb.empty``. So
    ``wandb sync <run_dir>/wandb``, which syncs a run's directories in the order of their starts, gives every
    cycle once.

    Args:
        project, entity: where the run goes (``entity=None``: the API key's default entity).
        mode: ``online`` | ``offline`` (upload later with ``wandb sync``) | ``disabled``.
        group: the W&B group; None uses the group given to ``start`` (the sweep, in a multirun).
        job_type, tags, notes: as in ``wandb.init``.
        init_timeout: seconds ``wandb.init`` may take (online without network it would wait 90 s), and
            seconds an API-key prompt waits for an answer (unless ``WANDB_LOGIN_TIMEOUT`` is set).
    """

    def __init__(self, project: str = "mmal", entity: str | None = None, mode: str = "offline",
                 group: str | None = None, job_type: str | None = None, tags: Sequence[str] = (),
                 notes: str | None = None, init_timeout: float = 30.0):
        self.project, self.entity, self.mode, self.group = project, entity, mode, group
        self.job_type, self.tags, self.notes, self.init_timeout = job_type, list(tags), notes, init_timeout
        self.run: Any = None  # the open wandb run; None before start, after finish and after a failure
        self.first_step = 0  # the steps below it are the run's earlier starts' (a resumed run's)

    def start(self, run_dir: Path, config: dict[str, Any], name: str, group: str | None,
              run_id: str | None = None, records: Sequence[dict[str, Any]] = ()) -> None:
        self.run_dir = Path(run_dir).resolve()
        self._guard("init", self._init, config, name, group, run_id)
        for record in records:  # the finished cycles that no earlier start kept
            self.log(record)

    def log(self, record: dict[str, Any]) -> None:
        if self.run is not None and record[CYCLE] >= self.first_step:
            self._guard("log", self.run.log, _scalars(record), step=record[CYCLE])

    def finish(self, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
        if self.run is not None:
            self._guard("finish", self._finish, summary, records)

    def abort(self) -> None:
        if self.run is not None:
            self._close(failed=True)

    def _init(self, config: dict[str, Any], name: str, group: str | None, run_id: str | None) -> None:
        import wandb  # here, not at the top: a run without W&B never pays for (or breaks on) the import

        # create_new: the stacked launcher runs many jobs' runs at once in one process (each sink closes its own
        # run, failed or not); wandb's default would hand an open run back to the next job instead of a new one.
        # silent: wandb's own ~35 console lines per run (banner, history sparklines) drown a sweep's log; mmal
        # says in one line where the run is.
        settings = wandb.Settings(init_timeout=self.init_timeout, reinit="create_new", silent=True)
        kept = kept_steps(self.run_dir, run_id) if run_id else []  # before wandb adds this start's directory
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, group=self.group or group,
                              job_type=self.job_type, tags=self.tags, notes=self.notes, name=name, config=config,
                              dir=self.run_dir, settings=settings, id=run_id, resume="allow" if run_id else None)
        self.run_id = self.run.id
        _OPEN.add(self)
        self.first_step = max([self.run.starting_step, *(step + 1 for step in kept)])
        log.info("W&B run %s (%s): %s", self.run.id, self.mode, Path(self.run.dir).parent)
        self.run.define_metric(N_LABELED)
        self.run.define_metric("*", step_metric=N_LABELED)

    def _finish(self, summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
        import wandb

        self.run.summary.update(summary)
        media: dict[str, Any] = {"cycle_table": _table(records)}
        for family, what in _PER_MODALITY.items():
            keys = list(dict.fromkeys(k for r in records for k in r if k.startswith(prefix(family))))
            if keys:
                media[f"charts/{family}"] = wandb.plot.line_series(
                    xs=[[r[N_LABELED] for r in records if k in r] for k in keys],
                    ys=[[r[k] for r in records if k in r] for k in keys],
                    keys=[k.removeprefix(prefix(family)) for k in keys], xname=N_LABELED,
                    title=f"{what} per modality vs labeled samples")
        # The headline with its band: three lines (value and the ends of its 95 % bootstrap interval).
        band = [k for k in (GAP_ENSEMBLE, ci_lo(GAP_ENSEMBLE), ci_hi(GAP_ENSEMBLE)) if any(k in r for r in records)]
        if band:
            media[f"charts/{GAP_ENSEMBLE}"] = wandb.plot.line_series(
                xs=[[r[N_LABELED] for r in records if k in r] for k in band],
                ys=[[r[k] for r in records if k in r] for k in band], keys=band, xname=N_LABELED,
                title="references' ensemble - fused accuracy, with its 95 % interval, vs labeled samples")
        media.update({f"plots/{png.stem}": wandb.Image(str(png)) for png in sorted(self.run_dir.glob("*.png"))})
        # At the last cycle's step, so the history keeps one row per cycle; an earlier start that kept that row
        # kept these too (wandb writes a row when the run goes past it or finishes, here after this call).
        if not records or records[-1][CYCLE] >= self.first_step:
            self.run.log(media, step=records[-1][CYCLE] if records else None)
        self.run.finish()
        self._close()

    @contextlib.contextmanager
    def _environment(self) -> Iterator[None]:
        """wandb's directories in this run's directory (not ./wandb, ~/.cache, ...) while wandb works for this
        run, and the environment as it was in between: the runs of other jobs may be open in this process."""
        env = {key: str(self.run_dir / sub) for key, sub in _WANDB_DIRS.items()}
        # At a terminal without an API key wandb asks for one and, unanswered (a sweep left in tmux), waits forever.
        env["WANDB_LOGIN_TIMEOUT"] = os.environ.get("WANDB_LOGIN_TIMEOUT", str(self.init_timeout))
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _guard(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            with self._environment():
                call(*args, **kwargs)
        except Exception as err:
            log.warning("W&B %s failed, so W&B logging is off for the rest of this run (metrics.jsonl is "
                        "unaffected): %s: %s", what, type(err).__name__, err)
            self._close(failed=True)

    def _close(self, failed: bool = False) -> None:
        """Stop this run (after a failure: finish it as failed, quietly), and wandb once no run is open."""
        run, self.run = self.run, None
        _OPEN.discard(self)
        with contextlib.suppress(Exception), self._environment():
            if run is not None and failed:
                run.finish(exit_code=1)
            if not _OPEN:
                import wandb

                wandb.teardown()  # wandb's background service would keep logging into this run's directory


_OPEN: set[WandbSink] = set()  # the sinks of this process whose runs are open


def kept_steps(run_dir: Path, run_id: str) -> list[int]:
    """The history steps that the earlier offline starts of W&B run ``run_id`` kept in ``run_dir/wandb``. A log
    that kept nothing (its start was killed before wandb wrote its first block) is renamed ``*.wandb.empty``:
    ``wandb sync`` stops at it ("error getting next record: EOF") without syncing any of the run's starts."""
    steps = []
    for log_file in sorted(Path(run_dir).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")):
        records = list(log_records(log_file))
        if not records:
            log_file.rename(log_file.with_name(log_file.name + ".empty"))
        steps += [record.history.step.num for record in records if record.history.HasField("step")]
    return steps


_LOG_HEADER = 7  # a .wandb file starts with ":W&B", a magic number and a version
_LOG_BLOCK = 32 * 1024  # then LevelDB's log format: 32 KiB blocks of chunks, 7-byte chunk headers
_FULL, _FIRST, _LAST = 1, 2, 4  # chunk types (3: a middle part)


def log_records(log_file: Path) -> Iterator[Any]:
    """The records of a W&B transaction log (``run-<id>.wandb``), wandb ``Record`` protobufs, in order. Each
    chunk has a CRC-32 of its type and data, its length and its type; a record is one chunk, or a first, middle
    and last one. A torn tail (the process was killed while writing) ends them, as it ends what ``wandb sync``
    reads."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, record, pos = Path(log_file).read_bytes(), b"", _LOG_HEADER
    while pos + 7 <= len(data):
        if _LOG_BLOCK - pos % _LOG_BLOCK < 7:  # too little room left for a chunk header: the block's zero padding
            pos += _LOG_BLOCK - pos % _LOG_BLOCK
            continue
        crc = int.from_bytes(data[pos:pos + 4], "little")
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        if len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) != crc:
            return
        pos += 7 + length
        record = chunk if kind in (_FULL, _FIRST) else record + chunk
        if kind in (_FULL, _LAST):
            yield Record.FromString(record)


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with each list (``query/class_hist``) split into one entry per index (``query/class_hist/0``)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, (list, tuple)):
            out.update({f"{key}/{i}": v for i, v in enumerate(value)})
        else:
            out[key] = value
    return out


def _table(records: list[dict[str, Any]]) -> Any:
    """A ``wandb.Table`` with one row per record and a column per key (None where a record lacks it)."""
    import wandb

    rows = [_scalars(r) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return wandb.Table(columns=columns, data=[[row.get(k) for k in columns] for row in rows])


class RunLog:
    """Writes one JSON object per cycle to ``metrics.jsonl`` (flushed at once, so a crash keeps every
    finished cycle), ``summary.json`` at the end, a progress line per cycle, and forwards to ``sink``.
    ``records``: the cycles a resumed run already has; ``metrics.jsonl`` restarts from exactly those."""

    def __init__(self, run_dir: Path, sink: Sink | None = None, records: list[dict[str, Any]] = ()):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        self.records = list(records)
        self.sink = sink or Sink()

    def cycle(self, record: dict[str, Any], total_cycles: int) -> None:
        self.records.append(record)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        log.info(
            f"cycle %d/%d  labeled %d  {ACC} %.4f  {MACRO_F1} %.4f  {GAP_ENSEMBLE} %+.3f [%+.3f, %+.3f]  "
            f"{GAP_NEGLECT} %.3f  train %.2fs  references %.2fs  select %.3fs",
            record[CYCLE], total_cycles, record[N_LABELED], record[ACC], record[MACRO_F1],
            record.get(GAP_ENSEMBLE, float("nan")), record.get(ci_lo(GAP_ENSEMBLE), float("nan")),
            record.get(ci_hi(GAP_ENSEMBLE), float("nan")), record.get(GAP_NEGLECT, float("nan")),
            record[TIME_TRAIN], record[TIME_REFERENCE], record[TIME_SELECT],
        )
        self.sink.log(record)

    def finish(self, summary: dict[str, Any]) -> None:
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("final acc %.4f  AUBC(acc) %.4f  -> %s", summary[FINAL_PREFIX + ACC], summary[aubc_key(ACC)],
                 self.run_dir)
        self.sink.finish(summary, self.records)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
