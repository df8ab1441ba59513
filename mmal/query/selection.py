"""Batch-selection kernels: k-center greedy (coreset) and k-means++ seeding (BADGE), in plain torch.

Both are greedy loops over a running vector (N,): the squared distance of every point to its nearest
chosen centre. k-means++ updates it with one pass over the pool (O(N·D)) per selected point; k-center
updates only the blocks of the pool that could hold its next pick (see ``_farthest_first``). No N x N
matrix is ever built, and the kernels run on whatever device their inputs are on.

The loops are written against a *squared-distance object*, ``BlockedSqDist``: ``euclidean_sq_dist`` for plain
points, ``outer_product_sq_dist`` for BADGE's implicit gradient embeddings. It stores the points in
blocks, (n_blocks, D, _BLOCK) contiguous and zero-padded to whole blocks, because on CPU one batched
centre-times-blocks product over that layout runs near memory bandwidth: for 200k x 128 float32 on the
development machine (2 AMD cores, MKL) ~3.0 ms, against ~4.3 ms for ``centre @ pointsT`` on a (D, N)
layout and ~13 ms for ``torch.mv`` on the row-major (N, D) matrix. Distances use
||x - y||² = |x|² + |y|² - 2 x·y in the input dtype, clamped at 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Points per block: of the layout (2048-4096 read fastest) and of k-center's lazy updates.
_BLOCK = 2048
# Most elements of one (centres x points) distance tile: big enough for an efficient matrix product,
# small enough to stay in cache (a full (n_labeled, N) matrix is 2-4x slower, and large).
_TILE = 2**22


class BlockedSqDist:
    """Squared distances from some points of a blocked pool to every point of (some of) its blocks.

    ``sq_dist(idx, blocks=all)`` gives a fresh (m, n_selected_blocks * _BLOCK) tensor (columns past N are
    padding); the kernels call ``tile`` instead, which writes the
    (s, m, _BLOCK) distances into a scratch buffer kept by this object and reused by the next ``tile``, so
    a selection allocates no pool-sized or tile-sized temporaries per pick (a process that queries hundreds
    of times keeps a flat memory profile: the allocator is not handed hundreds of 16 MB blocks to lose).
    Subclasses set ``norms`` (n_blocks, _BLOCK) and write the -2 x_j·x_i in ``_dots``.
    """

    norms: Tensor

    def __init__(self) -> None:
        self._scratch: dict[str, Tensor] = {}

    def __call__(self, idx: Tensor, blocks: slice = slice(None)) -> Tensor:
        dots = self._dots(idx, blocks, lambda _, shape: self.norms.new_empty(shape))
        return _add_norms(dots, self.norms, idx, blocks).transpose(0, 1).reshape(len(idx), -1)

    def tile(self, idx: Tensor | int, blocks: slice = slice(None)) -> Tensor:
        """(s, m, _BLOCK) squared distances of the points ``idx`` (a LongTensor (m,), or one int: m = 1) to
        the points of the s selected blocks, in the scratch buffer: valid until the next ``tile``."""
        return _add_norms(self._dots(idx, blocks, self._buffer), self.norms, idx, blocks)

    def _buffer(self, key: str, shape: tuple[int, ...]) -> Tensor:
        numel = shape[0] * shape[1] * shape[2]
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._scratch[key] = self.norms.new_empty(numel)
        return buf[:numel].view(shape)

    def _dots(self, idx: Tensor | int, blocks: slice, out: Callable[[str, tuple[int, ...]], Tensor]) -> Tensor:
        raise NotImplementedError


class _Euclidean(BlockedSqDist):
    def __init__(self, points: Tensor) -> None:
        super().__init__()
        self.xb = _blocked(points)  # (n_blocks, D, _BLOCK)
        self.norms = (self.xb * self.xb).sum(1)  # (n_blocks, _BLOCK)

    def _dots(self, idx, blocks, out):
        xs = self.xb[blocks]
        rows = _rows(self.xb, idx)
        return torch.matmul(rows.mul(-2), xs, out=out("dots", (len(xs), len(rows), _BLOCK)))


class _OuterProduct(BlockedSqDist):
    def __init__(self, a: Tensor, h: Tensor) -> None:
        super().__init__()
        self.ab, self.hb = _blocked(a), _blocked(h)  # (n_blocks, C, _BLOCK), (n_blocks, D, _BLOCK)
        self.norms = (self.ab * self.ab).sum(1) * (self.hb * self.hb).sum(1)  # |g_i|² = |a_i|² |h_i|²

    def _dots(self, idx, blocks, out):
        as_, hs = self.ab[blocks], self.hb[blocks]
        ra, rh = _rows(self.ab, idx), _rows(self.hb, idx)
        shape = (len(as_), len(ra), _BLOCK)
        cross = torch.matmul(ra.mul(-2), as_, out=out("dots", shape))
        return cross.mul_(torch.matmul(rh, hs, out=out("h_dots", shape)))  # -2 <g_j, g_i>


def euclidean_sq_dist(points: Tensor) -> BlockedSqDist:
    """Squared Euclidean distances between rows of ``points`` (N, D), as a ``BlockedSqDist``.

    Holds one blocked copy of ``points`` and the squared norms. ``sq_dist(idx)`` gives the (m, N_padded)
    distances of the points ``idx`` (m,) to every point; columns N and beyond are padding.
    """
    return _Euclidean(points)


def outer_product_sq_dist(a: Tensor, h: Tensor) -> BlockedSqDist:
    """Squared distances between the implicit points g_i = a_i ⊗ h_i, without building them, as a ``BlockedSqDist``.

    ``a`` (N, C) and ``h`` (N, D) give N points of dimension C·D (BADGE's gradient embeddings: a = softmax
    probabilities minus the one-hot predicted class, h = penultimate embedding). Uses
    <g_i, g_j> = (a_i·a_j)(h_i·h_j), so one distance costs O(C + D) instead of O(C·D). Shapes as in
    ``euclidean_sq_dist``.
    """
    return _OuterProduct(a, h)


def _blocked(x: Tensor) -> Tensor:
    """(N, D) -> (n_blocks, D, _BLOCK) contiguous, zero-padded to whole blocks."""
    n, d = x.shape
    full = n // _BLOCK
    out = x.new_zeros(-(-n // _BLOCK), d, _BLOCK)
    out[:full] = x[:full * _BLOCK].reshape(full, _BLOCK, d).transpose(1, 2)
    out[full:, :, :n - full * _BLOCK] = x[full * _BLOCK:].t()
    return out


def _rows(xb: Tensor, idx: Tensor | int) -> Tensor:
    """The points ``idx`` (m,) of a blocked layout, (m, D); (1, D) for one int. Contiguous: a strided row
    (a column of its block) sends the batched product down a path that is 1.5-2x slower and does not use a
    second thread (BADGE's h-factor product, 200k x 128: 5.7 ms against 3.2 ms on two threads), same values."""
    if isinstance(idx, int):
        return xb[idx // _BLOCK, :, idx % _BLOCK].unsqueeze(0).contiguous()
    return xb[idx // _BLOCK, :, idx % _BLOCK]


def _add_norms(dots: Tensor, norms: Tensor, idx: Tensor | int, blocks: slice) -> Tensor:
    """(s, m, _BLOCK) |x_j|² + |x_i|² - 2 x_j·x_i clamped at 0, in place from the (s, m, _BLOCK) -2 x_j·x_i."""
    # -2 is folded into the centres (exact), so that no second tile is allocated
    own = norms.view(-1)[idx]
    return dots.add_(norms[blocks].unsqueeze(1)).add_(own if isinstance(idx, int) else own.view(1, -1, 1)).clamp_min_(0)


def kcenter_greedy(points: Tensor, labeled: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-center greedy, the coreset selection of Sener & Savarese (ICLR 2018).

    The labeled points are the initial centres; each step picks the not-yet-chosen unlabeled point
    farthest from its nearest centre and makes it a centre. If nothing is labeled, the first centre (and
    first pick) is drawn uniformly among all points with ``generator``. Ties go to the lowest index
    (``argmax``). Starts with one tiled (N x n_labeled) distance computation; then each pick updates only
    the blocks of the pool that could hold it, catching up on all the centres they missed in one matrix
    product (exact, see ``_farthest_first``): on random data about one block of 2048 points per pick
    instead of the whole pool.

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
                     uniforms: Tensor | None = None, first: str = "uniform") -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007): D²-weighted sampling of k centres.

    The first centre is uniform among the candidates (``first="uniform"``), or the candidate of largest
    norm (``first="largest_norm"``, lowest index on ties: BADGE's rule, see ``kmeanspp_factored``); each
    next one is drawn among the remaining candidates with probability proportional to its squared
    distance D² to the nearest chosen centre. A
    draw inverts the cumulative sum of D² (float64) at u·sum(D²) for one uniform u, so it is exactly
    proportional to D² and reproducible. Chosen points have D² = 0 and are never drawn again; when every
    remaining D² is 0 (duplicates) the draw is uniform among the remaining candidates.

    Args:
        points: (N, D) float tensor.
        k: number of centres, 0 <= k <= number of candidates.
        generator: draws the k uniforms when ``uniforms`` is not given.
        candidates: (N,) bool tensor of the points that may be chosen; default all.
        uniforms: (k,) values in [0, 1), one per draw, instead of drawing them from ``generator``; with
            ``first="largest_norm"`` the first one is drawn but not used.
        first: "uniform" or "largest_norm", how the first centre is chosen.

    Returns:
        LongTensor (k,) of distinct candidate positions into ``points``, in the order they were drawn.
    """
    n = _check_points("points", points)
    return _seed(euclidean_sq_dist, (points,), n, k, generator, candidates, uniforms,
                 first, lambda: (points * points).sum(1))


def kmeanspp_factored(a: Tensor, h: Tensor, k: int, generator: torch.Generator, candidates: Tensor | None = None,
                      uniforms: Tensor | None = None, first: str = "largest_norm") -> Tensor:
    """k-means++ seeding over the points g_i = a_i ⊗ h_i, BADGE's selection (Ash et al., ICLR 2020).

    Same draws as ``kmeanspp_seeding`` on the flattened outer products (N, C·D), without building them:
    each pick costs O(N·(C + D)) (see ``outer_product_sq_dist``). The first centre is by default the
    candidate of largest gradient-embedding norm |a_i|·|h_i|, as in the authors' code (JordanAsh/badge,
    ``init_centers``: ``argmax`` of the norms) and in BMMAL's (MengShen0709/bmmal, ``init_centers_torch``).

    Args:
        a: (N, C) float tensor, softmax probabilities minus the one-hot predicted class.
        h: (N, D) float tensor of the same dtype, the penultimate embeddings.
        k, generator, candidates, uniforms, first: as in ``kmeanspp_seeding``.

    Returns:
        LongTensor (k,) of distinct candidate positions, in the order they were drawn.
    """
    n = _check_points("a", a)
    if h.ndim != 2 or h.shape[0] != n:
        raise ValueError(f"h must have shape (N={n}, D), got {tuple(h.shape)}")
    return _seed(outer_product_sq_dist, (a, h), n, k, generator, candidates, uniforms,
                 first, lambda: (a * a).sum(1) * (h * h).sum(1))


def _farthest_first(sq_dist: BlockedSqDist, labeled: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """The k-center greedy loop over lazily updated blocks of the pool."""
    # ``bounds`` (n_blocks, _BLOCK) holds each point's squared distance to the nearest of the centres its
    # block has seen (-inf: padding, or not pickable). Distances to the nearest centre only shrink as
    # centres are added, so a stale value is an upper bound: a block whose ``top`` bound is below another
    # block's exact maximum cannot hold the next pick, and is caught up later, in one matrix product for
    # all the centres it missed. The picks are those of the eager loop (update every point every step), up
    # to float rounding: a distance computed in a batch may differ from the eager one in its last bit.
    n, device = len(labeled), labeled.device
    picks = torch.empty(k, dtype=torch.long, device=device)
    if k == 0:
        return picks
    centres = torch.empty(int(labeled.sum()) + k, dtype=torch.long, device=device)  # in the order added
    count = int(labeled.sum())
    centres[:count] = labeled.nonzero().squeeze(1)
    first = 0
    if count == 0:  # nothing labeled: a uniform first centre, which is also the first pick
        centres[0] = picks[0] = torch.randint(n, (1,), generator=generator, device=generator.device)[0]
        count = first = 1
    n_blocks = -(-n // _BLOCK)
    bounds = _min_sq_dist(sq_dist, centres[:count], 0, n_blocks)  # (n_blocks * _BLOCK,)
    bounds[n:] = -torch.inf
    bounds[centres[:count]] = -torch.inf
    bounds = bounds.view(n_blocks, _BLOCK)
    top = bounds.amax(1)  # (n_blocks,)
    seen = [count] * n_blocks  # how many centres each block has seen
    for t in range(first, k):
        while True:  # usually two rounds: catch up the top block, then find it still on top
            b = int(top.argmax())  # first block on ties, so the pick is the first index on ties
            if seen[b] == count:
                break
            fresh = [c for c in range(n_blocks) if seen[c] == count]
            best = top[fresh].max() if fresh else top[b]
            for c in (top >= best).nonzero().squeeze(1).tolist():  # the blocks that could hold the pick
                if seen[c] < count:
                    torch.minimum(bounds[c], _min_sq_dist(sq_dist, centres[seen[c]:count], c, c + 1), out=bounds[c])
                    top[c], seen[c] = bounds[c].max(), count
        j = bounds[b].argmax()
        picks[t] = centres[count] = b * _BLOCK + j
        count += 1
        bounds[b, j] = -torch.inf
        top[b] = bounds[b].max()
    return picks


def _min_sq_dist(sq_dist: BlockedSqDist, centres: Tensor, b0: int, b1: int) -> Tensor:
    """((b1 - b0) * _BLOCK,) squared distance of blocks b0..b1-1 to their nearest centre, in tiles of ~_TILE."""
    per_tile = max(1, _TILE // _BLOCK)
    m = min(len(centres), per_tile)  # centres per tile
    step = max(1, per_tile // m)  # blocks per tile
    out = sq_dist.norms.new_empty(b1 - b0, _BLOCK)
    for s in range(b0, b1, step):
        nearest = out[s - b0:min(s + step, b1) - b0]  # (blocks of this tile, _BLOCK)
        for c in range(0, len(centres), m):
            tile = sq_dist.tile(centres[c:c + m], slice(s, min(s + step, b1)))  # (s, m, _BLOCK)
            if c == 0:
                torch.amin(tile, 1, out=nearest)
            else:
                torch.minimum(nearest, tile.amin(1), out=nearest)
    return out.view(-1)


def _seed(make_sq_dist: Callable[..., BlockedSqDist], tensors: tuple[Tensor, ...], n: int, k: int,
          generator: torch.Generator, candidates: Tensor | None, uniforms: Tensor | None,
          first: str, sq_norms: Callable[[], Tensor]) -> Tensor:
    """Checks the k-means++ arguments, then runs ``_d2_sampling`` on ``make_sq_dist(*tensors)``;
    ``sq_norms()`` gives the (N,) squared norms for ``first="largest_norm"``."""
    if first not in ("uniform", "largest_norm"):
        raise ValueError(f"first must be 'uniform' or 'largest_norm', got {first!r}")
    device = tensors[0].device
    if candidates is None:
        candidates = torch.ones(n, dtype=torch.bool, device=device)
    _check_mask("candidates", candidates, n)
    _check_k(k, int(candidates.sum()), "candidates")
    if uniforms is None:
        uniforms = torch.rand(k, generator=generator, dtype=torch.float64, device=generator.device)
    elif uniforms.shape != (k,) or not bool(((uniforms >= 0) & (uniforms < 1)).all()):
        raise ValueError(f"uniforms must be a ({k},) tensor of values in [0, 1), got shape {tuple(uniforms.shape)}")
    open_ = torch.zeros(-(-n // _BLOCK) * _BLOCK, dtype=torch.bool, device=device)  # padding never drawn
    open_[:n] = candidates.to(device)
    with torch.inference_mode():
        largest = None
        if first == "largest_norm" and k > 0:
            largest = int(sq_norms().masked_fill(~candidates.to(device), -torch.inf).argmax())  # first on ties
        picks = _d2_sampling(make_sq_dist(*tensors), open_, uniforms.to(device, torch.float64), largest)
    return picks.clone()


def _d2_sampling(sq_dist: BlockedSqDist, open_: Tensor, uniforms: Tensor, first: int | None = None) -> Tensor:
    """The k-means++ loop: one D²-weighted draw per uniform among the points still ``open_`` (padded N,);
    the first pick is ``first`` when given (its uniform is then unused)."""
    # Per pick: the distances to the newest centre (one pass over the blocked pool, written in place into
    # the scratch tile), the min-update, one float64 cumsum into a kept buffer, a binary search. The
    # weights are kept in the points' dtype: they are minima of distances in that dtype (or 1), so the
    # float64 cumsum sees the same values as it would from a float64 copy.
    k = len(uniforms)
    picks = []
    open_ = open_.clone()
    weights = open_.to(sq_dist.norms.dtype)  # uniform first draw, then D² to the nearest centre; 0 if not open
    cum = torch.empty(len(open_), dtype=torch.float64, device=open_.device)
    for t, u in enumerate(uniforms.tolist()):
        torch.cumsum(weights, 0, dtype=torch.float64, out=cum)
        total = float(cum[-1])
        if total <= 0:  # every remaining D² is 0: uniform among the remaining candidates
            torch.cumsum(open_, 0, dtype=torch.float64, out=cum)
            total = float(cum[-1])
        # first i with cum_i > u·total: weight-0 points are never drawn, and u < 1 keeps it in range
        j = first if t == 0 and first is not None else int(torch.searchsorted(cum, u * total, right=True))
        picks.append(j)
        open_[j] = False
        if t + 1 < k:
            d2 = sq_dist.tile(j).view(-1)  # (padded N,), in the scratch tile
            if t == 0:
                weights = d2.masked_fill(~open_, 0)
            else:
                torch.minimum(weights, d2, out=weights)
            weights[j] = 0
    return torch.tensor(picks, dtype=torch.long, device=open_.device)


def _check_points(name: str, x: Tensor) -> int:
    """N, after checking ``x`` is an (N, D) float tensor."""
    if x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float tensor (N, D), got {x.dtype} of shape {tuple(x.shape)}")
    return x.shape[0]


def _check_mask(name: str, mask: Tensor, n: int) -> None:
    """Checks ``mask`` is an (n,) bool tensor."""
    if mask.dtype != torch.bool or mask.shape != (n,):
        raise ValueError(f"{name} must be a ({n},) bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")


def _check_k(k: int, available: int, what: str) -> None:
    """Checks 0 <= k <= available."""
    if not 0 <= k <= available:
        raise ValueError(f"k must be in [0, {available}] (the number of {what}), got {k}")
