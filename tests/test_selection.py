"""Selection kernels against definitional references: full distance matrices, numpy D² sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from mmal.query import selection
from mmal.query.selection import (
    euclidean_sq_dist,
    kcenter_greedy,
    kmeanspp_factored,
    kmeanspp_seeding,
    outer_product_sq_dist,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _labeled(n: int, m: int, seed: int) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=_gen(seed + 1000))[:m]] = True
    return mask


def _kcenter_brute(points, labeled, k, generator):
    """k-center greedy by definition, on the explicit (N, N) distance matrix."""
    dist = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")  # (N, N)
    chosen, picks = labeled.clone(), []
    if not labeled.any():  # the same draw as the kernel's first centre
        picks.append(int(torch.randint(len(points), (1,), generator=generator)))
        chosen[picks[0]] = True
    while len(picks) < k:
        nearest = dist[:, chosen].min(1).values
        nearest[chosen] = -1
        picks.append(int(nearest.argmax()))
        chosen[picks[-1]] = True
    return picks


def _kmeanspp_numpy(x, candidates, uniforms, first="uniform"):
    """k-means++ seeding in float64 numpy: direct squared distances, cumsum, searchsorted; with
    first="largest_norm" the first centre is the candidate of largest norm, as in BADGE's ``init_centers``."""
    open_ = candidates.copy()
    weights = open_.astype(np.float64)
    picks = []
    for u in uniforms:
        cum = np.cumsum(weights)
        if cum[-1] <= 0:
            cum = np.cumsum(open_.astype(np.float64))
        j = int(np.searchsorted(cum, u * cum[-1], side="right"))
        if not picks and first == "largest_norm":
            j = int(np.argmax(np.where(candidates, np.linalg.norm(x, axis=1), -np.inf)))
        picks.append(j)
        open_[j] = False
        d2 = ((x - x[j]) ** 2).sum(1)
        weights = np.where(open_, d2 if len(picks) == 1 else np.minimum(weights, d2), 0.0)
    return picks


# lazy updates over 19 blocks in tiles of one centre by one block, or one block in one tile (the eager loop)
@pytest.mark.parametrize(("block", "tile"), [(16, 1), (2048, 2**22)], ids=["lazy", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_labeled", [0, 1, 30])
@pytest.mark.parametrize("seed", [0, 1])
def test_kcenter_greedy_equals_the_brute_force(monkeypatch, block, tile, dtype, n_labeled, seed):
    monkeypatch.setattr(selection, "_BLOCK", block)
    monkeypatch.setattr(selection, "_TILE", tile)
    points = torch.randn(300, 8, generator=_gen(seed), dtype=dtype)
    labeled = _labeled(300, n_labeled, seed)
    picks = kcenter_greedy(points, labeled, 40, _gen(seed))
    assert picks.tolist() == _kcenter_brute(points, labeled, 40, _gen(seed))


@pytest.mark.parametrize("block", [16, 2048])
def test_kcenter_greedy_picks_distinct_unlabeled_points_and_can_take_them_all(monkeypatch, block):
    monkeypatch.setattr(selection, "_BLOCK", block)
    points = torch.randn(200, 4, generator=_gen(0))
    points[100:] = points[:100]  # duplicates: distances of 0 among the last picks
    labeled = _labeled(200, 50, 0)
    picks = kcenter_greedy(points, labeled, 60, _gen(0))
    assert len(set(picks.tolist())) == 60 and not labeled[picks].any()
    everything = kcenter_greedy(points, labeled, 150, _gen(0))
    assert sorted(everything.tolist()) == (~labeled).nonzero().squeeze(1).tolist()
    nothing = torch.zeros(200, dtype=torch.bool)  # the random first centre must not come back either
    assert sorted(kcenter_greedy(points, nothing, 200, _gen(0)).tolist()) == list(range(200))
    assert kcenter_greedy(points, labeled, 0, _gen(0)).shape == (0,)
    with pytest.raises(ValueError, match="k must be in"):
        kcenter_greedy(points, labeled, 151, _gen(0))


@pytest.mark.parametrize("block", [16, 2048])  # 25 blocks, or one block with padding
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("first", ["uniform", "largest_norm"])
def test_kmeanspp_seeding_equals_a_numpy_reference(monkeypatch, block, seed, first):
    monkeypatch.setattr(selection, "_BLOCK", block)
    points = torch.randn(400, 6, generator=_gen(seed), dtype=torch.float64)
    candidates = torch.rand(400, generator=_gen(seed + 1)) < 0.7
    uniforms = torch.rand(50, generator=_gen(seed + 2), dtype=torch.float64)
    picks = kmeanspp_seeding(points, 50, _gen(0), candidates=candidates, uniforms=uniforms, first=first)
    assert picks.tolist() == _kmeanspp_numpy(points.numpy(), candidates.numpy(), uniforms.numpy(), first)
    assert len(set(picks.tolist())) == 50 and candidates[picks].all()


def test_badge_first_centre_is_the_candidate_of_largest_gradient_norm_as_in_the_authors_code():
    probs = torch.softmax(torch.randn(500, 4, generator=_gen(0)), 1)
    a = probs - torch.nn.functional.one_hot(probs.argmax(1), 4)
    h = torch.randn(500, 9, generator=_gen(1))
    norms = torch.linalg.norm(_outer(a, h), dim=1)
    candidates = torch.ones(500, dtype=torch.bool)
    candidates[norms.argmax()] = False  # the overall largest is labeled: the next largest comes first
    expected = int(norms.masked_fill(~candidates, -1).argmax())
    for seed in range(5):  # whatever the generator: the first centre is fixed, the second is not
        picks = kmeanspp_factored(a, h, 2, _gen(seed), candidates=candidates)
        assert picks[0] == expected
    assert len({int(kmeanspp_factored(a, h, 2, _gen(s), candidates=candidates)[1]) for s in range(5)}) > 1
    uniform = {int(kmeanspp_factored(a, h, 1, _gen(s), first="uniform")[0]) for s in range(5)}
    assert len(uniform) > 1


def test_kmeanspp_never_repeats_and_takes_every_candidate_even_among_duplicates():
    points = torch.tensor([[0.0], [5.0], [9.0]]).repeat(20, 1)  # 60 points, 3 distinct: D² hits 0 for all
    candidates = torch.arange(60) % 4 != 0
    picks = kmeanspp_seeding(points, int(candidates.sum()), _gen(3), candidates=candidates)
    assert sorted(picks.tolist()) == candidates.nonzero().squeeze(1).tolist()
    assert kmeanspp_seeding(points, 0, _gen(3)).shape == (0,)
    # |x|² ~ 3e7 in float32: the expansion leaves chosen points a D² of up to ~16, which must not count
    far = torch.randn(200, 32, generator=_gen(4)) + 1000
    assert sorted(kmeanspp_seeding(far, 200, _gen(4)).tolist()) == list(range(200))


def test_kmeanspp_never_draws_a_weight_zero_point():
    points = torch.tensor([[0.0], [1.0], [1.0], [4.0]])
    candidates = torch.tensor([False, True, True, True])
    # u = 0 sits on the cumulative sum's flat start: the draw is the first point of positive weight
    picks = kmeanspp_seeding(points, 2, _gen(0), candidates=candidates, uniforms=torch.zeros(2))
    assert picks.tolist() == [1, 3]


def test_kmeanspp_same_seed_same_picks():
    points = torch.randn(500, 16, generator=_gen(0))
    first, again = (kmeanspp_seeding(points, 30, _gen(7)) for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, kmeanspp_seeding(points, 30, _gen(8)))


def test_kmeanspp_second_centre_is_drawn_proportionally_to_d2():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    generator, draws = _gen(0), 6000
    counts = np.zeros((5, 5))  # counts[first, second]
    for _ in range(draws):
        first, second = kmeanspp_seeding(points, 2, generator).tolist()
        counts[first, second] += 1
    x = points.squeeze(1).double().numpy()
    assert chisquare(counts.sum(1), np.full(5, draws / 5)).pvalue > 1e-3  # the first centre is uniform
    for first in range(5):
        d2 = (x - x[first]) ** 2
        observed = np.delete(counts[first], first)
        expected = np.delete(d2 / d2.sum(), first) * observed.sum()
        assert counts[first, first] == 0
        assert chisquare(observed, expected).pvalue > 1e-3


def _outer(a, h):
    return (a[:, :, None] * h[:, None, :]).flatten(1)  # (N, C*D)


@pytest.mark.parametrize("block", [16, 2048])  # 4 blocks, the last one padded, or one block
def test_distances_equal_explicit_ones_and_outer_products_need_not_be_built(monkeypatch, block):
    monkeypatch.setattr(selection, "_BLOCK", block)
    a, h = torch.randn(50, 4, generator=_gen(0)), torch.randn(50, 7, generator=_gen(1))
    explicit = torch.cdist(_outer(a, h), _outer(a, h), compute_mode="donot_use_mm_for_euclid_dist") ** 2
    factored = outer_product_sq_dist(a, h)(torch.arange(50))  # (50, whole blocks)
    assert factored.shape == (50, -(-50 // block) * block)
    torch.testing.assert_close(factored[:, :50], explicit, atol=1e-4, rtol=1e-4)
    assert (factored >= 0).all() and factored.diagonal().abs().max() < 1e-4
    if block == 16:  # blocks 1 and 2 are points 16..47
        some = outer_product_sq_dist(a, h)(torch.tensor([3, 49]), slice(1, 3))  # (2, 32)
        torch.testing.assert_close(some, explicit[[3, 49], 16:48], atol=1e-4, rtol=1e-4)
    plain = euclidean_sq_dist(h)(torch.arange(50))[:, :50]
    torch.testing.assert_close(plain, torch.cdist(h, h) ** 2, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("block", [16, 2048])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeanspp_factored_equals_seeding_on_the_explicit_embeddings(monkeypatch, block, seed):
    monkeypatch.setattr(selection, "_BLOCK", block)
    probs = torch.softmax(2 * torch.randn(300, 5, generator=_gen(seed), dtype=torch.float64), 1)
    a = probs - torch.nn.functional.one_hot(probs.argmax(1), 5)
    h = torch.randn(300, 12, generator=_gen(seed + 1), dtype=torch.float64)
    uniforms = torch.rand(40, generator=_gen(seed + 2), dtype=torch.float64)
    for first in ("uniform", "largest_norm"):
        factored = kmeanspp_factored(a, h, 40, _gen(0), uniforms=uniforms, first=first)
        explicit = kmeanspp_seeding(_outer(a, h), 40, _gen(0), uniforms=uniforms, first=first)
        assert torch.equal(factored, explicit)
        assert len(set(factored.tolist())) == 40


def test_inputs_are_checked_at_the_boundary():
    points = torch.randn(10, 3)
    with pytest.raises(ValueError, match="labeled must be a"):
        kcenter_greedy(points, torch.zeros(10), 2, _gen(0))
    with pytest.raises(ValueError, match="uniforms must be"):
        kmeanspp_seeding(points, 2, _gen(0), uniforms=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="first must be 'uniform' or 'largest_norm', got 'norm'"):
        kmeanspp_seeding(points, 2, _gen(0), first="norm")
    with pytest.raises(ValueError, match="h must have shape"):
        kmeanspp_factored(torch.randn(10, 2), torch.randn(9, 3), 2, _gen(0))


def test_a_blocked_row_comes_out_contiguous_with_its_values():
    # A strided (1, D) row sends BADGE's batched product down a path 1.5-2x slower that ignores a second
    # thread (docs/benchmarks.md); the row must be a contiguous copy of the point.
    points = torch.randn(5000, 7, generator=torch.Generator().manual_seed(0))
    xb = selection._blocked(points)
    for idx in (0, 2047, 2048, 4999):
        row = selection._rows(xb, idx)
        assert row.is_contiguous() and row.shape == (1, 7)
        assert torch.equal(row[0], points[idx])
    rows = selection._rows(xb, torch.tensor([3, 4999, 2048]))
    assert rows.is_contiguous() and torch.equal(rows, points[[3, 4999, 2048]])
