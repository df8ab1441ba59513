"""Stacked training alone, on this tree and on another commit, in the same run: ``Trainer.fit_jobs`` on the
fused models and unimodal references of N jobs of the synthetic study (one stack of 3N members), one thread.

    python scripts/bench_stack.py --baseline-ref 0aab94b                 # 30 jobs, 120 rows, 3 rounds
    python scripts/bench_stack.py --baseline-ref 0aab94b -- trainer.modality_dropout=0.3

Each round times one process per tree (alternating, so a busy spell hits both), start-up excluded; prints
every time, the medians and their ratio. The baseline runs from a temporary git worktree with its own mmal on
``PYTHONPATH``. Hydra overrides after ``--`` apply to both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process with the tree's mmal first on the path: prints the seconds of one fit_jobs call.
CHILD = """
import copy, sys, time
import mmal, torch
from hydra import compose, initialize_config_dir
import mmal.schema  # noqa: F401  (registers the typed configs)
from mmal.experiment import prepare
from mmal.metrics.references import References
from mmal.training import Member
jobs_n, rows_n, overrides = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
torch.set_num_threads(1)
with initialize_config_dir(CONF, version_base=None):
    cfg = compose("config", overrides=["+experiment=synthetic_study", "trainer.device=cpu", "logger=none", *overrides])
exp = prepare(cfg)
torch.manual_seed(0)
initial = exp.build_model()
jobs = []
for j in range(jobs_n):
    rows = torch.randperm(len(exp.data.pool), generator=torch.Generator().manual_seed(j))[:rows_n]
    jobs.append(([Member(copy.deepcopy(initial), exp.data.pool, rows),
                  *References().members(initial, exp.data, rows).values()], j))
start = time.perf_counter()
exp.trainer.fit_jobs(jobs)
print(time.perf_counter() - start)
"""


def fit_seconds(tree: Path, jobs: int, rows: int, overrides: list[str]) -> float:
    """Seconds of one ``fit_jobs`` call with the mmal of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    code = f"CONF = {str(tree / 'conf')!r}\n" + CHILD
    result = subprocess.run([sys.executable, "-c", code, str(jobs), str(rows), *overrides], cwd=tempfile.gettempdir(),
                            env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{tree} failed:\n{result.stderr[-3000:]}")
    return float(result.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", required=True, help="the git ref to compare this tree with")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--rows", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(baseline), args.baseline_ref], cwd=ROOT,
                       check=True)
        try:
            times: dict[str, list[float]] = {"baseline": [], "this tree": []}
            for _ in range(args.rounds):
                for name, tree in (("baseline", baseline), ("this tree", ROOT)):
                    times[name].append(fit_seconds(tree, args.jobs, args.rows, args.overrides))
                    print(f"{name:10s} {times[name][-1]:6.2f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=True)
    ours, theirs = statistics.median(times["this tree"]), statistics.median(times["baseline"])
    print(f"{args.jobs} jobs ({3 * args.jobs} members, {args.rows} rows), median of {args.rounds}: "
          f"{args.baseline_ref} {theirs:.2f} s, this tree {ours:.2f} s, speed-up {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
