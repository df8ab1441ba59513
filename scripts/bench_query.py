"""Time the batch-selection kernels against plain numpy references, in the same run.

    python scripts/bench_query.py [--sizes 10000 50000 200000] [--budgets 100 1000]

Random pools of N embeddings (D = 128, float32) and 10-class probabilities. Per pool size and budget b:
coreset (``kcenter_greedy``, 1% of the pool labeled), k-means++ seeding on the embeddings and BADGE
(``kmeanspp_factored``), each next to a numpy reference that does, per pick, a BLAS product of the
pool with the newest centre, the min-update and an argmax or a D²-weighted draw (cumsum +
searchsorted). The BADGE reference materialises the N x 1280 gradient embedding (its time includes
building it). Both sides get the same uniforms, so the picks can be compared. For k-center the picks are
also compared in float64 (untimed): float32 distances carry ~1e-7 relative rounding, and in a pool of
200k the farthest points are sometimes closer than that, so float32 picks may part at such a near-tie.

Each kernel is timed beside its *floor*, the unavoidable work, interleaved in the same process (median of
``--repeats``): for k-center, k-means++ and BADGE one read of the blocked pool per pick, b batched products
of one centre with the blocked points (BADGE: with both factors, C + D floats per point); for BALD
(``--bald N T C``, MC-dropout probabilities of a 10-class softmax) one ``torch.log`` pass over the
(T, N, C) probabilities into a preallocated tensor; for ensemble_disagreement (``--ensemble N M C``) one
``torch.log`` pass over the references' (N, M, C) probabilities. BALD's scores are checked against the definition
H(mean_t p_t) - mean_t H(p_t) (``torch.allclose``), whose time is printed too. ``--memory-calls`` runs
k-center that many times in a fresh subprocess (pool 200k x 128, b = 1,000 unless ``--memory-size``) and
prints each call's peak resident memory above what was resident before it: the high-water mark VmHWM is
reset before each call by writing 5 to /proc/self/clear_refs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial

import numpy as np
import torch

from mmal.metrics.references import ensemble_probs
from mmal.query.selection import _blocked, kcenter_greedy, kmeanspp_factored, kmeanspp_seeding
from mmal.query.uncertainty import entropy, mutual_information

DIM, CLASSES, LABELED = 128, 10, 0.01


def np_sq_dist(x: np.ndarray, norms: np.ndarray, j: int) -> np.ndarray:
    """(N,) squared distances of every row of ``x`` to row j, via one BLAS matrix-vector product."""
    return np.maximum(norms - 2 * (x @ x[j]) + norms[j], 0)


def np_kcenter(x: np.ndarray, labeled: np.ndarray, k: int) -> list[int]:
    """k-center greedy from the labeled rows (at least one)."""
    norms = np.einsum("ij,ij->i", x, x)
    centres = np.flatnonzero(labeled)
    min_dist = np.empty(len(x), x.dtype)
    for s in range(0, len(x), 2048):  # row blocks against all labeled centres
        block = norms[s:s + 2048, None] - 2 * (x[s:s + 2048] @ x[centres].T) + norms[centres]
        min_dist[s:s + 2048] = np.maximum(block, 0).min(1)
    min_dist[centres] = -1
    picks = []
    for t in range(k):
        j = int(min_dist.argmax())
        picks.append(j)
        if t + 1 < k:
            np.minimum(min_dist, np_sq_dist(x, norms, j), out=min_dist)
        min_dist[j] = -1
    return picks


def np_kmeanspp(x: np.ndarray, uniforms: np.ndarray, largest_norm_first: bool = False) -> list[int]:
    """k-means++ seeding, one draw per uniform: invert the float64 cumsum of D² at u·sum(D²); the first
    centre is the point of largest norm instead with ``largest_norm_first`` (BADGE's rule)."""
    norms = np.einsum("ij,ij->i", x, x)
    open_ = np.ones(len(x), dtype=bool)
    weights = np.ones(len(x))
    picks = []
    for t, u in enumerate(uniforms):
        cum = np.cumsum(weights, dtype=np.float64)
        if cum[-1] <= 0:
            cum = np.cumsum(open_, dtype=np.float64)
        j = int(np.searchsorted(cum, u * cum[-1], side="right"))
        if t == 0 and largest_norm_first:
            j = int(norms.argmax())
        picks.append(j)
        open_[j] = False
        if t + 1 < len(uniforms):
            d2 = np_sq_dist(x, norms, j)
            weights = np.where(open_, d2, 0) if t == 0 else np.minimum(weights, d2)
            weights[j] = 0
    return picks


def np_badge(a: np.ndarray, h: np.ndarray, uniforms: np.ndarray) -> list[int]:
    """k-means++ on the materialised gradient embeddings a_i ⊗ h_i, (N, C·D), from the largest norm."""
    return np_kmeanspp((a[:, :, None] * h[:, None, :]).reshape(len(a), -1), uniforms, largest_norm_first=True)


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, [int(i) for i in out]


def interleaved(repeats: int, *fns) -> list[float]:
    """Median wall time of each function, the functions run in turn ``repeats`` times."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def product_floor(blocked: list[torch.Tensor], b: int):
    """b batched products of one centre with the blocked pool (each factor): one read of it per pick."""
    rows = [x[0, :, :1].t().contiguous() for x in blocked]
    outs = [torch.empty(x.shape[0], 1, x.shape[2]) for x in blocked]

    def run():
        for _ in range(b):
            for r, x, o in zip(rows, blocked, outs):
                torch.matmul(r, x, out=o)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--repeats", type=int, default=5, help="kernel and floor runs (median); numpy once")
    parser.add_argument("--no-reference", action="store_true", help="skip the numpy references")
    parser.add_argument("--bald", type=int, nargs=3, default=[50_000, 20, 10], metavar=("N", "T", "C"))
    parser.add_argument("--ensemble", type=int, nargs=3, default=[200_000, 2, 10], metavar=("N", "M", "C"))
    parser.add_argument("--memory-calls", type=int, default=10, help="k-center calls in one process; 0: skip")
    parser.add_argument("--memory-size", type=int, nargs=2, default=[200_000, 1000], metavar=("N", "B"))
    parser.add_argument("--_memory-child", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        _memory_child(*args._memory_child)
        return
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    print(f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores; D={DIM}, C={CLASSES}, {LABELED:.0%} labeled for coreset")

    _bald(*args.bald, args.repeats)
    _ensemble(*args.ensemble, args.repeats)
    if args.memory_calls:
        _memory(*args.memory_size, args.memory_calls)

    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in args.sizes:
        h = torch.randn(n, DIM, generator=gen)  # (N, D)
        probs = torch.softmax(3 * torch.randn(n, CLASSES, generator=gen), 1)  # (N, C)
        a = probs - torch.nn.functional.one_hot(probs.argmax(1), CLASSES)  # BADGE's gradient factor
        labeled = torch.zeros(n, dtype=torch.bool)
        labeled[torch.randperm(n, generator=gen)[:max(1, int(LABELED * n))]] = True
        fits = 2 * n * CLASSES * DIM * 4 < free and not args.no_reference  # the materialised BADGE embedding
        _warm_up(h, a, labeled)
        hb, ab = _blocked(h), _blocked(a)
        for b in args.budgets:
            u = torch.rand(b, generator=gen, dtype=torch.float64)
            for name, ours, reference in _cases(h, a, labeled, b, u, gen, fits):
                reference = None if args.no_reference else reference
                floor = product_floor([ab, hb] if name.startswith("BADGE") else [hb], b)
                t_ours, t_floor = interleaved(args.repeats, ours, floor)
                picks = [int(i) for i in ours()]
                t_ref, ref_picks = timed(reference) if reference else (None, None)
                same = None if ref_picks is None else _compare(picks, ref_picks, h, labeled, name.startswith("coreset"))
                if same is not None and name.startswith("coreset"):  # again in float64, where near-ties do not happen
                    x64 = h.double()
                    same += "; float64: " + _compare(kcenter_greedy(x64, labeled, b, gen).tolist(),
                                                     np_kcenter(x64.numpy(), labeled.numpy(), b), h, labeled, True)
                rows.append((n, b, name, t_ours, t_floor, t_ref, same))
                print(_row(*rows[-1]), flush=True)

    print("\n| N | b | selection | mmal (s) | floor (s) | mmal / floor | numpy (s) | numpy / mmal | identical picks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(_row(*row))


def _cases(h, a, labeled, b, u, gen, fits):
    """(name, mmal call, numpy call or None) for one pool and budget."""
    hn, an, un = h.numpy(), a.numpy(), u.numpy()
    return [
        ("coreset (k-center greedy)", partial(kcenter_greedy, h, labeled, b, gen),
         partial(np_kcenter, hn, labeled.numpy(), b)),
        ("k-means++ seeding", partial(kmeanspp_seeding, h, b, gen, uniforms=u), partial(np_kmeanspp, hn, un)),
        ("BADGE (factored k-means++)", partial(kmeanspp_factored, a, h, b, gen, uniforms=u),
         partial(np_badge, an, hn, un) if fits else None),
    ]


def _compare(picks: list[int], ref: list[int], h: torch.Tensor, labeled: torch.Tensor, kcenter: bool) -> str:
    """"yes", or where the picks part; for k-center, how close (in float64) the two parted picks were."""
    i = next((i for i, (p, r) in enumerate(zip(picks, ref)) if p != r), None)
    if i is None:
        return "yes"
    if not kcenter:
        return f"no, from pick {i}"
    x = h.double()
    centres = x[torch.cat([labeled.nonzero().squeeze(1), torch.tensor(picks[:i], dtype=torch.long)])]
    d2 = torch.cdist(x[[picks[i], ref[i]]], centres).square().amin(1)  # exact-ish distance of the two choices
    return f"no, from pick {i}: near-tie ({abs(d2[0] - d2[1]) / d2.max():.1e} relative)"


def _warm_up(h, a, labeled) -> None:
    """One tiny call each, so one-off library start-up is not timed."""
    gen = torch.Generator().manual_seed(1)
    kcenter_greedy(h[:500], labeled[:500] | (torch.arange(500) == 0), 5, gen)
    kmeanspp_seeding(h[:500], 5, gen)
    kmeanspp_factored(a[:500], h[:500], 5, gen)


def _row(n, b, name, t_ours, t_floor, t_ref, same) -> str:
    ref = "–" if t_ref is None else f"{t_ref:.2f}"
    ratio = "–" if t_ref is None else f"{t_ref / t_ours:.2f}"
    same = same or "–"
    return (f"| {n:,} | {b} | {name} | {t_ours:.2f} | {t_floor:.2f} | {t_ours / t_floor:.2f} | {ref} | {ratio} "
            f"| {same} |")


def _bald(n: int, t: int, c: int, repeats: int) -> None:
    """BALD's score on (T, N, C) probabilities against one log pass and against its definition."""
    gen = torch.Generator().manual_seed(0)
    mc = torch.softmax(3 * torch.randn(t, n, c, generator=gen), -1)
    logs = torch.empty_like(mc)
    ours = mutual_information(mc)
    definition = entropy(mc.mean(0)) - entropy(mc).mean(0)
    t_ours, t_floor, t_def = interleaved(repeats, lambda: mutual_information(mc), lambda: torch.log(mc, out=logs),
                                         lambda: entropy(mc.mean(0)) - entropy(mc).mean(0))
    print(f"BALD N={n:,} T={t} C={c}: {t_ours * 1e3:.1f} ms, floor (one torch.log pass) {t_floor * 1e3:.1f} ms, "
          f"ratio {t_ours / t_floor:.2f}; the definition {t_def * 1e3:.1f} ms ({t_def / t_floor:.2f}x the floor); "
          f"allclose {torch.allclose(ours, definition)}, max |diff| {(ours - definition).abs().max():.1e}", flush=True)


def _ensemble(n: int, m: int, c: int, repeats: int) -> None:
    """EnsembleDisagreement's score from the references' (N, M, C) and the fused model's (N, C) probabilities
    (the forward passes aside), against one log pass over the references' probabilities."""
    gen = torch.Generator().manual_seed(0)
    references = torch.softmax(3 * torch.randn(n, m, c, generator=gen), -1)
    fused = torch.softmax(3 * torch.randn(n, c, generator=gen), -1)
    present = torch.rand(n, m, generator=gen) < 0.8
    logs = torch.empty_like(references)

    def score():
        log_probs = [references[:, i].clamp_min(1e-12).log() for i in range(m)]
        confidence, choice = ensemble_probs(log_probs, [True] * m, present).max(1)
        return confidence * (1 - fused.gather(1, choice[:, None]).squeeze(1))

    t_ours, t_floor = interleaved(repeats, score, lambda: torch.log(references, out=logs))
    print(f"ensemble_disagreement N={n:,} M={m} C={c}: {t_ours * 1e3:.1f} ms, floor (one torch.log pass over the "
          f"references' probabilities) {t_floor * 1e3:.1f} ms, ratio {t_ours / t_floor:.2f}", flush=True)


def _memory(n: int, b: int, calls: int) -> None:
    """k-center ``calls`` times in a fresh process; each call's peak resident memory above the resident before."""
    out = subprocess.run([sys.executable, __file__, "--_memory-child", str(n), str(b), str(calls)],
                         capture_output=True, text=True, check=True).stdout
    peaks = json.loads(out.splitlines()[-1])
    if peaks is None:
        print("k-center memory: /proc/self/clear_refs cannot reset VmHWM here; not measured")
        return
    print(f"k-center {n:,} x {DIM}, b = {b}, {calls} calls in one process: peak resident memory above the "
          f"resident before each call (MiB): {peaks}; call {calls} / call 1: {peaks[-1] / peaks[0]:.2f}", flush=True)


def _status_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def _reset_hwm() -> bool:
    """Resets VmHWM to the current resident memory; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_mib("VmHWM") <= _status_mib("VmRSS") + 1


def _memory_child(n: int, b: int, calls: int) -> None:
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(n, DIM, generator=gen)
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[torch.randperm(n, generator=gen)[:max(1, int(LABELED * n))]] = True
    peaks = []
    for _ in range(calls):
        if not _reset_hwm():
            print(json.dumps(None))
            return
        before = _status_mib("VmRSS")
        kcenter_greedy(h, labeled, b, gen)
        peaks.append(round(_status_mib("VmHWM") - before))
    print(json.dumps(peaks))


if __name__ == "__main__":
    main()
