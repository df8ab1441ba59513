"""Several AL runs in one process, in lockstep (``run_in_lockstep``): each run's cycles are a generator
(``mmal.loop.active_learning``, or a whole job: ``mmal.train.job_cycles``) that stops where it needs a
training; once every live run has stopped, their trainings are done together (``Trainer.fit_jobs``: the fused
models and references of all runs whose trainers train alike as one stacked model per step), and each run goes
on to its next training or its end.

Each run keeps its own results, exactly: its randomness derives from its own seed, and the global random
state its code sees is its own (saved when it stops, restored when it goes on), so on one CPU thread its
metrics are bitwise those of running it alone (``tests/test_lockstep.py``). A run that fails (a diverged
training, an error in its own code) ends alone with its error; the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from mmal.loop import Cycles, Training
from mmal.training import DivergenceError, RngState, Trainer, _rng_state, _set_rng_state, _Slot

log = logging.getLogger("mmal")


@dataclass
class LockstepRun:
    """One run for ``run_in_lockstep``: its cycles and a key. Runs whose keys are equal train together, so
    their trainers must train alike (the same settings: the key of a run's trainer config does). ``context``
    (optional) is entered whenever the run's own code runs, e.g. to send its log lines to its own file;
    ``name`` (optional) names the run in its log lines (several runs share the console)."""

    cycles: Cycles
    key: Hashable
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    name: str = ""


@dataclass
class _State:
    run: LockstepRun
    rng: RngState
    training: Training | None = None  # what it waits for; None once it has ended
    outcome: Any = None  # what its cycles returned, or the exception that ended them
    said: set[tuple[str, str]] = field(default_factory=set)  # (model, kind of reason) logged as alone


def run_in_lockstep(runs: list[LockstepRun]) -> list[Any]:
    """Drive ``runs`` to their ends; returns what each run's cycles returned, or the exception it failed with.
    Every run starts from the global random state of the caller, as it would in a process of its own."""
    device = next((run.device for run in runs if run.device.type == "cuda"), torch.device("cpu"))
    start = _rng_state(device)
    states = [_State(run, start) for run in runs]
    for state in states:
        _advance(state, device, lambda cycles: next(cycles))
    while True:
        waiting = [s for s in states if s.training is not None]
        if not waiting:
            break
        for key in dict.fromkeys(s.run.key for s in waiting):  # one stacked training per trainer setting
            group = [s for s in waiting if s.run.key == key]
            trainer = group[0].training.trainer
            _say_what_trains_alone(group, trainer)
            began = time.perf_counter()
            outcomes = trainer.fit_jobs([(s.training.members, s.training.seed) for s in group])
            seconds = time.perf_counter() - began  # fit_jobs ends on the weights' check: synchronised
            for state, outcome in zip(group, outcomes):
                state.training.seconds = seconds
                if isinstance(outcome, DivergenceError):
                    _advance(state, device, lambda cycles, err=outcome: cycles.throw(err))
                else:
                    state.rng = outcome  # where the run's own training would have left the global generator
                    _advance(state, device, lambda cycles: next(cycles))
    _set_rng_state(device, start)
    return [s.outcome for s in states]


def _say_what_trains_alone(group: list[_State], trainer: Trainer) -> None:
    """Log which models of ``group``'s trainings (about to train together, ``Trainer.fit_jobs``) fall back to
    training alone, and why, in each run's context and naming the run, each model and reason once per run: a
    model that does not stack (``Trainer.alone_reason``), or a unimodal reference whose rows differ from its
    fused model's (its modality is missing from some labeled rows) and that no other model trains on as many."""
    # The stacks fit_jobs will make (as it makes them), to tell which models end up alone.
    slots = [_Slot(member, s.training.seed, j, k == 0) for j, s in enumerate(group)
             for k, member in enumerate(s.training.members)]
    alone = {id(g[0].member) for g in trainer._groups(slots) if len(g) == 1}
    for state in group:
        fused = state.training.members[0]
        new: dict[str, list[str]] = {}  # reason -> the models it newly names
        for member in state.training.members:
            what = member.label.removesuffix(": ") or "the fused model"
            reason = trainer.alone_reason(member)
            kind = reason
            if reason is None and member is not fused and id(member) in alone and len(member.rows) != len(fused.rows):
                kind = "rows"  # once per run, though the counts change from cycle to cycle
                reason = (f"its modality is missing from {len(fused.rows) - len(member.rows)} of the "
                          f"{len(fused.rows)} labeled rows: it trains on {len(member.rows)} rows, the fused model "
                          "on all of them, and no model it could stack with trains on as many")
            if reason is not None and (what, kind) not in state.said:
                state.said.add((what, kind))
                new.setdefault(reason, []).append(what)
        if new:
            with state.run.context():
                for reason, models in new.items():
                    log.info("%strains alone, not stacked with other models: %s: %s",
                             f"{state.run.name}: " if state.run.name else "", ", ".join(models), reason)


def _advance(state: _State, device: torch.device, step: Callable[[Cycles], Training]) -> None:
    """Run ``state``'s code up to its next training (or its end) under its own global random state."""
    _set_rng_state(device, state.rng)
    with state.run.context():
        try:
            state.training = step(state.run.cycles)
        except StopIteration as finished:
            state.training, state.outcome = None, finished.value
        except Exception as err:  # this run's failure: the others go on
            state.training, state.outcome = None, err
    state.rng = _rng_state(device)
