"""What every balancing method shares: its place in the trainer, its configuration check, its per-cycle state,
and the fused model's prediction from each modality alone."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from mmal.errors import ConfigError, check_number
from mmal.hooks import Batch, TrainingHook
from mmal.models.classifier import ModelOutput, MultimodalClassifier


class BalanceMethod(TrainingHook):
    """A training hook for the fused model that balances its modalities (``conf/balance/<name>.yaml``).

    ``name`` is the method's config name (its errors name it as ``balance=<name>``). ``check`` refuses a
    model the method cannot train (a fusion without per-modality encoders, one modality) before any work;
    ``state`` is what the method did during the last ``fit``, logged with the cycle as ``balance/<key>``.
    A method with a window sets ``window`` (``check_window``) and asks ``in_window(batch.step)``.

    Every method stacks (``TrainingHook.stacked``): fused models of several runs with the same method and
    settings train as one stacked model, each member bitwise as alone with its own hook (``tests/test_balance.py``).
    A method's ``key`` is its class and settings. The hook that trains the stack is a copy of the first member's,
    whose ``members`` are the members' own hooks (empty alone) and ``generators`` their random generators
    (``(None,)`` alone: the global one); ``begin`` and ``track`` keep each member's state in its own hook.
    """

    name: ClassVar[str] = ""
    teaches_from_references: ClassVar[bool] = False  # UMT: the loop trains the references first, then ``teach``
    stackable = True
    window: tuple[float, float] = (0.0, 1.0)
    members: tuple[BalanceMethod, ...] = ()
    generators: tuple[torch.Generator | None, ...] = (None,)

    def stacked(self, hooks: Sequence[TrainingHook], generators: Sequence[torch.Generator]) -> BalanceMethod:
        """A copy of this hook (its settings; ``start`` sets up its state) that keeps each member's state in the
        member's own hook."""
        lead = copy.copy(self)
        lead.members, lead.generators = tuple(hooks), tuple(generators)
        return lead

    def teach(self, teachers: dict[str, MultimodalClassifier]) -> None:
        """The cycle's trained unimodal references, for a method that ``teaches_from_references``."""

    def check(self, model: MultimodalClassifier) -> None:
        """Raise ``ConfigError`` when the method cannot train ``model``. By default: a method needs at least
        two modalities, each with its own encoder (early fusion has none)."""
        if model.fusion.raw_inputs:
            raise self.refuse(model, "needs per-modality encoders; early fusion has none: use intermediate, "
                                     "late, mean, sum, gated or shared")
        if len(model.modalities) < 2:
            raise self.refuse(model, "needs at least two modalities")

    def begin(self, model: MultimodalClassifier, total_steps: int, quantities: list[str]) -> None:
        """Start a fit (from ``start``): its number of steps, its modalities, and its state (each member's,
        stacked), every ``<quantity>/<modality>`` key with nothing tracked yet."""
        self.steps, self.modalities = total_steps, model.modalities
        for hook in self.members or (self,):
            hook.steps, hook.modalities = total_steps, model.modalities
            hook._sums = {f"{q}/{m}": [0.0, 0] for m in model.modalities for q in quantities}

    def in_window(self, step: int) -> bool:
        """Whether step ``step`` of the fit lies in the method's window, ``start <= step / steps < end``."""
        return self.window[0] <= step / self.steps < self.window[1]

    def track(self, key: str, values: Sequence[float | None]) -> None:
        """Add one step's value of ``key`` (``<quantity>/<modality>``) to the fit's state: one value per member
        (alone: one), None for a member that has none this step."""
        for hook, value in zip(self.members or (self,), values):
            if value is not None:
                hook._sums[key][0] += value
                hook._sums[key][1] += 1

    def track_tensors(self, quantities: dict[str, Tensor]) -> None:
        """``track`` each quantity's step values, ([K,] M): one per member and modality, NaN for none this step;
        all of them reach the host in one transfer."""
        k, m = len(self.generators), len(self.modalities)
        host = torch.stack([values.reshape(k, m) for values in quantities.values()]).tolist()
        for quantity, rows in zip(quantities, host):
            for i, modality in enumerate(self.modalities):
                self.track(f"{quantity}/{modality}", [None if math.isnan(row[i]) else row[i] for row in rows])

    def state(self) -> dict[str, float]:
        """The method's own state over the last ``fit``: the mean of each ``<quantity>/<modality>`` over the
        steps that tracked it, NaN where none did (logged with the ``balance/`` prefix, plotted one panel per
        quantity)."""
        return {key: total / count if count else float("nan") for key, (total, count) in self._sums.items()}

    def refuse(self, model: MultimodalClassifier, allowed: str) -> ConfigError:
        """The error for a model this method cannot train, naming the method and the fusion."""
        return ConfigError("balance", self.name, f"{allowed} (fusion {type(model.fusion).__name__}, "
                                                 f"modalities {list(model.modalities)})")


def check_window(start: float, end: float) -> tuple[float, float]:
    """A method's window (``balance.start``, ``balance.end``): fractions of a fit's steps, 0 <= start <= end."""
    start = check_number("balance.start", start, 0, below=1)
    return start, check_number("balance.end", end, start)


@torch.no_grad()
def modality_logits(model: MultimodalClassifier, out: ModelOutput, mask: Tensor) -> Tensor:
    """(M, B, C), stacked (M, K, B, C): the fused model's logits from each modality alone, every other modality
    masked, computed from the embeddings of the training step's own forward pass (``out``; the encoders do not
    run again). The fusion runs in eval mode, so it draws no dropout masks and the training's random stream is
    that of plain training. A row without modality m gets the fusion's output with nothing present."""
    fusion, was_training = model.fusion, model.fusion.training
    embeddings = [e.detach().float() for e in out.embeddings]  # float: under autocast they may be bfloat16
    fusion.eval()
    try:
        per_modality = []
        for i in range(len(embeddings)):
            only = torch.zeros_like(mask)
            only[..., i] = mask[..., i]
            kept = [e * only[..., j, None].to(e.dtype) for j, e in enumerate(embeddings)]
            per_modality.append(fusion(kept, only)[1].float())
    finally:
        fusion.train(was_training)
    return torch.stack(per_modality)


def modality_scores(model: MultimodalClassifier, out: ModelOutput, batch: Batch) -> Tensor:
    """([K,] M): per modality m, the mean over the batch rows that have m of the softmax probability of the true
    class from m alone (``modality_logits``); NaN for a modality no row of the batch has. The score by which
    OGM-GE and OPM tell which modality dominates the batch."""
    logits = modality_logits(model, out, batch.mask)  # (M, [K,] B, C)
    truth = logits.softmax(-1).gather(-1, batch.y.expand(len(logits), *batch.y.shape)[..., None])[..., 0]
    present = batch.mask.movedim(-1, 0).float()  # (M, [K,] B)
    return ((truth * present).sum(-1) / present.sum(-1)).movedim(0, -1)
