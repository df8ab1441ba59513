"""Runs in lockstep (mmal.lockstep): several AL runs in one process, their trainings stacked across runs, give
each run's metrics bitwise as running it alone; a failing run fails alone."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import compose_config

from mmal.experiment import prepare
from mmal.lockstep import LockstepRun, run_in_lockstep
from mmal.log import RunLog
from mmal.loop import active_learning, run_active_learning
from mmal.training import DivergenceError

SMALL = ["dataset.num_samples=300", "dataset.num_val=50", "dataset.num_test=200", "dataset.bayes_samples=1000",
         "al.initial_size=20", "al.query_size=10", "al.cycles=2", "trainer.epochs=4", "trainer.device=cpu",
         "logger=none"]


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise equality is promised on one thread (a batched product may split its work otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _arguments(overrides, run_dir):
    cfg = compose_config([*SMALL, *overrides])
    exp = prepare(cfg)
    return (exp.data, exp.build_model, exp.trainer, exp.strategy, RunLog(run_dir), exp.protocol, cfg.seed,
            exp.references, exp.balance)


def _records(run_dir):
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# Two strategies (bald: MC dropout from the global generator), two seeds, a balancing method (the fused models of
# its two runs train as one stack of their own, OGM-GE's noise from each run's own generator).
BALD = ["query=bald", "query.mc_samples=3"]
GRID = [["query=random", "seed=0"], [*BALD, "seed=1"], [*BALD, "seed=0", "balance=ogm_ge"],
        ["query=random", "seed=1", "balance=ogm_ge"]]


def test_runs_in_lockstep_give_the_metrics_of_each_run_alone(tmp_path):
    grid = [[*job, "model.encoder.dropout=0.2"] for job in GRID]  # bald: MC dropout from the global generator
    alone = []
    for i, job in enumerate(grid):
        alone.append(run_active_learning(*_arguments(job, tmp_path / f"alone{i}")))
    runs = []
    for i, job in enumerate(grid):
        args = _arguments(job, tmp_path / f"lockstep{i}")
        runs.append(LockstepRun(active_learning(*args), key="same trainer"))
    together = run_in_lockstep(runs)
    for i, (a, b) in enumerate(zip(alone, together)):
        assert _records(tmp_path / f"alone{i}") == _records(tmp_path / f"lockstep{i}"), grid[i]
        assert {k: v for k, v in a.items() if "time/" not in k} == {k: v for k, v in b.items() if "time/" not in k}
    # and the runs did differ: seeds and strategies are not one run four times
    assert len({json.dumps(_records(tmp_path / f"alone{i}")) for i in range(len(grid))}) == len(grid)


def test_a_run_that_diverges_fails_alone_and_the_others_finish(tmp_path):
    jobs = [["seed=0"], ["seed=1", "trainer.lr=1e6"], ["seed=2"]]
    runs = []
    for i, job in enumerate(jobs):
        args = _arguments(job, tmp_path / f"run{i}")
        runs.append(LockstepRun(active_learning(*args), key=i == 1))  # the bad lr trains apart
    outcomes = run_in_lockstep(runs)
    assert isinstance(outcomes[1], DivergenceError) and str(outcomes[1]).startswith("cycle 0: training diverged")
    assert all(isinstance(outcomes[i], dict) and outcomes[i]["cycles"] == 2 for i in (0, 2))
    assert len(_records(tmp_path / "run0")) == 3 and not (tmp_path / "run1" / "metrics.jsonl").read_text()


def test_every_model_that_trains_alone_is_logged_once_naming_its_run_and_why(tmp_path, caplog):
    """Two runs that fall back for different reasons (an optimizer that does not stack; MLA with modality
    dropout), one whose reference of b trains on other rows than its fused model from cycle 1 on (b goes missing
    from 5 % of the rows; seed 11's initial rows all have it), and a plain run that stacks with it."""
    jobs = {"nadam": ["trainer.optimizer._target_=torch.optim.NAdam"],
            "mla": ["balance=mla", "fusion=shared", "trainer.modality_dropout=0.2"],
            "missing": ["pitfall=missing_modality", "pitfall.missing_rate=[0.0,0.05]", "query=random", "seed=11"],
            "plain": ["seed=0"]}
    runs = [LockstepRun(active_learning(*_arguments(job, tmp_path / name)), key=name if name in ("nadam", "mla")
                        else "plain", name=name) for name, job in jobs.items()]
    with caplog.at_level(logging.INFO, logger="mmal"):
        outcomes = run_in_lockstep(runs)
    assert all(isinstance(outcome, dict) for outcome in outcomes)
    alone = [r.getMessage() for r in caplog.records if "trains alone" in r.getMessage()]
    prefix = "trains alone, not stacked with other models: "
    assert alone == [
        f"nadam: {prefix}the fused model, the unimodal reference of a, the unimodal reference of b: the optimizer "
        "NAdam is not one that stacks (Adagrad, Adam, AdamW, RMSprop, SGD)",
        f"mla: {prefix}the fused model: the training hook MLA makes its steps of a batch's rows by modality "
        "(passes), which stack only when every training row has every modality and trainer.modality_dropout=0",
        f"missing: {prefix}the unimodal reference of b: its modality is missing from 1 of the 30 labeled rows: it "
        "trains on 29 rows, the fused model on all of them, and no model it could stack with trains on as many",
    ]  # each once, though every cycle trains them so; the missing run's from cycle 1, its first training stacked
