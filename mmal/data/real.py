"""What every real (non-synthetic) dataset goes through once its arrays are loaded (docs/datasets.md).

1. Split: a stratified pool/val/test split drawn from the seed (``stratified_split``), when the data does
   not come split already.
2. Standardise each feature of each modality with the mean and std of the *pool* rows where the modality
   is present (val and test never leak into the statistics).
3. Modality difficulty: add Gaussian noise of std ``pitfall.feature_noise[m]`` to the standardised
   features of modality m, in every split (the noise of one modality never depends on another's).
4. Missing modalities: draw a presence mask with ``pitfall.missing_rate`` and ``missing_mechanism`` on the
   splits in ``missing_splits``, on top of any mask the files bring, and zero the missing rows.
   The ``difficulty`` mechanism needs a per-sample hardness; on real data it is the distance of the sample
   to the centroid of its own class (pool centroids) in that modality's standardised, noised features.

The interaction structure of real data is whatever the data has, so the synthetic-only pitfalls
(``uniqueness``, ``synergy``) are refused, and the latent knobs ``noise``, ``separation``, ``depth`` and
``unique_probs`` do not apply (a config error would stop ``pitfall=modality_difficulty``, which sets them
for synthetic data and ``feature_noise`` for real data, so they are ignored here).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from mmal.data.missing import draw_missing_mask
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import INTERACTIONS, SPLITS, Pitfall

SYNTHETIC_ONLY = ("uniqueness", "synergy")
SYNTHETIC_ONLY_PITFALLS = ("uniqueness and synergy are synthetic-only pitfalls (real data has its own interaction "
                           "structure); on real data use pitfall=none, modality_difficulty or missing_modality")


def config_error(key: str, value: Any, allowed: str) -> ValueError:
    """A ``mmal.config.ConfigError`` (``train.main`` reports it in one line and exits with status 2)."""
    from mmal.config import ConfigError  # mmal.config imports mmal.data: import at call time

    return ConfigError(key, value, allowed)


def check_real_pitfall(pitfall: Pitfall) -> None:
    """Refuse interaction structures that only the synthetic generator can make."""
    weights = dict(zip(INTERACTIONS, pitfall.interaction_weights()))
    if any(weights[name] > 0 for name in SYNTHETIC_ONLY):
        raise config_error("pitfall.interaction", dict(pitfall.interaction), SYNTHETIC_ONLY_PITFALLS)


def per_modality(pitfall: Pitfall, knob: str, names: tuple[str, ...]) -> list[float]:
    """Knob ``knob`` with one value per modality; a list of the wrong length is a config error."""
    values = pitfall.per_modality(knob, len(names))
    if len(values) != len(names):
        raise config_error(f"pitfall.{knob}", getattr(pitfall, knob),
                           f"one value, or a list with one per modality ({len(names)}: {list(names)})")
    return values


def stratified_split(y: np.ndarray, fractions: list[float], seed: int, key: str = "dataset") -> list[np.ndarray]:
    """Row indices [rest, part_1, part_2, ...]: part_i holds round(fractions[i] * N) rows with the class
    proportions of ``y``; the rest is what remains. Sorted, so every part keeps the file order."""
    rest, parts = np.arange(len(y)), []
    for i, fraction in enumerate(fractions):
        size = round(fraction * len(y))
        try:
            rest, part = train_test_split(rest, test_size=size, stratify=y[rest], random_state=derive(seed, "split", i))
        except ValueError as err:  # a class with too few samples, or a part larger than what is left
            raise config_error(key, fraction, f"cannot split {len(y)} rows stratified by class: {err}") from None
        parts.append(np.sort(part))
    return [np.sort(rest), *parts]


def build_real_dataset(splits: dict[str, MultimodalData], num_classes: int, pitfall: Pitfall, seed: int,
                       standardise: bool = True) -> MultimodalDataset:
    """Standardise, add feature noise and draw missing modalities (module docstring), from the raw
    ``pool``/``val``/``test`` splits; each split's ``mask`` is the mask the files bring (all True if none)."""
    check_real_pitfall(pitfall)
    names = splits["pool"].modalities
    x = {s: dict(splits[s].x) for s in SPLITS}  # split -> modality -> (N, D_m)
    for i, m in enumerate(names):
        present = splits["pool"].x[m][splits["pool"].mask[:, i]].double()  # (N_present, D_m)
        mean = present.mean(0) if len(present) else 0.0
        std = present.std(0).clamp_min(1e-6) if len(present) > 1 else 1.0  # constant features stay 0
        for s in SPLITS:
            v = x[s][m].double()
            x[s][m] = ((v - mean) / std if standardise else v).float()

    for m, sigma in zip(names, per_modality(pitfall, "feature_noise", names)):
        if sigma > 0:
            g = torch.Generator().manual_seed(derive(seed, "feature_noise", m))  # independent per modality
            for s in SPLITS:
                x[s][m] = x[s][m] + sigma * torch.randn(x[s][m].shape, generator=g)

    rates = per_modality(pitfall, "missing_rate", names)
    g = torch.Generator().manual_seed(derive(seed, "missing"))
    out = {}
    for s in SPLITS:
        mask = splits[s].mask
        if s in pitfall.missing_splits and any(r > 0 for r in rates):
            hardness = None
            if pitfall.missing_mechanism == "difficulty":
                hardness = centroid_distance(x["pool"], splits["pool"], x[s], splits[s].y, num_classes)
            mask = mask & draw_missing_mask(splits[s].y, rates, pitfall.missing_mechanism, g, num_classes,
                                            pitfall.missing_strength, hardness)
        out[s] = MultimodalData(x=x[s], mask=mask, y=splits[s].y, modalities=names).with_mask(mask)
    return MultimodalDataset(**out, num_classes=num_classes, ground_truth={})


def centroid_distance(pool_x: dict[str, Tensor], pool: MultimodalData, x: dict[str, Tensor], y: Tensor,
                      num_classes: int) -> Tensor:
    """(N, M) hardness: distance of each sample to its class centroid (from present pool rows) per modality."""
    columns = []
    for i, m in enumerate(pool.modalities):
        present = pool.mask[:, i]
        onehot = torch.nn.functional.one_hot(pool.y[present], num_classes).double()  # (N_present, K)
        sums = onehot.T @ pool_x[m][present].double()  # (K, D)
        centroids = sums / onehot.sum(0).clamp_min(1)[:, None]
        columns.append((x[m].double() - centroids[y]).norm(dim=1))
    return torch.stack(columns, dim=1)


def derive(seed: int, *keys: str | int) -> int:
    """A 31-bit seed for one purpose, independent across purposes and modalities."""
    words = [seed, *(zlib.crc32(str(k).encode()) for k in keys)]
    return int(np.random.SeedSequence(words).generate_state(1)[0] >> 1)
