"""Paired bootstrap over test rows: the uncertainty of one cycle's neglect numbers.

Every neglect number compares two predictors on the *same* test rows (a unimodal reference and the fused
model, or the references' ensemble and the fused model). Resampling the rows and recomputing both sides on
each resample keeps the pairing: what the interval measures is how much the number would move on another
test set of the same size from the same distribution, with the trained models fixed. It says nothing
about the training randomness (seeds), which the reports add across runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

RESAMPLES = 1000  # percentile interval of 95 %: 25 draws beyond each end, enough for a band on a curve
LEVEL = 0.95
SEED = 0  # a fixed stream of its own: the band never touches the run's random state


def resample_rows(num_rows: int, resamples: int = RESAMPLES, seed: int = SEED,
                  device: torch.device | str = "cpu") -> Tensor:
    """(resamples, num_rows) row positions drawn with replacement, from a generator of its own."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(num_rows, (resamples, num_rows), generator=g).to(device)


def interval(draws: Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval holding ``level`` of ``draws`` (one statistic per resample); NaN draws (a
    resample where the statistic is undefined) are left out, and an all-NaN input gives NaN ends."""
    draws = draws[~draws.isnan()].double()
    if not len(draws):
        return float("nan"), float("nan")
    tail = (1 - level) / 2
    lo, hi = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=draws.dtype, device=draws.device))
    return lo.item(), hi.item()


def mean_difference_interval(first: Tensor, second: Tensor, rows: Tensor) -> tuple[float, float]:
    """Interval of mean(first) - mean(second), both per-row values (N,) of the same rows, resampled
    together with ``rows`` (``resample_rows``)."""
    diff = first.float() - second.float()
    return interval(diff[rows].mean(1))
