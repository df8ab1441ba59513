"""MLA: multimodal learning by alternating unimodal adaptation (Zhang et al., CVPR 2024)."""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window
from mmal.hooks import Batch
from mmal.models.classifier import ModelOutput, MultimodalClassifier
from mmal.models.fusion import SharedHeadFusion


class MLA(BalanceMethod):
    """Train the modalities one after another through a shared head, so that none can lean on another, and
    keep the head's updates for one modality from undoing those for the others.

    BalanceBenchmark's ``MLA_trainer`` (with its ``GSPlugin``) and ``BaseClassifierMLAModel``, which is the
    authors' rule:

    - every batch becomes one training step per modality, in modality order: the batch's rows that have
      modality m, with only m present, so the loss is the cross-entropy of the shared head on m's
      embedding; each step has its own backward and optimizer step;
    - gradient modification of the shared head's weight W (C x D): a projector P (D x D, the identity at
      the start) is updated at every step but the first with r, the mean of the step's embeddings,
      k = P r, P <- P - k k^T / (a + r^T k), P <- P / ||P||_F, with a = 0.1 ** (1 + i / n) for the i-th of
      the epoch's n batches; then grad W <- grad W + grad W P^T;
    - the prediction weighs the modalities' logits by softmax(-entropy): that is the model's fusion,
      ``fusion=shared`` (``SharedHeadFusion``), which MLA needs.

    Departures (docs/balance.md):

    - the projector starts from the identity at every AL cycle's fit (BalanceBenchmark keeps one for the
      whole training, which in AL is one fit per cycle);
    - a modality absent from every row of a batch gets no step for that batch;
    - the window is a fraction of the fit's steps; the default is the whole fit, as in the paper
      (BalanceBenchmark's config alternates in epochs 0 to 80); outside it a batch is one plain step on the
      fused prediction.

    Args:
        start, end: the window, fractions of the fit's steps.
        projection: the gradient modification of the shared head (False: alternation alone, the paper's
            ablation).

    ``state()``: per modality, the mean cross-entropy of its steps (``mla_loss/<m>``).

    Stacked (``BalanceMethod``) only where every training row has every modality and there is no modality
    dropout (``Trainer.alone_reason``): every member's step for modality m then takes all of its batch's rows,
    so the members take the same passes; each member has its own projector, (K, D, D).
    """

    name = "mla"

    def __init__(self, start: float = 0.0, end: float = 1.0, projection: bool = True):
        self.window = check_window(start, end)
        self.projection = bool(projection)

    def key(self) -> Hashable:
        return type(self), self.window, self.projection

    def check(self, model: MultimodalClassifier) -> None:
        super().check(model)
        if not isinstance(model.fusion, SharedHeadFusion):
            raise self.refuse(model, "trains the modalities through one shared head: use fusion=shared")

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["mla_loss"])
        head = model.fusion.head.weight  # (C, D), stacked (K, C, D)
        self.projector = torch.eye(head.shape[-1], device=head.device).expand(*head.shape[:-2], -1, -1).clone()
        self.steps_taken = 0
        self.epoch_start, self.epoch_rows, self.epoch_batches = 0, 1, 1
        for j, hook in enumerate(self.members):
            hook.projector, hook.steps_taken = self.projector[j], 0

    def start_epoch(self, model: nn.Module, epoch: int, rows: Batch) -> None:
        self.epoch_start, self.epoch_rows = rows.step, rows.y.shape[-1]

    def passes(self, batch: Batch) -> list[Batch]:
        rows_per_batch = batch.y.shape[-1]
        if batch.step == self.epoch_start:  # an epoch's first batch is full: it gives the epoch's batch count
            self.epoch_batches = math.ceil(self.epoch_rows / rows_per_batch)
        if not self.in_window(batch.step):
            return [batch]
        parts = []
        for i in range(batch.mask.shape[-1]):
            rows = batch.mask[..., i].nonzero()
            if not len(rows):
                continue
            if self.members:  # every member's every row has every modality (Trainer.alone_reason): all rows
                if len(rows) != batch.mask[..., i].numel():
                    raise RuntimeError("MLA stacks members only where every training row has every modality")
                only = torch.zeros_like(batch.mask)
                only[..., i] = True
                parts.append(Batch(batch.x, only, batch.y, batch.step))
                continue
            rows = rows.squeeze(1)
            only = torch.zeros_like(batch.mask[rows])
            only[:, i] = True
            parts.append(Batch({m: v[rows] for m, v in batch.x.items()}, only, batch.y[rows], batch.step))
        return parts

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        if self.in_window(batch.step):
            m = int(batch.mask.reshape(-1, batch.mask.shape[-1])[0].nonzero())  # one modality per pass
            with torch.no_grad():
                if self.members:  # each member's own mean: a mean over a row of K x B rounds otherwise
                    logp = out.logits.float().log_softmax(-1)
                    losses = torch.stack([F.nll_loss(lp, y) for lp, y in zip(logp, batch.y)]).tolist()
                else:
                    losses = [F.cross_entropy(out.logits.float(), batch.y).item()]
                self.track(f"mla_loss/{self.modalities[m]}", losses)
        return None

    @torch.no_grad()
    def after_backward(self, model: nn.Module, out: ModelOutput, batch: Batch) -> None:
        if not (self.projection and self.in_window(batch.step)):
            return
        if self.steps_taken > 0:
            m = int(batch.mask.reshape(-1, batch.mask.shape[-1])[0].nonzero())
            r = out.embeddings[m].float().mean(-2, keepdim=True)  # ([K,] 1, D): the head's input, this pass
            a = 0.1 ** (1 + (batch.step - self.epoch_start) / self.epoch_batches)
            if self.members:  # member by member: a batched matrix-vector product rounds otherwise
                k = torch.stack([p @ q for p, q in zip(self.projector, r.mT)])
            else:
                k = self.projector @ r.T  # (D, 1)
            self.projector = self.projector - (k @ k.mT) / (a + r @ k)
            self.projector = self.projector / torch.linalg.vector_norm(self.projector, dim=(-2, -1), keepdim=True)
            weight = model.fusion.head.weight
            weight.grad.add_(weight.grad @ self.projector.mT)
        self.steps_taken += 1
        for j, hook in enumerate(self.members):  # each member's hook holds its own state
            hook.projector, hook.steps_taken = self.projector[j], self.steps_taken
