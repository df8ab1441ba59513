"""Modality-gap diagnostics: exact Shapley values, and each pitfall shows the gap it should."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import compose_config
from PIL import Image

from mmal.data import MultimodalData
from mmal.log import read_jsonl
from mmal.loop import selection_statistics
from mmal.metrics.modality import shapley_values, subsets
from mmal.train import run

BASE = ["dataset.num_val=500", "dataset.num_test=1000", "dataset.bayes_samples=5000", "trainer.device=cpu",
        "al.cycles=0", "trainer.epochs=40"]


def _final(tmp_path, overrides):
    summary = run(compose_config([*BASE, *overrides]), tmp_path)
    return read_jsonl(tmp_path / "metrics.jsonl")[-1], summary


def test_shapley_values_of_a_hand_made_game():
    # Player 2 adds nothing to any coalition (a null player); players 0, 1 form the game
    # v(0) = 0.3, v(1) = 0.2, v(01) = 0.6: phi_0 = (0.3 + 0.4) / 2, phi_1 = (0.2 + 0.3) / 2.
    v = {(): 0.0, (0,): 0.3, (1,): 0.2, (2,): 0.0, (0, 1): 0.6, (0, 2): 0.3, (1, 2): 0.2, (0, 1, 2): 0.6}
    assert shapley_values(v, 3) == pytest.approx([0.35, 0.25, 0.0])


def test_shapley_values_sum_to_the_grand_coalition_and_treat_symmetric_players_alike():
    rng = random.Random(0)
    v = {s: rng.random() for s in subsets(4)}
    phi = shapley_values(v, 4)
    assert sum(phi) == pytest.approx(v[(0, 1, 2, 3)] - v[()])

    # Make players 1 and 3 interchangeable: a coalition with 3 but not 1 is worth the one with 1 instead.
    def swap(s):
        return tuple(sorted(set(s) - {3} | {1})) if 3 in s and 1 not in s else s
    phi = shapley_values({s: v[swap(s)] for s in subsets(4)}, 4)
    assert phi[1] == pytest.approx(phi[3])
    assert phi[0] != pytest.approx(phi[1])


def test_synergy_fused_model_well_above_chance_every_modality_alone_at_chance(tmp_path):
    record, summary = _final(tmp_path, ["pitfall=synergy", "dataset.num_samples=2000", "al.initial_size=1500"])
    assert record["acc"] > 0.7  # chance 0.25, Bayes ~0.91
    for m in "ab":
        assert record[f"unimodal_acc/{m}"] < 0.33
        assert record[f"probe_acc/{m}"] < 0.33
        assert summary[f"ground_truth/bayes_acc/{m}"] == pytest.approx(0.25, abs=0.02)


def test_redundant_balanced_data_has_small_gaps(tmp_path):
    record, _ = _final(tmp_path, ["pitfall=none", "dataset.num_samples=600", "al.initial_size=400"])
    assert record["acc"] > 0.85
    assert record["gap/unimodal"] < 0.1
    assert record["gap/probe"] < 0.1
    assert record["gap/shapley"] < 0.1


def test_difficulty_easy_modality_has_the_larger_shapley_value(tmp_path):
    overrides = ["pitfall=modality_difficulty", "dataset.num_samples=600", "al.initial_size=400"]
    record, summary = _final(tmp_path, overrides)
    assert record["shapley/a"] > record["shapley/b"] + 0.3
    assert record["probe_acc/a"] > record["probe_acc/b"] + 0.2
    assert record["gap/probe"] > 0.2
    # The hard modality's Bayes accuracy is ~0.63, not reached by its probe: that shortfall is its neglect.
    assert summary["ground_truth/bayes_acc/b"] == pytest.approx(0.63, abs=0.03)
    assert record["neglect/b"] > record["neglect/a"]
    # A probe on the *untrained* encoder of the easy modality already finds most of its class information.
    assert summary["untrained/probe_acc/a"] > 0.8
    assert record["probe_gain/a"] == pytest.approx(record["probe_acc/a"] - summary["untrained/probe_acc/a"])


def test_diagnostics_are_consistent_within_a_run(tmp_path):
    cfg = ["pitfall=missing_modality", "dataset.num_samples=400", "al.initial_size=100", "al.cycles=2",
           "al.query_size=50", "model.aux_heads=true"]
    summary = run(compose_config([*BASE[:-2], "trainer.epochs=10", *cfg]), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    for r in records:
        assert r["shapley/a"] + r["shapley/b"] == pytest.approx(r["v/all"] - r["v/none"], abs=1e-6)
        assert r["v/all"] == pytest.approx(r["acc"], abs=1e-6)
        assert r["gap/unimodal"] == pytest.approx(abs(r["unimodal_acc/a"] - r["unimodal_acc/b"]), abs=1e-6)
        assert r["neglect/a"] == pytest.approx(summary["ground_truth/bayes_acc/a"] - r["probe_acc/a"])
        assert r["probe_gain/b"] == pytest.approx(r["probe_acc/b"] - summary["untrained/probe_acc/b"])
    for r in records[:-1]:
        assert sum(r["query/class_hist"]) == 50
        assert 0.0 <= r["query/missing_frac/b"] <= 1.0 and r["query/missing_frac/a"] == 0.0
    for key in ("aubc/gap_probe", "aubc/gap_shapley", "aubc/gap_unimodal", "final/gap/probe", "final/probe_acc/b"):
        assert key in summary
    for name in ("learning_curve.png", "modality_gap.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_selection_statistics_count_the_queried_batch():
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, False]])
    pool = MultimodalData(x={"a": torch.zeros(4, 1), "b": torch.zeros(4, 1)}, mask=mask,
                          y=torch.tensor([0, 2, 2, 1]), modalities=("a", "b"))
    stats = selection_statistics(pool, torch.tensor([1, 2, 3]), num_classes=4)
    assert stats["query/missing_frac/a"] == pytest.approx(1 / 3)
    assert stats["query/missing_frac/b"] == pytest.approx(2 / 3)
    assert stats["query/class_hist"] == [0, 1, 2, 0]
