"""Where a preparation writes, so that it can stop at any point and resume, and never mixes two.

While it works, everything lives in ``<out>/.incomplete/``: ``settings.json`` (what is being prepared),
one folder per split with its arrays as ``.npy`` files mapped into memory (allocated once, at full size),
and ``progress.json``, the rows of each split written so far, replaced atomically after the rows are
flushed. A rerun with the same settings continues after the last recorded row; with other settings it is
refused, naming the first setting that differs. When every split is complete the split folders move to
``<out>/<split>/`` (the npy-folder layout of ``mmal.data.features``) and ``manifest.json`` is written last:
its presence is what says the preparation is finished.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from mmal.errors import ConfigError

MANIFEST = "manifest.json"


class Store:
    def __init__(self, out: Path, settings: dict):
        self.out, self.work, self.settings = out, out / ".incomplete", settings
        self._arrays: dict[str, dict[str, np.memmap]] = {}

    def finished(self) -> bool:
        """True when ``out`` holds a finished preparation of these same settings; raises ``ConfigError`` when
        it holds anything else (a finished preparation of other settings, or other files)."""
        manifest = self.out / MANIFEST
        if manifest.is_file():
            _refuse_other("--out", self.out, json.loads(manifest.read_text())["settings"], self.settings,
                          "a finished preparation")
            return True
        if self.out.is_dir() and any(p.name != ".incomplete" for p in self.out.iterdir()):
            raise ConfigError("--out", str(self.out), "a folder holding other files; give an empty or new folder "
                                                      "(nothing there is touched)")
        if (self.work / "settings.json").is_file():
            _refuse_other("--out", self.out, json.loads((self.work / "settings.json").read_text()), self.settings,
                          "an unfinished preparation")
        else:
            self.work.mkdir(parents=True, exist_ok=True)
            _write_json(self.work / "settings.json", self.settings)
        return False

    def done(self, split: str) -> int:
        """Rows of ``split`` already written."""
        progress = self.work / "progress.json"
        return json.loads(progress.read_text()).get(split, 0) if progress.is_file() else 0

    def arrays(self, group: str, rows: int, specs: dict[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, np.memmap]:
        """The arrays of folder ``group`` (name -> (rows, *shape) of dtype), created at full size or reopened."""
        folder = self.work / group
        folder.mkdir(exist_ok=True)
        arrays = {}
        for name, (shape, dtype) in specs.items():
            path = folder / f"{name}.npy"
            if path.is_file():
                arrays[name] = np.load(path, mmap_mode="r+")
            else:
                arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, *shape))
        self._arrays[group] = arrays
        return arrays

    def commit(self, split: str, rows_done: int) -> None:
        """Record that the first ``rows_done`` rows of ``split`` are written, once they are on disk."""
        self._flush()
        progress = self.work / "progress.json"
        state = json.loads(progress.read_text()) if progress.is_file() else {}
        _write_json(progress, {**state, split: rows_done})

    def finish(self, manifest: dict, extra: dict[str, str], keep: tuple[str, ...]) -> None:
        """Move the split folders ``keep`` into ``out``, write ``extra`` files (name -> text), then the
        manifest; the rest of the work folder (bookkeeping arrays) goes."""
        self._flush()
        self._arrays = {}
        for split in keep:
            shutil.move(str(self.work / split), str(self.out / split))
        for name, text in extra.items():
            (self.out / name).write_text(text)
        _write_json(self.out / MANIFEST, manifest)
        shutil.rmtree(self.work)

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
