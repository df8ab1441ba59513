"""Missing modalities: draw a presence mask at a configured rate and mechanism."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mmal.data.pitfall import Pitfall


def missing_tilt(
    mechanism: str, y: Tensor, num_classes: int, num_modalities: int, hardness: Tensor | None = None
) -> Tensor:
    """(N, M) tilt in [-1, 1]: where the missing rate is raised (+) or lowered (-).

    ``mcar``: zero. ``class``: a linear ramp over the classes, reversed for every other modality, so
    that different classes lose different modalities. ``difficulty``: the centred rank of
    ``hardness`` (N, M), so the samples that are hardest in a modality lose it most often.
    """
    n = y.shape[0]
    if mechanism == "mcar":
        return torch.zeros(n, num_modalities, dtype=torch.float64)
    if mechanism == "class":
        ramp = 2 * y.double() / max(num_classes - 1, 1) - 1  # (N,)
        sign = torch.tensor([(-1.0) ** m for m in range(num_modalities)], dtype=torch.float64)
        return ramp[:, None] * sign[None, :]
    if mechanism == "difficulty":
        if hardness is None:
            raise ValueError("the 'difficulty' missing mechanism needs per-sample hardness")
        ranks = hardness.argsort(dim=0).argsort(dim=0).double()  # (N, M), 0 = easiest
        return 2 * ranks / max(n - 1, 1) - 1
    raise ValueError(f"unknown missing mechanism {mechanism!r}")


def draw_missing_mask(
    y: Tensor,
    rates: list[float],
    mechanism: str,
    generator: torch.Generator,
    num_classes: int,
    strength: float = 1.0,
    hardness: Tensor | None = None,
) -> Tensor:
    """Presence mask (N, M), True = present; modality m is missing with mean probability ``rates[m]``.

    Per sample, p_m = r_m * (1 + a_m * tilt_m) with a_m = strength * min(1, (1 - r_m) / r_m), which
    keeps p in [0, 1] and the mean rate at r_m (exactly for ``mcar`` and ``difficulty``, for
    ``class`` when the classes are balanced). ``hardness`` (N, M) is needed for ``difficulty``.
    """
    rate = torch.tensor(rates, dtype=torch.float64)  # (M,)
    tilt = missing_tilt(mechanism, y, num_classes, rate.shape[0], hardness)  # (N, M)
    amplitude = strength * torch.clamp((1 - rate) / rate.clamp_min(1e-12), max=1.0)
    p = rate * (1 + amplitude * tilt)
    return torch.rand(p.shape, generator=generator, dtype=torch.float64) >= p


def pitfall_mask(pitfall: Pitfall, split: str, y: Tensor, generator: torch.Generator, num_classes: int,
                 modalities: Sequence[str], hardness: Callable[[], Tensor]) -> Tensor:
    """(N, M) presence mask that ``pitfall`` draws for one split of labels ``y``: all True where the split is
    not in ``missing_splits`` or every rate is 0 (no draw from ``generator`` then). ``hardness()`` gives the
    (N, M) per-sample hardness, computed only for the ``difficulty`` mechanism."""
    rates = pitfall.per_modality("missing_rate", modalities)
    if split not in pitfall.missing_splits or not any(r > 0 for r in rates):
        return torch.ones(len(y), len(modalities), dtype=torch.bool)
    tilt_by = hardness() if pitfall.missing_mechanism == "difficulty" else None
    return draw_missing_mask(y, rates, pitfall.missing_mechanism, generator, num_classes, pitfall.missing_strength,
                             tilt_by)
