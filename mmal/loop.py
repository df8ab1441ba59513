"""The active-learning cycle: train -> evaluate -> query -> reveal labels (docs/design.md, "AL protocol").

Fair by construction: for a seed, the initial labeled set, the initial weights, each cycle's training
randomness and each cycle's query generator are derived from the seed alone, so no strategy can change
another strategy's randomness.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmal import kernels
from mmal.balance import BalanceMethod
from mmal.checkpoint import ALState, save_state
from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.log import RunLog
from mmal.metrics import aubc_of, names
from mmal.metrics.modality import evaluate_subsets, modality_diagnostics
from mmal.metrics.references import References
from mmal.models.classifier import MultimodalClassifier
from mmal.plots import save_plots
from mmal.protocol import ALProtocol
from mmal.query.base import QueryContext, QueryStrategy
from mmal.seeding import derive_seed
from mmal.training import DivergenceError, Member, Trainer


def initial_labeled(pool_size: int, initial_size: int, seed: int) -> Tensor:
    """(N,) bool mask of the initial labeled set: uniform without replacement, from the seed only."""
    g = torch.Generator().manual_seed(derive_seed(seed, "initial_set"))
    labeled = torch.zeros(pool_size, dtype=torch.bool)
    labeled[torch.randperm(pool_size, generator=g)[:initial_size]] = True
    return labeled


def initial_model(build_model: Callable[[], MultimodalClassifier], seed: int) -> MultimodalClassifier:
    """The model with the seed's initial weights (identical for every strategy)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "initial_weights"))
        return build_model()


@dataclass
class Training:
    """What a cycle asks to have trained before it goes on: its members (the fused model first, then the
    references that are due; with a method that learns from the references, UMT, the references alone and then
    the fused model alone, two trainings), with the cycle's training seed, by its trainer (``Trainer.fit_together``).
    ``seconds``: how long the training call that trained them took (set by whoever trained them; stacked with
    other runs' members, the whole stack's time)."""

    members: list[Member]
    seed: int
    trainer: Trainer
    seconds: float = 0.0


Cycles = Generator[Training, None, Any]  # returns what the run returns (``active_learning``: its summary)


def train_through(cycles: Cycles) -> Any:
    """Drive ``cycles`` alone to their end, each training by its trainer's ``fit_together``; returns what they
    return. A diverged training is thrown back in where it was asked for (the cycle names itself)."""
    to_send: DivergenceError | None = None
    while True:
        try:  # a resumed run whose last training is done yields nothing
            training = cycles.throw(to_send) if to_send else next(cycles)
        except StopIteration as finished:
            return finished.value
        to_send = None
        start = time.perf_counter()
        try:
            training.trainer.fit_together(training.members, training.seed)  # ends on the weights: synchronised
        except DivergenceError as err:
            to_send = err
        training.seconds = time.perf_counter() - start


def run_active_learning(
    data: MultimodalDataset,
    build_model: Callable[[], MultimodalClassifier],
    trainer: Trainer,
    strategy: QueryStrategy,
    run_log: RunLog,
    protocol: ALProtocol,
    seed: int,
    references: References | None = None,
    balance: BalanceMethod | None = None,
    resume: ALState | None = None,
    fingerprint: str = "",
    plots: bool = True,
) -> dict[str, Any]:
    """Run ``protocol.cycles`` query rounds (``cycles + 1`` trainings) and return the summary: the cycles of
    ``active_learning``, alone (``train_through``)."""
    return train_through(active_learning(data, build_model, trainer, strategy, run_log, protocol, seed, references,
                                         balance, resume, fingerprint, plots))


def active_learning(
    data: MultimodalDataset,
    build_model: Callable[[], MultimodalClassifier],
    trainer: Trainer,
    strategy: QueryStrategy,
    run_log: RunLog,
    protocol: ALProtocol,
    seed: int,
    references: References | None = None,
    balance: BalanceMethod | None = None,
    resume: ALState | None = None,
    fingerprint: str = "",
    plots: bool = True,
) -> Cycles:
    """The AL cycles of one run, as a generator that yields each cycle's ``Training`` and goes on once it has
    been trained (by ``train_through``, or with other runs' trainings by ``mmal.lockstep``); returns the
    summary. A ``DivergenceError`` thrown in at a yield fails the run, naming the cycle.

    The budget must fit in the pool (``mmal.config.check_budget``). With ``warm_start=False`` every
    cycle retrains from the same initial weights. After each cycle the AL state is saved in the run
    directory; ``resume`` (a saved state, its records already in ``run_log``) continues after its last
    complete cycle. Every cycle's randomness derives from the seed and the cycle number, so a resumed run
    gives the same results as an uninterrupted one. ``references`` (default ``References()``: every cycle)
    trains the unimodal references that the neglect measure compares the fused model with, from the same
    initial weights, labeled rows and training seed. ``balance`` (``mmal.balance``) trains the fused model
    only, never its references; its state over each cycle's training is logged with the cycle. ``plots``:
    draw the run's PNG figures at the end (``mmal.plots``).
    """
    references = References() if references is None else references
    initial_size, query_size, cycles = protocol.initial_size, protocol.query_size, protocol.cycles
    device = trainer.device
    data = data.to(device)
    labeled = initial_labeled(len(data.pool), initial_size, seed).to(device)
    model = initial_model(build_model, seed).to(device)
    initial = copy.deepcopy(model)  # the initial weights, for cold starts and the references
    records = run_log.records
    first_cycle = 0
    state = resume  # a run killed after its last cycle's save has no cycle left to run, only the finish
    if resume is not None:
        labeled = resume.labeled.to(device)
        model.load_state_dict(resume.model)
        first_cycle = resume.cycle + 1

    for cycle in range(first_cycle, cycles + 1):
        # Train on the labeled set.
        if not protocol.warm_start:
            model.load_state_dict(initial.state_dict())
        # With the unimodal references of the neglect measure when due: the same rows, seed and initial weights.
        rows = labeled.nonzero().squeeze(1)
        train_seed = derive_seed(seed, "train", cycle)
        due = references.due(cycle, cycles)
        unimodal = references.members(initial, data, rows) if due else {}
        with _naming_cycle(cycle):
            fused = Member(model, data.pool, rows, hooks=(balance,) if balance else ())
            if balance is not None and balance.teaches_from_references:  # UMT: the references train first, as teachers
                teachers = Training(list(unimodal.values()), train_seed, trainer)
                yield teachers
                balance.teach({m: member.model for m, member in unimodal.items()})
                training = Training([fused], train_seed, trainer)
                yield training
                training.seconds += teachers.seconds
            else:
                training = Training([fused, *unimodal.values()], train_seed, trainer)
                yield training
        record: dict[str, Any] = {names.CYCLE: cycle, names.N_LABELED: int(labeled.sum()),
                                  names.TIME_TRAIN: training.seconds}
        if balance:
            record.update({names.BALANCE_PREFIX + key: value for key, value in balance.state().items()})

        # Evaluate on the fixed test set under every modality subset, then the modality diagnostics.
        start = time.perf_counter()
        evaluation = evaluate_subsets(trainer, model, data.test)
        record[names.TIME_EVAL] = _since(start, device)
        start = time.perf_counter()
        diagnostics = modality_diagnostics(trainer, model, data, rows, evaluation)
        record.update(diagnostics)
        record[names.TIME_DIAGNOSE] = _since(start, device)
        # Unimodal references on the same labeled rows: their ensemble and each modality against the fused model.
        record[names.TIME_REFERENCE] = 0.0
        if due:
            start = time.perf_counter()
            record.update(references.measure(trainer, unimodal, data, evaluation, diagnostics))
            record[names.TIME_REFERENCE] = _since(start, device)

        # Query the next batch and reveal its labels (no query after the last training).
        record[names.TIME_SELECT] = 0.0
        if cycle < cycles:
            start = time.perf_counter()
            joined = frozenset(m for m in unimodal if record.get(names.per_modality(names.ENSEMBLE_MEMBER, m)))
            ctx = QueryContext(model, trainer, data.pool, labeled,
                               torch.Generator().manual_seed(derive_seed(seed, "query", cycle)),
                               {m: member.model for m, member in unimodal.items()}, joined)
            selection = strategy.select(ctx, query_size)
            record[names.TIME_SELECT] = _since(start, device)
            picked = selection.indices
            _check_selection(picked, labeled, query_size, strategy)
            labeled[picked] = True
            record.update(selection_statistics(data.pool, picked, data.num_classes), **selection.statistics)
        run_log.cycle(record, cycles)
        state = ALState(cycle, labeled.cpu(), {k: v.cpu() for k, v in model.state_dict().items()}, records,
                        fingerprint, run_log.sink.run_id)
        save_state(run_log.run_dir, state)

    summary = summarise(records, data.ground_truth)
    summary[names.MODALITY_DROPOUT] = trainer.modality_dropout
    summary[names.MASKED_IN_DISTRIBUTION] = model.masked_exact or trainer.modality_dropout > 0
    summary[names.CPU_KERNELS] = kernels.engage()
    if plots:
        save_plots(records, data.ground_truth, run_log.run_dir)
    run_log.finish(summary)
    save_state(run_log.run_dir, dataclasses.replace(state, summary=summary))
    return summary


def selection_statistics(pool: MultimodalData, picked: Tensor, num_classes: int) -> dict[str, Any]:
    """What the queried batch looks like: share missing each modality, and its class histogram."""
    missing = (~pool.mask[picked]).float().mean(0).tolist()  # (M,)
    stats: dict[str, Any] = {names.per_modality(names.QUERY_MISSING_FRAC, m): missing[i]
                             for i, m in enumerate(pool.modalities)}
    stats[names.QUERY_CLASS_HIST] = pool.y[picked].bincount(minlength=num_classes).tolist()
    return stats


def summarise(records: list[dict[str, Any]], ground_truth: dict[str, float]) -> dict[str, Any]:
    """Final value of every per-cycle metric, AUBC of accuracy, macro-F1 and the imbalance numbers, total phase
    times."""
    last = records[-1]
    summary: dict[str, Any] = {names.N_LABELED: last[names.N_LABELED], names.CYCLES: len(records) - 1}
    for key, value in last.items():
        if isinstance(value, float) and not key.startswith(names.NOT_SUMMARISED):
            summary[names.FINAL_PREFIX + key] = value
    for key in names.AUBC_METRICS:  # over the cycles that have the metric (references may skip some)
        if any(key in r for r in records):
            summary[names.aubc_key(key)] = aubc_of(records, key)
    for key in [k for k in last if k.startswith(names.TIME_PREFIX)]:
        summary[names.TOTAL_PREFIX + key] = sum(r[key] for r in records)
    summary.update({names.GROUND_TRUTH_PREFIX + k: v for k, v in ground_truth.items()})
    return summary


@contextlib.contextmanager
def _naming_cycle(cycle: int) -> Iterator[None]:
    """A diverged training says in which cycle it happened."""
    try:
        yield
    except DivergenceError as err:
        raise DivergenceError(f"cycle {cycle}: {err}") from None


def _since(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()  # kernels run asynchronously: time them to completion
    return time.perf_counter() - start


def _check_selection(picked: Tensor, labeled: Tensor, k: int, strategy: QueryStrategy) -> None:
    name = type(strategy).__name__
    if picked.shape != (k,):
        raise RuntimeError(f"{name} returned {tuple(picked.shape)} indices, expected ({k},)")
    if picked.unique().numel() != k:
        raise RuntimeError(f"{name} returned duplicate indices")
    if labeled[picked].any():
        raise RuntimeError(f"{name} queried already labeled indices")
