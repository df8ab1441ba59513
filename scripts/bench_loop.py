"""Time the phases of one AL run on every device this machine has, with CPU as the baseline.

    python scripts/bench_loop.py [hydra overrides ...]

Prints, per device/precision, the total seconds of train, eval (all 2^M masked test inferences),
diagnose (probes, Shapley), reference (the unimodal references of the neglect measure) and select, the
ratio of each to the CPU run, and what the references and the other diagnostics cost as a share of
training. Overrides apply to every run (e.g. dataset.num_samples=20000 al.query_size=200).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mmal.train import run

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ("time/train", "time/eval", "time/diagnose", "time/reference", "time/select")


def main(overrides: list[str]) -> None:
    settings = [("cpu", "32")]
    if torch.cuda.is_available():
        settings += [("cuda", "32"), ("cuda", "bf16")]
    totals = {}
    for device, precision in settings:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", [*overrides, f"trainer.device={device}", f"trainer.precision={precision}",
                                     "logger=none"])
        with tempfile.TemporaryDirectory() as tmp:
            summary = run(cfg, Path(tmp))
        totals[(device, precision)] = {p: summary[f"total_{p}"] for p in PHASES} | {"acc": summary["final/acc"]}

    base = totals[("cpu", "32")]
    print(f"\n{'device':<12}" + "".join(f"{p:>22}" for p in PHASES) + f"{'ref/train':>11}{'diag/train':>12}"
          f"{'final acc':>11}")
    for (device, precision), t in totals.items():
        cells = "".join(f"{t[p]:>10.3f}s ({base[p] / max(t[p], 1e-9):5.2f}x)" for p in PHASES)
        share = (t["time/eval"] + t["time/diagnose"]) / t["time/train"]
        references = t["time/reference"] / t["time/train"]
        print(f"{device + '/' + precision:<12}{cells}{references:>11.3f}{share:>12.3f}{t['acc']:>11.4f}")
    print("(ratios: CPU time / this time, higher is faster)")


if __name__ == "__main__":
    main(sys.argv[1:])
