"""How much learning each synthetic pitfall config leaves to do: per modality, the Bayes accuracy next to a
logistic regression on the raw inputs and a linear probe on the *untrained* MLP encoder, both fit on the
first ``--labels`` pool rows (the studies' final budget by default) and scored on test (rows that have the
modality). A small distance to Bayes means a linear model on the input already gets most of it. The last
column fits the same two to the modality's latent digit (``latent_class``: the label except under synergy
and for a uniqueness sample's uninformative modalities, whose rows are left out).

    python scripts/generator_difficulty.py [--labels 220] [--seeds 0 1 2]

Prints a Markdown table (mean over seeds) for docs/datasets.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import mmal.schema  # noqa: F401  (registers the typed configs)
from mmal.experiment import prepare
from mmal.loop import initial_model
from mmal.metrics.modality import linear_probe_accuracy

CONF = Path(__file__).resolve().parents[1] / "conf"
PITFALLS = ["none", "redundancy", "uniqueness", "synergy", "modality_difficulty", "missing_modality"]


def measure(pitfall: str, seed: int, labels: int) -> dict[str, tuple[float, ...]]:
    """modality -> (Bayes, logistic regression on raw inputs, probe on the untrained encoder, the same two
    fit to the modality's latent digit instead of the label)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"pitfall={pitfall}", f"seed={seed}", "logger=none", "trainer.device=cpu"])
    exp = prepare(cfg)
    data = exp.data
    model = initial_model(exp.build_model, seed)
    pool, test = data.pool, data.test
    train = exp.trainer.predict(model, pool, torch.arange(labels)).embeddings
    tested = exp.trainer.predict(model, test).embeddings
    out = {}
    for i, m in enumerate(data.modalities):
        has, on_test = pool.mask[:labels, i], test.mask[:, i]
        y, y_test = pool.y[:labels][has], test.y[on_test]
        raw = linear_probe_accuracy(pool.x[m][:labels][has], y, test.x[m][on_test], y_test)
        untrained = linear_probe_accuracy(train[i][has], y, tested[i][on_test], y_test)
        digit, digit_test = pool.latent_class[:labels, i], test.latent_class[:, i]
        has, on_test = has & (digit >= 0), on_test & (digit_test >= 0)
        raw_digit = linear_probe_accuracy(pool.x[m][:labels][has], digit[has], test.x[m][on_test], digit_test[on_test])
        untrained_digit = linear_probe_accuracy(train[i][has], digit[has], tested[i][on_test], digit_test[on_test])
        out[m] = (data.ground_truth[f"bayes_acc/{m}"], raw, untrained, raw_digit, untrained_digit)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=220, help="labeled pool rows the probes are fit on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"| pitfall | modality | Bayes | logistic regression on raw inputs ({args.labels} labels) | "
          f"probe on the untrained encoder ({args.labels} labels) | latent digit: raw / untrained encoder |")
    print("|---|---|---|---|---|---|")
    for pitfall in PITFALLS:
        runs = [measure(pitfall, seed, args.labels) for seed in args.seeds]
        for m in runs[0]:
            bayes, raw, untrained, raw_digit, untrained_digit = np.mean([r[m] for r in runs], axis=0)
            print(f"| `{pitfall}` | {m} | {bayes:.3f} | {raw:.3f} | {untrained:.3f} | {raw_digit:.3f} / "
                  f"{untrained_digit:.3f} |")


if __name__ == "__main__":
    main()
