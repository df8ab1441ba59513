"""Fitting a classifier on the labeled set and batched inference: what ``conf/trainer`` configures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmal import kernels
from mmal.data.multimodal import MultimodalData
from mmal.errors import ConfigError, check_choice, check_int, check_number
from mmal.hooks import AuxiliaryHeadLoss, Batch, TrainingHook, drop_modalities, fused_cross_entropy
from mmal.models.classifier import ModelOutput, MultimodalClassifier, component_class
from mmal.models.dropout import MaskKeys, counter_dropout
from mmal.models.stacked import stack, unstack, unstackable_reason

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


# The global random state a job's code sees: the CPU generator's state, and the device's when it is a GPU.
RngState = tuple[Tensor, Tensor | None]


def _cuda(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _rng_state(device: torch.device) -> RngState:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: RngState) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _seeded_state(device: torch.device, seed: int, drawn: torch.Generator) -> RngState:
    """The global state after ``torch.manual_seed(seed)`` and the draws that ``drawn`` (a generator of
    ``device`` seeded ``seed``: a member's, in a stack) has made since: a hook's draws (OGM-GE's noise) come
    from the CPU generator on CPU, else from the device's, and nothing else draws from the global generators
    during training (dropout masks are counter-based, ``mmal.models.dropout``)."""
    if device.type == "cuda":
        return torch.Generator().manual_seed(seed).get_state(), drawn.get_state()
    return drawn.get_state(), None


@dataclass(eq=False)
class _Slot:
    """One member of one job in ``Trainer.fit_jobs``: its training seed, its job, whether it is the job's first
    member (whose random draws stand for the job's global generator), and what its training left."""

    member: Member
    seed: int
    job: int
    first: bool
    steps: int = 0
    last_loss: float = float("nan")
    rng_after: RngState | None = None


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
        """Give PyTorch ``num_threads`` CPU threads (a process-wide setting; nothing when None) and its pinned
        kernels (``mmal.kernels.engage``)."""
        kernels.engage()
        if self.num_threads is not None and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def fit(self, model: MultimodalClassifier, data: MultimodalData, idx: Tensor, seed: int) -> MultimodalClassifier:
        """Train ``model`` in place on rows ``idx`` of ``data`` (already on the device); ``seed`` fixes
        batch order, dropout masks (counter-based) and a hook's draws (the global generator). Raises
        ``DivergenceError`` when the weights end non-finite."""
        self.fit_together([Member(model, data, idx)], seed)
        return model

    def fit_together(self, members: Sequence[Member], seed: int) -> None:
        """Train every member as ``fit`` would train it alone with ``seed``, each in place.

        Members whose models stack (``mmal.models.stacked``) and that train on as many rows train as one
        stacked model: one forward and backward pass per step for all of them. On one CPU thread each
        member's weights are then bitwise those of training it alone (``tests/test_stacked.py``), except
        for a batch of 1 or 3 rows and tiny layers (``mmal.models.stacked``), where a batched product may round
        differently (equal in distribution, as with another thread count). The first member's random draws
        are those of the global generator seeded ``seed``, as ``fit`` does, and the global random state
        afterwards is that after fitting the first member alone. Stacking needs every hook ``stackable``
        (one that makes several steps of a batch, ``passes``, also every training row with every modality and
        no modality dropout), members' own hooks with equal keys (a balancing method with the same settings:
        each member keeps its own hook and state), an elementwise optimizer (``STACKED_OPTIMIZERS``) and no
        float16 loss scaling; otherwise, and for models that do not stack, each member trains alone
        (``alone_reason``). Raises ``DivergenceError`` when a member's weights end non-finite."""
        outcome = self.fit_jobs([(members, seed)])[0]
        if isinstance(outcome, DivergenceError):
            raise outcome
        _set_rng_state(self.device, outcome)

    def fit_jobs(self, jobs: Sequence[tuple[Sequence[Member], int]]) -> list[RngState | DivergenceError]:
        """Train the members of several jobs (each: its members and its training seed) as ``fit_together`` would
        train each job's alone; members of different jobs stack too. Leaves the process's random state as it
        was and returns, per job, the global random state that ``fit_together`` would have left (to set before
        the job goes on), or the ``DivergenceError`` of its first diverged member: one job's divergence is
        that job's alone."""
        self.use_threads()
        slots = [_Slot(member, seed, j, k == 0) for j, (members, seed) in enumerate(jobs)
                 for k, member in enumerate(members)]
        for slot in slots:
            slot.member.model.to(self.device).train()
        for group in self._groups(slots):
            with torch.random.fork_rng(devices=_cuda(self.device)):  # every draw from generators of the slots
                self._fit_group(group)
        outcomes: list[RngState | DivergenceError | None] = [None] * len(jobs)
        for slot in slots:  # one check per fit, not per step, and one device sync per member
            member = slot.member
            if outcomes[slot.job] is None and not torch.stack([torch.isfinite(p).all()
                                                               for p in member.model.parameters()]).all():
                outcomes[slot.job] = DivergenceError(
                    f"{member.label}training diverged: non-finite weights after {slot.steps} steps (last loss "
                    f"{slot.last_loss:.4g}); lower trainer.lr={self.lr} or check trainer.weight_decay="
                    f"{self.weight_decay}, trainer.precision={self.precision!r}")
            member.model.eval()
        return [outcome if outcome is not None else slot.rng_after for outcome, slot in
                zip(outcomes, [s for s in slots if s.first])]

    def alone_reason(self, member: Member) -> str | None:
        """Why ``member`` trains alone rather than stacked with others (``fit_jobs``), or None when it stacks."""
        optimizer = component_class(self.optimizer)
        if optimizer not in STACKED_OPTIMIZERS:
            return (f"the optimizer {optimizer.__name__} is not one that stacks "
                    f"({', '.join(sorted(o.__name__ for o in STACKED_OPTIMIZERS))})")
        if self.precision == "16":
            return "trainer.precision=16 scales one loss for all members"
        for hook in [*self.hooks, *member.hooks]:
            name = type(hook).__name__
            if not hook.stackable:
                return f"the training hook {name} does not stack"
            if type(hook).passes is not TrainingHook.passes and (
                    self.modality_dropout > 0 or not bool(member.data.mask[member.rows.to(self.device)].all())):
                return (f"the training hook {name} makes its steps of a batch's rows by modality (passes), which "
                        "stack only when every training row has every modality and trainer.modality_dropout=0")
        return unstackable_reason(member.model)

    def _groups(self, slots: Sequence[_Slot]) -> list[list[_Slot]]:
        """Slots that train as one stacked model: as many rows, the same architecture, own hooks with equal keys
        (the same methods with the same settings, ``TrainingHook.key``), every one stackable (and a trainer that
        allows it); every other slot alone."""
        groups: list[list[_Slot]] = []
        stackable: dict[tuple, list[_Slot]] = {}  # what must match to stack -> its group
        for slot in slots:
            member = slot.member
            if self.alone_reason(member) is not None:
                groups.append([slot])
                continue
            shape = (len(member.rows), tuple((n, p.shape) for n, p in member.model.named_parameters()),
                     tuple(hook.key() for hook in member.hooks))
            if shape in stackable:
                stackable[shape].append(slot)
            else:
                groups.append(stackable.setdefault(shape, [slot]))
        return groups

    def _fit_group(self, group: list[_Slot]) -> None:
        """The one training loop (``fit_jobs``): the members of ``group`` train as one model per step, stacked
        (``mmal.models.stacked``) when there are several, the model itself when there is one; member k's
        weights come out as if it trained alone with its own seed. Sets each slot's steps and last loss, and
        a job's first slot's ``rng_after``.

        Each member's randomness derives from its own seed: its batch order (a generator of its own), its
        dropout and modality dropout masks (counter-based hashes of the seed, ``mmal.models.dropout``: the same
        function alone and stacked, one batched computation for a stack), and a hook's draws, e.g. OGM-GE's
        noise (alone the global generator, seeded; stacked a generator of its own, seeded alike). Every hook
        of the stack is one ``TrainingHook.stacked`` for it: the trainer's own, or the one the members' own hooks
        (equal keys: ``_groups``) make, which keeps each member's state in its own hook."""
        together = len(group) > 1
        members = [slot.member for slot in group]
        own = [[*self.hooks, *m.hooks] for m in members]  # hook i of every member: the trainer's, or its own
        if together:  # a hook that draws (OGM-GE's noise) draws from its member's generator, seeded alike
            generators = [torch.Generator(device=self.device).manual_seed(slot.seed) for slot in group]
            model = stack([m.model for m in members], [slot.seed for slot in group])
            hooks = [same[0].stacked(same, generators) for same in zip(*own)]
            with_dropout = contextlib.nullcontext()
        else:
            model, hooks = members[0].model, own[0]
            torch.manual_seed(group[0].seed)  # a hook's draws come from the global generator (forked: fit_jobs)
            with_dropout = counter_dropout(model, group[0].seed)
        with with_dropout:
            losses, step = self._train(group, model, hooks)
        if together:
            unstack(model, [m.model for m in members])
        last = losses.reshape(-1).tolist()
        for k, slot in enumerate(group):
            slot.steps, slot.last_loss = step, last[k]
            if slot.first:  # where the job's global generator would be after training this member alone
                slot.rng_after = (_seeded_state(self.device, slot.seed, generators[k]) if together
                                  else _rng_state(self.device))

    def _train(self, group: list[_Slot], model: nn.Module, hooks: list[TrainingHook]) -> tuple[Tensor, int]:
        """``_fit_group``'s epochs: ``model`` (stacked when ``group`` has several slots) trained in place with
        ``hooks``; returns the last step's per-member losses and the number of steps."""
        together = len(group) > 1
        members = [slot.member for slot in group]
        orders = [torch.Generator().manual_seed(slot.seed) for slot in group]
        drops = MaskKeys([slot.seed for slot in group], "modality_dropout", self.device)
        opt = self.optimizer(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")  # float16 never stacks
        # The training rows, (n, ...) for a model alone, (K, n, ...) stacked; batches take positions in them.
        def rows_of(tensors: Callable[[Member], Tensor]) -> Tensor:
            taken = [tensors(m)[m.rows.to(self.device)] for m in members]
            return torch.stack(taken) if together else taken[0]
        x = {m: rows_of(lambda member, m=m: member.data.x[m]) for m in members[0].data.x}
        masks, ys = rows_of(lambda member: member.data.mask), rows_of(lambda member: member.data.y)
        n = len(members[0].rows)
        if together:
            lead = torch.arange(len(group), device=self.device)[:, None]
            take = lambda v, pos: v[lead, pos]  # noqa: E731  (member k's rows pos[k])
        else:
            take = lambda v, pos: v[pos[0]]  # noqa: E731
        steps_per_epoch = -(-n // self.batch_size)
        for hook in hooks:
            hook.start(model, opt, self.epochs * steps_per_epoch)
        step = 0
        for epoch in range(self.epochs):
            _start_epoch(hooks, model, epoch, lambda step=step: Batch(x, masks, ys, step))
            order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(self.device)  # (K, n)
            for pos in order.split(self.batch_size, dim=1):
                mask = take(masks, pos)
                if self.modality_dropout > 0:  # member k's draws at this step: one batched hash (mmal.models.dropout)
                    kept = drops.keep(mask.shape[1:] if together else mask.shape, 1 - self.modality_dropout, step)
                    mask = drop_modalities(mask, kept.reshape(mask.shape))
                batch = Batch({m: take(v, pos) for m, v in x.items()}, mask, take(ys, pos), step)
                for hook in hooks:  # a hook may mask modalities out (OPM)
                    batch = hook.masked(model, batch)
                batches = [batch]
                for hook in hooks:  # a hook may make one batch several steps (MLA: one per modality)
                    batches = [part for batch in batches for part in hook.passes(batch)]
                for batch in batches:
                    with self._autocast():
                        out = model(batch.x, batch.mask)
                        losses = fused_cross_entropy(out, batch.y)  # stacked: each member's own, (K,)
                        loss = losses.sum()
                        loss = _with_hook_terms(loss, hooks, model, out, batch)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # hooks see the true gradients (a no-op unless precision=16)
                    for hook in hooks:
                        hook.after_backward(model, out, batch)
                    scaler.step(opt)
                    scaler.update()
                step += 1
        return losses, step

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
