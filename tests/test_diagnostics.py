"""Modality-imbalance diagnostics: exact and present-row Shapley values, the neglect measure against unimodal
references, and controls whose answer is known by construction."""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import compose_config
from PIL import Image

from mmal.data import MultimodalData
from mmal.log import read_jsonl
from mmal.loop import selection_statistics
from mmal.metrics import aubc
from mmal.metrics.modality import present_row_shapley, shapley_values, subsets
from mmal.train import run

BASE = ["logger=none", "dataset.num_val=500", "dataset.num_test=1000", "dataset.bayes_samples=5000",
        "trainer.device=cpu", "al.cycles=0", "trainer.epochs=40"]


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


def test_present_row_shapley_averages_over_the_rows_that_have_the_modality():
    # Subsets in order (), (a,), (b,), (a, b). Row 0 has both and only b helps it: phi = (0, 1). Row 1 lacks
    # b, so b is a null player there (its masks equal those without b) and a helps: phi = (1, 0).
    correct = torch.tensor([[False, False], [False, True], [True, False], [True, True]])
    present = torch.tensor([[True, True], [True, False]])
    assert present_row_shapley(correct, present) == pytest.approx([0.5, 1.0])  # b over all rows would say 0.5
    # Per row the values sum to v(all) - v(none); a modality no row has gets NaN, not 0.
    assert math.isnan(present_row_shapley(correct, torch.tensor([[True, False], [True, False]]))[1])


def test_synergy_fused_model_learns_label_probes_blind_digit_probes_see(tmp_path):
    # b's prototypes sit at distance 3, a's too; the label is (digit_a + digit_b) mod 4.
    record, summary = _final(tmp_path, ["pitfall=synergy", "dataset.num_samples=2000", "al.initial_size=1500"])
    assert record["acc"] > 0.7  # chance 0.25, Bayes ~0.91
    for m in "ab":
        assert summary[f"ground_truth/bayes_acc/{m}"] == pytest.approx(0.25, abs=0.02)
        assert record[f"masked_acc/{m}"] < 0.33
        assert record[f"repr_acc/{m}"] < 0.33  # a label probe cannot tell this model from one at chance
        assert record[f"probe_digit/{m}"] > 0.8  # the digit probe finds each modality's part of the answer
        assert record[f"deficit/{m}"] == 0.0  # a reference on one modality is at chance: nothing to neglect


def test_digit_probe_is_at_chance_on_a_modality_whose_latent_holds_no_digit(tmp_path):
    # b's prototypes collapse to the origin (separation 0): its latent_class still names a digit, its data
    # none of it.
    overrides = ["pitfall=synergy", "pitfall.separation=[3.0,0.0]", "dataset.num_samples=600", "al.initial_size=400"]
    record, _ = _final(tmp_path, overrides)
    assert record["probe_digit/a"] > 0.8
    assert record["probe_digit/b"] < 0.35


def test_pure_noise_modality_has_zero_deficit_not_one(tmp_path):
    # b's class prototypes collapse to the origin (separation 0): Bayes b = chance. The fused model ignores
    # b, as it should: that is not neglect.
    overrides = ["pitfall=none", "pitfall.separation=[2.0,0.0]", "dataset.num_samples=600", "al.initial_size=220"]
    record, summary = _final(tmp_path, overrides)
    assert summary["ground_truth/bayes_acc/b"] == pytest.approx(0.25, abs=0.02)
    assert record["ref_acc/b"] - record["chance/b"] < 0.05
    assert record["deficit/b"] == 0.0 and record["deficit_repr/b"] == 0.0
    assert record["ref_acc/a"] > 0.6 and abs(record["deficit/a"]) < 0.1
    assert record["gap/neglect"] == pytest.approx(max(record["deficit/a"], 0.0))


def test_symmetric_redundant_modalities_have_equal_deficits_and_modality_dropout_removes_them(tmp_path):
    # Two modalities with the same Bayes accuracy (0.82). Masking one is out of distribution for a model
    # never trained without it, which costs both alike (measured deficits 0.12 / 0.07 and 0.02 / 0.02 on
    # seeds 0 and 1); trained with modality dropout, masking is in distribution and the deficits vanish
    # (-0.01 / 0.02 and -0.02 / -0.03).
    common = ["pitfall=none", "dataset.num_samples=600", "al.initial_size=400"]
    plain, _ = _final(tmp_path / "plain", common)
    dropout, summary = _final(tmp_path / "dropout", [*common, "trainer.modality_dropout=0.5"])
    assert plain["acc"] > 0.85 and dropout["acc"] > 0.85
    assert abs(plain["deficit/a"] - plain["deficit/b"]) < 0.1
    assert plain["gap/neglect"] < 0.2 and plain["gap/shapley"] < 0.1
    for m in "ab":
        assert plain[f"ref_acc/{m}"] == pytest.approx(0.8, abs=0.05)
        assert dropout[f"ref_acc/{m}"] == plain[f"ref_acc/{m}"]  # references never see a second modality
        assert abs(dropout[f"deficit/{m}"]) < 0.06
    assert summary["modality_dropout"] == 0.5


def test_hard_modality_is_neglected_at_the_decision_level_not_in_its_encoder(tmp_path):
    # modality_difficulty: b is noisy (Bayes 0.63) and a nearly perfect (0.98). With 220 labels the
    # reference trained on b alone beats the fused model with only b present (measured over 3 seeds:
    # deficit/b 0.38, deficit/a 0.01), while a probe on the fused model's encoder b holds as much as the
    # reference's (deficit_repr/b -0.06).
    record, summary = _final(tmp_path, ["pitfall=modality_difficulty", "al.initial_size=220", "trainer.epochs=100"])
    assert summary["ground_truth/bayes_acc/b"] == pytest.approx(0.63, abs=0.03)
    assert record["deficit/b"] > record["deficit/a"] + 0.15
    assert record["gap/neglect"] == pytest.approx(record["deficit/b"])
    assert record["deficit_repr/b"] < record["deficit/b"] - 0.1
    assert record["shapley/a"] > record["shapley/b"] + 0.3


def test_masked_accuracy_does_not_fall_with_the_missing_rate(tmp_path):
    # b missing in 60 % of rows (every split): on the rows that have b, the fused model's b alone is as good
    # as with b always present; averaged over all rows it would fall to about 0.4 x that plus chance.
    common = ["pitfall=none", "dataset.num_samples=1500", "al.initial_size=1000", "trainer.epochs=30"]
    full, _ = _final(tmp_path / "full", common)
    missing, _ = _final(tmp_path / "missing", [*common, "pitfall.missing_rate=[0.0,0.6]"])
    assert missing["ref_acc/b"] == pytest.approx(full["ref_acc/b"], abs=0.05)
    assert missing["masked_acc/b"] == pytest.approx(full["masked_acc/b"], abs=0.06)
    assert missing["masked_acc/b"] > 0.6  # all-rows masked accuracy would be ~0.4 * 0.78 + 0.6 * 0.25 = 0.46
    assert missing["shapley/b"] == pytest.approx(full["shapley/b"], abs=0.06)


def test_diagnostics_are_consistent_within_a_run(tmp_path):
    cfg = ["pitfall=missing_modality", "dataset.num_samples=400", "al.initial_size=100", "al.cycles=3",
           "al.query_size=50", "model.aux_heads=true", "diagnostics.every=2"]
    summary = run(compose_config([*BASE[:-2], "trainer.epochs=10", *cfg]), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [("ref_acc/a" in r) for r in records] == [True, False, True, True]  # cycles 0, 2 and the last
    assert [r["time/reference"] > 0 for r in records] == [True, False, True, True]
    for r in records:
        assert r["v/all"] == pytest.approx(r["acc"], abs=1e-6)
        assert 0.0 <= r["chance/b"] <= 1.0 and "head_acc/b" in r
    for r in (r for r in records if "ref_acc/a" in r):
        for m in "ab":
            margin = r[f"ref_acc/{m}"] - r[f"chance/{m}"]
            expected = (r[f"ref_acc/{m}"] - r[f"masked_acc/{m}"]) / margin if margin >= 0.05 else 0.0
            assert r[f"deficit/{m}"] == pytest.approx(expected)
        assert r["gap/neglect"] == max(r["deficit/a"], r["deficit/b"])
        assert r["gap/neglect_repr"] == max(r["deficit_repr/a"], r["deficit_repr/b"])
    for r in records[:-1]:
        assert sum(r["query/class_hist"]) == 50
        assert 0.0 <= r["query/missing_frac/b"] <= 1.0 and r["query/missing_frac/a"] == 0.0
    with_refs = [r for r in records if "gap/neglect" in r]
    assert summary["aubc/gap_neglect"] == pytest.approx(
        aubc([r["n_labeled"] for r in with_refs], [r["gap/neglect"] for r in with_refs]))
    for key in ("aubc/gap_neglect_repr", "aubc/gap_shapley", "final/deficit/b", "final/ref_acc/b",
                "final/masked_acc/b"):
        assert key in summary
    assert summary["modality_dropout"] == 0.0
    for name in ("learning_curve.png", "modality_imbalance.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_without_references_the_run_is_the_same_and_logs_no_deficits(tmp_path):
    overrides = ["pitfall=none", "dataset.num_samples=200", "al.initial_size=20", "al.cycles=2", "al.query_size=20",
                 "query=bald", "trainer.epochs=5"]
    run(compose_config([*BASE[:-2], *overrides]), tmp_path / "with")
    summary = run(compose_config([*BASE[:-2], *overrides, "diagnostics.every=0"]), tmp_path / "without")
    with_refs = read_jsonl(tmp_path / "with" / "metrics.jsonl")
    without = read_jsonl(tmp_path / "without" / "metrics.jsonl")
    # The same accuracies and queries (BALD's MC dropout included); tests/test_loop.py checks the forked random
    # state with a strategy that draws from the global generator.
    assert [r["acc"] for r in with_refs] == [r["acc"] for r in without]
    assert [r.get("query/class_hist") for r in with_refs] == [r.get("query/class_hist") for r in without]
    assert not any(k.startswith(("ref_acc", "deficit", "gap/neglect")) for r in without for k in r)
    assert "aubc/gap_neglect" not in summary and "aubc/gap_shapley" in summary


def test_selection_statistics_count_the_queried_batch():
    mask = torch.tensor([[True, True], [True, False], [False, True], [True, False]])
    pool = MultimodalData(x={"a": torch.zeros(4, 1), "b": torch.zeros(4, 1)}, mask=mask,
                          y=torch.tensor([0, 2, 2, 1]), modalities=("a", "b"))
    stats = selection_statistics(pool, torch.tensor([1, 2, 3]), num_classes=4)
    assert stats["query/missing_frac/a"] == pytest.approx(1 / 3)
    assert stats["query/missing_frac/b"] == pytest.approx(2 / 3)
    assert stats["query/class_hist"] == [0, 1, 2, 0]
