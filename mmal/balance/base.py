"""What every balancing method shares: its place in the trainer, its configuration check, its per-cycle state,
and the fused model's prediction from each modality alone."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mmal.errors import ConfigError
from mmal.hooks import TrainingHook
from mmal.models.classifier import MultimodalClassifier, ModelOutput


class BalanceMethod(TrainingHook):
    """A training hook for the fused model that balances its modalities (``conf/balance/<name>.yaml``).

    ``name`` is the method's config name (its errors name it as ``balance=<name>``). ``check`` refuses a
    model the method cannot train (a fusion without per-modality encoders, one modality) before any work;
    ``state`` is what the method did during the last ``fit``, logged with the cycle as ``balance/<key>``.
    """

    name: ClassVar[str] = ""

    def check(self, model: MultimodalClassifier) -> None:
        """Raise ``ConfigError`` when the method cannot train ``model``."""

    def state(self) -> dict[str, float]:
        """The method's own state over the last ``fit``, as ``<quantity>/<modality>`` keys (logged with the
        ``balance/`` prefix, plotted one panel per quantity)."""
        return {}

    def refuse(self, model: MultimodalClassifier, allowed: str) -> ConfigError:
        """The error for a model this method cannot train, naming the method and the fusion."""
        return ConfigError("balance", self.name, f"{allowed} (fusion {type(model.fusion).__name__}, "
                                                 f"modalities {list(model.modalities)})")


@torch.no_grad()
def modality_logits(model: MultimodalClassifier, out: ModelOutput, mask: Tensor) -> Tensor:
    """(M, B, C): the fused model's logits from each modality alone, every other modality masked, computed
    from the embeddings of the training step's own forward pass (``out``; the encoders do not run again).
    The fusion runs in eval mode, so it draws no dropout masks and the training's random stream is that of
    plain training. A row without modality m gets the fusion's output with nothing present."""
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
