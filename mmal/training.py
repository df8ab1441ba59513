"""Fitting a classifier on the labeled set and batched inference: what ``conf/trainer`` configures."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmal.data.multimodal import MultimodalData
from mmal.models.classifier import MultimodalClassifier

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


@dataclass
class Predictions:
    """Batched model outputs for n samples: probs (n, C), fused (n, F), embeddings M x (n, D_m),
    aux_probs (n, M, C) or None (see ``ModelOutput``)."""

    probs: Tensor
    fused: Tensor
    embeddings: list[Tensor]
    aux_probs: Tensor | None


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Trains with AdamW on the labeled rows and predicts in large batches.

    Args:
        epochs: passes over the labeled set per AL cycle.
        batch_size: training batch size.
        lr, weight_decay: AdamW settings.
        aux_weight: weight of the auxiliary per-modality losses (used when the model has aux heads).
        device: ``auto`` | ``cpu`` | ``cuda``.
        precision: ``32``, or mixed precision ``bf16`` / ``16`` (autocast; ``16`` with a grad scaler).
        eval_batch_size: batch size of inference.
        num_threads: CPU threads of PyTorch for this process (``torch.set_num_threads``); None keeps
            PyTorch's default. Small models train fastest on 1 thread, and several jobs sharing the cores
            (a joblib sweep) slow down many-fold when each one spins a thread per core.
    """

    def __init__(self, epochs: int = 100, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                 aux_weight: float = 1.0, device: str = "auto", precision: str = "32", eval_batch_size: int = 8192,
                 num_threads: int | None = None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.aux_weight = aux_weight
        self.device = resolve_device(device)
        self.precision = str(precision)
        self.eval_batch_size = eval_batch_size
        if num_threads is not None:
            torch.set_num_threads(num_threads)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def fit(self, model: MultimodalClassifier, data: MultimodalData, idx: Tensor, seed: int) -> MultimodalClassifier:
        """Train ``model`` in place on rows ``idx`` of ``data`` (already on the device); ``seed`` fixes
        batch order and dropout."""
        torch.manual_seed(seed)  # dropout draws from the global generator
        order = torch.Generator().manual_seed(seed)
        model.to(self.device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        idx = idx.to(self.device)
        for _ in range(self.epochs):
            perm = idx[torch.randperm(len(idx), generator=order).to(self.device)]
            for batch in perm.split(self.batch_size):
                with self._autocast():
                    out = model({m: v[batch] for m, v in data.x.items()}, data.mask[batch])
                    loss = self._loss(out.logits, out.aux_logits, data.y[batch], data.mask[batch])
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
        return model.eval()

    def _loss(self, logits: Tensor, aux_logits: Tensor | None, y: Tensor, mask: Tensor) -> Tensor:
        loss = F.cross_entropy(logits.float(), y)
        if aux_logits is not None and self.aux_weight > 0:
            targets = y.repeat_interleave(mask.shape[1])  # (B * M,) matches aux_logits (B, M, C) flattened
            per = F.cross_entropy(aux_logits.float().flatten(0, 1), targets, reduction="none")
            keep = mask.flatten().float()  # only modalities that are present teach their head
            loss = loss + self.aux_weight * (per * keep).sum() / keep.sum().clamp_min(1)
        return loss

    @torch.inference_mode()
    def predict(self, model: MultimodalClassifier, data: MultimodalData, idx: Tensor | None = None,
                mask: Tensor | None = None, dropout: bool = False) -> Predictions:
        """Outputs for rows ``idx`` (default: all; repeats allowed) of ``data``. ``mask`` (len(idx), M)
        replaces those rows' presence masks, e.g. to evaluate with modalities masked out (it may only
        remove modalities: a missing modality's rows hold zeros). ``dropout=True`` keeps dropout active
        (MC dropout; the global generator draws the masks)."""
        model.train(dropout)
        idx = torch.arange(len(data), device=self.device) if idx is None else idx.to(self.device)
        mask = data.mask[idx] if mask is None else mask.to(self.device)
        parts = []
        for pos in torch.arange(len(idx), device=self.device).split(self.eval_batch_size):
            rows = idx[pos]
            with self._autocast():
                out = model({m: v[rows] for m, v in data.x.items()}, mask[pos])
            parts.append(out)
        model.eval()
        aux = None if parts[0].aux_logits is None else torch.cat([p.aux_logits for p in parts]).float().softmax(-1)
        return Predictions(
            probs=torch.cat([p.logits for p in parts]).float().softmax(-1),
            fused=torch.cat([p.fused for p in parts]).float(),
            embeddings=[torch.cat([p.embeddings[i] for p in parts]).float() for i in range(len(parts[0].embeddings))],
            aux_probs=aux,
        )
