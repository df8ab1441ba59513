"""Several AL runs in one process, in lockstep (``run_in_lockstep``): each run's cycles are a generator
(``mmal.loop.active_learning``) that stops where it needs a training; once every live run has stopped, their
trainings are done together (``Trainer.fit_jobs``: the fused models and references of all runs as one stacked
model per step), and each run goes on to its next training or its end.

Each run keeps its own results, exactly: its randomness derives from its own seed, and the global random
state its code sees is its own (saved when it stops, restored when it goes on), so on one CPU thread its
metrics are bitwise those of running it alone (``tests/test_lockstep.py``). A run that fails (a diverged
training, an error in its own code) ends alone with its error; the others go on.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from mmal.loop import Cycles, Training
from mmal.training import DivergenceError, RngState, Trainer, _rng_state, _set_rng_state


@dataclass
class LockstepRun:
    """One run for ``run_in_lockstep``: its cycles, its trainer, and a key: runs whose keys are equal train
    together (their trainers must train alike: same settings); the key of a run's trainer config does."""

    cycles: Cycles
    trainer: Trainer
    key: Hashable


@dataclass
class _State:
    run: LockstepRun
    rng: RngState
    training: Training | None = None  # what it waits for; None once it has ended
    outcome: Any = None  # its summary, or the exception that ended it


def run_in_lockstep(runs: list[LockstepRun]) -> list[dict[str, Any] | BaseException]:
    """Drive ``runs`` to their ends; returns each run's summary, or the exception it failed with. Every run
    starts from the global random state of the caller, as it would in a process of its own."""
    device = runs[0].trainer.device if runs else torch.device("cpu")
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
            outcomes = group[0].run.trainer.fit_jobs([(s.training.members, s.training.seed) for s in group])
            for state, outcome in zip(group, outcomes):
                if isinstance(outcome, DivergenceError):
                    _advance(state, device, lambda cycles, err=outcome: cycles.throw(err))
                else:
                    state.rng = outcome  # where the run's own training would have left the global generator
                    _advance(state, device, lambda cycles: next(cycles))
    _set_rng_state(device, start)
    return [s.outcome for s in states]


def _advance(state: _State, device: torch.device, step) -> None:
    """Run ``state``'s code up to its next training (or its end) under its own global random state."""
    _set_rng_state(device, state.rng)
    try:
        state.training = step(state.run.cycles)
    except StopIteration as finished:
        state.training, state.outcome = None, finished.value
    except Exception as err:  # this run's failure: the others go on
        state.training, state.outcome = None, err
    state.rng = _rng_state(device)
