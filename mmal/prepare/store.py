"""Where a preparation writes, so that it can stop at any point and resume, and never mixes two.

While it works, everything lives in ``<out>/.incomplete/``: ``settings.json`` (what is being prepared),
one folder per split with its arrays as ``.npy`` files mapped into memory (allocated once, at full size),
and ``progress.json``, the rows of each split written so far, replaced atomically after the rows are
flushed. Next to each split's arrays, ``<split>.sources/`` records per row the status and checksum of each
source and the row's identity (``key``: its name, label and sources), so that a resume can check that the
rows it keeps are still the rows the layout gives, read from the same bytes. A rerun with the same settings
continues after the last recorded row; with other settings, or when a row already written has changed in
the source tree (another row at its place, or a source of other content), it is refused, naming what
differs, and nothing is touched. While a preparation works it holds the lock of ``mmal.checkpoint`` on
the work folder, so a second one into the same ``--out`` is refused at once. When every split is complete
the split folders move to ``<out>/<split>/`` (the npy-folder layout of ``mmal.data.features``), less the
rows the preparation leaves out, and ``manifest.json`` is written last: its presence is what says the
preparation is finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mmal.checkpoint import RunDirectoryError, locked
from mmal.errors import ConfigError

MANIFEST = "manifest.json"
CHUNK = 4096  # rows copied at a time when rows are left out at the end


def check_out(out: Path) -> None:
    """Refuse, before any work, an ``out`` that cannot become a folder: a file, or a new folder under a file
    or under a folder this user may not write to. (Creating it may still fail, on a read-only file system:
    ``Store.claimed`` says so then. An existing folder is for ``Store.finished`` to judge: a finished
    preparation may be read-only.)"""
    if out.exists():
        if not out.is_dir():
            raise ConfigError("--out", str(out), "is a file; give a new or empty folder (nothing there is touched)")
        return
    there = next(p for p in out.absolute().parents if p.exists())
    if not there.is_dir():
        raise ConfigError("--out", str(out), f"cannot be created: {there} is a file; give a folder elsewhere")
    if not os.access(there, os.W_OK | os.X_OK):
        raise ConfigError("--out", str(out), f"cannot be created: {there} is not writable for this user; give a "
                                             "folder where you can write")


class Store:
    def __init__(self, out: Path, settings: dict):
        self.out, self.work, self.settings = out, out / ".incomplete", settings
        self._arrays: dict[str, dict[str, np.memmap]] = {}

    def finished(self) -> bool:
        """True when ``out`` holds a finished preparation of these same settings; raises ``ConfigError`` when
        it holds anything else (a finished preparation of other settings, or other files). Writes nothing."""
        manifest = self.out / MANIFEST
        if manifest.is_file():
            _refuse_other("--out", self.out, json.loads(manifest.read_text())["settings"], self.settings,
                          "a finished preparation")
            return True
        if self.out.is_dir() and any(p.name != ".incomplete" for p in self.out.iterdir()):
            raise ConfigError("--out", str(self.out), "a folder holding other files; give an empty or new folder "
                                                      "(nothing there is touched)")
        return False

    @contextlib.contextmanager
    def claimed(self) -> Iterator[None]:
        """Hold the work folder for this process (``mmal.checkpoint.locked``) and check or record its
        settings; a second preparation into the same ``out`` is refused while this one runs."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locked(self.work))
            except RunDirectoryError:
                raise ConfigError("--out", str(self.out), "is being written by another mmal-prepare run right now; "
                                                          "wait for it to end, or give another --out") from None
            except OSError as err:  # what check_out cannot foresee: a read-only file system
                raise ConfigError("--out", str(self.out), f"cannot be created ({err.strerror}: {err.filename}); "
                                                          "give a folder where you can write") from None
            if self.finished():  # finished by another run between our first look and the lock
                shutil.rmtree(self.work)
                raise ConfigError("--out", str(self.out), "was finished by another mmal-prepare run meanwhile; "
                                                          "rerun to use it")
            if (self.work / "settings.json").is_file():
                _refuse_other("--out", self.out, json.loads((self.work / "settings.json").read_text()),
                              self.settings, "an unfinished preparation")
            else:
                _write_json(self.work / "settings.json", self.settings)
            yield

    def done(self, split: str) -> int:
        """Rows of ``split`` already written."""
        progress = self.work / "progress.json"
        return json.loads(progress.read_text()).get(split, 0) if progress.is_file() else 0

    def check_rows(self, split: str, keys: list[bytes], names: list[str], root: Path) -> None:
        """Refuse to resume when a row of ``split`` already written is not, at the same position, the row of
        identity ``keys[i]`` (named ``names[i]``) that the source tree gives now. Rows not yet written may
        change, come or go: the arrays are resized to the rows of now (``arrays``)."""
        done, path = self.done(split), self.work / f"{split}.sources" / "key.npy"
        if not done:
            return
        written = np.load(path, mmap_mode="r") if path.is_file() else np.zeros(done, "S64")
        differ = next((i for i in range(done) if i >= len(keys) or written[i] != keys[i]), None)
        if differ is not None:
            now = f"{names[differ]} now" if differ < len(keys) else "gone now"
            raise ConfigError("--root", str(root), f"changed since the unfinished preparation in {self.work} wrote "
                                                   f"the first {done} of its {len(written)} {split} rows: {split} "
                                                   f"row {differ} ({now}) has other sources or another label than "
                                                   f"when it was written ({len(keys)} {split} rows now). Put the "
                                                   f"files back as they were to resume, or delete {self.work} to "
                                                   "start over (its rows are lost)")

    def written_sources(self, split: str) -> np.ndarray:
        """The recorded sha256 (hex, as bytes; empty where none was) of each source of the rows of ``split``
        already written, (rows, modalities)."""
        done, path = self.done(split), self.work / f"{split}.sources" / "sha256.npy"
        return np.load(path, mmap_mode="r")[:done] if done and path.is_file() else np.zeros((0, 0), "S64")

    def check_sources(self, changed: list[str], root: Path) -> None:
        """Refuse to resume when sources of rows already written (``changed``, each as "<split> row <i>
        (<name>): <modality> <file>") now hold other bytes than those rows were prepared from."""
        if changed:
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            raise ConfigError("--root", str(root), f"changed since the unfinished preparation in {self.work} wrote "
                                                   f"its rows: {len(changed)} source(s) of rows already written hold "
                                                   f"other bytes than those rows were prepared from (their SHA-256 "
                                                   f"differs): {'; '.join(changed[:5])}{more}. Put the files back "
                                                   f"as they were to resume, or delete {self.work} to start over "
                                                   "(its rows are lost)")

    def arrays(self, group: str, rows: int, specs: dict[str, tuple[tuple[int, ...], np.dtype]], split: str
               ) -> dict[str, np.memmap]:
        """The arrays of folder ``group`` (name -> (rows, *shape) of dtype), created at full size or reopened,
        keeping the rows of ``split`` already written (resized when the number of rows changed)."""
        folder = self.work / group
        folder.mkdir(exist_ok=True)
        arrays = {}
        for name, (shape, dtype) in specs.items():
            path = folder / f"{name}.npy"
            old = np.load(path, mmap_mode="r+") if path.is_file() else None
            if old is not None and len(old) == rows:
                arrays[name] = old
                continue
            tmp = path.with_suffix(".tmp")
            arrays[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(rows, *shape))
            if old is not None:
                done = self.done(split)
                arrays[name][:done] = old[:done]
                arrays[name].flush()
                del old
            os.replace(tmp, path)
        self._arrays[group] = arrays
        return arrays

    def commit(self, split: str, rows_done: int) -> None:
        """Record that the first ``rows_done`` rows of ``split`` are written, once they are on disk."""
        self._flush()
        progress = self.work / "progress.json"
        state = json.loads(progress.read_text()) if progress.is_file() else {}
        _write_json(progress, {**state, split: rows_done})

    def finish(self, manifest: dict, extra: dict[str, str], keep: dict[str, np.ndarray]) -> None:
        """Move the split folders into ``out`` with the rows ``keep[split]`` (a bool per row) of their arrays,
        write ``extra`` files (name -> text), then the manifest; the rest of the work folder (bookkeeping
        arrays) goes."""
        self._flush()
        for split, rows in keep.items():
            folder = self.work / split if rows.all() else self._subset(split, rows)
            shutil.move(str(folder), str(self.out / split))
        self._arrays = {}
        for name, text in extra.items():
            (self.out / name).write_text(text)
        _write_json(self.out / MANIFEST, manifest)
        shutil.rmtree(self.work)

    def _subset(self, split: str, rows: np.ndarray) -> Path:
        """A copy of the folder of ``split`` with only ``rows`` of its per-row arrays (those ``arrays`` opened;
        ``modalities.npy`` is copied as it is), in chunks; the work folder keeps every row until the end."""
        folder, kept = self.work / split, self.work / f"{split}.kept"
        kept.mkdir(exist_ok=True)
        index = np.flatnonzero(rows)
        for path in sorted(folder.glob("*.npy")):
            if path.stem not in self._arrays[split]:
                shutil.copyfile(path, kept / path.name)
                continue
            old = self._arrays[split][path.stem]
            new = np.lib.format.open_memmap(kept / path.name, mode="w+", dtype=old.dtype,
                                            shape=(len(index), *old.shape[1:]))
            for a in range(0, len(index), CHUNK):
                new[a:a + CHUNK] = old[index[a:a + CHUNK]]
            new.flush()
            del new
        return kept

    def _flush(self) -> None:
        for arrays in self._arrays.values():
            for array in arrays.values():
                array.flush()


def _refuse_other(key: str, out: Path, found: dict, wanted: dict, what: str) -> None:
    found, wanted = _flat(found), _flat(wanted)
    differ = next((k for k in sorted(set(found) | set(wanted)) if found.get(k) != wanted.get(k)), None)
    if differ is not None:
        raise ConfigError(key, str(out), f"holds {what} with other settings ({differ}: {found.get(differ)!r} there, "
                                         f"{wanted.get(differ)!r} now); rerun with the same settings, or give "
                                         "another --out (nothing there is touched)")


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys (``modalities.image.weights_sha256``), so a refusal names the leaf."""
    flat = {}
    for k, v in settings.items():
        flat.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return flat


def _write_json(path: Path, content: dict) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True))
    os.replace(tmp, path)
