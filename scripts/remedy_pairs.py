"""Every (training, strategy) pair of the remedy study against a reference pair and against BADGE with the same
training, per setting, paired over seeds: the tables of docs/results/remedy_study/README.md.

    python scripts/remedy_pairs.py ROOT/remedy [--reference modality_dropout+badge] [--against badge]

ROOT/remedy holds the study's sweeps (scripts/run_studies.sh ROOT EPOCHS N remedy remedy_methods). A job's
setting is what its overrides set besides the training, the strategy and the seed; its training is its
``balance`` (``none`` when unset), with ``+heads`` where it turned the auxiliary heads on
(``model.aux_heads=true``), so that MMPareto and plain training with the heads join the other rows of their
setting. Cells: mean AUBC over seeds; differences are a − b over the seeds both ran, ± the 95 % t-interval, with
the paired t-test's p-value (mmal.aggregate.statistics.compare).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmal.aggregate.jobs import load_jobs, override_key, override_value
from mmal.aggregate.statistics import compare
from mmal.metrics.names import ACC, GAP_ENSEMBLE, aubc_key

KEYS = {aubc_key(ACC): True, aubc_key(GAP_ENSEMBLE): False}  # key -> higher is better
NOT_SETTING = ("balance", "query", "seed", "model.aux_heads", "trainer.modality_dropout")


def pairs_by_setting(root: Path) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """setting -> "training+strategy" -> key -> seed -> value, over every finished job under ``root``."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    for job in load_jobs(root):
        if job.summary is None:
            continue
        setting = ",".join(sorted(o for o in job.overrides if override_key(o) not in NOT_SETTING
                                  and not override_key(o).startswith(("hydra", "trainer.num_threads",
                                                                      "trainer.device", "logger"))))
        training = override_value(job.overrides, "balance", "none")
        if override_value(job.overrides, "model.aux_heads", "false").lower() == "true":  # YAML reads it back as True
            training += "+heads"
        for key in KEYS:
            if key in job.summary:
                out[setting][f"{training}+{job.strategy}"][key][job.seed] = job.summary[key]
    return out


def _cell(a: dict[str, float], b: dict[str, float], higher: bool) -> str:
    c = compare(a, b, higher, 0.05)
    if c.seeds < 2:
        return ""
    mark = "**" if c.verdict > 0 else "*" if c.verdict < 0 else ""
    return f"{mark}{c.mean:+.4f} ± {c.half:.4f}{mark} (p = {c.p:.3f})"


def table(pairs: dict[str, dict[str, dict[str, float]]], reference: str, against: str) -> list[str]:
    """One Markdown table of a setting's pairs, sorted by AUBC(acc)."""
    acc, gap = KEYS
    head = (f"| training + strategy | seeds | AUBC(acc) | AUBC(gap/ensemble) | acc − {reference} | "
            f"gap − {reference} | acc − same training + {against} |")
    md = [head, "|" + "---|" * 7]
    order = sorted(pairs, key=lambda p: -float(np.mean(list(pairs[p][acc].values()))))
    for pair in order:
        values = pairs[pair]
        training = pair.rsplit("+", 1)[0]
        same = pairs.get(f"{training}+{against}")
        md.append("| " + " | ".join([
            pair, str(len(values[acc])), f"{np.mean(list(values[acc].values())):.4f}",
            f"{np.mean(list(values[gap].values())):+.4f}" if values[gap] else "",
            _cell(values[acc], pairs[reference][acc], True) if reference in pairs and pair != reference else "",
            _cell(values[gap], pairs[reference][gap], False) if reference in pairs and pair != reference else "",
            _cell(values[acc], same[acc], True) if same is not None and pair != f"{training}+{against}" else "",
        ]) + " |")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--reference", default="modality_dropout+badge", help="the pair every row is compared with")
    parser.add_argument("--against", default="badge", help="the strategy each row is compared with, same training")
    args = parser.parse_args(argv)
    for setting, pairs in sorted(pairs_by_setting(args.root).items()):
        print(f"\n**{setting}**\n")
        print("\n".join(table(pairs, args.reference, args.against)))


if __name__ == "__main__":
    main()
