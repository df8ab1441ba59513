"""MMPareto: the multimodal and unimodal losses' gradients on each encoder integrated without conflict (Wei and
Hu, ICML 2024)."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window
from mmal.errors import check_number
from mmal.hooks import Batch, fused_cross_entropy, head_cross_entropy
from mmal.models.classifier import ModelOutput, MultimodalClassifier


def min_norm_weight(v11: Tensor, v12: Tensor, v22: Tensor) -> Tensor:
    """The weight c of x1 in the smallest-norm point c x1 + (1 - c) x2 of the segment between two vectors, from
    their dot products (the authors' ``MinNormSolver._min_norm_element_from2``, elementwise): 0.999 when
    x1.x2 >= x1.x1, 0.001 when x1.x2 >= x2.x2, else (x2.x2 - x1.x2) / (x1.x1 + x2.x2 - 2 x1.x2)."""
    inside = (v22 - v12) / (v11 + v22 - 2 * v12)
    return torch.where(v12 >= v11, torch.full_like(v11, 0.999),
                       torch.where(v12 >= v22, torch.full_like(v11, 0.001), inside))


class MMPareto(BalanceMethod):
    """Train each encoder with the multimodal loss and its modality's unimodal loss, their gradients combined
    so that neither is given up for the other.

    Per training step (authors' code: ``GeWu-Lab/MMPareto_ICML2024``, ``code/MMPareto.py``, ``train_epoch``;
    BalanceBenchmark's ``MMPareto_trainer`` is the same rule for M modalities):

    - losses: L_mm, the cross-entropy of the fused prediction, and per modality L_m, the cross-entropy of m's
      unimodal head (mmal's auxiliary head) on m's embedding; the step trains on L_mm + sum_m L_m;
    - for each modality's encoder, g_mm and g_m: the gradients of L_mm and of L_m on its parameters;
    - weights: (1/2, 1/2) when cos(g_mm, g_m) > 0, else the min-norm point of the segment between them
      (k_mm = ``min_norm_weight``, k_m = 1 - k_mm: MGDA for two tasks);
    - every parameter tensor of the encoder gets new = 2 k_mm g_mm + 2 k_m g_m, rescaled to the norm of its
      gradient of the summed loss where that is larger, times gamma: grad <- gamma * max(1, |grad| / |new|) * new.
      The heads and the fusion keep the gradient of the summed loss.

    ``balance=mmpareto`` turns on the auxiliary heads (``model.aux_heads=true``) and sets
    ``trainer.aux_weight=0``: the unimodal losses are the method's own, once each, as the authors sum them.

    Departures (docs/balance.md):

    - L_m is the mean over the rows that have m (a missing modality has no embedding to classify); a batch
      without m gives L_m = 0, g_m = 0, cos = 0, hence the authors' min-norm branch (k_mm = 0.001);
    - where new is zero the rescale is 1 (the authors divide by its norm);
    - the BalanceBenchmark version assigns the min-norm weights to a loop variable, leaving them at zero; this
      follows the authors' repository.

    Args:
        gamma: the final scale of the encoders' gradients (the authors' ``gamma=1.5``).
        start, end: the window, fractions of the fit's steps (the authors: every step).

    ``state()``: per modality, the mean cosine of g_mm and g_m (``mmpareto_cos/<m>``) and the mean weight of
    the unimodal gradient (``mmpareto_weight/<m>``: 0.5 without conflict).

    Stacked (``BalanceMethod``), each member as alone: dot products and norms are per member, over its slice of
    each stacked weight (one row per member: bitwise its own sums); a step's values reach the host in one
    transfer.
    """

    name = "mmpareto"

    def __init__(self, gamma: float = 1.5, start: float = 0.0, end: float = 1.0):
        self.gamma = check_number("balance.gamma", gamma, 0, strict=True)
        self.window = check_window(start, end)

    def key(self) -> Hashable:
        return type(self), self.gamma, self.window

    def check(self, model: MultimodalClassifier) -> None:
        super().check(model)
        if model.aux_heads is None:
            raise self.refuse(model, "needs the unimodal heads: model.aux_heads=true (balance=mmpareto sets it)")

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["mmpareto_cos", "mmpareto_weight"])
        self._params = [[p for p in encoder.parameters() if p.requires_grad] for encoder in model.encoders]
        self._grads: tuple[list[Tensor], list[Tensor]] | None = None

    def _member_sum(self, values: Tensor) -> Tensor:
        """(K,) per-member sums of a stacked tensor (K, ...), or (1,) for a model alone: one row per member."""
        return values.reshape(len(self.generators), -1).sum(-1)

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        self._grads = None
        present = batch.mask.float()  # ([K,] B, M)
        per = head_cross_entropy(out, batch)
        unimodal = ((per * present).sum(-2) / present.sum(-2).clamp_min(1)).sum()  # sum over members and modalities
        if self.in_window(batch.step):
            fused = fused_cross_entropy(out, batch.y).sum()
            params = [p for group in self._params for p in group]
            self._grads = (list(torch.autograd.grad(fused, params, retain_graph=True, allow_unused=True)),
                           list(torch.autograd.grad(unimodal, params, retain_graph=True, allow_unused=True)))
        return unimodal

    def after_backward(self, model: nn.Module, out: ModelOutput, batch: Batch) -> None:
        if self._grads is None:
            return
        fused_grads, unimodal_grads = ([torch.zeros_like(p) if g is None else g for p, g in
                                        zip((p for group in self._params for p in group), grads)]
                                       for grads in self._grads)
        first, values, weights = 0, [], []
        for group in self._params:
            g_mm, g_u = fused_grads[first:first + len(group)], unimodal_grads[first:first + len(group)]
            first += len(group)
            v11 = sum(self._member_sum(a * a) for a in g_mm)
            v12 = sum(self._member_sum(a * b) for a, b in zip(g_mm, g_u))
            v22 = sum(self._member_sum(b * b) for b in g_u)
            cos = v12 / (v11.sqrt() * v22.sqrt()).clamp_min(1e-8)
            k_mm = torch.where(cos > 0, torch.full_like(cos, 0.5), min_norm_weight(v11, v12, v22))
            for p, a, b in zip(group, g_mm, g_u):
                view = (-1,) + (1,) * (p.dim() - 1) if self.members else (1,) * p.dim()
                new = 2 * k_mm.view(view) * a + 2 * (1 - k_mm).view(view) * b
                ratio = (self._member_sum(p.grad * p.grad).sqrt() / self._member_sum(new * new).sqrt())
                scale = torch.where(ratio > 1, ratio, torch.ones_like(ratio)).nan_to_num(1.0, 1.0, 1.0)
                p.grad = self.gamma * scale.view(view) * new
            values.append(cos)
            weights.append(1 - k_mm)
        self.track_tensors({"mmpareto_cos": torch.stack(values, -1), "mmpareto_weight": torch.stack(weights, -1)})
