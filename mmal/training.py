"""Fitting a classifier on the labeled set and batched inference: what ``conf/trainer`` configures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmal.data.multimodal import MultimodalData
from mmal.errors import ConfigError, check_choice, check_int, check_number
from mmal.hooks import AuxiliaryHeadLoss, Batch, TrainingHook
from mmal.models.classifier import ModelOutput, MultimodalClassifier, component_class
from mmal.models.stacked import stack, stackable, unstack
from mmal.seeding import derive_seed

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")


# Optimizers whose update of a weight depends on that weight's own gradient and state only: one of them over
# stacked weights (K, ...) is K independent optimizers, bitwise.
STACKED_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad)


class DivergenceError(RuntimeError):
    """Training left non-finite weights: the run cannot go on, and its config says where to look."""


@dataclass
class Member:
    """One model for ``Trainer.fit_together``: trained on rows ``rows`` of ``data`` (on the device); ``label``
    (e.g. "the unimodal reference of a: ") starts its error messages; ``hooks`` are applied to this model
    only, after the trainer's own (the fused model's balancing method, ``mmal.balance``)."""

    model: MultimodalClassifier
    data: MultimodalData
    rows: Tensor
    label: str = ""
    hooks: Sequence[TrainingHook] = ()


@dataclass
class Predictions:
    """Batched model outputs for n samples: probs (n, C), fused (n, F), embeddings M x (n, D_m),
    aux_probs (n, M, C) or None (see ``ModelOutput``)."""

    probs: Tensor
    fused: Tensor
    embeddings: list[Tensor]
    aux_probs: Tensor | None


def _cuda(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _generator(device: torch.device, seed: int, shared: bool) -> torch.Generator:
    """The global generator of ``device`` (``shared``), or a new one seeded ``seed``."""
    if shared:
        return torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator
    return torch.Generator(device=device).manual_seed(seed)


def _with_hook_terms(loss: Tensor, hooks: Sequence[TrainingHook], model: nn.Module, out: ModelOutput,
                     batch: Batch) -> Tensor:
    """``loss`` plus every hook's loss term, in the hooks' order."""
    for hook in hooks:
        term = hook.loss(model, out, batch)
        if term is not None:
            loss = loss + term
    return loss


def _start_epoch(hooks: Sequence[TrainingHook], model: nn.Module, epoch: int, rows: Callable[[], Batch]) -> None:
    """Each hook's ``start_epoch``; the batch of every training row is built (``rows()``) only for hooks that
    use it."""
    users = [hook for hook in hooks if type(hook).start_epoch is not TrainingHook.start_epoch]
    if users:
        everything = rows()
        for hook in users:
            hook.start_epoch(model, epoch, everything)


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Trainer:
    """Trains on the labeled rows and predicts in large batches.

    One training step: forward under autocast, cross-entropy of the fused logits plus the loss term of
    every training hook (``mmal.hooks``: the auxiliary-head loss, balancing methods), backward, each
    hook's ``after_backward`` (gradient modulation), optimizer step. A hook's ``passes`` may make one batch
    several such steps (MLA: one per modality).

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
        num_threads: CPU threads of PyTorch for this process (``torch.set_num_threads``), set when the
            trainer first trains or predicts; None keeps PyTorch's default (OMP_NUM_THREADS, else one per
            core). 1 by default: small models train fastest on one thread, and a run with a thread per core
            slows down about 3x as soon as another process shares the cores (docs/benchmarks.md, "Threads").
    """

    def __init__(self, epochs: int = 100, batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-4,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None, aux_weight: float = 1.0,
                 hooks: Sequence[TrainingHook] = (), device: str = "auto", precision: str = "32",
                 eval_batch_size: int = 8192, modality_dropout: float = 0.0, num_threads: int | None = 1):
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
        # Applied when the trainer works (``use_threads``), not here: building a trainer to check a config
        # (a sweep checks all of its jobs' first) must not change the process.
        self.num_threads = None if num_threads is None else check_int("trainer.num_threads", num_threads, 1)

    def use_threads(self) -> None:
        """Give PyTorch ``num_threads`` CPU threads (a process-wide setting; nothing when None)."""
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def fit(self, model: MultimodalClassifier, data: MultimodalData, idx: Tensor, seed: int) -> MultimodalClassifier:
        """Train ``model`` in place on rows ``idx`` of ``data`` (already on the device); ``seed`` fixes
        batch order and dropout (drawn from the global generator). Raises ``DivergenceError`` when the
        weights end non-finite."""
        self.fit_together([Member(model, data, idx)], seed)
        return model

    def fit_together(self, members: Sequence[Member], seed: int) -> None:
        """Train every member as ``fit`` would train it alone with ``seed``, each in place.

        Members whose models stack (``mmal.models.stacked``) and that train on the same rows train as one
        stacked model: one forward and backward pass per step for all of them. On one CPU thread each
        member's weights are then bitwise those of training it alone (``tests/test_stacked.py``), except
        for a batch of 1 or 3 rows and tiny layers (``mmal.models.stacked``), where a batched product may round
        differently (equal in distribution,
        as with another thread count). The first member draws its dropout from the global generator, as
        ``fit`` does; the others from their own generators seeded ``seed``, so the global random state
        afterwards is that after fitting the first member alone. Stacking needs every hook ``stackable``,
        an elementwise optimizer (``STACKED_OPTIMIZERS``) and no float16 loss scaling; otherwise, and for
        models that do not stack, each member trains alone.
        """
        self.use_threads()
        for member in members:
            member.model.to(self.device).train()
        steps = {}
        for group in self._groups(members):
            first = group[0] is members[0]
            # Only the first member's training may leave the global generator changed, as fit alone does.
            keep_global = first or len(group) > 1
            with contextlib.nullcontext() if keep_global else torch.random.fork_rng(devices=_cuda(self.device)):
                steps |= self._fit_group(group, seed, shares_global=first)
        # One check per fit, not per step, and one device sync: a stacked flag per parameter tensor.
        for member in members:
            if not torch.stack([torch.isfinite(p).all() for p in member.model.parameters()]).all():
                done, loss = steps[id(member)]
                raise DivergenceError(
                    f"{member.label}training diverged: non-finite weights after {done} steps (last loss "
                    f"{loss:.4g}); lower trainer.lr={self.lr} or check trainer.weight_decay={self.weight_decay}, "
                    f"trainer.precision={self.precision!r}")
            member.model.eval()

    def _stacks(self) -> bool:
        """Whether this trainer's optimizer, hooks and precision allow stacked training."""
        return (component_class(self.optimizer) in STACKED_OPTIMIZERS and self.precision != "16"
                and all(hook.stackable and type(hook).passes is TrainingHook.passes for hook in self.hooks))

    def _groups(self, members: Sequence[Member]) -> list[list[Member]]:
        """Members that train as one stacked model: same rows, same architecture, every one stackable, none
        with hooks of its own (and a trainer that allows it); every other member alone. The first member's
        group comes first."""
        def architecture(member: Member) -> list[tuple[str, torch.Size]] | None:
            """What must match to stack; None for a member that trains alone."""
            if not (self._stacks() and stackable(member.model)) or member.hooks:
                return None
            return [(n, p.shape) for n, p in member.model.named_parameters()]

        groups: list[list[Member]] = []
        for member in members:
            shape = architecture(member)
            group = next((g for g in groups if shape is not None and architecture(g[0]) == shape
                          and torch.equal(g[0].rows, member.rows)), None)
            if group is None:
                groups.append([member])
            else:
                group.append(member)
        return groups

    def _fit_group(self, group: list[Member], seed: int, shares_global: bool) -> dict[int, tuple]:
        """The one training loop (``fit_together``): the members of ``group`` train as one model per step, stacked
        (``mmal.models.stacked``) when there are several, the model itself when there is one; member k's
        weights come out as if it trained alone. Returns id(member) -> (steps, last loss).

        Dropout: a model alone draws from the global generator, seeded ``seed``; stacked members from their own
        generators seeded ``seed``, the first from the global one when ``shares_global``. Batch order and
        modality dropout have generators of their own, seeded from ``seed`` alone, so every member sees the
        batches it would see alone."""
        together = len(group) > 1
        hooks = [*self.hooks, *group[0].hooks]  # a member with hooks of its own trains alone (_groups)
        if together:
            model = stack([m.model for m in group],
                          [_generator(self.device, seed, shared=shares_global and k == 0) for k in range(len(group))])
        else:
            model = group[0].model
        if shares_global or not together:
            torch.manual_seed(seed)  # dropout of a model alone, or of the first member, from the global generator
        order = torch.Generator().manual_seed(seed)
        drops = [torch.Generator().manual_seed(derive_seed(seed, "modality_dropout")) for _ in group]
        opt = self.optimizer(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")  # float16 never stacks
        idx = group[0].rows.to(self.device)
        # The training rows, (n, ...) for a model alone, (K, n, ...) stacked; batches take positions in them.
        def rows_of(tensors: Callable[[Member], Tensor]) -> Tensor:
            return torch.stack([tensors(m)[idx] for m in group]) if together else tensors(group[0])[idx]
        x = {m: rows_of(lambda member, m=m: member.data.x[m]) for m in group[0].data.x}
        masks, ys = rows_of(lambda member: member.data.mask), rows_of(lambda member: member.data.y)
        take = (lambda v, pos: v[:, pos]) if together else (lambda v, pos: v[pos])
        steps_per_epoch = -(-len(idx) // self.batch_size)
        for hook in hooks:
            hook.start(model, opt, self.epochs * steps_per_epoch)
        step = 0
        for epoch in range(self.epochs):
            _start_epoch(hooks, model, epoch, lambda step=step: Batch(x, masks, ys, step))
            for pos in torch.randperm(len(idx), generator=order).to(self.device).split(self.batch_size):
                mask = take(masks, pos)
                if self.modality_dropout > 0:
                    mask = (torch.stack([self._drop_modalities(m, g) for m, g in zip(mask, drops)]) if together
                            else self._drop_modalities(mask, drops[0]))
                batches = [Batch({m: take(v, pos) for m, v in x.items()}, mask, take(ys, pos), step)]
                for hook in hooks:  # a hook may make one batch several steps (MLA: one per modality)
                    batches = [part for batch in batches for part in hook.passes(batch)]
                for batch in batches:
                    with self._autocast():
                        out = model(batch.x, batch.mask)
                        if together:  # each member's gradient is that of its own mean loss
                            losses = F.cross_entropy(out.logits.float().flatten(0, 1), batch.y.flatten(),
                                                     reduction="none").view(batch.y.shape).mean(1)  # (K,)
                            loss = losses.sum()
                        else:
                            losses = loss = F.cross_entropy(out.logits.float(), batch.y)
                        loss = _with_hook_terms(loss, hooks, model, out, batch)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # hooks see the true gradients (a no-op unless precision=16)
                    for hook in hooks:
                        hook.after_backward(model, out, batch)
                    scaler.step(opt)
                    scaler.update()
                step += 1
        if together:
            unstack(model, [m.model for m in group])
        last = losses.reshape(-1).tolist()
        return {id(member): (step, last[k]) for k, member in enumerate(group)}

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
        self.use_threads()
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
