"""DFAL (Ducoffe & Precup, 2018): label the samples closest to the decision boundary, measured by the
norm of the DeepFool perturbation (Moosavi-Dezfooli et al., 2016) that flips the fused prediction."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.data.multimodal import per_row
from mmal.errors import check_int, check_number
from mmal.query.base import QueryContext, ScoringStrategy


class DeepFool(ScoringStrategy):
    """Smallest DeepFool perturbation of the present modalities' inputs (missing ones stay untouched).

    Args:
        max_iter: DeepFool steps; a sample not flipped by then scores its accumulated perturbation.
        overshoot: step scale beyond the linearised boundary.
        batch_size: samples per batch (C backward passes per step and batch).
    """

    higher_is_better = False

    def __init__(self, max_iter: int = 10, overshoot: float = 0.02, batch_size: int = 1024):
        self.max_iter = check_int("query.max_iter", max_iter, 1)
        self.overshoot = check_number("query.overshoot", overshoot, 0)
        self.batch_size = check_int("query.batch_size", batch_size, 1)

    def score(self, ctx: QueryContext) -> Tensor:
        pool, model = ctx.pool, ctx.model
        model.eval()
        scores = []
        for rows in torch.arange(len(pool), device=pool.y.device).split(self.batch_size):
            x = {m: v[rows] for m, v in pool.x.items()}
            scores.append(self._perturbation_norm(model, x, pool.mask[rows]))
        return torch.cat(scores)

    def _perturbation_norm(self, model, x: dict[str, Tensor], mask: Tensor) -> Tensor:
        keep = [per_row(mask[:, i], v).to(v.dtype) for i, v in enumerate(x.values())]
        total = [torch.zeros_like(v) for v in x.values()]
        with torch.enable_grad():
            inputs = [v.detach().clone().requires_grad_(True) for v in x.values()]
            original = None
            for _ in range(self.max_iter):
                logits = model(dict(zip(x, inputs)), mask).logits  # (B, C)
                if original is None:
                    original = logits.argmax(1)
                active = logits.argmax(1) == original
                if not active.any():
                    break
                grads = [torch.autograd.grad(logits[:, c].sum(), inputs, retain_graph=True)
                         for c in range(logits.shape[1])]  # C x M x (B, D_m)
                flat = torch.stack([torch.cat([(g * k).flatten(1) for g, k in zip(gc, keep)], 1)
                                    for gc in grads], 1)  # (B, C, D), D = every modality flattened
                w = flat - flat.gather(1, original[:, None, None].expand(-1, 1, flat.shape[2]))  # (B, C, D)
                f = (logits - logits.gather(1, original[:, None])).detach()  # (B, C)
                dist = f.abs() / w.norm(dim=2).clamp_min(1e-12)
                dist.scatter_(1, original[:, None], float("inf"))
                target = dist.argmin(1)
                w_t = w[torch.arange(len(target)), target]  # (B, D)
                f_t = f[torch.arange(len(target)), target]
                step = ((f_t.abs() + 1e-4) / w_t.square().sum(1).clamp_min(1e-12))[:, None] * w_t
                step = step * active[:, None]
                offset = 0
                with torch.no_grad():
                    for i, v in enumerate(inputs):
                        size = v[0].numel()  # a modality of any shape, flattened in ``step``
                        part = step[:, offset : offset + size].view_as(v) * (1 + self.overshoot)
                        offset += size
                        v += part
                        total[i] += part
        return torch.cat([t.flatten(1) for t in total], 1).norm(dim=1).detach()
