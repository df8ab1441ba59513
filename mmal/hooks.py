"""The seam for training-side methods: what a method may change in ``Trainer.fit`` without copying it.

A method subclasses ``TrainingHook`` and overrides what it needs; every call defaults to doing nothing.
Per training batch the trainer calls ``masked(model, batch)``, which may mask modalities out of the batch's rows
(OPM), then ``passes(batch)``, which may replace the batch by several training steps (e.g. one per modality);
per step, in order of its hooks:

    loss(model, out, batch) -> Tensor | None   a term added to the cross-entropy of the fused logits
    after_backward(model, out, batch)          after backward, before the optimizer step: modulate grads

once per ``fit``, ``start(model, optimizer, total_steps)`` (reset state, set up a schedule: every call sees
``batch.step``), and at the start of every epoch ``start_epoch(model, epoch, rows)`` with all the fit's
training rows as one batch (e.g. class prototypes over the labeled set). The auxiliary-head loss below is
the first user of this seam.

Stacking (``mmal.models.stacked``): a ``stackable`` hook also trains a stacked model of K members, where every
tensor of ``out`` and ``batch`` has a leading member dimension. Members whose own hooks have equal ``key``s (the
same class with the same settings) train in one stack; ``stacked`` gives the one hook that trains it and
keeps each member's state in that member's own hook.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmal.models.classifier import ModelOutput


@dataclass
class Batch:
    """One training batch: inputs per modality (B, *shape), presence mask (B, M), labels (B,), and the
    step's index within this ``fit`` (0 .. total_steps - 1)."""

    x: dict[str, Tensor]
    mask: Tensor
    y: Tensor
    step: int


class TrainingHook:
    """A training method inside ``Trainer.fit`` (module docstring).

    ``stackable``: the hook also works on a stacked model (``mmal.models.stacked``): every tensor of ``out``
    and ``batch`` then has a leading member dimension K, ``loss`` returns the sum of the members' terms and
    ``after_backward`` treats each member's slice of a weight as that member's weight; ``stacked`` gives the
    hook that does so. A hook that is not (the default) makes the trainer train each model alone.
    """

    stackable: ClassVar[bool] = False

    def key(self) -> Hashable:
        """What the own hooks of several members must share to train them as one stack: the class and every
        setting that changes what the hook computes. By default the class alone; a hook with settings names
        them (``BalanceMethod``s do)."""
        return type(self)

    def stacked(self, hooks: Sequence[TrainingHook], generators: Sequence[torch.Generator]) -> TrainingHook:
        """The hook that trains a stacked model of ``len(hooks)`` members as ``hooks[k]`` would train member k
        alone; ``self`` is ``hooks[0]``, every hook has its ``key``, and ``generators[k]`` is member k's random
        generator, to draw from where the hook alone draws from the global one (it also draws member k's dropout
        masks). Each member's state is kept in ``hooks[k]``. By default the hook itself: one that keeps no state
        of its own."""
        return self

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """Called once before the first step of a ``fit``."""

    def masked(self, model: nn.Module, batch: Batch) -> Batch:
        """The batch the step trains on, with modalities masked out of some rows (``batch.mask`` changed, every
        row kept): by default the batch itself. Called before ``passes``, after the trainer's modality dropout;
        the model is in training mode and must be left so."""
        return batch

    def passes(self, batch: Batch) -> list[Batch]:
        """The training steps of one batch, each a forward, backward and optimizer step: by default the
        batch itself. All passes of a batch share its ``step``. A pass may take the rows that have a modality,
        which differ between the members of a stack: a hook that overrides this stacks only where every training
        row has every modality and ``trainer.modality_dropout=0`` (``Trainer.alone_reason``), and its passes of a
        stacked batch are those of every member's batch alone."""
        return [batch]

    def start_epoch(self, model: nn.Module, epoch: int, rows: Batch) -> None:
        """Called before each epoch's first step with every training row of the fit (``rows.step`` is the
        next step's index); the model is in training mode."""

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        """A loss term added to the cross-entropy (None: none); computed under the trainer's autocast."""
        return None

    def after_backward(self, model: nn.Module, out: ModelOutput, batch: Batch) -> None:
        """Gradients are in ``p.grad`` (unscaled, also with ``precision=16``); change them before the
        optimizer step (e.g. scale a modality's)."""


def drop_modalities(mask: Tensor, kept: Tensor) -> Tensor:
    """``mask`` (..., M) with the modalities ``kept`` does not keep masked out; a row left with none keeps its
    own mask (modality dropout, OPM)."""
    kept = mask & kept
    return torch.where(kept.any(-1, keepdim=True), kept, mask)


def fused_cross_entropy(out: ModelOutput, y: Tensor) -> Tensor:
    """The cross-entropy of the fused logits: the batch mean for a model alone (``y`` (B,)), each member's own
    mean, (K,), for a stacked model (``y`` (K, B)), so that each member's gradient is that of its loss alone."""
    if y.dim() == 1:
        return F.cross_entropy(out.logits.float(), y)
    return F.cross_entropy(out.logits.float().flatten(0, 1), y.flatten(), reduction="none").view(y.shape).mean(1)


def head_cross_entropy(out: ModelOutput, batch: Batch) -> Tensor:
    """([K,] B, M): the cross-entropy of each auxiliary head on each row (every row, present or not: weigh by
    ``batch.mask``)."""
    targets = batch.y[..., None].expand(batch.mask.shape)  # each row's label for each of its modalities
    return F.cross_entropy(out.aux_logits.float().flatten(0, -2), targets.flatten(),
                           reduction="none").view(batch.mask.shape)


class AuxiliaryHeadLoss(TrainingHook):
    """``weight`` x the mean cross-entropy of the auxiliary per-modality heads (as in BMMAL), over the
    (sample, modality) pairs where the modality is present: a missing modality never teaches its head.
    Nothing for a model without auxiliary heads or with ``weight=0``. Stackable: per member, summed."""

    stackable = True

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        if out.aux_logits is None or self.weight <= 0:
            return None
        keep = batch.mask.float()  # (B, M), or (K, B, M) stacked
        per = head_cross_entropy(out, batch)
        return self.weight * ((per * keep).sum((-2, -1)) / keep.sum((-2, -1)).clamp_min(1)).sum()
