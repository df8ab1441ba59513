"""The training cost of each balancing method against plain training, in one run of this script.

    python scripts/bench_balance.py [hydra overrides ...]

The training work of a default run's cycles (20, 40, ..., 220 labeled rows; the fused model with the
method, and its unimodal references, which every method leaves plain), per method, on one thread; the ratio
against `balance=none` with the same fusion. MLA needs `fusion=shared`: it is compared with `none` on that
fusion. MMPareto turns on the auxiliary heads (its ratio includes them); UMT trains the references first. The
row `alone` is plain training with the fused model trained apart from its references, as every method with a
rule of its own trains it: the part of a method's cost that is lost stacking.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import mmal.schema  # noqa: F401  (registers the typed configs)
from mmal.experiment import prepare
from mmal.hooks import TrainingHook
from mmal.metrics.references import References
from mmal.training import Member

CONF = Path(__file__).resolve().parents[1] / "conf"
# "alone": plain training, but the fused model apart from its references, as with any method of its own (a
# no-op hook): what a method pays for losing the stacking, before its own work.
METHODS = [("none", "intermediate"), ("alone", "intermediate"), ("ogm_ge", "intermediate"), ("pmr", "intermediate"),
           ("modality_dropout", "intermediate"), ("opm", "intermediate"), ("umt", "intermediate"),
           ("mmpareto", "intermediate"), ("none", "shared"), ("mla", "shared")]


def training_seconds(overrides: list[str], balance: str, fusion: str) -> float:
    """Seconds to train the fused model (with ``balance``) and its references on every cycle's rows."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", [*overrides, f"balance={'none' if balance == 'alone' else balance}",
                                 f"fusion={fusion}", "logger=none", "trainer.device=cpu"])
    exp = prepare(cfg)
    torch.manual_seed(0)
    initial = exp.build_model()
    protocol = exp.protocol
    hooks = (exp.balance,) if exp.balance else (TrainingHook(),) if balance == "alone" else ()
    start = time.perf_counter()
    for cycle in range(protocol.cycles + 1):
        rows = torch.arange(protocol.initial_size + cycle * protocol.query_size)
        fused = Member(copy.deepcopy(initial), exp.data.pool, rows, hooks=hooks)
        references = References().members(initial, exp.data, rows)
        if exp.balance and exp.balance.teaches_from_references:  # UMT: the references first, as the loop does
            exp.trainer.fit_together(list(references.values()), cycle)
            exp.balance.teach({m: member.model for m, member in references.items()})
            exp.trainer.fit_together([fused], cycle)
        else:
            exp.trainer.fit_together([fused, *references.values()], cycle)
    return time.perf_counter() - start


def main(overrides: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; overrides {overrides or 'none'}; one thread\n")
    print("| balance | fusion | training with references (s) | / none, same fusion |\n|---|---|---|---|")
    training_seconds(overrides, "none", "intermediate")  # warm-up: imports, the optimizer's first step
    baseline = {}
    for balance, fusion in METHODS:
        seconds = training_seconds(overrides, balance, fusion)
        baseline.setdefault(fusion, seconds)
        print(f"| {balance} | {fusion} | {seconds:.2f} | {seconds / baseline[fusion]:.2f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
