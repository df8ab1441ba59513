"""What the pinned CPU kernels (mmal/kernels.py) cost: a command run alternately with them (the default) and
with ``MMAL_CPU_KERNELS=native`` (each library's own choice for this CPU), in the same run, each start-up
included; prints both wall clocks, their ratio, and whether the two give the same numbers.

    python scripts/bench_kernels.py                               # the default run, 3 times each
    python scripts/bench_kernels.py --repeats 5 -- +experiment=synthetic_study query=badge
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(kernels: str, overrides: list[str], run_dir: Path) -> tuple[float, dict]:
    """Seconds of ``python -m mmal.train <overrides>`` with ``MMAL_CPU_KERNELS=kernels``, and its summary."""
    env = {**os.environ, "MMAL_CPU_KERNELS": kernels}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "mmal.train", *overrides, f"hydra.run.dir={run_dir}"], cwd=ROOT,
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{kernels} run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return seconds, json.loads((run_dir / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="overrides of the run (after --)")
    args = parser.parse_args()
    overrides = ["logger=none", *args.overrides]
    seconds: dict[str, list[float]] = {"pinned": [], "native": []}
    summaries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for kernels in ("pinned", "native"):  # alternate, so a change in the machine's load hits both
                took, summaries[kernels] = run(kernels, overrides, Path(tmp) / f"{kernels}{i}")
                seconds[kernels].append(took)
    for kernels, times in seconds.items():
        print(f"{kernels:7s} {summaries[kernels]['cpu_kernels']:40s} median {statistics.median(times):6.2f} s  "
              f"runs {' '.join(f'{t:.2f}' for t in times)}")
    ratio = statistics.median(seconds["pinned"]) / statistics.median(seconds["native"])
    numbers = ("final/acc", "aubc/acc", "final/gap/ensemble", "final/gap/neglect")
    same = all(summaries["pinned"].get(k) == summaries["native"].get(k) for k in numbers)
    for kernels, summary in summaries.items():
        print(f"{kernels:7s} " + "  ".join(f"{k} {summary.get(k):.4f}" for k in numbers))
    print(f"pinned / native: {ratio:.3f}x; the same numbers: {same}")


if __name__ == "__main__":
    main()
