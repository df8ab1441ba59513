"""Fusion modules: join per-modality embeddings into class logits, respecting the presence mask.

Every fusion is called as ``fusion(embeddings, mask) -> (fused, logits)`` with ``embeddings`` a list of
M tensors (B, D_m) whose missing rows the classifier has already zeroed, ``mask`` (B, M) bool, and
returns the fused representation (B, F) and logits (B, C); a stacked model (``mmal.models.stacked``)
calls it with a leading member dimension on every tensor, so every operation works on the last ones.
A missing modality must contribute nothing: fusions that average divide by the number of *present*
modalities, concatenating fusions append the mask so that a zero block is never mistaken for data.

Which interaction structures a fusion can express (docs/design.md, "Models and fusion"): logits that are
a sum of per-modality terms (``late``, or any fusion with ``head_hidden_layers=0``) cannot represent
synergy; a non-linear head after concatenation, mean, sum or gating can.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mmal.errors import check_choice, check_int, check_number
from mmal.models.encoders import mlp


class Fusion(nn.Module):
    """Base class. Capabilities are declared as class attributes, read by the classifier:
    ``raw_inputs`` (the fusion wants the masked inputs, not encoder embeddings) and ``modality_logits``
    (its logits are the mean of per-modality logits, so masking all but one modality gives that
    modality's own prediction); ``stacks`` (its forward works on a leading member dimension, so K copies
    train as one module: ``mmal.models.stacked``; a fusion that does not say so trains alone, correctly but
    slower)."""

    raw_inputs: ClassVar[bool] = False
    modality_logits: ClassVar[bool] = False
    stacks: ClassVar[bool] = False

    @property
    def masked_exact(self) -> bool:
        """Whether the prediction with only modality m present is a term of the fused decision (m's own head,
        or m's block of a linear head plus the bias: OGM-GE's decomposition), so ``masked_acc`` is exact;
        otherwise the masked input is out of distribution for a model never trained with modalities
        missing."""
        return self.modality_logits

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def check_head(head_hidden: int, head_hidden_layers: int, dropout: float) -> None:
    """The settings every fusion's MLP head shares (``fusion.<key>``)."""
    check_int("fusion.head_hidden", head_hidden, 1)
    check_int("fusion.head_hidden_layers", head_hidden_layers, 0)
    check_number("fusion.dropout", dropout, 0, below=1)


class _HeadFusion(Fusion):
    """A fusion that builds one vector and classifies it with an MLP head; the fused output is the
    head's last hidden layer (or its input when the head is linear)."""

    def __init__(self, in_dim: int, num_classes: int, head_hidden: int, head_hidden_layers: int, dropout: float):
        check_head(head_hidden, head_hidden_layers, dropout)
        super().__init__()
        self.head = mlp(in_dim, head_hidden, num_classes, head_hidden_layers, dropout)

    def classify(self, joined: Tensor) -> tuple[Tensor, Tensor]:
        hidden = self.head[:-1](joined)  # (B, F)
        return hidden, self.head[-1](hidden)


def _equal_dims(dims: list[int], name: str) -> int:
    if len(set(dims)) != 1:
        raise ValueError(f"{name} fusion needs equal embedding sizes per modality, got {dims}")
    return dims[0]


class IntermediateFusion(_HeadFusion):
    """Concatenate the per-modality embeddings and the mask, then an MLP head."""

    stacks = True

    def __init__(self, dims: list[int], num_classes: int, head_hidden: int = 128, head_hidden_layers: int = 1,
                 dropout: float = 0.1):
        super().__init__(sum(dims) + len(dims), num_classes, head_hidden, head_hidden_layers, dropout)

    @property
    def masked_exact(self) -> bool:
        return len(self.head) == 1  # a linear head over the concatenation: a sum of per-modality blocks

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.classify(torch.cat([*embeddings, mask.to(embeddings[0].dtype)], dim=-1))


class EarlyFusion(IntermediateFusion):
    """Concatenate the masked raw inputs and the mask, then one MLP (the per-modality encoders are skipped)."""

    raw_inputs = True

    def __init__(self, dims: list[int], num_classes: int, head_hidden: int = 128, head_hidden_layers: int = 2,
                 dropout: float = 0.1):
        super().__init__(dims, num_classes, head_hidden, head_hidden_layers, dropout)


class MeanFusion(_HeadFusion):
    """Mean of the embeddings of the present modalities (``reduce='sum'``: their sum), then an MLP head."""

    stacks = True

    def __init__(self, dims: list[int], num_classes: int, head_hidden: int = 128, head_hidden_layers: int = 1,
                 dropout: float = 0.1, reduce: str = "mean"):
        check_choice("fusion.reduce", reduce, ["mean", "sum"])
        super().__init__(_equal_dims(dims, reduce), num_classes, head_hidden, head_hidden_layers, dropout)
        self.reduce = reduce

    @property
    def masked_exact(self) -> bool:
        return self.reduce == "sum" and len(self.head) == 1  # a linear head over a sum decomposes

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        total = torch.stack(embeddings, dim=-2).sum(-2)  # (B, D); missing rows are zero
        if self.reduce == "mean":
            total = total / mask.sum(-1, keepdim=True).clamp_min(1)
        return self.classify(total)


class GatedFusion(_HeadFusion):
    """Learned per-sample modality weights: softmax over the present modalities of a linear score of
    each embedding; the weighted sum goes to an MLP head. ``last_weights`` keeps the weights (B, M)."""

    stacks = True

    def __init__(self, dims: list[int], num_classes: int, head_hidden: int = 128, head_hidden_layers: int = 1,
                 dropout: float = 0.1):
        dim = _equal_dims(dims, "gated")
        super().__init__(dim, num_classes, head_hidden, head_hidden_layers, dropout)
        self.gates = nn.ModuleList(nn.Linear(dim, 1) for _ in dims)
        self.last_weights: Tensor | None = None

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.cat([gate(e) for gate, e in zip(self.gates, embeddings)], dim=-1)  # (B, M)
        scores = scores.masked_fill(~mask, float("-inf"))
        # A sample with every modality missing gets all-zero weights instead of NaN.
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        self.last_weights = weights.detach()
        return self.classify((torch.stack(embeddings, dim=-2) * weights[..., None]).sum(-2))


class LateFusion(Fusion):
    """One head per modality; the logits are the mean of the present modalities' logits (all missing:
    zeros, i.e. a uniform prediction). The fused output is the input of the heads' last linear layers,
    concatenated over modalities and divided by the number present: the logits are linear in it, as
    for every other fusion (gradient embeddings rely on that)."""

    stacks = True

    modality_logits = True

    def __init__(self, dims: list[int], num_classes: int, head_hidden: int = 128, head_hidden_layers: int = 0,
                 dropout: float = 0.1):
        check_head(head_hidden, head_hidden_layers, dropout)
        super().__init__()
        self.heads = nn.ModuleList(mlp(d, head_hidden, num_classes, head_hidden_layers, dropout) for d in dims)

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        keep = mask.to(embeddings[0].dtype)  # (B, M)
        count = keep.sum(-1, keepdim=True).clamp_min(1)  # (B, 1)
        hidden = [head[:-1](e) * keep[..., i, None] for i, (head, e) in enumerate(zip(self.heads, embeddings))]
        per_modality = torch.stack([head[-1](h) for head, h in zip(self.heads, hidden)], dim=-2)  # (B, M, C)
        logits = (per_modality * keep[..., None]).sum(-2) / count
        return torch.cat(hidden, dim=-1) / count, logits


class SharedHeadFusion(Fusion):
    """One linear head shared by every modality, applied to each embedding; the prediction combines the
    present modalities' logits with weights softmax(-H_m) over the present modalities, H_m the entropy of
    modality m's own prediction: the more confident modality counts more (MLA's test-time fusion, Zhang et
    al., CVPR 2024; BalanceBenchmark's ``BaseClassifierMLAModel``: exp(max H - H_m) / sum, the same weights).
    With one modality present the prediction is the head on its embedding. The fused output is the
    weighted mean of the embeddings, so the logits are the head applied to it (the weights sum to 1). All
    modalities missing: zero logits, a uniform prediction."""

    stacks = True

    modality_logits = True

    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        self.head = nn.Linear(_equal_dims(dims, "shared"), num_classes)

    def forward(self, embeddings: list[Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        stacked = torch.stack(embeddings, dim=-2)  # (B, M, D)
        per_modality = torch.stack([self.head(e) for e in embeddings], dim=-2)  # (B, M, C); one 2-D input each
        entropy = -(per_modality.softmax(-1) * per_modality.log_softmax(-1)).sum(-1)  # (B, M)
        weights = torch.softmax((-entropy).masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)
        logits = (per_modality * weights[..., None]).sum(-2)
        return (stacked * weights[..., None]).sum(-2), logits
