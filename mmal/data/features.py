"""Precomputed per-modality features from files, e.g. frozen encoder embeddings of UPMC Food-101
(image + text), CREMA-D or Kinetics-Sounds (audio + video). docs/datasets.md has the layout and a
worked example; ``scripts/make_example_features.py`` writes the small example in ``examples/features``.

Layout under ``root``: one entry per split, each in one of three formats,

- ``<split>.npz``: ``np.savez`` with one array per modality, ``y`` and optional ``mask``/``modalities``;
- ``<split>.pt``: ``torch.save`` of a dict of tensors with the same keys (``modalities`` a list of str);
- ``<split>/``: a folder with ``<modality>.npy``, ``y.npy`` and optional ``mask.npy``/``modalities.npy``;

where the splits are ``pool``, ``val`` and ``test``; or ``pool`` and ``test`` (val is then drawn from the
pool file, stratified, ``val_fraction`` of its rows); or a single ``all`` (split stratified into
pool/val/test with ``val_fraction`` and ``test_fraction`` of its rows). Keys in every split:

- ``<modality>``: (N, ...) numbers, kept in their per-sample shape (``(N, D)`` features, ``(N, C, H, W)`` images for
  ``mmal.models.encoders.ConvEncoder``; a 1-d array becomes (N, 1)); rows of a missing modality may hold anything.
- ``y``: (N,) integer labels in [0, num_classes).
- ``mask``: optional (N, M) bool (or 0/1), True = present; its columns follow ``modalities``.
- ``modalities``: optional M names: the order of the mask's columns and the default modality order.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from mmal.data.memory import check_fits
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import Pitfall
from mmal.data.real import build_real_dataset, check_fractions, stratified_split
from mmal.errors import ConfigError, check_choice, check_int

RESERVED = ("y", "mask", "modalities")
LAYOUTS = (("pool", "val", "test"), ("pool", "test"), ("all",))


def load_features(
    pitfall: Pitfall,
    seed: int,
    root: str,
    modalities: Sequence[str] | None = None,
    num_classes: int | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    standardise: bool = True,
) -> MultimodalDataset:
    """Load the splits under ``root`` (module docstring) into a ``MultimodalDataset``, then standardise,
    add feature noise and draw missing modalities as every real dataset does (``mmal.data.real``).

    Args:
        pitfall: ``feature_noise`` and the missing-modality knobs apply; uniqueness/synergy are refused.
        seed: seeds the splits drawn here, the feature noise and the missingness.
        root: directory of the split files; a relative path is relative to the working directory.
        modalities: which arrays are modalities, in order; None = every array except ``y``, ``mask`` and
            ``modalities``, in the order of the ``modalities`` array if there is one, else of the file
            (npz, pt) or by name (npy folder).
        num_classes: None = 1 + the largest label in any split.
        val_fraction, test_fraction: used only for the splits the files do not have (see above).
        standardise: standardise each feature with pool statistics; False keeps the values as stored.
    """
    if not isinstance(root, str) or not root:
        raise ConfigError("dataset.root", root, "a directory holding the feature files (docs/datasets.md)")
    listed = [] if modalities is None or isinstance(modalities, str) else list(modalities)
    distinct = len(set(listed)) == len(listed) and all(isinstance(m, str) and m not in RESERVED for m in listed)
    if modalities is not None and not (listed and distinct):
        raise ConfigError("dataset.modalities", modalities, f"null (every array in the files) or a non-empty list of "
                                                            f"distinct array names, none of {list(RESERVED)}")
    if num_classes is not None:
        check_int("dataset.num_classes", num_classes, 2)
    check_fractions(val_fraction, test_fraction)
    check_choice("dataset.standardise", standardise, [True, False])
    base = Path(root)
    if not base.is_dir():
        raise ConfigError("dataset.root", str(root), f"no such directory {base.resolve()}")
    files = {s: _find_split(base, s) for s in ("all", "pool", "val", "test")}
    present = tuple(s for s, path in files.items() if path is not None)
    if present not in LAYOUTS:
        if "all" in present:
            problem = f"both 'all' and {list(present[1:])} in {base}: keep one layout"
        else:
            lacking = next(s for s in ("pool", "test") if s not in present)
            problem = f"no {lacking!r} split in {base} (no {lacking}.npz, {lacking}.pt or {lacking}/ folder of .npy)"
        raise ConfigError("dataset.root", str(root), f"{problem}; layouts: pool+val+test, pool+test or all")
    _check_memory(root, [files[s] for s in present])
    raw = {s: _read_split(files[s]) for s in present}
    first = files[present[0]]
    names = tuple(modalities) if modalities is not None else _default_modalities(raw[present[0]])
    if not names:
        raise ConfigError("dataset.modalities", modalities, f"no modality arrays in {first}")
    data = {s: _to_data(raw[s], files[s], names) for s in present}
    for s in present[1:]:
        for m in names:
            shape, first_shape = tuple(data[s].x[m].shape[1:]), tuple(data[present[0]].x[m].shape[1:])
            if shape != first_shape:
                raise ConfigError("dataset.modalities", m, f"samples of shape {shape} in {files[s]} but "
                                                            f"{first_shape} in {first}")

    largest = max(int(d.y.max()) for d in data.values() if len(d))
    k = largest + 1 if num_classes is None else num_classes
    for s, d in data.items():
        bad = d.y[(d.y < 0) | (d.y >= k)]
        if len(bad):
            raise ConfigError("dataset.num_classes", num_classes,
                               f"labels 'y' in {files[s]} must lie in [0, {k}); found {int(bad[0])}")

    if present == ("all",):
        rows = stratified_split(data["all"].y.numpy(), [val_fraction, test_fraction], seed, "dataset.val_fraction")
        data = {s: data["all"].subset(torch.from_numpy(r)) for s, r in zip(("pool", "val", "test"), rows)}
    elif present == ("pool", "test"):
        rows = stratified_split(data["pool"].y.numpy(), [val_fraction], seed, "dataset.val_fraction")
        data.update({s: data["pool"].subset(torch.from_numpy(r)) for s, r in zip(("pool", "val"), rows)})
    return build_real_dataset(data, k, pitfall, seed, standardise)


def save_features(root: str | Path, split: str, x: dict[str, np.ndarray], y: np.ndarray,
                  mask: np.ndarray | None = None, fmt: str = "npz") -> Path:
    """Write one split (``pool``, ``val``, ``test`` or ``all``) in the layout ``load_features`` reads.

    ``x``: modality name -> (N, ...) array; ``y``: (N,) integer labels; ``mask``: optional (N, M) bool with
    columns in the order of ``x``; ``fmt``: ``npz`` (compressed), ``pt`` or ``npy`` (a folder). Returns the path.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {**x, "y": np.asarray(y), "modalities": np.array(list(x))}
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    if fmt == "npz":
        np.savez_compressed(root / f"{split}.npz", **arrays)
        return root / f"{split}.npz"
    if fmt == "pt":
        torch.save({k: list(x) if k == "modalities" else torch.from_numpy(np.asarray(v)) for k, v in arrays.items()},
                   root / f"{split}.pt")
        return root / f"{split}.pt"
    if fmt == "npy":
        (root / split).mkdir(exist_ok=True)
        for k, v in arrays.items():
            np.save(root / split / f"{k}.npy", v)
        return root / split
    raise ValueError(f"fmt={fmt!r}: one of 'npz', 'pt', 'npy'")


def _find_split(root: Path, split: str) -> Path | None:
    """The one file or folder holding ``split``; two formats for one split are ambiguous."""
    found = [p for p in (root / f"{split}.npz", root / f"{split}.pt", root / split) if p.exists()]
    if len(found) > 1:
        raise ConfigError("dataset.root", str(root), f"split {split!r} is stored twice: {[str(p) for p in found]}")
    return found[0] if found else None


def _read_split(path: Path) -> dict[str, np.ndarray]:
    """Every array of one split as numpy, keys in file order (npz, pt) or by name (npy folder)."""
    if path.is_dir():
        arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(path.glob("*.npy"))}
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    else:
        content = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(content, dict):
            raise ConfigError("dataset.root", str(path.parent), f"{path} holds a {type(content).__name__}, "
                                                                 "expected a dict of tensors")
        arrays = {k: np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in content.items()}
    if "y" not in arrays:
        raise ConfigError("dataset.root", str(path.parent), f"{path} has no labels 'y'; it holds {list(arrays)}")
    return arrays


def _check_memory(root: str, paths: list[Path]) -> None:
    """Refuse files whose loading cannot fit in memory, from their array headers (nothing is read). Peak,
    measured (npy folders, 25k pool + 5k test rows): float32 features of 2,816 dims, 1.5 GB for 0.31 GB of
    arrays; uint8 images (3, 64, 64), 6.6 GB for 0.34 GB stored (1.4 GB as float32). The arrays as stored,
    their float32 copies, the split's copies, and the pool statistics in float64 (``mmal.data.real``):
    within the stored size plus 5x the float32 size."""
    stored = float32 = 0
    for path in paths:
        for shape, itemsize in _array_headers(path):
            stored += math.prod(shape) * itemsize
            float32 += math.prod(shape) * 4
    check_fits("dataset.root", root, stored + 5 * float32, f"loading the {stored / 2**30:.1f} GiB of arrays")


def _array_headers(path: Path) -> list[tuple[tuple[int, ...], int]]:
    """(shape, bytes per element) of every array of one split file or folder, from the headers only; []
    for a file whose headers cannot be read (reading it then reports what is wrong, naming it)."""
    try:
        if path.suffix == ".pt":
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # maps, does not read
            tensors = content.values() if isinstance(content, dict) else []
            return [(tuple(t.shape), t.element_size()) for t in tensors if isinstance(t, torch.Tensor)]
        with contextlib.ExitStack() as stack:
            if path.is_dir():
                files = [stack.enter_context(open(p, "rb")) for p in sorted(path.glob("*.npy"))]
            else:
                archive = stack.enter_context(zipfile.ZipFile(path))
                files = [stack.enter_context(archive.open(name)) for name in archive.namelist()]
            return [_npy_header(f) for f in files]
    except Exception:  # noqa: BLE001 (any damage: the reader names the file)
        return []


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], int]:
    """(shape, bytes per element) from the header of an open .npy file."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return shape, dtype.itemsize


def _default_modalities(arrays: dict[str, np.ndarray]) -> tuple[str, ...]:
    if "modalities" in arrays:
        return tuple(str(m) for m in arrays["modalities"])
    return tuple(k for k in arrays if k not in RESERVED)


def _to_data(arrays: dict[str, np.ndarray], path: Path, names: tuple[str, ...]) -> MultimodalData:
    """One split as ``MultimodalData`` with the file's mask (all True without one); checks every array."""
    y = arrays["y"]
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        bad = np.flatnonzero(~np.isfinite(y))
        raise ConfigError("dataset.root", str(path.parent), f"labels 'y' in {path} hold {len(bad)} non-finite "
                                                             f"values (NaN or inf), first at row {bad[0]}: every "
                                                             "row needs a label")
    integral = np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(np.round(y) == y))
    if y.ndim != 1 or not integral:
        raise ConfigError("dataset.root", str(path.parent), f"labels 'y' in {path} must be a 1-d integer array, "
                                                             f"got shape {y.shape} dtype {y.dtype}")
    n = len(y)
    x = {}
    for m in names:
        if m in RESERVED or m not in arrays:
            available = [k for k in arrays if k not in RESERVED]
            raise ConfigError("dataset.modalities", m, f"not a modality array in {path}; it holds {available}")
        v = arrays[m]
        if len(v) != n or not np.issubdtype(v.dtype, np.number):
            raise ConfigError("dataset.root", str(path.parent), f"modality {m!r} in {path} has shape {v.shape} "
                                                                 f"dtype {v.dtype}, expected {n} rows of numbers "
                                                                 f"like 'y'")
        x[m] = torch.from_numpy(np.ascontiguousarray(v.reshape(n, -1) if v.ndim == 1 else v, dtype=np.float32))
    mask = torch.ones(n, len(names), dtype=torch.bool)
    if "mask" in arrays:
        mask = torch.from_numpy(_file_mask(arrays, path, names, n))
    for i, m in enumerate(names):
        finite_rows = torch.isfinite(x[m]).flatten(1).all(1)  # no copy of the values: a bool per element
        if not (finite_rows | ~mask[:, i]).all():
            raise ConfigError("dataset.root", str(path.parent), f"modality {m!r} in {path} has NaN or infinite "
                                                                 "values in rows marked present")
        if not mask[:, i].all():
            x[m][~mask[:, i]] = 0.0  # in place; absent rows may hold NaN, which would survive x * 0
    return MultimodalData(x=x, mask=mask, y=torch.from_numpy(y.astype(np.int64)), modalities=names)


def _file_mask(arrays: dict[str, np.ndarray], path: Path, names: tuple[str, ...], n: int) -> np.ndarray:
    """(N, M) bool presence of ``names`` from the file's ``mask``, whose columns follow ``modalities``."""
    mask = arrays["mask"]
    if "modalities" not in arrays:
        raise ConfigError("dataset.root", str(path.parent), f"{path} has a 'mask' but no 'modalities' array "
                                                             "naming its columns")
    columns = [str(m) for m in arrays["modalities"]]
    if mask.shape != (n, len(columns)) or not np.isin(mask, (0, 1)).all():
        raise ConfigError("dataset.root", str(path.parent), f"'mask' in {path} has shape {mask.shape}, expected "
                                                             f"({n}, {len(columns)}) of bool or 0/1, columns "
                                                             f"{columns}")
    missing = [m for m in names if m not in columns]
    if missing:
        raise ConfigError("dataset.modalities", missing[0], f"not a column of 'mask' in {path}; its "
                                                             f"'modalities' are {columns}")
    return mask[:, [columns.index(m) for m in names]].astype(bool)
