"""Per-purpose seeds: one experiment seed fans out into independent streams (the initial set, the initial
weights, each cycle's training and query, each modality's feature noise), so that no part of a run can
change the randomness of another."""

from __future__ import annotations

import zlib

import numpy as np


def derive_seed(seed: int, *keys: str | int, bits: int = 63) -> int:
    """A seed for one purpose (e.g. ``("train", 3)``), independent across purposes: 63 bits for PyTorch
    generators, ``bits=31`` for libraries that take a 32-bit seed (scikit-learn's ``random_state``)."""
    if bits not in (31, 63):
        raise ValueError(f"bits={bits}: 31 or 63")
    words = [seed, *(zlib.crc32(str(k).encode()) for k in keys)]
    dtype = np.uint64 if bits == 63 else np.uint32
    return int(np.random.SeedSequence(words).generate_state(1, dtype=dtype)[0] >> dtype(1))
