"""UMT: uni-modal teachers, the fused model's encoders distilled from unimodal models (Du et al., ICML 2023)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window
from mmal.errors import check_number
from mmal.hooks import Batch
from mmal.models.classifier import ModelOutput, MultimodalClassifier
from mmal.models.stacked import stack


class UMT(BalanceMethod):
    """Pull each encoder of the fused model towards the encoder of a model trained on its modality alone.

    The teachers are the cycle's unimodal references (``mmal.metrics.references``): the AL loop trains them
    first, on the same labeled rows, seed and initial weights as always (their numbers do not change), and
    then the fused model with this method (``teaches_from_references``). Per training step in the window
    (``GeWu-Lab/BalanceBenchmark``'s ``UMT_trainer``; the paper's Uni-Modal Teacher):

    - loss = cross-entropy of the fused prediction + alpha * sum_m MSE(h_m, t_m), where h_m is the fused
      model's embedding of modality m and t_m the teacher's (no gradient), MSE the mean over rows and units.

    Departures (docs/balance.md):

    - the teachers are trained on the cycle's labeled rows (the authors train them on the whole training set
      first); they are the references the neglect measure compares the fused model with, so UMT costs no
      training beyond the fused model's, but the two runs in sequence, not stacked together;
    - the teacher's embedding is computed in eval mode (no dropout); BalanceBenchmark leaves its loaded
      teachers in training mode;
    - the MSE of modality m is over the rows that have m (a missing modality has no embedding to match); a
      modality without a teacher (no labeled row has it) adds nothing.

    Args:
        alpha: the distillation weight (BalanceBenchmark: 1).
        start, end: the window, fractions of the fit's steps (BalanceBenchmark: the whole fit).

    ``state()``: per modality, the mean MSE over the window's steps (``umt_mse/<m>``).

    Stacked (``BalanceMethod``), each member as alone: member k's teacher encoders are stacked, one per
    modality, and each member's term is that of its own rows.
    """

    name = "umt"
    teaches_from_references: ClassVar[bool] = True

    def __init__(self, alpha: float = 1.0, start: float = 0.0, end: float = 1.0):
        self.alpha = check_number("balance.alpha", alpha, 0)
        self.window = check_window(start, end)
        self.teachers: dict[str, MultimodalClassifier] = {}

    def key(self) -> Hashable:
        return type(self), self.alpha, self.window

    def teach(self, teachers: dict[str, MultimodalClassifier]) -> None:
        """The cycle's trained references, modality -> model, for the next ``fit``."""
        self.teachers = dict(teachers)

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["umt_mse"])
        hooks = self.members or (self,)
        self._encoders: list[tuple[nn.Module, Tensor] | None] = []
        for i, m in enumerate(self.modalities):
            teachers = [hook.teachers.get(m) for hook in hooks]
            known = [t for t in teachers if t is not None]
            if not known:
                self._encoders.append(None)
                continue
            # a member without m's teacher takes another's encoder to fill the stack, and its term is dropped
            encoders = [(t if t is not None else known[0]).encoders[i] for t in teachers]
            encoder = stack(encoders, [0] * len(encoders)) if self.members else encoders[0]
            has = torch.tensor([t is not None for t in teachers], device=next(model.parameters()).device)
            self._encoders.append((encoder.eval(), has))

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        if not self.in_window(batch.step):
            return None
        total, tracked = None, []
        for i, (m, teacher) in enumerate(zip(self.modalities, self._encoders)):
            if teacher is None:
                tracked.append(torch.full((len(self.generators),), torch.nan, device=batch.mask.device))
                continue
            encoder, has = teacher
            with torch.no_grad():
                target = encoder(batch.x[m]).float()
            present = batch.mask[..., i].float()  # ([K,] B)
            per_row = (out.embeddings[i].float() - target).pow(2).mean(-1)  # ([K,] B)
            count = present.sum(-1)
            mse = (per_row * present).sum(-1) / count.clamp_min(1)  # ([K,] ): each member's own, 0 without rows
            if self.members:
                mse = mse * has
            term = self.alpha * mse.sum()
            total = term if total is None else total + term
            tracked.append(torch.where(has & (count > 0), mse.detach(), torch.nan).reshape(-1))
        self.track_tensors({"umt_mse": torch.stack(tracked, -1)})
        return total
