"""The AL loop: budget, no re-queried indices, identical start for every strategy, AUBC."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CONF, TINY, compose_config
from hydra.utils import instantiate

from mmal.log import RunLog, read_jsonl
from mmal.loop import initial_labeled, initial_model, run_active_learning
from mmal.metrics import aubc, classification_metrics
from mmal.metrics.references import References
from mmal.protocol import ALProtocol
from mmal.query import QueryStrategy, RandomSampling, Selection
from mmal.train import run


class Recording(QueryStrategy):
    """Delegates to a real strategy and keeps what it picked and what was labeled before."""

    def __init__(self, inner):
        self.inner, self.picks, self.labeled_before, self.statistics = inner, [], [], []

    def select(self, ctx, k):
        self.labeled_before.append(ctx.labeled.clone())
        selection = self.inner.select(ctx, k)
        self.picks.append(selection.indices.clone())
        self.statistics.append(selection.statistics)
        return selection


def _protocol(cfg):
    return ALProtocol(**cfg.al)


def _parts(cfg):
    pitfall = instantiate(cfg.pitfall, _convert_="all")
    data = instantiate(cfg.dataset, _partial_=True, _convert_="all")(pitfall=pitfall)
    model = instantiate(cfg.model, _convert_="all")

    def build():
        return model(shapes=data.shapes, num_classes=data.num_classes, fusion=instantiate(cfg.fusion))
    return data, build, instantiate(cfg.trainer)


@pytest.mark.parametrize("query", sorted(p.stem for p in (CONF / "query").glob("*.yaml")))
def test_queries_are_new_distinct_and_the_budget_adds_up(query, tmp_path):
    # Auxiliary heads and missing modalities, so that every strategy (multimodal ones too) runs as in a study.
    cfg = compose_config([*TINY, f"query={query}", "al.cycles=4", "model.aux_heads=true", "pitfall=missing_modality"])
    if "references" in instantiate(cfg.query).needs:  # it reads the unimodal references: they train every cycle
        cfg = compose_config([*TINY, f"query={query}", "al.cycles=4", "model.aux_heads=true",
                              "pitfall=missing_modality", "diagnostics.every=1"])
    data, build, trainer = _parts(cfg)
    strategy = Recording(instantiate(cfg.query))
    summary = run_active_learning(data, build, trainer, strategy, RunLog(tmp_path), _protocol(cfg), seed=0,
                                  references=instantiate(cfg.diagnostics))

    picked = torch.cat(strategy.picks)
    assert picked.unique().numel() == picked.numel() == 4 * 10
    for before, picks in zip(strategy.labeled_before, strategy.picks):
        assert not before[picks].any()
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["n_labeled"] for r in records] == [20, 30, 40, 50, 60]
    assert summary["n_labeled"] == 20 + 4 * 10
    for key in ("cycle", "acc", "macro_f1", "time/train", "time/select", "time/eval"):
        assert all(key in r for r in records)
    assert summary["aubc/acc"] == pytest.approx(aubc([r["n_labeled"] for r in records], [r["acc"] for r in records]))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_every_strategy_starts_from_the_same_labeled_set_and_weights(tmp_path):
    cfg = compose_config([*TINY, "al.cycles=1"])
    data, build, trainer = _parts(cfg)
    first = {}
    for name, inner in [("random", RandomSampling()), ("entropy", instantiate({"_target_": "mmal.query.Entropy"}))]:
        strategy = Recording(inner)
        run_active_learning(data, build, trainer, strategy, RunLog(tmp_path / name), _protocol(cfg), seed=3,
                            references=References(every=1))
        first[name] = (strategy.labeled_before[0], read_jsonl(tmp_path / name / "metrics.jsonl")[0])
    assert torch.equal(first["random"][0], first["entropy"][0])
    assert first["random"][0].sum() == 20
    # Same start, same training seed: cycle 0 is the same experiment for both strategies, references included.
    assert first["random"][1]["acc"] == first["entropy"][1]["acc"]
    refs = [k for k in first["random"][1] if k.startswith(("ref_acc/", "ref_repr_acc/"))]
    assert len(refs) == 4 and all(first["random"][1][k] == first["entropy"][1][k] for k in refs)
    # Cycle 1 trains on other labeled rows: the references see them too.
    second = {name: read_jsonl(tmp_path / name / "metrics.jsonl")[1] for name in first}
    assert any(second["random"][k] != second["entropy"][k] for k in refs)

    a, b = initial_model(build, seed=3), initial_model(build, seed=3)
    c = initial_model(build, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))
    assert not torch.equal(initial_labeled(300, 20, 3), initial_labeled(300, 20, 4))


def test_references_leave_the_global_random_state_to_the_run(tmp_path):
    # A strategy that draws from torch's global generator (as a user's own might) picks the same samples
    # with or without references: they train under a forked random state. Without the fork, the
    # references' dropout draws would move the generator between the fused training and the query (b is missing
    # for half the rows, so b's reference takes fewer steps than the fused model).
    class GlobalRandom(QueryStrategy):
        def select(self, ctx, k):
            unlabeled = (~ctx.labeled).nonzero().squeeze(1)
            return Selection(unlabeled[torch.randperm(len(unlabeled))[:k].to(unlabeled.device)])

    cfg = compose_config([*TINY, "al.cycles=2", "pitfall=missing_modality"])
    data, build, trainer = _parts(cfg)
    picks = {}
    for every in (0, 1):
        strategy = Recording(GlobalRandom())
        run_active_learning(data, build, trainer, strategy, RunLog(tmp_path / str(every)), _protocol(cfg), seed=0,
                            references=References(every=every))
        picks[every] = torch.cat(strategy.picks)
    assert torch.equal(picks[0], picks[1])


def test_a_strategy_that_requeries_is_stopped(tmp_path):
    class Bad(QueryStrategy):
        def select(self, ctx, k):
            return Selection(ctx.labeled.nonzero().squeeze(1)[:k])

    cfg = compose_config(TINY)
    data, build, trainer = _parts(cfg)
    with pytest.raises(RuntimeError, match="already labeled"):
        run_active_learning(data, build, trainer, Bad(), RunLog(tmp_path), _protocol(cfg), seed=0,
                            references=instantiate(cfg.diagnostics))


def test_run_learns_on_a_tiny_budget(tmp_path):
    cfg = compose_config([*TINY, "trainer.epochs=30", "al.cycles=3", "al.query_size=30"])
    summary = run(cfg, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(records) == 4
    assert records[-1]["acc"] > 0.6  # Bayes accuracy of the default pitfall is ~0.94, chance 0.25
    assert summary["ground_truth/bayes_acc/all"] == pytest.approx(0.94, abs=0.03)


def test_aubc_and_classification_metrics_on_known_values():
    assert aubc([10, 20, 30], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert aubc([10, 20, 50], [0.5, 0.7, 0.9]) == pytest.approx(0.25 * 1.2 / 2 + 0.75 * 1.6 / 2)
    assert aubc([10], [0.4]) == 0.4
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    m = classification_metrics(probs, torch.tensor([0, 1, 1, 1]))
    assert m["acc"] == 0.75
    # F1: class 0 = 2/3 (P=1/2, R=1), class 1 = 0.8 (P=1, R=2/3), class 2 never present nor predicted = 0.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_what_a_strategy_reports_about_its_batch_is_logged_with_it(tmp_path):
    cfg = compose_config([*TINY, "query=gap_split", "al.cycles=3", "model.aux_heads=true", "pitfall=missing_modality"])
    data, build, trainer = _parts(cfg)
    strategy = Recording(instantiate(cfg.query))
    run_active_learning(data, build, trainer, strategy, RunLog(tmp_path), _protocol(cfg), seed=0,
                        references=instantiate(cfg.diagnostics))
    records = read_jsonl(tmp_path / "metrics.jsonl")
    for r in records[:-1]:  # every query round: how gap_split split its batch of 10
        shares = [r["query/share/a"], r["query/share/b"]]
        assert all(round(10 * s) == pytest.approx(10 * s) for s in shares) and sum(shares) <= 1
        assert 0 <= r["query/quality/a"] <= 1 and 0 <= r["query/quality/b"] <= 1
    assert records[-2]["query/share/b"] == strategy.statistics[-1]["query/share/b"]  # the last round's report
    assert not any(k.startswith("query/share") for k in records[-1])  # no query after the last training
