"""The multimodal classifier: per-modality encoders, a fusion, optional auxiliary per-modality heads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmal.models.encoders import IdentityEncoder
from mmal.models.fusion import Fusion


@dataclass
class ModelOutput:
    """What a forward pass returns.

    logits (B, C); fused (B, F) the fused representation, the input of the final linear layer (the logits
    are linear in it, up to the bias); embeddings M x (B, D_m) per-modality
    embeddings (zero rows where the modality is missing); aux_logits (B, M, C) from the auxiliary
    per-modality heads, or None when the model has none.
    """

    logits: Tensor
    fused: Tensor
    embeddings: list[Tensor]
    aux_logits: Tensor | None


class MultimodalClassifier(nn.Module):
    """Encoders -> fusion -> logits, with the presence mask applied at both input and embedding.

    Args:
        dims: modality name -> input dimension, in the dataset's modality order.
        num_classes: C.
        encoder: builds one encoder from ``in_dim`` (a Hydra partial, e.g. ``MLPEncoder``).
        fusion: builds the fusion from ``dims`` (embedding sizes) and ``num_classes``.
        aux_heads: add a linear head per modality on its embedding, trained jointly, for unimodal
            predictions (as in BMMAL).
    """

    def __init__(
        self,
        dims: dict[str, int],
        num_classes: int,
        encoder: Callable[..., nn.Module],
        fusion: Callable[..., Fusion],
        aux_heads: bool = False,
    ):
        super().__init__()
        self.modalities = tuple(dims)
        fusion_class = getattr(fusion, "func", fusion)  # a functools.partial from Hydra, or the class
        build = IdentityEncoder if getattr(fusion_class, "raw_inputs", False) else encoder
        self.encoders = nn.ModuleList(build(in_dim=d) for d in dims.values())
        emb_dims = [e.out_dim for e in self.encoders]
        self.fusion = fusion(dims=emb_dims, num_classes=num_classes)
        self.aux_heads = nn.ModuleList(nn.Linear(d, num_classes) for d in emb_dims) if aux_heads else None

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> ModelOutput:
        keep = mask.to(next(iter(x.values())).dtype)  # (B, M)
        # Zero the input (whatever a missing row holds) and the embedding (encoder biases make it non-zero).
        embeddings = [enc(x[m] * keep[:, i, None]) * keep[:, i, None]
                      for i, (m, enc) in enumerate(zip(self.modalities, self.encoders))]
        fused, logits = self.fusion(embeddings, mask)
        aux = None
        if self.aux_heads is not None:
            aux = torch.stack([head(e) for head, e in zip(self.aux_heads, embeddings)], dim=1)  # (B, M, C)
            aux = aux * keep[..., None]  # a missing modality predicts uniform
        return ModelOutput(logits=logits, fused=fused, embeddings=embeddings, aux_logits=aux)
