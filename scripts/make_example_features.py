"""Write the small example of precomputed features in ``examples/features`` (docs/datasets.md).

    python scripts/make_example_features.py [--out examples/features] [--format npz|pt|npy]

Stand-ins for frozen encoder embeddings of an image + text dataset such as UPMC Food-101: 5 classes,
an ``image`` modality (64-d, clearly separated classes) and a ``text`` modality (32-d, weaker, and
missing for 20 % of the samples, whose rows hold NaN as a dump of absent captions might). Like real
embeddings they are neither centred nor unit-scale. Pool 300, val 100, test 100 rows; seeded, so the
files are the same on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mmal.data.features import save_features

SIZES = {"pool": 300, "val": 100, "test": 100}
NUM_CLASSES = 5
DIMS = {"image": 64, "text": 32}
SEPARATION = {"image": 3.0, "text": 1.2}  # distance of the class means from the centre, in noise stds
TEXT_MISSING = 0.2


def make_split(n: int, rng: np.random.Generator, means: dict[str, np.ndarray]) -> tuple[dict, np.ndarray, np.ndarray]:
    """One split: features per modality (N, D) float32, labels (N,), presence mask (N, 2)."""
    y = np.arange(n) % NUM_CLASSES  # balanced
    rng.shuffle(y)
    x = {m: (0.5 * (means[m][y] + rng.normal(size=(n, d))) + 0.3).astype(np.float32) for m, d in DIMS.items()}
    mask = np.ones((n, len(DIMS)), dtype=bool)
    mask[:, 1] = rng.random(n) >= TEXT_MISSING
    x["text"][~mask[:, 1]] = np.nan  # absent text: the loader never reads these rows and zeroes them
    return x, y, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "features")
    parser.add_argument("--format", choices=["npz", "pt", "npy"], default="npz")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    means = {}
    for m, d in DIMS.items():
        directions = rng.normal(size=(NUM_CLASSES, d))
        means[m] = SEPARATION[m] * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # (K, D)
    for split, n in SIZES.items():
        x, y, mask = make_split(n, rng, means)
        path = save_features(args.out, split, x, y, mask, args.format)
        print(f"{path}: {n} rows, {', '.join(f'{m} {v.shape[1]}-d' for m, v in x.items())}, "
              f"text missing in {(~mask[:, 1]).sum()}")


if __name__ == "__main__":
    main()
