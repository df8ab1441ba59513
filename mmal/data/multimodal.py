"""The data contract every dataset, model and query strategy shares (docs/design.md, "Data contract")."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


def per_row(col: Tensor, x: Tensor) -> Tensor:
    """``col`` (..., B), one value per sample, reshaped to broadcast over ``x`` (..., B, *shape): the mask of
    one modality applied to its rows, whatever their shape (and for stacked models, ``mmal.models.stacked``,
    whatever the leading member dimension)."""
    return col.reshape(*col.shape, *[1] * (x.dim() - col.dim()))


@dataclass(frozen=True)
class MultimodalData:
    """One split of a multimodal dataset.

    Attributes:
        x: one tensor per modality, (N, *shape_m) (``(N, D)`` features, ``(N, C, H, W)`` images...), in
            the order of ``modalities``. Rows of a missing modality hold zeros.
        mask: (N, M) bool, True where the modality is present.
        y: (N,) long class labels.
        modalities: modality names, fixed order (column m of ``mask`` is ``modalities[m]``).
        informative: optional (N, M) bool ground truth: True where modality m alone carries label
            information for the sample (synthetic data only).
        latent_class: optional (N, M) long ground truth: the class prototype modality m's latent was drawn
            around (the label under redundancy, the digit under synergy, -1 where the latent holds no class),
            for probes of what an encoder holds (synthetic data only).
    """

    x: dict[str, Tensor]
    mask: Tensor
    y: Tensor
    modalities: tuple[str, ...]
    informative: Tensor | None = None
    latent_class: Tensor | None = None

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, idx: Tensor) -> MultimodalData:
        """The rows ``idx`` (a LongTensor of positions) of every tensor."""
        return replace(
            self,
            x={m: v[idx] for m, v in self.x.items()},
            mask=self.mask[idx],
            y=self.y[idx],
            informative=None if self.informative is None else self.informative[idx],
            latent_class=None if self.latent_class is None else self.latent_class[idx],
        )

    def to(self, device: torch.device | str) -> MultimodalData:
        return replace(
            self,
            x={m: v.to(device) for m, v in self.x.items()},
            mask=self.mask.to(device),
            y=self.y.to(device),
            informative=None if self.informative is None else self.informative.to(device),
            latent_class=None if self.latent_class is None else self.latent_class.to(device),
        )

    def with_mask(self, mask: Tensor) -> MultimodalData:
        """The same samples with another presence mask; newly absent rows are zeroed."""
        # where, not a product: a NaN in a newly missing row must become zero too
        zero = torch.zeros(())
        x = {m: torch.where(per_row(mask[:, i], v), v, zero.to(v)) for i, (m, v) in enumerate(self.x.items())}
        return replace(self, x=x, mask=mask)

    def only(self, i: int) -> MultimodalData:
        """The same samples with modality ``i`` alone present, as ``with_mask`` would give them, without
        copying: modality i keeps its tensor (its absent rows hold zeros already) and every other modality
        is a broadcast zero. The unimodal references mask the pool so every cycle; at Food-101 scale a copy
        would cost a gigabyte each."""
        x = {m: v if j == i else v.new_zeros(()).expand_as(v) for j, (m, v) in enumerate(self.x.items())}
        alone = torch.zeros_like(self.mask)
        alone[:, i] = self.mask[:, i]
        return replace(self, x=x, mask=alone)


# The keys of ``MultimodalDataset.ground_truth`` (part of the on-disk format: the summary holds them as
# ``ground_truth/<key>``; ``mmal.metrics.names`` re-exports them with every other key).
BAYES_ACC = "bayes_acc"
BAYES_ACC_ALL = "bayes_acc/all"


def bayes_key(subset: tuple[str, ...]) -> str:
    """The ground-truth key of a subset of modalities: ``bayes_key(("a", "b")) == "bayes_acc/a+b"``."""
    return f"{BAYES_ACC}/{'+'.join(subset)}"


@dataclass(frozen=True)
class MultimodalDataset:
    """The three splits of an AL experiment plus what the generator knows about them.

    ``pool`` is what the strategies query from (unlabeled + labeled), ``val`` is for diagnostics only
    and never queried, ``test`` is fixed for evaluation. ``ground_truth`` holds, for synthetic data,
    the best achievable accuracy of every subset of modalities (all present): ``bayes_acc/<m>``,
    ``bayes_acc/<m1>+<m2>`` (from three modalities on) and ``bayes_acc/all``.
    """

    pool: MultimodalData
    val: MultimodalData
    test: MultimodalData
    num_classes: int
    ground_truth: dict[str, float] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.pool.modalities

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each modality: ``(D,)`` for features, ``(C, H, W)`` for images."""
        return {m: tuple(v.shape[1:]) for m, v in self.pool.x.items()}

    @property
    def dims(self) -> dict[str, int]:
        """Flattened size of each modality's samples (``D`` for features, ``C * H * W`` for images)."""
        return {m: math.prod(shape) for m, shape in self.shapes.items()}

    def to(self, device: torch.device | str) -> MultimodalDataset:
        return replace(self, pool=self.pool.to(device), val=self.val.to(device), test=self.test.to(device))
