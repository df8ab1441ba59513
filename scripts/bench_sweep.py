"""One sweep under the joblib launcher (``n_jobs`` workers) and under the stacked launcher (``n_jobs``
processes), in the same run: wall-clock seconds of each command, start-up included, their ratio, and whether
every job's metrics agree bitwise (timings aside).

    python scripts/bench_sweep.py                      # 60 jobs of the synthetic study, 2 processes each
    python scripts/bench_sweep.py --baseline-ref 9a55b0d   # and the stacked launcher on that commit, same run
    python scripts/bench_sweep.py --device cuda --only stacked --seeds 0,1,2,3,4,5,6,7,8,9

The default grid is 60 jobs of ``+experiment=synthetic_study`` at its sizes (50 epochs, 10 cycles, references
every cycle): pitfalls none and synergy x random, entropy, margin, BADGE, BMMAL, gap_split x 5 seeds. A GPU run
(``--device cuda --only stacked``) prints the stacked launcher's jobs per minute. ``--baseline-ref <git ref>``
first runs the same grid under the stacked launcher on that commit (a temporary git worktree, its own mmal on
``PYTHONPATH``, removed afterwards), so a speed-up is a ratio measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sweep(launcher: str, grid: list[str], n_jobs: int, sweep_dir: Path, tree: Path = ROOT) -> float:
    """Seconds of ``python -m mmal.train -m <grid> hydra/launcher=<launcher>`` with the mmal of ``tree``; raises
    if it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mmal.train", "-m", *grid, f"hydra/launcher={launcher}",
                             f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep_dir}"], cwd=tree, env=env,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{launcher} sweep failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds


@contextlib.contextmanager
def worktree(ref: str, path: Path) -> Iterator[Path]:
    """A detached git worktree of ``ref`` at ``path`` for the block's duration."""
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), ref], cwd=ROOT, check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=True)


def metrics(sweep_dir: Path) -> dict[str, list[dict]]:
    """Each job's records without their timings."""
    return {job.name: [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
                       for line in (job / "metrics.jsonl").read_text().splitlines()]
            for job in sorted(sweep_dir.iterdir()) if job.is_dir()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pitfalls", default="none,synergy")
    parser.add_argument("--queries", default="random,entropy,margin,badge,bmmal,gap_split")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)), help="processes of each launcher")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--only", choices=["joblib", "stacked"], help="run one launcher only")
    parser.add_argument("--extra", nargs="*", default=[], help="further overrides, e.g. trainer.epochs=100")
    parser.add_argument("--baseline-ref", help="a git ref whose stacked launcher runs the same grid first")
    args = parser.parse_args()
    grid = ["+experiment=synthetic_study", f"pitfall={args.pitfalls}", f"query={args.queries}",
            f"seed={args.seeds}", f"trainer.device={args.device}", "logger=none", "hydra.sweep.subdir=${hydra.job.num}",
            *args.extra]
    jobs = len(args.pitfalls.split(",")) * len(args.queries.split(",")) * len(args.seeds.split(","))
    print(f"{jobs} jobs: {' '.join(grid)}; {args.n_jobs} processes per launcher, {os.cpu_count()} cores", flush=True)
    launchers = [args.only] if args.only else ["joblib", "stacked"]
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        if args.baseline_ref:
            with worktree(args.baseline_ref, Path(tmp) / "baseline_tree") as tree:
                seconds["baseline"] = sweep("stacked", grid, args.n_jobs, Path(tmp) / "baseline", tree)
            print(f"stacked on {args.baseline_ref}: {seconds['baseline']:8.1f} s  "
                  f"{60 * jobs / seconds['baseline']:6.1f} jobs/min", flush=True)
        for launcher in launchers:
            seconds[launcher] = sweep(launcher, grid, args.n_jobs, Path(tmp) / launcher)
            rate = 60 * jobs / seconds[launcher]
            print(f"{launcher:8s} {seconds[launcher]:8.1f} s  {rate:6.1f} jobs/min", flush=True)
        if args.baseline_ref and "stacked" in seconds:
            print(f"stacked on this tree / stacked on {args.baseline_ref} speed-up: "
                  f"{seconds['baseline'] / seconds['stacked']:.2f}x", flush=True)
        if len(launchers) == 2:
            same = metrics(Path(tmp) / "joblib") == metrics(Path(tmp) / "stacked")
            print(f"stacked / joblib speed-up: {seconds['joblib'] / seconds['stacked']:.2f}x; "
                  f"metrics bitwise equal: {same}")


if __name__ == "__main__":
    main()
