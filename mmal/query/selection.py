"""Batch-selection kernels: k-center greedy (coreset) and k-means++ seeding (BADGE), in plain torch.

Both are one greedy loop over a running vector ``min_dist`` (N,): the squared distance of every point to
its nearest chosen centre. Each selected point costs one pass over the pool (O(N·D)) to update it, so no
N x N matrix is ever built, and the kernels run on whatever device their inputs are on. The loops are
written once against a *squared-distance function* (``euclidean_sq_dist`` for plain points,
``outer_product_sq_dist`` for BADGE's implicit gradient embeddings), which keeps the points transposed,
(D, N) contiguous: on CPU a centre-times-pool product in that layout runs near memory bandwidth, while
``torch.mv`` on the row-major (N, D) matrix reaches a fraction of it.

Distances use ||x - y||² = |x|² + |y|² - 2 x·y in the input dtype, clamped at 0. A ``SqDist`` maps centre
positions ``idx`` (m,) and an optional column slice of the pool to the (m, n_cols) squared distances.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

SqDist = Callable[..., Tensor]  # (idx: LongTensor (m,), cols: slice = all) -> (m, n_cols)

# Elements of one (centres x pool-block) distance tile when starting from many labeled centres: big
# enough for an efficient matmul, small enough to stay in cache (a full (L, N) tile is 2-4x slower).
_TILE = 2**22


def euclidean_sq_dist(points: Tensor) -> SqDist:
    """Squared Euclidean distances between rows of ``points`` (N, D), as a ``SqDist``.

    Holds one transposed copy of ``points`` (free when ``points`` is itself a transposed view of a
    contiguous (D, N) tensor) and the (N,) squared norms.
    """
    pt = points.t().contiguous()  # (D, N)
    norms = (pt * pt).sum(0)  # (N,)

    def sq_dist(idx: Tensor, cols: slice = slice(None)) -> Tensor:
        out = torch.addmm(norms[cols], pt[:, idx].t(), pt[:, cols], alpha=-2)  # (m, n_cols)
        return out.add_(norms[idx, None]).clamp_min_(0)

    return sq_dist


def outer_product_sq_dist(a: Tensor, h: Tensor) -> SqDist:
    """Squared distances between the implicit points g_i = a_i ⊗ h_i, without building them.

    ``a`` (N, C) and ``h`` (N, D) give N points of dimension C·D (BADGE's gradient embeddings: a = softmax
    probabilities minus the one-hot predicted class, h = penultimate embedding). Uses
    <g_i, g_j> = (a_i·a_j)(h_i·h_j), so one distance costs O(C + D) instead of O(C·D).
    """
    at, ht = a.t().contiguous(), h.t().contiguous()  # (C, N), (D, N)
    norms = (at * at).sum(0) * (ht * ht).sum(0)  # (N,): |g_i|² = |a_i|² |h_i|²

    def sq_dist(idx: Tensor, cols: slice = slice(None)) -> Tensor:
        cross = (at[:, idx].t() @ at[:, cols]).mul_(ht[:, idx].t() @ ht[:, cols])  # (m, n_cols): <g_j, g_i>
        return torch.add(norms[cols], cross, alpha=-2).add_(norms[idx, None]).clamp_min_(0)

    return sq_dist


def kcenter_greedy(points: Tensor, labeled: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-center greedy, the coreset selection of Sener & Savarese (ICLR 2018).

    The labeled points are the initial centres; each step picks the not-yet-chosen unlabeled point
    farthest from its nearest centre and makes it a centre. If nothing is labeled, the first centre (and
    first pick) is drawn uniformly among all points with ``generator``. Ties go to the lowest index
    (``argmax``). Costs one pass over the pool per pick, plus one (N x n_labeled) distance computation,
    tiled, at the start.

    Args:
        points: (N, D) float tensor, the pool's embeddings.
        labeled: (N,) bool tensor, True for the initial centres.
        k: number of points to pick, 0 <= k <= number of unlabeled points.
        generator: seeds the first centre when nothing is labeled.

    Returns:
        LongTensor (k,) of distinct unlabeled positions into ``points``, in the order they were picked.
    """
    n = _check_points("points", points)
    _check_mask("labeled", labeled, n)
    _check_k(k, int((~labeled).sum()), "unlabeled points")
    with torch.inference_mode():
        picks = _farthest_first(euclidean_sq_dist(points), labeled, k, generator)
    return picks.clone()  # a normal tensor, usable outside inference mode


def kmeanspp_seeding(points: Tensor, k: int, generator: torch.Generator, candidates: Tensor | None = None,
                     uniforms: Tensor | None = None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007): D²-weighted sampling of k centres.

    The first centre is uniform among the candidates; each next one is drawn among the remaining
    candidates with probability proportional to its squared distance D² to the nearest chosen centre. A
    draw inverts the cumulative sum of D² (float64) at u·sum(D²) for one uniform u, so it is exactly
    proportional to D² and reproducible. Chosen points have D² = 0 and are never drawn again; when every
    remaining D² is 0 (duplicates) the draw is uniform among the remaining candidates.

    Args:
        points: (N, D) float tensor.
        k: number of centres, 0 <= k <= number of candidates.
        generator: draws the k uniforms when ``uniforms`` is not given.
        candidates: (N,) bool tensor of the points that may be chosen; default all.
        uniforms: (k,) values in [0, 1), one per draw, instead of drawing them from ``generator``.

    Returns:
        LongTensor (k,) of distinct candidate positions into ``points``, in the order they were drawn.
    """
    n = _check_points("points", points)
    return _seed(euclidean_sq_dist, (points,), n, k, generator, candidates, uniforms)


def kmeanspp_factored(a: Tensor, h: Tensor, k: int, generator: torch.Generator, candidates: Tensor | None = None,
                      uniforms: Tensor | None = None) -> Tensor:
    """k-means++ seeding over the points g_i = a_i ⊗ h_i, BADGE's selection (Ash et al., ICLR 2020).

    Same draws as ``kmeanspp_seeding`` on the flattened outer products (N, C·D), without building them:
    each pick costs O(N·(C + D)) (see ``outer_product_sq_dist``).

    Args:
        a: (N, C) float tensor, softmax probabilities minus the one-hot predicted class.
        h: (N, D) float tensor of the same dtype, the penultimate embeddings.
        k, generator, candidates, uniforms: as in ``kmeanspp_seeding``.

    Returns:
        LongTensor (k,) of distinct candidate positions, in the order they were drawn.
    """
    n = _check_points("a", a)
    if h.ndim != 2 or h.shape[0] != n:
        raise ValueError(f"h must have shape (N={n}, D), got {tuple(h.shape)}")
    return _seed(outer_product_sq_dist, (a, h), n, k, generator, candidates, uniforms)


def _farthest_first(sq_dist: SqDist, labeled: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """The k-center greedy loop; min_dist is -1 where a point may not be picked (below every distance)."""
    picks = torch.empty(k, dtype=torch.long, device=labeled.device)
    if k == 0:
        return picks
    centres = labeled.nonzero().squeeze(1)
    first = 0
    if len(centres) == 0:  # nothing labeled: a uniform first centre, which is also the first pick
        centres = torch.randint(len(labeled), (1,), generator=generator, device=generator.device)
        centres = centres.to(labeled.device)
        picks[0] = centres[0]
        first = 1
    min_dist = _min_sq_dist(sq_dist, centres, len(labeled))  # (N,)
    min_dist[centres] = -1
    for t in range(first, k):
        j = min_dist.argmax(keepdim=True)  # (1,), stays on the device: no sync per step on a GPU
        picks[t] = j[0]
        if t + 1 < k:
            torch.minimum(min_dist, sq_dist(j)[0], out=min_dist)
        min_dist[j] = -1
    return picks


def _min_sq_dist(sq_dist: SqDist, centres: Tensor, n: int) -> Tensor:
    """(N,) squared distance of every point to its nearest centre, in cache-sized pool blocks."""
    cols = max(256, _TILE // len(centres))
    return torch.cat([sq_dist(centres, slice(s, s + cols)).amin(0) for s in range(0, n, cols)])


def _seed(make_sq_dist: Callable[..., SqDist], tensors: tuple[Tensor, ...], n: int, k: int,
          generator: torch.Generator, candidates: Tensor | None, uniforms: Tensor | None) -> Tensor:
    """Checks the k-means++ arguments, then runs ``_d2_sampling`` on ``make_sq_dist(*tensors)``."""
    device = tensors[0].device
    if candidates is None:
        candidates = torch.ones(n, dtype=torch.bool, device=device)
    _check_mask("candidates", candidates, n)
    _check_k(k, int(candidates.sum()), "candidates")
    if uniforms is None:
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64, device=generator.device)
    elif uniforms.shape != (k,) or not bool(((uniforms >= 0) & (uniforms < 1)).all()):
        raise ValueError(f"uniforms must be a ({k},) tensor of values in [0, 1), got shape {tuple(uniforms.shape)}")
    with torch.inference_mode():
        picks = _d2_sampling(make_sq_dist(*tensors), candidates.to(device), uniforms.to(device, torch.float64))
    return picks.clone()


def _d2_sampling(sq_dist: SqDist, open_: Tensor, uniforms: Tensor) -> Tensor:
    """The k-means++ loop: one D²-weighted draw per uniform among the points still ``open_`` (N,)."""
    k = len(uniforms)
    picks = torch.empty(k, dtype=torch.long, device=open_.device)
    open_ = open_.clone()
    weights = open_.to(torch.float64)  # (N,): uniform first draw, then D² to the nearest centre, 0 if closed
    for t in range(k):
        cum = weights.cumsum(0, dtype=torch.float64)
        if cum[-1] <= 0:  # every remaining D² is 0: uniform among the remaining candidates
            cum = open_.cumsum(0, dtype=torch.float64)
        # first i with cum_i > u·total: weight-0 points are never drawn, and u < 1 keeps it in range
        j = torch.searchsorted(cum, uniforms[t:t + 1] * cum[-1], right=True)  # (1,)
        picks[t] = j[0]
        open_[j] = False
        if t + 1 < k:
            d2 = sq_dist(j)[0]  # (N,)
            weights = d2.masked_fill_(~open_, 0) if t == 0 else torch.minimum(weights, d2, out=weights)
            weights[j] = 0
    return picks


def _check_points(name: str, x: Tensor) -> int:
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor (N, D), got {x.dtype} of shape {tuple(x.shape)}")
    return x.shape[0]


def _check_mask(name: str, mask: Tensor, n: int) -> None:
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(f"{name} must be a ({n},) bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")


def _check_k(k: int, available: int, what: str) -> None:
    if not 0 <= k <= available:
        raise ValueError(f"k must be in [0, {available}] (the number of {what}), got {k}")
