"""Peak memory of loading prepared arrays (`dataset=features`, `food101`, `cremad`, `ave`), per kind of array.

    python scripts/bench_load_memory.py [--rows 25000]

Writes two npy-folder datasets of ``--rows`` pool rows and a fifth of that in test: float32 features
(2,048 + 768 dims, Food-101's embeddings) and uint8 raw images (3, 64, 64), then loads each in a fresh
process (val drawn from the pool, standardised with pool statistics) and prints its peak resident memory
against the arrays' size, with a digest of the loaded values (equal digests: equal values).
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def write(root: Path, rows: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    roots = {"features": root / "features", "raw images": root / "raw"}
    for split, n in (("pool", rows), ("test", rows // 5)):
        y = rng.integers(0, 101, n)
        arrays = {"features": {"image": rng.standard_normal((n, 2048), dtype=np.float32),
                               "text": rng.standard_normal((n, 768), dtype=np.float32)},
                  "raw images": {"image": rng.integers(0, 255, (n, 3, 64, 64), dtype=np.uint8)}}
        for kind, x in arrays.items():
            folder = roots[kind] / split
            folder.mkdir(parents=True)
            for name, a in {**x, "y": y, "modalities": np.array(list(x))}.items():
                np.save(folder / f"{name}.npy", a)
    return roots


def load(root: str) -> None:
    """In a child process: load, then print peak GB and a digest of every loaded array."""
    from mmal.data.features import load_features
    from mmal.data.pitfall import Pitfall

    data = load_features(Pitfall(), 0, root, val_fraction=0.1)
    digest = hashlib.sha256()
    for split in (data.pool, data.val, data.test):
        for m in data.modalities:
            digest.update(split.x[m].numpy().tobytes())
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, digest.hexdigest()[:16])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=25_000)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        load(args.one)
        return
    with tempfile.TemporaryDirectory() as tmp:
        roots = write(Path(tmp), args.rows)
        baseline = subprocess.run([sys.executable, "-c", "import resource, torch, sklearn; print(resource.getrusage("
                                   "resource.RUSAGE_SELF).ru_maxrss / 2**20)"], capture_output=True, text=True)
        print(f"pool {args.rows:,} + test {args.rows // 5:,} rows; a bare process with torch: "
              f"{float(baseline.stdout):.2f} GB\n")
        print("| arrays | stored (GB) | as float32 (GB) | peak while loading (GB) | digest |\n|---|---|---|---|---|")
        for kind, root in roots.items():
            stored = sum(p.stat().st_size for p in root.rglob("*.npy"))
            float32 = sum(np.load(p, mmap_mode="r").size * 4 for p in root.rglob("*.npy")
                          if p.stem not in ("y", "modalities"))
            out = subprocess.run([sys.executable, __file__, "--one", str(root)], capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"| {kind} | {stored / 2**30:.2f} | {float32 / 2**30:.2f} | {float(out[0]):.2f} | {out[1]} |")


if __name__ == "__main__":
    main()
