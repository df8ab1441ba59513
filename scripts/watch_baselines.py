"""Linear baselines of ``dataset=watch`` (docs/datasets.md, "watch"): scikit-learn's logistic regression on
the window features of ``acc``, of ``gyro`` and of both concatenated, trained on the whole pool and on 220
random pool windows (the default AL budget, 20 + 10 x 20), scored on the test subjects; subject splits of
seeds 0, 1, 2, the default windows (100 samples every 50). Prints a markdown table (mean +- std over seeds).

    python scripts/watch_baselines.py
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from mmal.data import Pitfall, make_watch

SEEDS = (0, 1, 2)
BUDGET = 220
INPUTS = {"acc": ("acc",), "gyro": ("gyro",), "acc + gyro": ("acc", "gyro")}


def accuracies(seed: int) -> dict[tuple[str, int | None], float]:
    """(input, labels) -> test accuracy of a logistic regression on that input's standardised features of the
    pool (all of it, labels None, or ``labels`` random windows) of the subject split of ``seed``."""
    data = make_watch(Pitfall(), seed=seed)
    subset = np.random.default_rng(seed).choice(len(data.pool), BUDGET, replace=False)
    out = {}
    for name, modalities in INPUTS.items():
        x = {s: np.concatenate([getattr(data, s).x[m].numpy() for m in modalities], 1) for s in ("pool", "test")}
        y = {s: getattr(data, s).y.numpy() for s in ("pool", "test")}
        for labels, rows in ((None, slice(None)), (BUDGET, subset)):
            model = LogisticRegression(max_iter=2000).fit(x["pool"][rows], y["pool"][rows])
            out[name, labels] = float(model.score(x["test"], y["test"]))
    return out


def main() -> None:
    runs = {seed: accuracies(seed) for seed in SEEDS}
    print(f"| input | whole pool | {BUDGET} random pool windows | per seed {SEEDS} (whole pool) |")
    print("|---|---|---|---|")
    for name in INPUTS:
        cells = []
        for labels in (None, BUDGET):
            acc = [runs[seed][name, labels] for seed in SEEDS]
            cells.append(f"{np.mean(acc):.3f} ± {np.std(acc):.3f}")
        cells.append(" / ".join(f"{runs[seed][name, None]:.3f}" for seed in SEEDS))
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
