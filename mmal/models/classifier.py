"""The multimodal classifier: per-modality encoders (one class for all, or one per modality), a fusion,
optional auxiliary per-modality heads."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmal.data.multimodal import per_row
from mmal.errors import ConfigError
from mmal.models.encoders import IdentityEncoder
from mmal.models.fusion import Fusion


def component_class(factory: Callable[..., nn.Module]) -> type:
    """The class a factory builds: the class itself, or the target of a ``functools.partial`` (what Hydra's
    ``_partial_: true`` gives), so its declared capabilities can be read before it is built."""
    return factory.func if isinstance(factory, functools.partial) else factory


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
        shapes: modality name -> per-sample input shape (``(D,)``, ``(C, H, W)``), in the dataset's
            modality order (``MultimodalDataset.shapes``).
        num_classes: C.
        encoder: builds a modality's encoder from ``in_shape`` (a Hydra partial, e.g. ``MLPEncoder``).
        fusion: builds the fusion from ``dims`` (embedding sizes) and ``num_classes``.
        aux_heads: add a linear head per modality on its embedding, trained jointly, for unimodal
            predictions (as in BMMAL).
        encoders: modality name -> encoder factory that replaces ``encoder`` for that modality (e.g. a
            ``ConvEncoder`` for an image modality). Early fusion ignores both: it has no encoders.
    """

    stacks = True  # with its encoders and fusion: mmal.models.stacked.stackable checks every module

    def __init__(
        self,
        shapes: dict[str, tuple[int, ...]],
        num_classes: int,
        encoder: Callable[..., nn.Module],
        fusion: Callable[..., Fusion],
        aux_heads: bool = False,
        encoders: dict[str, Callable[..., nn.Module]] | None = None,
    ):
        super().__init__()
        self.modalities = tuple(shapes)
        self.num_classes = num_classes
        encoders = encoders or {}
        if unknown := sorted(set(encoders) - set(shapes)):
            raise ConfigError("model.encoders", unknown, f"keys must be modalities of the data: {list(shapes)}")
        for m, factory in encoders.items():
            if not callable(factory):
                raise ConfigError(f"model.encoders.{m}", factory, "an encoder factory: a config with _target_ (an "
                                                                   "encoder class) and _partial_: true")
        raw = component_class(fusion).raw_inputs
        built = []  # in modality order, as before: flat runs draw the same initial weights
        for m, shape in shapes.items():
            key = f"model.encoders.{m}" if m in encoders else "model.encoder"
            build = IdentityEncoder if raw else encoders.get(m, encoder)
            try:
                built.append(build(in_shape=tuple(shape)))
            except ConfigError as err:
                raise err.under(key) from None
        self.encoders = nn.ModuleList(built)
        emb_dims = [e.out_dim for e in self.encoders]
        self.fusion = fusion(dims=emb_dims, num_classes=num_classes)
        self.aux_heads = nn.ModuleList(nn.Linear(d, num_classes) for d in emb_dims) if aux_heads else None

    @property
    def masked_exact(self) -> bool:
        """Whether masking every modality but m gives a term of the fused decision (``Fusion.masked_exact``)."""
        return self.fusion.masked_exact

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model offers a query strategy (``QueryStrategy.needs``): ``modality_predictions``
        (auxiliary heads, or a fusion with ``modality_logits``) and ``dropout`` (a dropout layer with p > 0,
        for MC dropout)."""
        has = set()
        if self.aux_heads is not None or self.fusion.modality_logits:
            has.add("modality_predictions")
        if any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules()):
            has.add("dropout")
        return frozenset(has)

    def forward(self, x: dict[str, Tensor], mask: Tensor) -> ModelOutput:
        # Shapes as in the docstrings, or with a leading member dimension K for a stacked model
        # (mmal.models.stacked): every operation here works on the last dimensions.
        keep = mask.to(next(iter(x.values())).dtype)  # (B, M)
        # Zero the input (whatever a missing row holds) and the embedding (encoder biases make it non-zero).
        embeddings = [enc(x[m] * per_row(keep[..., i], x[m])) * keep[..., i, None]
                      for i, (m, enc) in enumerate(zip(self.modalities, self.encoders))]
        fused, logits = self.fusion(embeddings, mask)
        aux = None
        if self.aux_heads is not None:
            aux = torch.stack([head(e) for head, e in zip(self.aux_heads, embeddings)], dim=-2)  # (B, M, C)
            aux = aux * keep[..., None]  # a missing modality predicts uniform
        return ModelOutput(logits=logits, fused=fused, embeddings=embeddings, aux_logits=aux)
