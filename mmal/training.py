"""Fitting a classifier on the labeled set and batched inference: what ``conf/trainer`` configures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmal.data.multimodal import MultimodalData
from mmal.errors import ConfigError, check_choice, check_int, check_number
from mmal.hooks import AuxiliaryHeadLoss, Batch, TrainingHook
from mmal.models.classifier import MultimodalClassifier
from mmal.seeding import derive_seed

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


class DivergenceError(RuntimeError):
    """Training left non-finite weights: the run cannot go on, and its config says where to look."""


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
    """Trains on the labeled rows and predicts in large batches.

    One training step: forward under autocast, cross-entropy of the fused logits plus the loss term of
    every training hook (``mmal.hooks``: the auxiliary-head loss, balancing methods), backward, each
    hook's ``after_backward`` (gradient modulation), optimizer step.

    Args:
        epochs: passes over the labeled set per AL cycle.
        batch_size: training batch size.
        lr, weight_decay: passed to the optimizer.
        optimizer: builds the optimizer from ``(params, lr=, weight_decay=)``, e.g. a Hydra partial of
            ``torch.optim.SGD`` with ``momentum``; None = ``torch.optim.AdamW``.
        aux_weight: weight of the auxiliary per-modality losses (``AuxiliaryHeadLoss``; used when the
            model has aux heads).
        hooks: further training methods, applied after the auxiliary loss in this order.
        device: ``auto`` | ``cpu`` | ``cuda``.
        precision: ``32``, or mixed precision ``bf16`` / ``16`` (autocast; ``16`` with a grad scaler).
        eval_batch_size: batch size of inference.
        modality_dropout: probability that each present modality of a training sample is masked out (a
            sample keeps at least one), so that the model learns to predict from subsets and masked
            evaluation (``masked_acc``, Shapley values) is in distribution; 0 = off.
        num_threads: CPU threads of PyTorch for this process (``torch.set_num_threads``); None keeps
            PyTorch's default (OMP_NUM_THREADS, else one per core). The config's default is 1: small models
            train fastest on one thread, and a run with a thread per core slows down about 3x as soon as
            another process shares the cores (docs/benchmarks.md, "Threads").
    """

    def __init__(self, epochs: int = 100, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None, aux_weight: float = 1.0,
                 hooks: Sequence[TrainingHook] = (), device: str = "auto", precision: str = "32",
                 eval_batch_size: int = 8192, modality_dropout: float = 0.0, num_threads: int | None = None):
        self.epochs = check_int("trainer.epochs", epochs, 1)
        self.batch_size = check_int("trainer.batch_size", batch_size, 1)
        self.eval_batch_size = check_int("trainer.eval_batch_size", eval_batch_size, 1)
        self.lr = check_number("trainer.lr", lr, 0, strict=True)
        self.weight_decay = check_number("trainer.weight_decay", weight_decay, 0)
        self.modality_dropout = check_number("trainer.modality_dropout", modality_dropout, 0, below=1)
        self.optimizer = optimizer or torch.optim.AdamW
        self.hooks = [AuxiliaryHeadLoss(check_number("trainer.aux_weight", aux_weight, 0)), *hooks]
        device = getattr(device, "value", device)  # a schema.Device from the typed config
        check_choice("trainer.device", device, DEVICES)
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("trainer.device", "cuda", "CUDA is not available on this machine; use auto or cpu")
        self.device = resolve_device(device)
        self.precision = str(check_choice("trainer.precision", precision, list(PRECISIONS)))
        if self.precision == "16" and not torch.cuda.is_available():
            raise ConfigError("trainer.precision", "16", "float16 training needs CUDA; use 32 or bf16")
        if num_threads is not None:
            torch.set_num_threads(check_int("trainer.num_threads", num_threads, 1))

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def fit(self, model: MultimodalClassifier, data: MultimodalData, idx: Tensor, seed: int) -> MultimodalClassifier:
        """Train ``model`` in place on rows ``idx`` of ``data`` (already on the device); ``seed`` fixes
        batch order and dropout. Raises ``DivergenceError`` when the weights end non-finite."""
        torch.manual_seed(seed)  # dropout draws from the global generator
        order = torch.Generator().manual_seed(seed)
        drop = torch.Generator().manual_seed(derive_seed(seed, "modality_dropout"))
        model.to(self.device).train()
        opt = self.optimizer(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        idx = idx.to(self.device)
        steps_per_epoch = -(-len(idx) // self.batch_size)
        for hook in self.hooks:
            hook.start(model, opt, self.epochs * steps_per_epoch)
        step = 0
        for _ in range(self.epochs):
            perm = idx[torch.randperm(len(idx), generator=order).to(self.device)]
            for rows in perm.split(self.batch_size):
                mask = data.mask[rows]
                if self.modality_dropout > 0:
                    mask = self._drop_modalities(mask, drop)
                batch = Batch({m: v[rows] for m, v in data.x.items()}, mask, data.y[rows], step)
                with self._autocast():
                    out = model(batch.x, batch.mask)
                    loss = F.cross_entropy(out.logits.float(), batch.y)
                    for hook in self.hooks:
                        term = hook.loss(model, out, batch)
                        if term is not None:
                            loss = loss + term
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # hooks see the true gradients (a no-op unless precision=16)
                for hook in self.hooks:
                    hook.after_backward(model, out, batch)
                scaler.step(opt)
                scaler.update()
                step += 1
        # One check per fit, not per step, and one device sync: a stacked flag per parameter tensor.
        if not torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all():
            raise DivergenceError(
                f"training diverged: non-finite weights after {step} steps (last loss {loss.item():.4g}); lower "
                f"trainer.lr={self.lr} or check trainer.weight_decay={self.weight_decay}, "
                f"trainer.precision={self.precision!r}")
        return model.eval()

    def _drop_modalities(self, mask: Tensor, g: torch.Generator) -> Tensor:
        """Mask each present modality with probability ``modality_dropout``; a row left with none keeps its
        own mask."""
        dropped = torch.rand(mask.shape, generator=g).to(mask.device) < self.modality_dropout
        kept = mask & ~dropped
        return torch.where(kept.any(1, keepdim=True), kept, mask)

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
