"""The synthetic generator: each pitfall shows in the data, ground truth is right, seeds reproduce."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate, stats
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from mmal.data import Pitfall, make_synthetic
from mmal.data.missing import draw_missing_mask
from mmal.errors import ConfigError


def _probe_acc(data, modalities, model=None):
    """Test accuracy of a scikit-learn classifier fit on the pool, using only ``modalities``."""
    def features(split):
        return torch.cat([split.x[m] for m in modalities], dim=1).numpy()
    model = model or LogisticRegression(max_iter=2000)
    model.fit(features(data.pool), data.pool.y.numpy())
    return model.score(features(data.test), data.test.y.numpy())


def _analytic_bayes(snr: float, num_classes: int) -> float:
    """Bayes accuracy of K equiprobable isotropic Gaussians at orthonormal prototypes * separation."""
    f = lambda t: stats.norm.pdf(t) * stats.norm.cdf(t + snr) ** (num_classes - 1)  # noqa: E731
    return integrate.quad(f, -math.inf, math.inf)[0]


def test_same_seed_same_data_bit_for_bit_and_other_seed_differs():
    pitfall = Pitfall(interaction={"redundancy": 1, "synergy": 1}, missing_rate=[0.2, 0.3], missing_mechanism="class")
    a, b = make_synthetic(pitfall, seed=7, num_samples=200), make_synthetic(pitfall, seed=7, num_samples=200)
    c = make_synthetic(pitfall, seed=8, num_samples=200)
    for split in ("pool", "val", "test"):
        da, db = getattr(a, split), getattr(b, split)
        for m in da.modalities:
            assert torch.equal(da.x[m], db.x[m])
        assert torch.equal(da.mask, db.mask) and torch.equal(da.y, db.y)
        assert torch.equal(da.informative, db.informative)
    assert a.ground_truth == b.ground_truth
    assert not torch.equal(a.pool.x["a"], c.pool.x["a"])


def test_bayes_accuracy_matches_the_closed_form_for_redundant_gaussians():
    # Redundant modalities with separation s and noise sigma: one modality has SNR s/sigma, both
    # together observe the same prototype twice, i.e. SNR sqrt(2) * s / sigma.
    data = make_synthetic(Pitfall(separation=2.0, noise=1.0), seed=0, num_samples=50, bayes_samples=40000)
    one, both = _analytic_bayes(2.0, 4), _analytic_bayes(2.0 * math.sqrt(2), 4)
    assert one == pytest.approx(0.823, abs=0.002)  # the integral itself, so a wrong formula shows
    assert data.ground_truth["bayes_acc/a"] == pytest.approx(one, abs=0.008)
    assert data.ground_truth["bayes_acc/b"] == pytest.approx(one, abs=0.008)
    assert data.ground_truth["bayes_acc/all"] == pytest.approx(both, abs=0.008)


def test_synergy_each_modality_alone_at_chance_both_together_well_above():
    data = make_synthetic(Pitfall(interaction={"synergy": 1.0}, separation=3.0), seed=0, num_samples=3000,
                          num_test=2000, bayes_samples=20000)
    gt = data.ground_truth
    assert gt["bayes_acc/a"] == pytest.approx(0.25, abs=0.01)
    assert gt["bayes_acc/b"] == pytest.approx(0.25, abs=0.01)
    assert gt["bayes_acc/all"] > 0.85
    mlp = lambda: MLPClassifier((128,), max_iter=600, random_state=0)  # noqa: E731
    assert _probe_acc(data, ["a"], mlp()) < 0.31
    assert _probe_acc(data, ["b"], mlp()) < 0.31
    assert _probe_acc(data, ["a", "b"], mlp()) > 0.6
    assert not data.pool.informative.any()


def test_redundancy_each_modality_alone_well_above_chance():
    data = make_synthetic(Pitfall(separation=4.0), seed=1, num_samples=1000)
    assert data.ground_truth["bayes_acc/a"] > 0.98
    assert _probe_acc(data, ["a"]) > 0.85
    assert _probe_acc(data, ["b"]) > 0.85
    assert data.pool.informative.all()


def test_uniqueness_one_informative_modality_per_sample():
    data = make_synthetic(Pitfall(interaction={"uniqueness": 1.0}, separation=3.0, unique_probs=[0.8, 0.2]),
                          seed=2, num_samples=4000)
    assert torch.equal(data.pool.informative.sum(1), torch.ones(4000, dtype=torch.long))
    assert data.pool.informative[:, 0].float().mean().item() == pytest.approx(0.8, abs=0.02)
    gt = data.ground_truth
    assert gt["bayes_acc/a"] > gt["bayes_acc/b"] + 0.2  # a is informative four times as often
    assert gt["bayes_acc/all"] > gt["bayes_acc/a"] + 0.05


def test_difficulty_noisy_modality_is_clearly_worse():
    data = make_synthetic(Pitfall(noise=[0.7, 2.0], separation=2.5, depth=[1, 3]), seed=3, num_samples=2000)
    gt = data.ground_truth
    assert gt["bayes_acc/a"] > 0.95 and gt["bayes_acc/b"] < 0.7
    assert _probe_acc(data, ["a"]) > _probe_acc(data, ["b"]) + 0.2


@pytest.mark.parametrize("mechanism", ["mcar", "class", "difficulty"])
def test_missing_rate_matches_config_and_mask_matches_zero_rows(mechanism):
    rates = [0.3, 0.1]
    data = make_synthetic(Pitfall(missing_rate=rates, missing_mechanism=mechanism), seed=4, num_samples=20000,
                          num_test=500, bayes_samples=100)
    pool = data.pool
    realised = 1 - pool.mask.float().mean(0)
    # Standard error sqrt(r(1-r)/n) <= 0.0033; allow 4 of them.
    assert realised.tolist() == pytest.approx(rates, abs=0.014)
    for i, m in enumerate(pool.modalities):
        zero_rows = (pool.x[m] == 0).all(1)
        assert torch.equal(zero_rows, ~pool.mask[:, i])


def test_class_mechanism_tilts_the_rate_over_classes():
    data = make_synthetic(Pitfall(missing_rate=0.3, missing_mechanism="class"), seed=5, num_samples=20000,
                          bayes_samples=100)
    pool = data.pool
    per_class = torch.stack([1 - pool.mask[pool.y == c].float().mean(0) for c in range(4)])  # (K, M)
    # Modality a loses the high classes, b the low ones: rate r * (1 + g), g from -1 to 1 over classes.
    assert per_class[:, 0].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6], abs=0.03)
    assert per_class[:, 1].tolist() == pytest.approx([0.6, 0.4, 0.2, 0.0], abs=0.03)


def test_difficulty_mechanism_drops_hard_samples_more_often():
    g = torch.Generator().manual_seed(0)
    hardness = torch.rand(10000, 2, generator=g, dtype=torch.float64)
    mask = draw_missing_mask(torch.zeros(10000, dtype=torch.long), [0.4, 0.4], "difficulty", g, 4, 1.0, hardness)
    hard = hardness > 0.5
    assert (~mask[hard]).float().mean() > 0.55 and (~mask[~hard]).float().mean() < 0.25


def test_missing_splits_leaves_other_splits_complete():
    data = make_synthetic(Pitfall(missing_rate=0.5, missing_splits=["pool"]), seed=6, num_samples=500,
                          bayes_samples=100)
    assert not data.pool.mask.all()
    assert data.val.mask.all() and data.test.mask.all()


def test_sizes_that_cannot_fit_in_memory_are_refused_before_generating(monkeypatch):
    monkeypatch.setattr("mmal.data.memory.available_memory", lambda: 2**30)  # 1 GiB
    # 1,002,500 rows x 2 modalities x (8 latent x 8 B + 32 x 16 B + 32 x 8 B) + Bayes 20,000 x 2 x 8 x 24 B
    with pytest.raises(ConfigError, match=r"dataset.num_samples=1000000: the synthetic data would take about "
                                          r"1.6 GiB, more than the 1.0 GiB of memory available"):
        make_synthetic(Pitfall(), seed=0, num_samples=1_000_000)
    with pytest.raises(ConfigError, match=r"dataset.bayes_samples=10000000: the synthetic data would take about"):
        make_synthetic(Pitfall(), seed=0, num_samples=200, bayes_samples=10_000_000)
    assert len(make_synthetic(Pitfall(), seed=0, num_samples=200).pool) == 200


def test_any_number_of_modalities_and_class_weights():
    data = make_synthetic(Pitfall(interaction={"synergy": 1.0}, separation=3.0), seed=0, num_samples=4000,
                          num_classes=3, modalities={"a": 16, "b": 8, "c": 12}, class_weights=[0.6, 0.2, 0.2])
    assert data.dims == {"a": 16, "b": 8, "c": 12}
    assert data.pool.y.bincount().float().div(4000).tolist() == pytest.approx([0.6, 0.2, 0.2], abs=0.03)
    # Synergy over three modalities: no single one is informative; majority class is the best guess.
    for m in "abc":
        assert data.ground_truth[f"bayes_acc/{m}"] == pytest.approx(0.6, abs=0.01)
    assert data.ground_truth["bayes_acc/all"] > 0.8


def test_bayes_accuracy_of_every_subset_matches_the_closed_form_for_three_redundant_modalities():
    # Redundant modalities observe the same prototype with independent noise: k of them have SNR sqrt(k) s/sigma.
    data = make_synthetic(Pitfall(separation=1.5, noise=1.0), seed=0, num_samples=50, bayes_samples=40000,
                          modalities={"a": 8, "b": 8, "c": 8})
    gt = data.ground_truth
    assert set(gt) == {"bayes_acc/a", "bayes_acc/b", "bayes_acc/c", "bayes_acc/a+b", "bayes_acc/a+c",
                       "bayes_acc/b+c", "bayes_acc/all"}
    for keys, k in [(("a", "b", "c"), 1), (("a+b", "a+c", "b+c"), 2), (("all",), 3)]:
        for key in keys:
            assert gt[f"bayes_acc/{key}"] == pytest.approx(_analytic_bayes(1.5 * math.sqrt(k), 4), abs=0.008)


def test_synergy_over_three_modalities_every_proper_subset_at_chance_and_digits_sum_to_the_label():
    data = make_synthetic(Pitfall(interaction={"synergy": 1.0}, separation=3.0), seed=0, num_samples=500,
                          modalities={"a": 8, "b": 8, "c": 8}, bayes_samples=20000)
    gt = data.ground_truth
    for key in ("a", "b", "c", "a+b", "a+c", "b+c"):
        assert gt[f"bayes_acc/{key}"] == pytest.approx(0.25, abs=0.01)
    assert gt["bayes_acc/all"] > 0.8
    digits = data.pool.latent_class
    assert torch.equal(digits.sum(1) % 4, data.pool.y)
    for m in range(3):  # each digit alone is uniform, whatever the label
        assert digits[:, m].bincount(minlength=4).min() > 90


def test_latent_class_is_the_label_under_redundancy_and_marks_the_unique_modality():
    redundant = make_synthetic(Pitfall(), seed=0, num_samples=200)
    assert torch.equal(redundant.pool.latent_class, redundant.pool.y[:, None].expand(-1, 2))
    unique = make_synthetic(Pitfall(interaction={"uniqueness": 1.0}), seed=0, num_samples=200)
    pool = unique.pool
    assert torch.equal(pool.latent_class >= 0, pool.informative)
    assert (pool.informative.sum(1) == 1).all()
    assert torch.equal(pool.latent_class.max(1).values, pool.y)
