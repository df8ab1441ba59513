"""One preparation: a raw dataset folder in its published layout -> the arrays mmal trains on, with a
manifest that records every input and setting (docs/datasets.md).

Rows are processed in batches in the layout's order: each batch's sources are read (in threads: image
decoding dominates on a GPU machine), each modality's present rows go through its extractor, and the
batch is committed (``mmal.prepare.store``) before the next starts, so a stopped run resumes where it
stopped. A source that is not there is an absent modality for its row (mask False, zeros in the array);
a source that is there but cannot be decoded stops the run with its path (``on_corrupt="stop"``) or is
treated as absent too (``on_corrupt="absent"``). Rows with no modality at all are left out and named in
the manifest.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from mmal.errors import ConfigError, check_choice, check_int, check_number
from mmal.prepare.decode import CorruptSource, file_digest, read_audio, read_frames, read_image, text_digest
from mmal.prepare.extractors import Extractor, LogMel, Pixels, Pretrained
from mmal.prepare.layouts import LAYOUTS, WITH_FRAMES, Layout, Sample
from mmal.prepare.store import Store

PRESENT, ABSENT, CORRUPT = 0, 1, 2
STATUS = ("present", "absent", "corrupt")
MODEL_FLAGS = {"image": "--image-model", "frames": "--image-model", "text": "--text-model", "audio": "--audio-model"}


def prepare(dataset: str, root: str | Path, out: str | Path, *, models: dict[str, str | None] | None = None,
            raw: Sequence[str] = (), image_size: int = 64, frames: int = 1, fps: int = 1, n_mels: int = 128,
            seconds: float | None = None, max_length: int = 128, batch_size: int = 64, device: str = "auto",
            precision: str = "fp32", on_corrupt: str = "stop", workers: int = 4, progress: bool = True) -> dict:
    """Prepare ``dataset`` from ``root`` into ``out`` and return the manifest (module docstring).

    Args:
        models: backbone folder per kind (``image`` — also used for frames —, ``text``, ``audio``); needed
            for every modality not in ``raw``.
        raw: modalities stored as raw tensors instead of embeddings (images, frames, audio; not text).
        image_size: side of raw images and frames; frames: frames per clip (embeddings are averaged, raw
            frames stacked on channels); fps: which ``Image-<fps>-FPS`` folder (CREMA-D).
        n_mels, seconds: raw log-mel bands and clip length (every clip is tiled or cut to ``seconds``, for
            embeddings too; None = the dataset's: 3 s CREMA-D, 10 s AVE); max_length: tokens per text.
        batch_size, workers, device (``auto`` = CUDA when present), precision (``fp32`` | ``bf16``):
            how fast, not what: only precision changes the numbers, so only it is part of the settings.
    """
    check_choice("dataset", dataset, list(LAYOUTS))
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise ConfigError("--root", str(root), "no such directory: the folder holding the raw dataset")
    for key, value in [("--image-size", image_size), ("--frames", frames), ("--fps", fps), ("--n-mels", n_mels),
                       ("--text-max-length", max_length), ("--batch-size", batch_size), ("--workers", workers)]:
        check_int(key, value, 1)
    if seconds is not None:
        check_number("--seconds", seconds, 0.1)
    check_choice("--device", device, ["auto", "cpu", "cuda"])
    check_choice("--precision", precision, ["fp32", "bf16"])
    check_choice("--on-corrupt", on_corrupt, ["stop", "absent"])
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", device, "no CUDA device is available here; use auto or cpu")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device

    layout = LAYOUTS[dataset](root, fps=fps) if dataset in WITH_FRAMES else LAYOUTS[dataset](root)
    seconds = layout.seconds if seconds is None else seconds
    names = list(layout.kinds)
    if any(m not in names or layout.kinds[m] == "text" for m in raw):
        raise ConfigError("--raw", list(raw), f"modalities of {dataset} that can be stored raw: "
                                              f"{[m for m in names if layout.kinds[m] != 'text']}")
    models = models or {}
    extractors: dict[str, Extractor] = {}
    for m in names:
        kind = layout.kinds[m]
        backbone = models.get("image" if kind == "frames" else kind)  # frames go through the image model
        if m in raw:
            extractors[m] = LogMel(n_mels, seconds) if kind == "audio" else Pixels(kind, image_size, frames)
        elif not backbone:
            instead = " (text cannot be stored raw)" if kind == "text" else f", or --raw {m} to store it as raw tensors"
            raise ConfigError(MODEL_FLAGS[kind], None, f"a local model folder for {dataset}'s {m!r} modality"
                                                       f"{instead}")
        else:
            extractors[m] = Pretrained(kind, Path(backbone), MODEL_FLAGS[kind], device, precision == "bf16",
                                       max_length)

    kept = [s for s in layout.samples if any(v is not None for v in s.sources.values())]
    dropped = [s.name for s in layout.samples if all(v is None for v in s.sources.values())]
    if empty := [split for split in layout.splits if not any(s.split == split for s in kept)]:
        raise ConfigError("--root", str(root), f"split {empty[0]!r} has no row with any modality present "
                                               f"({layout.notes['splits']})")
    kinds = {layout.kinds[m] for m in names}
    options = {"precision": precision}  # and those that apply to this dataset:
    options |= {"max_length": max_length} if "text" in kinds else {}
    options |= {"seconds": seconds} if "audio" in kinds else {}
    options |= {"frames": frames, "fps": fps} if "frames" in kinds else {}
    options |= {"n_mels": n_mels} if any(layout.kinds[m] == "audio" for m in raw) else {}
    options |= {"image_size": image_size} if any(layout.kinds[m] in ("image", "frames") for m in raw) else {}
    settings = _settings(layout, root, extractors, raw, **options)
    store = Store(out, settings)
    if store.finished():
        print(f"{out} already holds this preparation ({out / 'manifest.json'}); nothing to do")
        return json.loads((out / "manifest.json").read_text())

    started = time.perf_counter()
    rate = next((e.rate for e in extractors.values() if getattr(e, "rate", None)), 16000)
    read = {"image": lambda p, s: read_image(p), "frames": lambda p, s: read_frames(p, frames),
            "audio": lambda p, s: read_audio(p, rate, seconds, s.segment), "text": lambda t, s: (t, text_digest(t))}
    split_rows = {split: [s for s in kept if s.split == split] for split in layout.splits}
    keys = {split: [_key(s, root) for s in rows] for split, rows in split_rows.items()}
    counts = {}
    with store.claimed(), ThreadPoolExecutor(workers) as pool:
        for split, rows in split_rows.items():  # before anything is written: the rows kept are still the rows
            store.check_rows(split, keys[split], [s.name for s in rows], root)
        for split, rows in split_rows.items():
            arrays = store.arrays(split, len(rows), {
                **{m: (e.shape, e.dtype) for m, e in extractors.items()},
                "y": ((), np.dtype(np.int64)), "mask": ((len(names),), np.dtype(bool))}, split)
            book = store.arrays(f"{split}.sources", len(rows), {"status": ((len(names),), np.dtype(np.uint8)),
                                                                "sha256": ((len(names),), np.dtype("S64")),
                                                                "key": ((), np.dtype("S64"))}, split)
            start = store.done(split)
            with _bar(progress, total=len(rows), initial=start, desc=f"{dataset} {split}") as bar:
                for a in range(start, len(rows), batch_size):
                    batch = rows[a:a + batch_size]
                    _write_batch(batch, a, names, layout, extractors, read, pool, on_corrupt, arrays, book)
                    book["key"][a:a + len(batch)] = keys[split][a:a + len(batch)]
                    store.commit(split, a + len(batch))
                    bar.update(len(batch))
            status = np.asarray(book["status"])
            counts[split] = {"rows": len(rows), **{what: {m: int((status[:, j] == code).sum())
                                                          for j, m in enumerate(names)}
                                                   for code, what in ((ABSENT, "absent"), (CORRUPT, "corrupt"))}}
            np.save(store.work / split / "modalities.npy", np.array(names))
        sources = _sources_csv(kept, names, root, store, layout.splits)
        manifest = {
            "dataset": dataset, "classes": layout.classes, "modalities": names, "kinds": layout.kinds,
            "settings": settings, "splits": counts, "dropped": dropped, "sources_sha256": _sha(sources),
            "arrays": {m: {"shape": list(e.shape), "dtype": e.dtype.name} for m, e in extractors.items()},
            "on_corrupt": on_corrupt, "device": device,
            "elapsed_seconds": round(time.perf_counter() - started, 1),  # of the last invocation
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "train": _train_command(dataset, out, raw),
        }
        store.finish(manifest, {"sources.csv": sources}, keep=layout.splits)
    return manifest


def _write_batch(batch: list[Sample], first: int, names: list[str], layout: Layout, extractors: dict[str, Extractor],
                 read: dict, pool: ThreadPoolExecutor, on_corrupt: str, arrays: dict, book: dict) -> None:
    """Read, extract and write the rows ``first, first + 1, ...`` of one batch."""
    def load(sample: Sample, m: str):
        source = sample.sources[m]
        if source is None:
            return ABSENT, None, b""
        try:
            item, sha = read[layout.kinds[m]](source, sample)
        except CorruptSource:
            if on_corrupt == "stop":
                raise
            return CORRUPT, None, b""
        return PRESENT, item, sha.encode()

    loaded = list(pool.map(lambda job: load(*job), [(s, m) for s in batch for m in names]))
    rows = np.arange(first, first + len(batch))
    status = np.array([code for code, _, _ in loaded], dtype=np.uint8).reshape(len(batch), len(names))
    for j, m in enumerate(names):
        present = status[:, j] == PRESENT
        items = [loaded[i * len(names) + j][1] for i in np.flatnonzero(present)]
        array = arrays[m]
        array[rows[~present]] = 0
        if items:
            array[rows[present]] = extractors[m](items)
    arrays["y"][rows] = [s.label for s in batch]
    arrays["mask"][rows] = status == PRESENT
    book["status"][rows] = status
    book["sha256"][rows] = np.array([sha for _, _, sha in loaded], dtype="S64").reshape(len(batch), len(names))


def _settings(layout: Layout, root: Path, extractors: dict[str, Extractor], raw: Sequence[str], **options) -> dict:
    """Everything that decides the prepared numbers; a resume must match it exactly (``mmal.prepare.store``)."""
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
        "rows": layout.notes, **options,
        "versions": {p: version(p) for p in ("mmal", "torch", "transformers", "numpy", "scipy", "pillow")},
    }


def _key(sample: Sample, root: Path) -> bytes:
    """The identity of a row: its name, label, segment and sources (files relative to ``root``; texts by
    checksum), as a sha256 hex; a resume keeps a written row only while its key is unchanged."""
    sources = {m: None if v is None else text_digest(v) if isinstance(v, str) else str(v.relative_to(root))
               for m, v in sample.sources.items()}
    identity = json.dumps([sample.name, sample.label, sample.segment, sources], sort_keys=True)
    return _sha(identity).encode()


def _sources_csv(samples: list[Sample], names: list[str], root: Path, store: Store, splits: tuple[str, ...]) -> str:
    """One line per prepared row: split, row, name, label, and per modality its source, status and sha256."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    columns = [f"{m}_{c}" for m in names for c in ("source", "status", "sha256")]
    writer.writerow(["split", "row", "name", "label", *columns])
    for split in splits:
        rows = [s for s in samples if s.split == split]
        status = np.load(store.work / f"{split}.sources" / "status.npy")
        sha = np.load(store.work / f"{split}.sources" / "sha256.npy")
        for i, s in enumerate(rows):
            cells = []
            for j, m in enumerate(names):
                source = s.sources[m]
                where = "" if source is None else "text" if isinstance(source, str) else str(source.relative_to(root))
                cells += [where, STATUS[status[i, j]], sha[i, j].decode()]
            writer.writerow([split, i, s.name, s.label, *cells])
    return text.getvalue()


def _train_command(dataset: str, out: Path, raw: Sequence[str]) -> str:
    """The command that trains on the result: raw modalities get the CNN encoder."""
    cnn = "{_target_: mmal.models.encoders.ConvEncoder, _partial_: true}"
    return " ".join([f"python -m mmal.train dataset={dataset} dataset.root={out}",
                     *[f"'+model.encoders.{m}={cnn}'" for m in raw]])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bar(enabled: bool, **kwargs):
    from tqdm import tqdm  # the [prepare] extra (transformers needs it too)

    return tqdm(disable=not enabled, unit="rows", **kwargs)
