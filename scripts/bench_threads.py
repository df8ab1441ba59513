"""PyTorch thread counts, on a quiet machine and with one other busy process: the selection kernels and a
whole default run, each on 1 thread and on one thread per core, with the ratio (per core / 1 thread).

    python scripts/bench_threads.py [--pool 200000] [--budget 1000]

Why: ``trainer.num_threads`` defaults to 1. A thread per core is faster only for large kernels on an idle
machine; once another process shares the cores every parallel region waits for a descheduled thread.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import torch

from mmal.query.selection import kcenter_greedy, kmeanspp_factored

CORES = len(os.sched_getaffinity(0))


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy(load: bool):
    """One other process keeping a core busy while the block runs (nothing when ``load`` is False)."""
    proc = multiprocessing.Process(target=_spin, daemon=True) if load else None
    if proc:
        proc.start()
    try:
        yield
    finally:
        if proc:
            proc.terminate()
            proc.join()


def kernels(n: int, b: int, threads: int) -> dict[str, float]:
    """Seconds of k-center greedy (1 % labeled) and BADGE's k-means++ on a random 128-d, 10-class pool."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(n, 128, generator=g)
    probs = torch.softmax(3 * torch.randn(n, 10, generator=g), 1)
    a = probs - torch.nn.functional.one_hot(probs.argmax(1), 10)
    labeled = torch.zeros(n, dtype=torch.bool)
    labeled[: n // 100] = True
    kcenter_greedy(h[:5000], labeled[:5000], 10, g)  # warm-up
    times = {}
    start = time.perf_counter()
    kcenter_greedy(h, labeled, b, g)
    times["k-center greedy"] = time.perf_counter() - start
    start = time.perf_counter()
    kmeanspp_factored(a, h, b, g)
    times["BADGE k-means++"] = time.perf_counter() - start
    return times


def default_run(threads: str) -> float:
    """Seconds of ``python -m mmal.train logger=none trainer.num_threads=<threads>``, start-up included."""
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmal.train", "logger=none", f"trainer.num_threads={threads}",
                        f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=200_000)
    parser.add_argument("--budget", type=int, default=1000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {CORES} cores; pool {args.pool:,}, budget {args.budget}", flush=True)
    rows = []
    for load in (False, True):
        with busy(load):
            one, per_core = kernels(args.pool, args.budget, 1), kernels(args.pool, args.budget, CORES)
            one["default run"], per_core["default run"] = default_run("1"), default_run("null")
        for what in one:
            rows.append((what, "one busy process" if load else "quiet", one[what], per_core[what]))
            print(rows[-1], flush=True)
    print(f"\n| what | machine | 1 thread (s) | {CORES} threads (s) | {CORES} threads / 1 thread |")
    print("|---|---|---|---|---|")
    for what, machine, t1, tn in rows:
        print(f"| {what} | {machine} | {t1:.2f} | {tn:.2f} | {tn / t1:.2f} |")


if __name__ == "__main__":
    main()
