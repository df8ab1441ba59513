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

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from mmal.data.missing import pitfall_mask
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.data.pitfall import REAL_KNOBS, SPLITS, Pitfall
from mmal.errors import ConfigError, is_number
from mmal.seeding import derive_seed


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """``dataset.val_fraction`` and ``dataset.test_fraction`` in (0, 1), summing to less than 1."""
    for key, v in [("dataset.val_fraction", val_fraction), ("dataset.test_fraction", test_fraction)]:
        if not is_number(v) or not 0 < v < 1:
            raise ConfigError(key, v, "a number > 0 and < 1")
    total = val_fraction + test_fraction
    if total >= 1:
        raise ConfigError("dataset.test_fraction", test_fraction,
                          f"val_fraction + test_fraction = {total:g} must be < 1 (the pool is the rest)")


def stratified_split(y: np.ndarray, fractions: list[float], seed: int, key: str = "dataset") -> list[np.ndarray]:
    """Row indices [rest, part_1, part_2, ...]: part_i holds round(fractions[i] * N) rows with the class
    proportions of ``y``; the rest is what remains. Sorted, so every part keeps the file order."""
    rest, parts = np.arange(len(y)), []
    for i, fraction in enumerate(fractions):
        size = round(fraction * len(y))
        try:
            rest, part = train_test_split(rest, test_size=size, stratify=y[rest],
                                          random_state=derive_seed(seed, "split", i, bits=31))
        except ValueError as err:  # a class with too few samples, or a part larger than what is left
            raise ConfigError(key, fraction, f"cannot split {len(y)} rows stratified by class: {err}") from None
        parts.append(np.sort(part))
    return [np.sort(rest), *parts]


def build_real_dataset(splits: dict[str, MultimodalData], num_classes: int, pitfall: Pitfall, seed: int,
                       standardise: bool = True) -> MultimodalDataset:
    """Standardise, add feature noise and draw missing modalities (module docstring), from the raw
    ``pool``/``val``/``test`` splits; each split's ``mask`` is the mask the files bring (all True if none)."""
    pitfall.check_real_data()
    names = splits["pool"].modalities
    pitfall.check_modalities(names, REAL_KNOBS)
    x = {s: dict(splits[s].x) for s in SPLITS}  # split -> modality -> (N, *shape_m)
    for i, m in enumerate(names):
        present = splits["pool"].x[m][splits["pool"].mask[:, i]].double()  # (N_present, D_m)
        mean = present.mean(0) if len(present) else 0.0
        std = present.std(0).clamp_min(1e-6) if len(present) > 1 else 1.0  # constant features stay 0
        if standardise:
            for s in SPLITS:
                x[s][m] = standardised(x[s][m], mean, std)

    for m, sigma in zip(names, pitfall.per_modality("feature_noise", names)):
        if sigma > 0:
            g = torch.Generator().manual_seed(derive_seed(seed, "feature_noise", m, bits=31))  # one per modality
            for s in SPLITS:
                x[s][m] = x[s][m] + sigma * torch.randn(x[s][m].shape, generator=g)

    g = torch.Generator().manual_seed(derive_seed(seed, "missing", bits=31))
    out = {}
    for s in SPLITS:
        hardness = lambda s=s: centroid_distance(x["pool"], splits["pool"], x[s], splits[s].y, num_classes)  # noqa: E731
        mask = splits[s].mask & pitfall_mask(pitfall, s, splits[s].y, g, num_classes, names, hardness)
        out[s] = MultimodalData(x=x[s], mask=mask, y=splits[s].y, modalities=names).with_mask(mask)
    return MultimodalDataset(**out, num_classes=num_classes, ground_truth={})


def standardised(v: Tensor, mean: Tensor | float, std: Tensor | float, rows: int = 4096) -> Tensor:
    """``(v - mean) / std`` computed in float64 and stored as float32, ``rows`` rows at a time: each element
    is what the whole-tensor expression gives, without its three float64 copies of ``v`` (at 90k rows of
    raw images those are what runs out of memory)."""
    out = torch.empty_like(v)
    for a in range(0, len(v), rows):
        out[a:a + rows] = ((v[a:a + rows].double() - mean) / std).float()
    return out


def centroid_distance(pool_x: dict[str, Tensor], pool: MultimodalData, x: dict[str, Tensor], y: Tensor,
                      num_classes: int) -> Tensor:
    """(N, M) hardness: distance of each sample to its class centroid (from present pool rows) per modality."""
    columns = []
    for i, m in enumerate(pool.modalities):
        present = pool.mask[:, i]
        onehot = torch.nn.functional.one_hot(pool.y[present], num_classes).double()  # (N_present, K)
        sums = onehot.T @ pool_x[m][present].flatten(1).double()  # (K, D), D = the flattened sample shape
        centroids = sums / onehot.sum(0).clamp_min(1)[:, None]
        columns.append((x[m].flatten(1).double() - centroids[y]).norm(dim=1))
    return torch.stack(columns, dim=1)

