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


def short(setting: str) -> str:
    """A setting's name in a column head: the dataset (synthetic unless set), the pitfall, the classes if set."""
    parts = dict(part.split("=", 1) for part in setting.split(",") if "=" in part)
    name = f"{parts.get('dataset', 'synthetic')}, {parts.get('pitfall', 'none')}"
    return name + (f", {parts['dataset.num_classes']} classes" if "dataset.num_classes" in parts else "")


def against_table(by_setting: dict[str, dict[str, dict[str, dict[str, float]]]], against: str) -> list[str]:
    """Rows: every training + strategy that is not ``against``; columns: settings; cell: its AUBC(acc) minus that
    of the same training with ``against``, paired over seeds (**bold** / *italic*: significantly better / worse)."""
    acc = next(iter(KEYS))
    settings = sorted(by_setting, key=short)
    rows = sorted({p for pairs in by_setting.values() for p in pairs if not p.endswith(f"+{against}")})
    md = ["| training + strategy | " + " | ".join(short(s) for s in settings) + " |",
          "|" + "---|" * (len(settings) + 1)]
    for pair in rows:
        cells = []
        for setting in settings:
            pairs = by_setting[setting]
            same = pairs.get(f"{pair.rsplit('+', 1)[0]}+{against}")
            cells.append(_cell(pairs[pair][acc], same[acc], True).split(" (p")[0] if pair in pairs and same else "")
        md.append(f"| {pair} | " + " | ".join(cells) + " |")
    return md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--reference", default="modality_dropout+badge", help="the pair every row is compared with")
    parser.add_argument("--against", default="badge", help="the strategy each row is compared with, same training")
    args = parser.parse_args(argv)
    by_setting = pairs_by_setting(args.root)
    print(f"**AUBC(acc) against the same training with {args.against}**, mean difference ± 95 % t-interval over "
          "seeds (**bold**: significantly better, *italic*: significantly worse, p < 0.05)\n")
    print("\n".join(against_table(by_setting, args.against)))
    for setting, pairs in sorted(by_setting.items(), key=lambda item: short(item[0])):
        print(f"\n**{short(setting)}** (`{setting}`)\n")
        print("\n".join(table(pairs, args.reference, args.against)))


if __name__ == "__main__":
    main()
