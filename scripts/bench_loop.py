"""The cost of one AL run against plain PyTorch, in one run of this script.

    python scripts/bench_loop.py [hydra overrides ...]

1. Training throughput. The training work of the default run (11 cycles on 20, 40, ..., 220 labeled rows,
   the fused model and one unimodal reference per modality each cycle, 100 epochs of batches of 64): mmal's
   ``Trainer.fit_together`` against a plain PyTorch loop (forward, cross-entropy, backward, AdamW step) that
   trains the same models one after another, on 1 thread and on 2. Model-steps per second and the ratio.
2. Start-up: ``python -c "import mmal.train"``, and a whole default run (``python -m mmal.train``) with its
   phases from ``summary.json`` (train includes the references; reference is their predictions and probes),
   against the plain 1-thread loop training the fused model alone (the yardstick of issue 16).
3. The floor: the same training's batched products and dropout draws alone (the shapes and batches of the
   stacked model, timed op by op on this machine), what no implementation that keeps the arithmetic, the
   float32 precision and each member's own dropout stream can go below; and mmal with a fused AdamW
   (``+trainer.optimizer.fused=true trainer.optimizer.foreach=null``: one kernel per step, other rounding).
4. On a GPU, the training comparison again with ``trainer.device=cuda``.

Overrides apply to every part (e.g. ``model.aux_heads=true``).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import mmal.schema  # noqa: F401  (registers the typed configs)
from mmal.experiment import prepare
from mmal.metrics.references import References
from mmal.models.dropout import MaskKeys
from mmal.training import Member

CONF = Path(__file__).resolve().parents[1] / "conf"
PHASES = ("time/train", "time/eval", "time/diagnose", "time/reference", "time/select")


def plain_loop(model: torch.nn.Module, data, rows: torch.Tensor, epochs: int, batch_size: int, seed: int) -> int:
    """The textbook PyTorch loop; returns its number of steps."""
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        for batch in rows[torch.randperm(len(rows), generator=order).to(rows.device)].split(batch_size):
            out = model({m: v[batch] for m, v in data.x.items()}, data.mask[batch])
            loss = F.cross_entropy(out.logits, data.y[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return steps


def floor(model: torch.nn.Module, sizes: list[int], epochs: int, batch_size: int, members: int) -> dict[str, float]:
    """Seconds of the batched products (forward, input and weight gradients) and of the dropout draws of
    ``members`` stacked copies of ``model`` trained on ``sizes`` rows per cycle, timed per batch size; and the
    products' GFLOP."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    takes_data = {next(n for n, _ in linears if n.startswith(f"encoders.{i}.")) for i in range(len(model.encoders))}
    drops = _dropout_widths(model)
    batches: dict[int, int] = {}
    for n in sizes:
        for b in [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []):
            batches[b] = batches.get(b, 0) + epochs

    def products(b: int) -> Callable[[], None]:
        """The step's products at batch size b, on tensors made beforehand."""
        ops = []
        for name, layer in linears:
            x = torch.randn(members, b, layer.in_features)
            w = torch.randn(members, layer.out_features, layer.in_features)
            g = torch.randn(members, b, layer.out_features)
            bias = torch.zeros(members, 1, layer.out_features)
            ops += [partial(torch.baddbmm, bias, x, w.transpose(1, 2)), partial(torch.bmm, g.transpose(1, 2), x)]
            if name not in takes_data:
                ops.append(partial(torch.bmm, g, w))
        return lambda: [op() for op in ops]

    def draws(b: int) -> Callable[[], None]:
        """The step's dropout masks at batch size b, every member's in one batched hash per layer, as
        ``CounterDropout`` computes them."""
        keys = MaskKeys(list(range(members)), "dropout")
        xs = [(p, torch.randn(members, b, width)) for p, width in drops]
        return lambda: [x * keys.keep(x.shape[1:], 1 - p, c).to(x.dtype).div_(1 - p) for c, (p, x) in enumerate(xs)]

    seconds = {"products": 0.0, "draws": 0.0}
    for b, count in batches.items():
        for part, make in (("products", products), ("draws", draws)):
            fn = make(b)
            fn()  # warm-up
            start = time.perf_counter()
            for _ in range(20):
                fn()
            seconds[part] += (time.perf_counter() - start) / 20 * count
    flops = sum(count * members * 2 * b * layer.in_features * layer.out_features * (2 if name in takes_data else 3)
                for b, count in batches.items() for name, layer in linears)
    return seconds | {"gflop": flops / 1e9}


def _dropout_widths(model: torch.nn.Module) -> list[tuple[float, int]]:
    """(p, width) of every active dropout layer: its width is that of the linear layer before it."""
    widths, last = [], None
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            last = module.out_features
        elif isinstance(module, torch.nn.Dropout) and module.p > 0:
            widths.append((module.p, last))
    return widths


def training(overrides: list[str], device: str, threads: int) -> dict[str, float]:
    """Seconds of mmal's training work of a default run and of the plain loop doing the same model-steps."""
    torch.set_num_threads(threads)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", [*overrides, f"trainer.device={device}", "logger=none"])
    exp = prepare(cfg)
    data, trainer, protocol = exp.data.to(exp.trainer.device), exp.trainer, exp.protocol
    torch.manual_seed(0)
    initial = exp.build_model().to(trainer.device)
    sizes = [protocol.initial_size + c * protocol.query_size for c in range(protocol.cycles + 1)]
    jobs = []  # (model, data, rows) per cycle: the fused model and its references
    for n in sizes:
        rows = torch.arange(n, device=trainer.device)
        references = References().members(initial, data, rows)
        jobs.append([Member(copy.deepcopy(initial), data.pool, rows), *references.values()])
    plain_loop(copy.deepcopy(initial), data.pool, jobs[0][0].rows, 1, trainer.batch_size, 0)  # warm-up
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    for cycle in copy.deepcopy(jobs):
        plain_loop(cycle[0].model, cycle[0].data, cycle[0].rows, trainer.epochs, trainer.batch_size, 0)
    sync()
    plain_fused = time.perf_counter() - start  # the yardstick: the fused model's steps alone
    start = time.perf_counter()
    model_steps = sum(plain_loop(m.model, m.data, m.rows, trainer.epochs, trainer.batch_size, 0)
                      for cycle in copy.deepcopy(jobs) for m in cycle)
    sync()
    plain = time.perf_counter() - start
    seconds = {}
    for name, optimizer in (("mmal", trainer.optimizer), ("fused", partial(torch.optim.AdamW, fused=True))):
        trainer.optimizer = optimizer
        start = time.perf_counter()
        for cycle in copy.deepcopy(jobs):
            trainer.fit_together(cycle, 0)
        sync()
        seconds[name] = time.perf_counter() - start
    floor_parts = floor(initial, sizes, trainer.epochs, trainer.batch_size, len(jobs[0])) if device == "cpu" else {}
    return seconds | floor_parts | {"plain": plain, "model_steps": model_steps, "plain_fused": plain_fused}


def whole_run(overrides: list[str]) -> tuple[float, float, dict[str, float]]:
    """Seconds to import mmal.train, seconds of a whole default run, and the run's phase totals."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import mmal.train"], check=True)
    imports = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmal.train", *overrides, f"hydra.run.dir={run_dir}"], check=True,
                       capture_output=True)
        wall = time.perf_counter() - start
        summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return imports, wall, {p: summary[f"total_{p}"] for p in PHASES}


def main(overrides: list[str]) -> None:
    print(f"torch {torch.__version__}; overrides {overrides or 'none'}", flush=True)
    settings = [("cpu", 1), ("cpu", 2)] + ([("cuda", 1)] if torch.cuda.is_available() else [])
    yardstick = None
    print("\n| device | threads | plain loop (s) | mmal (s) | mmal, fused AdamW (s) | model-steps | plain steps/s | "
          "mmal steps/s | mmal / plain | fused / plain |\n|---|---|---|---|---|---|---|---|---|---|")
    floors = []
    for device, threads in settings:
        t = training(overrides, device, threads)
        print(f"| {device} | {threads} | {t['plain']:.2f} | {t['mmal']:.2f} | {t['fused']:.2f} | "
              f"{t['model_steps']:,} | {t['model_steps'] / t['plain']:.0f} | {t['model_steps'] / t['mmal']:.0f} | "
              f"{t['plain'] / t['mmal']:.2f} | {t['plain'] / t['fused']:.2f} |", flush=True)
        yardstick = yardstick or t["plain_fused"]  # CPU, 1 thread
        if "products" in t:
            floors.append((threads, t))
    for threads, t in floors:
        low = t["products"] + t["draws"]
        print(f"\nfloor, cpu, {threads} thread(s): batched products {t['products']:.2f} s ({t['gflop']:.0f} GFLOP, "
              f"{t['gflop'] / t['products']:.0f} GFLOP/s) + dropout draws {t['draws']:.2f} s = {low:.2f} s; "
              f"mmal {t['mmal'] / low:.2f}x the floor, fused AdamW {t['fused'] / low:.2f}x; at the floor, "
              f"{t['model_steps'] / low:.0f} steps/s = {t['plain'] / low:.2f}x the plain loop")
    for logger in ("none", "wandb"):
        imports, wall, phases = whole_run([*overrides, f"logger={logger}"])
        rest = wall - sum(phases.values())
        print(f"\nlogger={logger}: import mmal.train {imports:.2f} s; whole default run {wall:.2f} s = "
              + ", ".join(f"{p.split('/')[1]} {v:.2f}" for p, v in phases.items()) + f", the rest {rest:.2f}; "
              f"{wall / yardstick:.2f}x the plain 1-thread loop of the fused model alone ({yardstick:.2f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
