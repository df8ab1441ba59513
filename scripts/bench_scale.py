"""One AL run at the scale of UPMC Food-101 features, per strategy: phase times and peak memory.

    python scripts/bench_scale.py [--pool 90000] [--epochs 5] [--strategies random,margin,badge,bmmal]

The pool is Food-101-sized precomputed features (90,000 rows, 101 classes, a 768-d text and a 2,048-d
image modality, float32: 1.0 GB), drawn here as class prototypes plus Gaussian noise (the image modality
noisier), with a 10,000-row test set. Each strategy runs in its own process (so each peak memory is its
own): 1,000 initial labels and 10 rounds of 1,000 with the unimodal references and every diagnostic each
cycle, `trainer.epochs` as given (the default 100 would take hours on 2 cores; the figures scale with it).

Then, on a model's pool outputs (fresh weights: the cost does not depend on them), mmal's factored
k-means++ (what BADGE and BMMAL select with) against the reference loop of the authors' code: the gradient
embeddings materialised (N x C.D) and one distance pass over them per centre, in batches of 128 rows as in
BMMAL's ``init_centers_torch`` (MengShen0709/bmmal). The reference loop is timed
over its first picks and extrapolated to 1,000 (each pick costs one pass over the same matrix).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import mmal.schema  # noqa: F401  (registers the typed configs)
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.experiment import build_components, model_builder
from mmal.log import RunLog
from mmal.loop import run_active_learning
from mmal.query.badge import gradient_factor
from mmal.query.selection import kmeanspp_factored

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ("time/train", "time/eval", "time/diagnose", "time/reference", "time/select")


def food101_sized(pool: int, test: int, classes: int = 101, dims: tuple[int, int] = (768, 2048),
                  seed: int = 0) -> MultimodalDataset:
    """Class prototypes plus unit Gaussian noise in two modalities. Two prototypes lie 6 noise deviations
    apart in text and 4 in image (scale s: s * sqrt(2 d) apart): the image modality is the weaker."""
    g = torch.Generator().manual_seed(seed)
    separation = {"text": 6.0, "image": 4.0}
    prototypes = {m: torch.randn(classes, d, generator=g) * separation[m] / (2 * d) ** 0.5
                  for m, d in zip(("text", "image"), dims)}

    def split(n: int) -> MultimodalData:
        y = torch.randint(classes, (n,), generator=g)
        x = {m: torch.empty(n, p.shape[1]) for m, p in prototypes.items()}
        for rows in torch.arange(n).split(4096):  # in blocks: no temporary as large as the split
            for m, p in prototypes.items():
                x[m][rows] = p[y[rows]] + torch.randn(len(rows), p.shape[1], generator=g)
        return MultimodalData(x, torch.ones(n, 2, dtype=torch.bool), y, ("text", "image"))

    return MultimodalDataset(split(pool), split(2000), split(test), classes)


def one_run(strategy: str, pool: int, epochs: int, out: Path, device: str = "cpu", precision: str = "32") -> None:
    """A whole AL run of ``strategy`` in this process; writes its figures to ``out`` (JSON)."""
    torch.set_num_threads(1)
    data = food101_sized(pool, 10_000)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", [f"query={strategy}", "logger=none", "model.aux_heads=true", "al.initial_size=1000",
                                 "al.query_size=1000", "al.cycles=10", f"trainer.epochs={epochs}",
                                 f"trainer.device={device}", f"trainer.precision={precision}"])
    parts = build_components(cfg)
    build_model = model_builder(cfg, parts, len(data.pool), data.shapes, data.num_classes)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        summary = run_active_learning(data, build_model, parts.trainer, parts.strategy, RunLog(Path(run_dir)),
                                      parts.protocol, seed=0, references=parts.references)
        wall = time.perf_counter() - start
    figures = {"wall": wall, "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               "final_acc": summary["final/acc"], **{p: summary[f"total_{p}"] for p in PHASES}}
    if strategy == "bmmal":
        figures |= selection_against_reference(parts, data, build_model)
    out.write_text(json.dumps(figures))


def selection_against_reference(parts, data: MultimodalDataset, build_model, picks: int = 1000,
                                timed: int = 20) -> dict[str, float]:
    """Seconds of mmal's factored k-means++ for ``picks`` centres on the pool's gradient factors, and of the
    materialised reference loop (timed over ``timed`` picks, extrapolated)."""
    torch.manual_seed(0)
    pred = parts.trainer.predict(build_model(), data.pool)
    a, h = gradient_factor(pred.probs), pred.fused
    start = time.perf_counter()
    kmeanspp_factored(a, h, picks, torch.Generator().manual_seed(0))
    factored = time.perf_counter() - start
    start = time.perf_counter()
    embeddings = (a[:, :, None] * h[:, None, :]).flatten(1)  # (N, C.D), as the authors build them
    build = time.perf_counter() - start
    start = time.perf_counter()
    # BMMAL's init_centers_torch: a PairwiseDistance pass in batches of 128 rows to the newest centre, the
    # running minimum, and a draw with probabilities D^2 / sum D^2 (BADGE's rule).
    distance = torch.nn.PairwiseDistance(p=2)
    nearest = torch.full((len(embeddings),), float("inf"))
    centre = int(torch.linalg.norm(embeddings, dim=1).argmax())
    g = torch.Generator().manual_seed(0)
    for _ in range(timed):
        new = torch.cat([distance(rows, embeddings[centre:centre + 1]) for rows in embeddings.split(128)])
        nearest = torch.minimum(nearest, new)
        centre = int(torch.multinomial(nearest**2 / (nearest**2).sum(), 1, generator=g))
    per_pick = (time.perf_counter() - start) / timed
    return {"factored_s": factored, "reference_build_s": build, "reference_s": build + per_pick * picks,
            "embedding_gb": embeddings.numel() * 4 / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=90_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--strategies", default="random,margin,badge,bmmal")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (trainer.device)")
    parser.add_argument("--precision", default="32", help="32 | bf16 | 16 (trainer.precision)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child process: one strategy
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_run(args.one, args.pool, args.epochs, args.out, args.device, args.precision)
        return
    print(f"torch {torch.__version__}; pool {args.pool:,} x (768 + 2,048) float32, 101 classes, 1,000 + 10 x 1,000 "
          f"labels, {args.epochs} epochs per cycle, references every cycle, one thread, {args.device} "
          f"{args.precision}\n")
    print("| strategy | wall (s) | train (s) | eval (s) | diagnose (s) | reference (s) | select (s) | peak memory "
          "(GB) | final acc |\n|---|---|---|---|---|---|---|---|---|")
    results = {}
    for strategy in args.strategies.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            subprocess.run([sys.executable, __file__, "--one", strategy, "--out", f.name, "--pool", str(args.pool),
                            "--epochs", str(args.epochs), "--device", args.device, "--precision", args.precision],
                           check=True)
            r = results[strategy] = json.loads(Path(f.name).read_text())
        print(f"| {strategy} | {r['wall']:.1f} | " + " | ".join(f"{r[p]:.1f}" for p in PHASES)
              + f" | {r['peak_gb']:.2f} | {r['final_acc']:.3f} |", flush=True)
    if "bmmal" in results:
        r = results["bmmal"]
        print(f"\nk-means++ for 1,000 picks on the pool's gradient factors (N = {args.pool:,}, C = 101): mmal factored "
              f"{r['factored_s']:.1f} s; reference loop (materialised {r['embedding_gb']:.1f} GB, built in "
              f"{r['reference_build_s']:.1f} s, one distance pass per pick) {r['reference_s']:.0f} s "
              f"(extrapolated from 20 picks): {r['reference_s'] / r['factored_s']:.0f}x")


if __name__ == "__main__":
    main()
