"""Smartwatch shoulder-exercise recordings: 7 exercises, 10 subjects, accelerometer + gyroscope (``dataset=watch``).

Source: the file ``seglearn/data/watch_dataset.npy`` that the PyPI package seglearn (>= 1.2.5, a dependency of
mmal) ships; BSD-3-Clause licence, Copyright (c) 2018 David M. Burns (seglearn's authors). Read as seglearn's own
``seglearn.datasets.load_watch`` reads it, ``np.load(path, allow_pickle=True).item()``, without importing seglearn
(``watch_file`` finds the package's folder from its import spec, which executes nothing). seglearn asks users of
the data to cite Burns, D., Leung, N., Hardisty, M., Whyne, C., Henry, P., McLachlin, S. (2018). *Shoulder
Physiotherapy Exercise Recognition: Machine Learning the Inertial Signals from a Smartwatch.* arXiv:1802.01489.

Structure (``load_watch``'s docstring, checked on the file): a pickled dict with ``X``, a list of 140 float64
recordings of shape (T, 6), T from 947 to 2,618 samples at 50 Hz (19-52 s), columns ``X_labels`` =
``ax ay az wx wy wz`` (accelerometer in g, its magnitude about 1 at rest; gyroscope); ``y`` (140,) the
exercise 0-6, named by ``y_labels`` = ``PEN ABD FEL IR ER TRAP ROW``; ``subject`` (140,) the participant,
1-10; ``side`` (140,) the arm, 1 = right, 0 = left. Every subject did every exercise once with each arm
(a set of 20 repetitions): 14 recordings per subject, 20 per exercise.

Windowing: each recording is cut into windows of ``window`` samples starting every ``stride`` samples,
``(T - window) // stride + 1`` of them (the tail shorter than a window is dropped); a window's label is its
recording's exercise. The defaults, 100 samples (2 s) every 50, are seglearn's ``Segment`` defaults
(``width=100, overlap=0.5``) and give 4,677 windows; 2 s holds about one repetition (a set of 20 takes 19-52 s).

Modalities: ``acc`` (``ax ay az``) and ``gyro`` (``wx wy wz``), each either ``features`` (the 44 summary
statistics of ``window_features``) or ``raw`` (the window itself, (3, window), for
``mmal.models.encoders.Conv1dEncoder``).

Split by subject: overlapping windows of one recording, and the recordings of one person, are correlated, so
all windows of a subject go to one split. A permutation of the subjects drawn from the seed puts the first
``test_subjects`` in test, the next ``val_subjects`` in val and the rest in the pool (``subject_split``); the
split sizes follow the subjects drawn (295-561 windows each). Then ``mmal.data.real.build_real_dataset``:
pool standardisation, ``feature_noise``, missing modalities.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mmal.data.memory import check_fits
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import REAL_KNOBS, SPLITS, Pitfall
from mmal.data.real import build_real_dataset
from mmal.errors import ConfigError, check_choice, check_int, is_int
from mmal.seeding import derive_seed

COLUMNS = ("ax", "ay", "az", "wx", "wy", "wz")  # the file's X_labels, in order
MODALITIES = {"acc": slice(0, 3), "gyro": slice(3, 6)}  # name -> its columns
CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")  # the file's y_labels: label k is CLASSES[k]
REPRESENTATIONS = ("features", "raw")
SERIES = ("x", "y", "z", "norm")  # the three axes and the magnitude sqrt(x^2 + y^2 + z^2)
PERCENTILES = (10, 25, 50, 75, 90)
STATS = ("mean", "std", "min", "max", *(f"p{q}" for q in PERCENTILES), "mean_abs_diff", "energy")
FEATURES = tuple(f"{s}_{t}" for s in SERIES for t in STATS)  # the 44 columns of window_features, series-major


@dataclass(frozen=True)
class Recordings:
    """The watch file's recordings: ``signals`` R arrays (T_r, 6) with columns ``COLUMNS``; ``y``, ``subject``
    and ``side`` (R,) int64: exercise (index into ``CLASSES``), participant id and arm (1 right, 0 left)."""

    signals: list[np.ndarray]
    y: np.ndarray
    subject: np.ndarray
    side: np.ndarray


def make_watch(
    pitfall: Pitfall,
    seed: int,
    window: int = 100,
    stride: int = 50,
    representation: str = "features",
    test_subjects: int = 3,
    val_subjects: int = 1,
    data_file: str | None = None,
) -> MultimodalDataset:
    """The watch recordings as a multimodal AL dataset (module docstring): windows, a split by subject drawn
    from ``seed``, modalities ``acc`` and ``gyro``; features standardised per column and raw windows per axis
    with pool statistics, then the pitfall's feature noise and missing modalities (``mmal.data.real``).

    Args:
        pitfall: ``feature_noise`` and the missing-modality knobs apply; uniqueness/synergy are refused.
        seed: seeds the subject split, the feature noise and the missingness.
        window: samples per window (50 Hz), at least 2 and at most the shortest recording (947).
        stride: samples between the starts of consecutive windows, 1 to ``window``.
        representation: ``features`` (44 per modality, ``window_features``) or ``raw`` ((3, window) per modality).
        test_subjects, val_subjects: subjects in test and in val; the pool keeps at least one.
        data_file: the watch file (``watch_dataset.npy``) elsewhere; None = the one seglearn ships.

    Returns:
        A ``MultimodalDataset`` with 7 classes; ``acc`` and ``gyro`` of shape (44,) or (3, window).
    """
    check_int("dataset.window", window, 2)  # a std and a first difference need two samples
    if not is_int(stride) or not 1 <= stride <= window:
        raise ConfigError("dataset.stride", stride, f"an integer >= 1 and <= dataset.window ({window}); a larger "
                                                    "stride would skip samples between windows")
    check_choice("dataset.representation", representation, REPRESENTATIONS)
    check_int("dataset.test_subjects", test_subjects, 1)
    check_int("dataset.val_subjects", val_subjects, 1)
    if data_file is not None and (not isinstance(data_file, str) or not data_file):
        raise ConfigError("dataset.data_file", data_file, "null (the file seglearn ships) or the path of "
                                                          "watch_dataset.npy")
    pitfall.check_real_data()  # the pitfall's own refusals, before the file is read
    pitfall.check_modalities(tuple(MODALITIES), REAL_KNOBS)
    path = Path(data_file) if data_file is not None else watch_file()
    if not path.is_file():
        raise ConfigError("dataset.data_file", data_file, f"no such file {path.resolve()}")
    rec = load_recordings(path)

    shortest = min(len(s) for s in rec.signals)
    if window > shortest:
        raise ConfigError("dataset.window", window, f"an integer >= 2 and <= {shortest}, the shortest recording "
                                                    f"in {path}")
    subjects = np.unique(rec.subject)
    if test_subjects + val_subjects >= len(subjects):
        raise ConfigError("dataset.test_subjects", test_subjects,
                          f"test_subjects + val_subjects = {test_subjects + val_subjects} must be < the "
                          f"{len(subjects)} subjects in {path} (the pool keeps the rest)")
    counts = np.array([(len(s) - window) // stride + 1 for s in rec.signals])
    if representation == "raw":  # the windows, their standardised copy and build_real_dataset's copies
        check_fits("dataset.stride", stride, 4 * int(counts.sum()) * len(COLUMNS) * window * 4,
                   f"{counts.sum()} raw windows of {window} samples (a larger stride, or representation=features)")

    views = [sliding_window_view(s, window, axis=0)[::stride] for s in rec.signals]  # (n_r, 6, window), no copy
    if representation == "features":
        x = {m: np.concatenate([window_features(v[:, cols]) for v in views]).astype(np.float32)
             for m, cols in MODALITIES.items()}
    else:
        x = {m: np.concatenate([v[:, cols] for v in views]).astype(np.float32) for m, cols in MODALITIES.items()}
    y, subject = np.repeat(rec.y, counts), np.repeat(rec.subject, counts)

    members = subject_split(rec.subject, seed, test_subjects, val_subjects)
    rows = {s: np.flatnonzero(np.isin(subject, members[s])) for s in SPLITS}  # file order within each split
    if representation == "raw":  # per axis over time and pool windows: a shifted window stays a shifted window
        for m in MODALITIES:
            pool = x[m][rows["pool"]].astype(np.float64)
            mean, std = pool.mean(axis=(0, 2), keepdims=True), pool.std(axis=(0, 2), keepdims=True)
            x[m] = ((x[m] - mean) / np.maximum(std, 1e-6)).astype(np.float32)
    splits = {s: MultimodalData(x={m: torch.from_numpy(x[m][r]) for m in MODALITIES},
                                mask=torch.ones(len(r), len(MODALITIES), dtype=torch.bool),
                                y=torch.from_numpy(y[r]), modalities=tuple(MODALITIES))
              for s, r in rows.items()}
    return build_real_dataset(splits, len(CLASSES), pitfall, seed, standardise=representation == "features")


def watch_file() -> Path:
    """The path of ``watch_dataset.npy`` inside the installed seglearn package, found from its import spec (for
    a top-level package ``find_spec`` executes nothing, so seglearn and its imports are never loaded)."""
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("dataset.data_file", None, "the path of watch_dataset.npy: seglearn, which ships it, is not "
                                                     "installed (pip install 'seglearn>=1.2.5', or pip install -e .)")
    return Path(spec.submodule_search_locations[0]) / "data" / "watch_dataset.npy"


def load_recordings(path: Path) -> Recordings:
    """The recordings of the watch file at ``path`` (a pickle: read only a file you trust), checked against the
    structure of the module docstring."""
    def bad(problem: str) -> ConfigError:
        return ConfigError("dataset.data_file", str(path), f"not the seglearn watch file: {problem}")

    try:
        content = np.load(path, allow_pickle=True).item()
    except Exception as err:  # noqa: BLE001 (any unreadable file: name it and why)
        raise bad(f"{type(err).__name__}: {err}") from None
    if not isinstance(content, dict) or not {"X", "y", "subject", "side", "X_labels"} <= set(content):
        raise bad("expected a dict with keys X, y, subject, side, X_labels")
    if tuple(content["X_labels"]) != COLUMNS:
        raise bad(f"columns X_labels {list(content['X_labels'])}, expected {list(COLUMNS)}")
    if "y_labels" in content and tuple(content["y_labels"]) != CLASSES:
        raise bad(f"classes y_labels {list(content['y_labels'])}, expected {list(CLASSES)}")
    signals = [np.asarray(s, dtype=np.float64) for s in content["X"]]
    y, subject, side = (np.asarray(content[k]).astype(np.int64) for k in ("y", "subject", "side"))
    if not all(s.ndim == 2 and s.shape[1] == len(COLUMNS) and np.isfinite(s).all() for s in signals):
        raise bad(f"every recording in X must be a finite (T, {len(COLUMNS)}) array")
    if not len(signals) == len(y) == len(subject) == len(side):
        raise bad(f"{len(signals)} recordings but {len(y)} labels, {len(subject)} subjects, {len(side)} sides")
    if not np.all((y >= 0) & (y < len(CLASSES))):
        raise bad(f"labels y must lie in [0, {len(CLASSES)})")
    return Recordings(signals, y, subject, side)


def subject_split(subjects: np.ndarray, seed: int, test_subjects: int, val_subjects: int) -> dict[str, np.ndarray]:
    """The subject ids of each split, {"pool", "val", "test"} -> sorted ids: the distinct ids of ``subjects`` in
    an order drawn from ``seed``, the first ``test_subjects`` to test, the next ``val_subjects`` to val, the
    rest to the pool."""
    order = np.random.default_rng(derive_seed(seed, "watch_subjects")).permutation(np.unique(subjects))
    cut = test_subjects + val_subjects
    return {"pool": np.sort(order[cut:]), "val": np.sort(order[test_subjects:cut]),
            "test": np.sort(order[:test_subjects])}


def window_features(w: np.ndarray) -> np.ndarray:
    """(N, 44) float64 summary statistics of N windows (N, 3, T) of one sensor, columns ``FEATURES``: for each of
    the series x, y, z and the magnitude (``SERIES``), its mean, std (population), min, max, 10th, 25th,
    50th, 75th and 90th percentiles, mean absolute first difference (how fast it changes) and energy (mean
    of squares) (``STATS``)."""
    s = np.asarray(w, dtype=np.float64)
    s = np.concatenate([s, np.sqrt((s ** 2).sum(axis=1, keepdims=True))], axis=1)  # (N, 4, T)
    stats = [s.mean(2), s.std(2), s.min(2), s.max(2), *np.percentile(s, PERCENTILES, axis=2),
             np.abs(np.diff(s, axis=2)).mean(2), (s ** 2).mean(2)]
    return np.stack(stats, axis=2).reshape(len(s), len(FEATURES))  # (N, 4, 11) -> series-major
