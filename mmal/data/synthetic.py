"""Synthetic multimodal data that isolates one pitfall at a time (docs/design.md, "The synthetic pitfall generator").

How a sample is made:

1. The class y is drawn from ``class_weights``, the interaction type t from the pitfall's mixture.
2. Each modality m has a latent vector z_m in R^L (L = num_classes + nuisance_dim) around a class
   prototype: ``z_m = s_m * P_m[c_m] * a_m + sigma_m * eps``, with P_m orthonormal prototypes,
   s_m the separation and sigma_m the noise of modality m.
   - redundancy: c_m = y and a_m = 1 for every modality.
   - uniqueness: one modality k (drawn with ``unique_probs``) has c_k = y, the others a_m = 0.
   - synergy: c_m = u_m, digits with sum(u) = y mod num_classes, u_1..u_{M-1} uniform; every
     proper subset of modalities is independent of y.
3. The observation is x_m = f_m(z_m): a fixed random map with ``depth`` leaky-ReLU layers into
   ``dims[m]`` >= L dimensions. It is injective, so x_m holds exactly the information of z_m, and
   the best achievable (Bayes) accuracy is computable from the latent Gaussian mixture.

Ground truth: for every non-empty subset S of modalities, E[max_y p(y | z_S)], a Monte Carlo estimate over
``bayes_samples`` fresh draws with the exact posterior (standard error <= 0.5 / sqrt(bayes_samples)):
``bayes_acc/<m>`` (m alone, when present), ``bayes_acc/<m1>+<m2>`` (a proper subset, from three modalities
on) and ``bayes_acc/all``. Per sample, ``informative[:, m]`` says whether modality m alone carries label
information, and ``latent_class[:, m]`` is the prototype z_m was drawn around (c_m above; -1 for a
uniqueness sample's uninformative modalities): under synergy, the digit u_m.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmal.data.memory import check_fits
from mmal.data.missing import pitfall_mask
from mmal.data.multimodal import BAYES_ACC_ALL, MultimodalData, MultimodalDataset, bayes_key
from mmal.data.pitfall import SPLITS, SYNTHETIC_KNOBS, Pitfall
from mmal.errors import ConfigError, check_int, check_numbers, is_int

LEAKY_SLOPE = 0.2


@dataclass(frozen=True)
class _World:
    """The fixed random parts of one synthetic dataset: prototypes, maps and knob values."""

    num_classes: int
    class_weights: Tensor  # (K,)
    interaction: Tensor  # (3,) redundancy, uniqueness, synergy
    unique_probs: Tensor  # (M,)
    separation: list[float]
    noise: list[float]
    prototypes: list[Tensor]  # M x (K, L), orthonormal rows
    maps: list[list[Tensor]]  # M x [(L, D), (D, D) x depth]


def make_synthetic(
    pitfall: Pitfall,
    seed: int,
    num_samples: int = 2000,
    num_val: int = 500,
    num_test: int = 2000,
    num_classes: int = 4,
    modalities: dict[str, int] | None = None,
    nuisance_dim: int = 4,
    class_weights: list[float] | None = None,
    bayes_samples: int = 20000,
) -> MultimodalDataset:
    """Draw a synthetic dataset; the same arguments give the same tensors, bit for bit.

    Args:
        pitfall: interaction structure, difficulty and missing-modality knobs.
        seed: seeds everything (prototypes, maps, samples, missingness).
        num_samples, num_val, num_test: sizes of the pool, val and test splits.
        num_classes: K.
        modalities: name -> observed dimension (each >= num_classes + nuisance_dim); default
            ``{"a": 32, "b": 32}``.
        nuisance_dim: latent dimensions that carry no label information.
        class_weights: class proportions (normalised); None = balanced.
        bayes_samples: Monte Carlo draws for the ground-truth Bayes accuracies.
    """
    modalities = dict(modalities or {"a": 32, "b": 32})
    _check_sizes(num_samples, num_val, num_test, num_classes, modalities, nuisance_dim, class_weights, bayes_samples)
    names = tuple(modalities)
    pitfall.check_modalities(names, SYNTHETIC_KNOBS)
    num_modalities = len(names)
    latent_dim = num_classes + nuisance_dim
    seeds = np.random.SeedSequence(seed).generate_state(3)  # world, samples, Bayes estimate
    g = torch.Generator().manual_seed(int(seeds[0]))

    weights = torch.ones(num_classes) if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
    uprobs = pitfall.unique_probs or [1.0] * num_modalities
    depth = [int(d) for d in pitfall.per_modality("depth", names)]
    world = _World(
        num_classes=num_classes,
        class_weights=weights.double() / weights.sum(),
        interaction=torch.tensor(pitfall.interaction_weights(), dtype=torch.float64),
        unique_probs=torch.tensor(uprobs, dtype=torch.float64) / sum(uprobs),
        separation=pitfall.per_modality("separation", names),
        noise=pitfall.per_modality("noise", names),
        prototypes=[_orthonormal_rows(num_classes, latent_dim, g) for _ in names],
        maps=[_random_map(latent_dim, modalities[m], depth[i], g) for i, m in enumerate(names)],
    )

    g = torch.Generator().manual_seed(int(seeds[1]))
    sizes = {"pool": num_samples, "val": num_val, "test": num_test}
    y, z, informative, latent_class = _sample_latents(world, sum(sizes.values()), g)
    x = [_observe(world.maps[i], z[i]) for i in range(num_modalities)]
    # Standardise each feature with pool statistics (an affine map: no information is lost).
    x = [(v - v[:num_samples].mean(0)) / v[:num_samples].std(0).clamp_min(1e-6) for v in x]

    splits, start = {}, 0
    for split in SPLITS:
        rows = slice(start, start + sizes[split])
        start += sizes[split]
        hardness = lambda rows=rows: torch.stack(  # noqa: E731  (n, M): 1 - posterior of the true class
            [1 - _posterior(world, (i,), [v[rows] for v in z]).gather(1, y[rows, None])[:, 0]
             for i in range(num_modalities)], dim=1)
        mask = pitfall_mask(pitfall, split, y[rows], g, num_classes, names, hardness)
        data = MultimodalData(
            x={m: x[i][rows] for i, m in enumerate(names)},
            mask=mask,
            y=y[rows],
            modalities=names,
            informative=informative[rows],
            latent_class=latent_class[rows],
        )
        splits[split] = data.with_mask(mask)

    return MultimodalDataset(
        **splits, num_classes=num_classes, ground_truth=bayes_accuracy(world, bayes_samples, int(seeds[2]), names)
    )


def _check_sizes(num_samples: int, num_val: int, num_test: int, num_classes: int, modalities: dict[str, int],
                 nuisance_dim: int, class_weights: list[float] | None, bayes_samples: int) -> None:
    for key, value in [("num_samples", num_samples), ("num_val", num_val), ("num_test", num_test),
                       ("bayes_samples", bayes_samples)]:
        check_int(f"dataset.{key}", value, 1)
    check_int("dataset.num_classes", num_classes, 2)
    check_int("dataset.nuisance_dim", nuisance_dim, 0)
    if len(modalities) < 2:
        raise ConfigError("dataset.modalities", modalities, "a mapping name -> dim with >= 2 modalities")
    latent = num_classes + nuisance_dim
    for name, dim in modalities.items():
        if not is_int(dim) or dim < latent:
            raise ConfigError(f"dataset.modalities.{name}", dim,
                              f"an integer >= num_classes + nuisance_dim = {latent} (the map must be injective)")
    _check_memory(num_samples, num_samples + num_val + num_test, latent, list(modalities.values()), bayes_samples)
    if class_weights is not None:
        check_numbers("dataset.class_weights", class_weights, num_classes, 0, positive_sum=True)
        if sum(w > 0 for w in class_weights) < 2:  # one class: every prediction is right, accuracy says nothing
            raise ConfigError("dataset.class_weights", class_weights, "at least 2 classes with a positive weight")


def _check_memory(num_samples: int, rows: int, latent_dim: int, dims: list[int], bayes_samples: int) -> None:
    """Refuse sizes whose generation cannot fit in memory, before allocating anything. Peak per row: the
    float64 latents and observations and their float32 copies; the Bayes estimate holds its float64 latents
    and likelihoods."""
    for_rows = rows * sum(latent_dim * 8 + d * 8 * 2 + d * 4 * 2 for d in dims)
    for_bayes = bayes_samples * len(dims) * latent_dim * 8 * 3
    key, value = ("dataset.bayes_samples", bayes_samples) if for_bayes > for_rows else \
        ("dataset.num_samples", num_samples)
    check_fits(key, value, for_rows + for_bayes, "the synthetic data")


def bayes_accuracy(world: _World, num_draws: int, seed: int, names: tuple[str, ...]) -> dict[str, float]:
    """Monte Carlo estimate of the Bayes accuracy of every non-empty subset of modalities (all present):
    ``bayes_acc/<m>`` for one, ``bayes_acc/<m1>+<m2>`` for a proper subset, ``bayes_acc/all`` for all."""
    g = torch.Generator().manual_seed(seed)
    _, z, _, _ = _sample_latents(world, num_draws, g)
    result = {}
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), size):
            key = BAYES_ACC_ALL if size == len(names) else bayes_key(tuple(names[i] for i in subset))
            result[key] = _posterior(world, subset, z).max(1).values.mean().item()
    return result


def _orthonormal_rows(rows: int, cols: int, g: torch.Generator) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(cols, rows, generator=g, dtype=torch.float64))
    return q.T.contiguous()  # (rows, cols)


def _random_map(latent_dim: int, out_dim: int, depth: int, g: torch.Generator) -> list[Tensor]:
    first = torch.randn(latent_dim, out_dim, generator=g, dtype=torch.float64) / math.sqrt(latent_dim)
    rest = [torch.randn(out_dim, out_dim, generator=g, dtype=torch.float64) / math.sqrt(out_dim) for _ in range(depth)]
    return [first, *rest]


def _observe(weights: list[Tensor], z: Tensor) -> Tensor:
    h = z @ weights[0]  # (N, D): injective because D >= L and the matrix has full column rank
    for w in weights[1:]:
        h = F.leaky_relu(h, LEAKY_SLOPE) @ w  # leaky ReLU and a square Gaussian matrix stay invertible
    return h.float()


def _sample_latents(world: _World, n: int, g: torch.Generator) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
    """Labels (N,), noisy latents M x (N, L) float64, informative (N, M) bool, and latent_class (N, M): the
    prototype each latent is drawn around (-1: none, the latent sits at the origin)."""
    num_modalities, num_classes = len(world.prototypes), world.num_classes
    y = torch.multinomial(world.class_weights, n, replacement=True, generator=g)
    kind = torch.multinomial(world.interaction, n, replacement=True, generator=g)  # 0 red, 1 uni, 2 syn
    unique = torch.multinomial(world.unique_probs, n, replacement=True, generator=g)
    digits = torch.randint(num_classes, (n, num_modalities), generator=g)
    digits[:, -1] = (y - digits[:, :-1].sum(1)) % num_classes  # sum of digits = y (mod K)

    modality = torch.arange(num_modalities)[None, :]
    active = torch.where((kind == 1)[:, None], modality == unique[:, None], True)  # (N, M)
    content = torch.where((kind == 2)[:, None], digits, y[:, None])  # (N, M) prototype index
    informative = active & (kind != 2)[:, None]

    z = []
    for m in range(num_modalities):
        centre = world.prototypes[m][content[:, m]] * (world.separation[m] * active[:, m, None])
        eps = torch.randn(centre.shape, generator=g, dtype=torch.float64)
        z.append(centre + world.noise[m] * eps)
    return y, z, informative, torch.where(active, content, -1)


def _likelihoods(world: _World, m: int, z: Tensor) -> Tensor:
    """(N, K + 1) Gaussian likelihoods of z_m under each prototype and (last) the origin, scaled per row."""
    means = world.prototypes[m] * world.separation[m]  # (K, L)
    means = torch.cat([means, torch.zeros(1, means.shape[1], dtype=means.dtype)])
    log_lik = -torch.cdist(z, means).square() / (2 * world.noise[m] ** 2)
    return torch.exp(log_lik - log_lik.max(1, keepdim=True).values)  # row scale cancels in posteriors


def _posterior(world: _World, subset: tuple[int, ...], z: list[Tensor]) -> Tensor:
    """p(y | z_m for m in subset), (N, K). Each interaction type is a mixture component: redundancy
    multiplies the class likelihoods; uniqueness sums over which modality k holds the class (k outside the
    subset: every latent in it sits at the origin, whatever y); synergy sums over digit assignments by
    cyclic convolution when the subset is every modality, and is independent of y for a proper subset."""
    liks = {m: _likelihoods(world, m, z[m]) for m in subset}
    at_class = {m: lik[:, :-1] for m, lik in liks.items()}
    at_origin = {m: lik[:, -1:] for m, lik in liks.items()}
    num_modalities, num_classes = len(world.prototypes), world.num_classes
    w_red, w_uni, w_syn = world.interaction

    redundant = math.prod(at_class.values())
    q = world.unique_probs
    unique = sum(q[k] * at_class[k] * math.prod(at_origin[m] for m in subset if m != k) for k in subset)
    unique = unique + (1 - sum(q[k] for k in subset)) * math.prod(at_origin.values())
    if len(subset) == num_modalities:
        synergy = at_class[subset[0]]
        for m in subset[1:]:
            synergy = _cyclic_convolve(synergy, at_class[m])
        synergy = synergy / num_classes ** (num_modalities - 1)
    else:  # a proper subset's digits are uniform and independent of y
        synergy = math.prod(lik.mean(1, keepdim=True) for lik in at_class.values())
    return _normalise((w_red * redundant + w_uni * unique + w_syn * synergy) * world.class_weights)


def _cyclic_convolve(a: Tensor, b: Tensor) -> Tensor:
    """out[:, y] = sum_j a[:, j] * b[:, (y - j) mod K] for (N, K) inputs."""
    num_classes = a.shape[1]
    idx = (torch.arange(num_classes)[:, None] - torch.arange(num_classes)[None, :]) % num_classes  # (y, j)
    return (a[:, None, :] * b[:, idx]).sum(-1)


def _normalise(p: Tensor) -> Tensor:
    return p / p.sum(1, keepdim=True)
