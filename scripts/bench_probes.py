"""Would the linear probes of the diagnostics be cheaper as one batched torch solve (issue 35)? A measurement,
not mmal's code: the probes stay scikit-learn's (``mmal.metrics.modality.linear_probe_accuracy``).

    python scripts/bench_probes.py                     # 12 problems of 220 rows x 64 dims, 10 classes
    python scripts/bench_probes.py --problems 36 --rows 220 --dims 64 --classes 10

Random problems shaped like a study cycle's probes (ReLU-like embeddings, classes shifted apart). Both sides
fit the same objective, standardised multinomial logistic regression with C = 1 (scikit-learn's
``StandardScaler`` + ``LogisticRegression``, lbfgs, ``max_iter=500``, its default tolerance): scikit-learn one
problem at a time, torch all of them as one sum of separable objectives under ``torch.optim.LBFGS`` (float64,
strong Wolfe line search), padded to the largest problem. Prints both wall clocks, their ratio, and how far the
torch coefficients are from scikit-learn's converged ones (``tol=1e-12``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def batched_fit(problems: list[tuple[np.ndarray, np.ndarray]], classes: int) -> torch.Tensor:
    """(B, D, K) standardised coefficients of every problem (all classes present, K > 2), one L-BFGS run."""
    x = torch.tensor(np.stack([p[0] for p in problems]))  # (B, N, D)
    y = torch.tensor(np.stack([p[1] for p in problems]))  # (B, N)
    z = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True).clamp_min(1e-12)
    weights = torch.zeros(len(problems), x.shape[2], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(len(problems), 1, classes, dtype=torch.float64, requires_grad=True)
    solver = torch.optim.LBFGS([weights, bias], lr=1, max_iter=1000, tolerance_grad=1e-7, tolerance_change=1e-14,
                               history_size=20, line_search_fn="strong_wolfe")

    def objective():
        solver.zero_grad()
        logits = z @ weights + bias
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") + 0.5 * (weights ** 2).sum()
        loss.backward()
        return loss

    solver.step(objective)
    return weights.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=12)
    parser.add_argument("--rows", type=int, default=220)
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    problems = []
    for _ in range(args.problems):
        y = np.arange(args.rows) % args.classes
        x = rng.normal(size=(args.rows, args.dims))
        x[np.arange(args.rows), y % args.dims] += 1.0
        problems.append((np.maximum(x, 0) if args.dims > 10 else x, y))
    batched_fit(problems[:2], args.classes)  # warm-up: the first call pays for torch's dispatch set-up
    ours, theirs = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        coef = batched_fit(problems, args.classes)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        for x, y in problems:
            make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500)).fit(x, y)
        theirs.append(time.perf_counter() - start)
    errors = []
    for b, (x, y) in enumerate(problems[:3]):
        tight = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=100_000, tol=1e-12)).fit(x, y)
        reference = tight[-1].coef_.T  # (D, K)
        errors.append(np.abs(coef[b].numpy() - reference).max() / np.abs(reference).max())
    t_ours, t_theirs = float(np.median(ours)), float(np.median(theirs))
    print(f"{args.problems} problems of {args.rows} x {args.dims}, {args.classes} classes: batched torch L-BFGS "
          f"{t_ours * 1e3:.0f} ms, scikit-learn one by one {t_theirs * 1e3:.0f} ms, torch / scikit-learn "
          f"{t_ours / t_theirs:.2f}x; torch's coefficients within {max(errors):.1e} (relative) of scikit-learn's "
          "at tol=1e-12")


if __name__ == "__main__":
    main()
