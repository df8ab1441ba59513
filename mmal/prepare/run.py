"""One preparation: a raw dataset folder in its published layout -> the arrays mmal trains on, with a
manifest that records every input and setting (docs/datasets.md).

Rows are processed in batches in the layout's order: each batch's sources are read (in threads: image
decoding dominates on a GPU machine), each modality's present rows go through its extractor, and the
batch is committed (``mmal.prepare.store``) before the next starts, so a stopped run resumes where it
stopped; a resume first checks that the rows already written are still the rows of the source tree, from
the same bytes. A source that is not there is an absent modality for its row (mask False, zeros in the
array); a source that is there but cannot be decoded stops the run with its path (``on_corrupt="stop"``)
or is treated as absent too (``on_corrupt="absent"``). Rows with no modality at all (no source, or only
sources that cannot be decoded) are left out and named in the manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mmal import kernels
from mmal.errors import ConfigError, check_choice, check_int
from mmal.prepare.decode import CorruptSource, file_digest, text_digest
from mmal.prepare.extractors import Extractor, Pretrained
from mmal.prepare.kinds import Kind, Options
from mmal.prepare.layouts import LAYOUTS, Layout, Sample
from mmal.prepare.store import Store, check_out

PRESENT, ABSENT, CORRUPT = 0, 1, 2
STATUS = ("present", "absent", "corrupt")


def prepare(dataset: str, root: str | Path, out: str | Path, *, models: dict[str, str | None] | None = None,
            raw: Sequence[str] = (), image_size: int = 64, frames: int = 1, fps: int = 1, n_mels: int = 128,
            seconds: float | None = None, max_length: int = 128, batch_size: int = 64, device: str = "auto",
            precision: str = "fp32", on_corrupt: str = "stop", workers: int = 4, progress: bool = True) -> dict:
    """Prepare ``dataset`` from ``root`` into ``out`` and return the manifest (module docstring).

    Args:
        models: backbone folder per kind's model (``image`` — also used for frames —, ``text``, ``audio``);
            needed for every modality not in ``raw``.
        raw: modalities stored as raw tensors instead of embeddings (images, frames, audio; not text).
        image_size: side of raw images and frames; frames: frames per clip (embeddings are averaged, raw
            frames stacked on channels); fps: which ``Image-<fps>-FPS`` folder (CREMA-D).
        n_mels, seconds: raw log-mel bands and clip length (every clip is tiled or cut to ``seconds``, for
            embeddings too; None = the dataset's: 3 s CREMA-D, 10 s AVE); max_length: tokens per text.
        batch_size, workers, device (``auto`` = CUDA when present), precision (``fp32`` | ``bf16``):
            how fast, not what: only precision changes the numbers, so only it is part of the settings.
        on_corrupt: ``stop`` at a file that cannot be decoded, or mark it ``absent``.
    """
    check_choice("dataset", dataset, list(LAYOUTS))
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise ConfigError("--root", str(root), "no such directory: the folder holding the raw dataset")
    check_out(out)
    check_int("--batch-size", batch_size, 1)
    check_int("--workers", workers, 1)
    check_choice("--precision", precision, ["fp32", "bf16"])
    check_choice("--on-corrupt", on_corrupt, ["stop", "absent"])
    device = _device(device)
    options = Options(image_size, frames, fps, n_mels, seconds, max_length)
    layout = LAYOUTS[dataset](root, options)
    options = replace(options, seconds=layout.seconds) if seconds is None else options
    cpu_kernels = kernels.engage()  # before any backbone computes: the same embeddings on every x86-64 CPU
    extractors = _extractors(layout, raw, models or {}, options, device, precision == "bf16")
    rows = {split: [s for s in layout.samples if s.split == split and _any_source(s)] for split in layout.splits}
    if empty := [split for split, samples in rows.items() if not samples]:
        raise ConfigError("--root", str(root), f"split {empty[0]!r} has no row with any modality present "
                                               f"({layout.notes['splits']})")
    settings = _settings(layout, root, extractors, raw, options, precision)
    store = Store(out, settings)
    if store.finished():
        print(f"{out} already holds this preparation ({out / 'manifest.json'}); nothing to do")
        return json.loads((out / "manifest.json").read_text())

    started = time.perf_counter()
    keys = {split: [_key(s, root) for s in samples] for split, samples in rows.items()}
    with store.claimed(), ThreadPoolExecutor(workers) as pool:
        for split, samples in rows.items():  # before anything is written: the rows written are still the rows
            store.check_rows(split, keys[split], [s.name for s in samples], root)
        _check_sources(store, rows, layout, options, root, pool)  # ... read from the same bytes
        batches = _Batches(layout, extractors, options, pool, on_corrupt)
        status = {split: batches.write_split(store, split, samples, keys[split], batch_size,
                                             _bar(progress, desc=f"{dataset} {split}"))
                  for split, samples in rows.items()}
        keep = _kept(status, on_corrupt)
        left_out = {id(s) for split, samples in rows.items() for s, k in zip(samples, keep[split]) if not k}
        counts = {split: _counts(status[split][keep[split]], list(layout.kinds)) for split in rows}
        sources = _sources_csv(rows, keep, list(layout.kinds), root, store)
        manifest = {
            "dataset": dataset, "classes": layout.classes, "modalities": list(layout.kinds),
            "kinds": {m: kind.name for m, kind in layout.kinds.items()}, "settings": settings, "splits": counts,
            "dropped": [s.name for s in layout.samples if not _any_source(s) or id(s) in left_out],
            "sources_sha256": _sha(sources),
            "arrays": {m: {"shape": list(e.shape), "dtype": e.dtype.name} for m, e in extractors.items()},
            "on_corrupt": on_corrupt, "device": device, "cpu_kernels": cpu_kernels,
            "elapsed_seconds": round(time.perf_counter() - started, 1),  # of the last invocation
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "train": _train_command(dataset, out, raw),
        }
        store.finish(manifest, {"sources.csv": sources}, keep)
    return manifest


def _device(device: str) -> str:
    """``--device`` checked and resolved (``auto`` = CUDA when present), once."""
    check_choice("--device", device, ["auto", "cpu", "cuda"])
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", device, "no CUDA device is available here; use auto or cpu")
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _extractors(layout: Layout, raw: Sequence[str], models: dict[str, str | None], options: Options, device: str,
                bf16: bool) -> dict[str, Extractor]:
    """What each modality of ``layout`` becomes, as its kind says; a modality its kind cannot store raw, or
    without a backbone folder, is refused."""
    if any(m not in layout.kinds or layout.kinds[m].raw is None for m in raw):
        raise ConfigError("--raw", list(raw), f"modalities of {layout.dataset} that can be stored raw: "
                                              f"{[m for m, kind in layout.kinds.items() if kind.raw]}")
    return {m: kind.extractor(m, layout.dataset, m in raw, models.get(kind.model), options, device, bf16)
            for m, kind in layout.kinds.items()}


def _any_source(sample: Sample) -> bool:
    return any(v is not None for v in sample.sources.values())


def _kept(status: dict[str, np.ndarray], on_corrupt: str) -> dict[str, np.ndarray]:
    """Per split, which rows have data: a row whose every source is corrupt (``on_corrupt="absent"``) has
    none, so it is left out as a row without sources is. A split left without rows is refused."""
    keep = {split: (s == PRESENT).any(axis=1) for split, s in status.items()}
    if empty := [split for split, k in keep.items() if not k.any()]:
        raise ConfigError("--on-corrupt", on_corrupt, f"leaves no {empty[0]} row: each of its {len(keep[empty[0]])} "
                                                      "rows has only sources that cannot be decoded; replace them "
                                                      "with good copies and rerun the same command")
    return keep


def _check_sources(store: Store, rows: dict[str, list[Sample]], layout: Layout, options: Options, root: Path,
                   pool: ThreadPoolExecutor) -> None:
    """Refuse to resume when a source of a row already written now holds other bytes than the row was
    prepared from (its recorded sha256): the arrays would keep what the old bytes gave. Reads those sources
    again (in threads), writes nothing."""
    changed = []
    for split, samples in rows.items():
        recorded = store.written_sources(split)
        jobs = [(i, j, m) for i in range(len(recorded)) for j, m in enumerate(layout.kinds) if recorded[i, j]]
        sources = [(layout.kinds[m], samples[i].sources[m]) for i, _, m in jobs]
        now = pool.map(lambda job: _digest(*job, options), sources)
        changed += [f"{split} row {i} ({samples[i].name}): {m} {_source_name(samples[i].sources[m], root)}"
                    for (i, j, m), digest in zip(jobs, now) if digest != recorded[i, j].decode()]
    store.check_sources(changed, root)


def _digest(kind: Kind, source: Path | str, options: Options) -> str | None:
    """The sha256 ``kind`` reads from ``source``; None when it cannot be read."""
    try:
        return kind.digest(source, options)
    except OSError:
        return None


class _Batches:
    """Writes the rows of a split in batches: reads their sources in threads, runs each modality's present
    rows through its extractor, and commits each batch before the next (module docstring)."""

    def __init__(self, layout: Layout, extractors: dict[str, Extractor], options: Options, pool: ThreadPoolExecutor,
                 on_corrupt: str):
        self.kinds, self.extractors, self.options, self.pool = layout.kinds, extractors, options, pool
        self.names, self.on_corrupt = list(layout.kinds), on_corrupt

    def write_split(self, store: Store, split: str, samples: list[Sample], keys: list[bytes], batch_size: int,
                    bar) -> np.ndarray:
        """Write the rows of ``split`` not yet written; return the status of every source of every row."""
        n = len(self.names)
        arrays = store.arrays(split, len(samples), {
            **{m: (e.shape, e.dtype) for m, e in self.extractors.items()},
            "y": ((), np.dtype(np.int64)), "mask": ((n,), np.dtype(bool))}, split)
        book = store.arrays(f"{split}.sources", len(samples), {
            "status": ((n,), np.dtype(np.uint8)), "sha256": ((n,), np.dtype("S64")), "key": ((), np.dtype("S64"))},
            split)
        start = store.done(split)
        with bar(total=len(samples), initial=start) as progress:
            for a in range(start, len(samples), batch_size):
                batch = samples[a:a + batch_size]
                self._write(batch, a, arrays, book)
                book["key"][a:a + len(batch)] = keys[a:a + len(batch)]
                store.commit(split, a + len(batch))
                progress.update(len(batch))
        np.save(store.work / split / "modalities.npy", np.array(self.names))
        return np.asarray(book["status"])

    def _load(self, sample: Sample, m: str) -> tuple[int, object, bytes]:
        """(status, decoded item, sha256) of one source; a corrupt one's sha256 too, so that a resume can tell
        when it has been replaced."""
        source = sample.sources[m]
        if source is None:
            return ABSENT, None, b""
        try:
            item, sha = self.kinds[m].read(source, sample.segment, self.options, getattr(self.extractors[m], "rate",
                                                                                           None))
        except CorruptSource as err:
            if self.on_corrupt == "stop":
                err.only_source = all(v is None for k, v in sample.sources.items() if k != m)  # for its advice
                raise
            return CORRUPT, None, (_digest(self.kinds[m], source, self.options) or "").encode()
        return PRESENT, item, sha.encode()

    def _write(self, batch: list[Sample], first: int, arrays: dict, book: dict) -> None:
        """Read, extract and write the rows ``first, first + 1, ...`` of one batch."""
        names = self.names
        loaded = list(self.pool.map(lambda job: self._load(*job), [(s, m) for s in batch for m in names]))
        rows = np.arange(first, first + len(batch))
        status = np.array([code for code, _, _ in loaded], dtype=np.uint8).reshape(len(batch), len(names))
        for j, m in enumerate(names):
            present = status[:, j] == PRESENT
            items = [loaded[i * len(names) + j][1] for i in np.flatnonzero(present)]
            array = arrays[m]
            array[rows[~present]] = 0
            if items:
                array[rows[present]] = self.extractors[m](items)
        arrays["y"][rows] = [s.label for s in batch]
        arrays["mask"][rows] = status == PRESENT
        book["status"][rows] = status
        book["sha256"][rows] = np.array([sha for _, _, sha in loaded], dtype="S64").reshape(len(batch), len(names))


def _counts(status: np.ndarray, names: list[str]) -> dict:
    """A split's counts for the manifest, from the status of each source of its rows."""
    return {"rows": len(status), **{what: {m: int((status[:, j] == code).sum()) for j, m in enumerate(names)}
                                    for code, what in ((ABSENT, "absent"), (CORRUPT, "corrupt"))}}


def _settings(layout: Layout, root: Path, extractors: dict[str, Extractor], raw: Sequence[str], options: Options,
              precision: str) -> dict:
    """Everything that decides the prepared numbers; a resume must match it exactly (``mmal.prepare.store``):
    precision, and the options the kinds of the dataset's modalities say decide theirs."""
    used = {name for m, kind in layout.kinds.items() for name in kind.settings(m in raw)}
    backbones = {}
    for m, e in extractors.items():
        if isinstance(e, Pretrained):
            backbones[m] = {"folder": str(e.folder.resolve()), "weights": e.weights.name,
                            "weights_sha256": file_digest(e.weights), "model": type(e.model).__name__,
                            # transformers picks a torchvision or a PIL image processor by what is installed;
                            # they resize differently, so which one ran is part of the numbers
                            "processor": type(e.processor).__name__}
        else:
            backbones[m] = {"raw": type(e).__name__}
    return {
        "dataset": layout.dataset, "root": str(root.resolve()), "modalities": backbones, "raw": sorted(raw),
        "index_files": {str(p.relative_to(root)): file_digest(p) for p in layout.index_files},
        "rows": layout.notes, "precision": precision, **{name: getattr(options, name) for name in sorted(used)},
        "versions": {p: version(p) for p in ("mmal", "torch", "transformers", "numpy", "scipy", "pillow")},
    }


def _key(sample: Sample, root: Path) -> bytes:
    """The identity of a row: its name, label, segment and sources (files relative to ``root``; texts by
    checksum), as a sha256 hex; a resume keeps a written row only while its key is unchanged."""
    sources = {m: None if v is None else text_digest(v) if isinstance(v, str) else str(v.relative_to(root))
               for m, v in sample.sources.items()}
    identity = json.dumps([sample.name, sample.label, sample.segment, sources], sort_keys=True)
    return _sha(identity).encode()


def _sources_csv(rows: dict[str, list[Sample]], keep: dict[str, np.ndarray], names: list[str], root: Path,
                 store: Store) -> str:
    """One line per prepared row (those ``keep`` says): split, row (in the arrays), name, label, and per
    modality its source, status and sha256."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    columns = [f"{m}_{c}" for m in names for c in ("source", "status", "sha256")]
    writer.writerow(["split", "row", "name", "label", *columns])
    for split, samples in rows.items():
        status = np.load(store.work / f"{split}.sources" / "status.npy")
        sha = np.load(store.work / f"{split}.sources" / "sha256.npy")
        for row, i in enumerate(np.flatnonzero(keep[split])):
            s = samples[i]
            cells = []
            for j, m in enumerate(names):
                cells += [_source_name(s.sources[m], root), STATUS[status[i, j]], sha[i, j].decode()]
            writer.writerow([split, row, s.name, s.label, *cells])
    return text.getvalue()


def _source_name(source: Path | str | None, root: Path) -> str:
    """A source as ``sources.csv`` names it: its file relative to ``root``, ``text``, or nothing."""
    return "" if source is None else "text" if isinstance(source, str) else str(source.relative_to(root))


def _train_command(dataset: str, out: Path, raw: Sequence[str]) -> str:
    """The command that trains on the result: raw modalities get the CNN encoder."""
    cnn = "{_target_: mmal.models.encoders.ConvEncoder, _partial_: true}"
    return " ".join([f"python -m mmal.train dataset={dataset} dataset.root={out}",
                     *[f"'+model.encoders.{m}={cnn}'" for m in raw]])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bar(enabled: bool, desc: str):
    """A progress bar of ``desc`` to open with ``total`` and ``initial`` rows; closed when its block ends, so
    that an error printed after it starts a line of its own."""
    from tqdm import tqdm  # the [prepare] extra (transformers needs it too)

    return lambda total, initial: tqdm(disable=not enabled, unit="rows", desc=desc, total=total, initial=initial)
