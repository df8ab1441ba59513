"""Real data: the mfeat loader on the real CSVs, the features loader on generated files, clear errors for
bad files, and the pitfalls that apply to real data (missing modalities, feature noise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config
from sklearn.datasets import load_digits

from mmal.data import Pitfall, load_features, make_mfeat
from mmal.data.features import save_features
from mmal.data.mfeat import MFEAT_DIR, VIEWS
from mmal.data.real import centroid_distance, standardised
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.train import run

EXAMPLE = ROOT / "examples" / "features"
FEATURE_ROOT = [f"dataset.root={EXAMPLE}"]  # dataset=features reads files relative to the working directory


def _arrays(n: int, seed: int, missing_text: float = 0.3) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Features with some class signal: image (n, 8), text (n, 4); labels in 0..3; text missing at a rate."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = {"image": (rng.normal(size=(n, 8)) + y[:, None] * 2.0 + 5.0).astype(np.float32),
         "text": (rng.normal(size=(n, 4)) * 3.0 + y[:, None]).astype(np.float32)}
    mask = np.ones((n, 2), dtype=bool)
    mask[:, 1] = rng.random(n) >= missing_text
    return x, y, mask


@pytest.fixture
def feature_root(tmp_path) -> Path:
    """pool (1,000 rows), val and test (300 each) as npz."""
    for split, n, seed in (("pool", 1000, 1), ("val", 300, 2), ("test", 300, 3)):
        save_features(tmp_path, split, *_arrays(n, seed))
    return tmp_path


# mfeat on the real CSVs

def test_mfeat_has_the_documented_shapes_classes_and_stratified_split():
    data = make_mfeat(Pitfall(), seed=0)
    assert data.modalities == ("pix", "fou") and data.dims == {"pix": 240, "fou": 76} and data.num_classes == 10
    assert (len(data.pool), len(data.val), len(data.test)) == (1200, 400, 400)
    for split, per_class in ((data.pool, 120), (data.val, 40), (data.test, 40)):
        assert split.y.bincount(minlength=10).tolist() == [per_class] * 10
        assert split.mask.all() and split.x["pix"].dtype == torch.float32
    every = make_mfeat(Pitfall(), seed=0, modalities=list(VIEWS), val_fraction=0.1, test_fraction=0.3)
    assert every.dims == VIEWS
    assert (len(every.pool), len(every.val), len(every.test)) == (1200, 200, 600)


def test_mfeat_standardises_with_pool_statistics_only():
    data = make_mfeat(Pitfall(), seed=0, modalities=["fou", "kar"])
    for m in data.modalities:
        pool, test = data.pool.x[m].double(), data.test.x[m].double()
        assert pool.mean(0).abs().max() < 1e-5
        assert torch.allclose(pool.std(0), torch.ones(pool.shape[1], dtype=torch.float64), atol=1e-4)
        assert test.mean(0).abs().max() > 0.02  # test rows were not part of the statistics
        assert test.mean(0).abs().max() < 1.0  # but come from the same distribution


def test_mfeat_is_deterministic_by_seed():
    a, b, c = (make_mfeat(Pitfall(), seed=s) for s in (3, 3, 4))
    for split in ("pool", "val", "test"):
        for m in a.modalities:
            assert torch.equal(getattr(a, split).x[m], getattr(b, split).x[m])
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)
    assert not torch.equal(a.test.x["pix"], c.test.x["pix"])  # another seed, another split


def test_mfeat_errors_name_the_path_and_the_view(tmp_path):
    shutil.copy(MFEAT_DIR / "mfeat-pix.csv.gz", tmp_path)
    with pytest.raises(ConfigError, match="mfeat-fou.csv") as err:
        make_mfeat(Pitfall(), seed=0, data_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "'fou'" in str(err.value)
    (tmp_path / "mfeat-fou.csv").write_text("0,1,2\n1.0,2.0,0\n")
    with pytest.raises(ConfigError, match="has 2 feature columns, view 'fou' has 76"):
        make_mfeat(Pitfall(), seed=0, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="'pixels'"):
        make_mfeat(Pitfall(), seed=0, modalities=["pixels", "fou"])


# features from files

@pytest.mark.parametrize("fmt", ["npz", "pt", "npy"])
def test_features_round_trip_exactly_and_respect_the_mask(tmp_path, fmt):
    stored = {}
    for split, n, seed in (("pool", 60, 1), ("val", 20, 2), ("test", 30, 3)):
        stored[split] = _arrays(n, seed)
        save_features(tmp_path, split, *stored[split], fmt=fmt)
    data = load_features(Pitfall(), seed=0, root=str(tmp_path), standardise=False)
    assert data.modalities == ("image", "text") and data.dims == {"image": 8, "text": 4} and data.num_classes == 4
    for split, (x, y, mask) in stored.items():
        got = getattr(data, split)
        assert torch.equal(got.y, torch.from_numpy(y)) and torch.equal(got.mask, torch.from_numpy(mask))
        for i, m in enumerate(("image", "text")):
            present = torch.from_numpy(mask[:, i])
            assert torch.equal(got.x[m][present], torch.from_numpy(x[m])[present])
            assert (got.x[m][~present] == 0).all()
    assert (~data.pool.mask[:, 1]).any()  # the test covers missing rows


def test_features_split_a_single_file_or_draw_val_from_the_pool(tmp_path):
    x, y, _ = _arrays(500, 0)
    np.savez(tmp_path / "all.npz", image=x["image"], text=x["text"], y=y)  # written by hand: no mask
    data = load_features(Pitfall(), seed=0, root=str(tmp_path), val_fraction=0.2, test_fraction=0.3)
    assert (len(data.pool), len(data.val), len(data.test)) == (250, 100, 150)
    assert data.val.y.bincount().tolist() == [25] * 4 and data.pool.mask.all()
    pool = torch.cat([data.pool.x["text"], data.val.x["text"], data.test.x["text"]])
    assert torch.unique(pool, dim=0).shape[0] == 500  # a partition of the rows

    second = tmp_path / "two"
    save_features(second, "pool", *_arrays(400, 1))
    save_features(second, "test", *_arrays(100, 2))
    data = load_features(Pitfall(), seed=0, root=str(second), val_fraction=0.25)
    assert (len(data.pool), len(data.val), len(data.test)) == (300, 100, 100)


def test_features_standardise_with_pool_statistics_of_present_rows(feature_root):
    data = load_features(Pitfall(), seed=0, root=str(feature_root))
    x, _, mask = _arrays(1000, 1)
    text = torch.from_numpy(x["text"][mask[:, 1]]).double()
    expected = (text - text.mean(0)) / text.std(0)
    assert torch.allclose(data.pool.x["text"][data.pool.mask[:, 1]].double(), expected, atol=1e-5)
    assert data.val.x["image"].mean(0).abs().max() > 0.01


def test_standardising_in_row_chunks_is_the_whole_tensor_expression_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    for shape in [(1000, 7), (1001, 3, 4, 5), (1, 2)]:
        v = torch.randn(shape, generator=g) * 3 + 1
        mean, std = v.double().mean(0), v.double().std(0).clamp_min(1e-6) if len(v) > 1 else 1.0
        whole = ((v.double() - mean) / std).float()
        for rows in (1, 64, 4096):
            assert torch.equal(standardised(v, mean, std, rows), whole)


def test_shipped_example_is_what_the_script_writes(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_example_features.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    for split in ("pool", "val", "test"):
        with np.load(EXAMPLE / f"{split}.npz") as shipped, np.load(tmp_path / f"{split}.npz") as fresh:
            assert shipped.files == fresh.files
            for key in shipped.files:
                np.testing.assert_array_equal(shipped[key], fresh[key])
    data = load_features(Pitfall(), seed=0, root=str(EXAMPLE))
    assert data.dims == {"image": 64, "text": 32} and data.num_classes == 5 and len(data.pool) == 300
    assert 0.7 < data.pool.mask[:, 1].float().mean() < 0.9  # text missing for ~20 %
    assert (data.pool.x["text"][~data.pool.mask[:, 1]] == 0).all()  # its NaN rows are zeroed
    assert sum(p.stat().st_size for p in EXAMPLE.iterdir()) < 500_000


# errors name the path and the offending name

def _write(root: Path, n: int = 40, **change) -> Path:
    x, y, mask = _arrays(n, 0)
    arrays = {**x, "y": y, "mask": mask, "modalities": np.array(["image", "text"]), **change}
    for split in ("pool", "val", "test"):
        np.savez(root / f"{split}.npz", **{k: v for k, v in arrays.items() if v is not None})
    return root / "pool.npz"


def test_features_errors_name_the_path_and_the_offending_name(tmp_path):
    with pytest.raises(ConfigError, match="no such directory") as err:
        load_features(Pitfall(), seed=0, root=str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(err.value)

    np.savez(tmp_path / "pool.npz", **_arrays(40, 0)[0], y=np.zeros(40, dtype=int))
    np.savez(tmp_path / "val.npz", **_arrays(40, 0)[0], y=np.zeros(40, dtype=int))
    with pytest.raises(ConfigError, match=r"no 'test' split in .*test\.npz") as err:
        load_features(Pitfall(), seed=0, root=str(tmp_path))
    assert str(tmp_path) in str(err.value)

    cases = [  # (arrays changed, config, expected fragments besides the path)
        ({"text": np.zeros((39, 4), np.float32)}, {}, ["'text'", "(39, 4)", "40 rows"]),
        ({"y": np.full(40, 3)}, {"num_classes": 3}, ["'y'", "[0, 3)", "found 3"]),
        ({"y": np.arange(40) - 1}, {}, ["'y'", "found -1"]),
        ({}, {"modalities": ["image", "audio"]}, ["'audio'", "not a modality array", "['image', 'text']"]),
        ({"modalities": None}, {}, ["'mask'", "'modalities'"]),
        ({"image": np.full((40, 8), np.nan, np.float32)}, {}, ["'image'", "NaN"]),
        ({"y": np.where(np.arange(40) == 7, np.nan, np.arange(40) % 4)}, {}, ["'y'", "1 non-finite", "row 7"]),
    ]
    for i, (change, config, fragments) in enumerate(cases):
        root = tmp_path / f"case{i}"
        root.mkdir()
        path = _write(root, **change)
        with pytest.raises(ConfigError) as err:
            load_features(Pitfall(), seed=0, root=str(root), **config)
        for fragment in [str(path), *fragments]:
            assert fragment in str(err.value), (i, str(err.value))


def test_a_feature_pool_of_one_class_is_refused_before_any_work(tmp_path):
    _write(tmp_path, y=np.zeros(40, dtype=int))  # once it ran to the end, every prediction right
    with pytest.raises(ConfigError, match="a pool split with at least 2 classes; this one has 1"):
        prepare(compose_config([f"dataset.root={tmp_path}", "dataset=features", "logger=none",
                                "dataset.num_classes=4"]))


@pytest.mark.parametrize("fmt", ["npz", "pt", "npy"])
def test_features_too_large_for_memory_are_refused_from_their_headers_before_loading(tmp_path, monkeypatch, fmt):
    rng = np.random.default_rng(0)
    for split, n in (("pool", 300), ("test", 100)):  # 400 rows x (50 float64 + 30 float32) + int64 labels
        x = {"a": rng.standard_normal((n, 50)), "b": rng.standard_normal((n, 30)).astype(np.float32)}
        save_features(tmp_path, split, x, rng.integers(0, 3, n), fmt=fmt)
    names = 0 if fmt == "pt" else 2 * 2 * 4  # the 'modalities' arrays, ['a', 'b'] as <U1 (a list in .pt)
    stored = 400 * (50 * 8 + 30 * 4 + 8) + names  # as stored, labels included
    needed = stored + 5 * (400 * (50 + 30 + 1) * 4 + names)  # + 5x their float32 size
    monkeypatch.setattr("mmal.data.memory.available_memory", lambda: needed - 1)
    with pytest.raises(ConfigError, match=rf"dataset.root='{tmp_path}': loading the 0.0 GiB of arrays would take"
                                          r" about 0.0 GiB, more than the 0.0 GiB of memory available"):
        load_features(Pitfall(), 0, str(tmp_path))
    monkeypatch.setattr("mmal.data.memory.available_memory", lambda: needed)
    assert len(load_features(Pitfall(), 0, str(tmp_path)).pool) == 240


@pytest.mark.slow
def test_a_bad_feature_root_exits_with_one_line_and_status_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "mmal.train", "dataset=features", f"dataset.root={tmp_path}",
                             "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"dataset.root='{tmp_path}': no 'pool' split in {tmp_path}" in output
    assert "Traceback" not in output


# pitfalls on real data

def test_missing_modalities_are_drawn_at_the_configured_rate(feature_root):
    clean = load_features(Pitfall(), seed=0, root=str(feature_root))
    pitfall = Pitfall(missing_rate=[0.4, 0.0], missing_splits=["pool"])
    data = load_features(pitfall, seed=0, root=str(feature_root))
    assert (1 - data.pool.mask[:, 0].float().mean()).item() == pytest.approx(0.4, abs=0.05)
    assert torch.equal(data.pool.mask[:, 1], clean.pool.mask[:, 1])  # text keeps only its file mask
    assert torch.equal(data.test.mask, clean.test.mask)  # test is not in missing_splits
    assert (data.pool.x["image"][~data.pool.mask[:, 0]] == 0).all()
    # On top of the file's mask: text present in 70 % of rows, then 50 % of it dropped.
    both = load_features(Pitfall(missing_rate=0.5), seed=0, root=str(feature_root))
    dropped = clean.pool.mask[:, 1] & ~both.pool.mask[:, 1]
    assert (dropped.sum() / clean.pool.mask[:, 1].sum()).item() == pytest.approx(0.5, abs=0.05)


def test_difficulty_mechanism_drops_the_samples_far_from_their_class_centroid(feature_root):
    clean = load_features(Pitfall(), seed=0, root=str(feature_root))
    hardness = centroid_distance(clean.pool.x, clean.pool, clean.pool.x, clean.pool.y, 4)[:, 0]
    ratio = {}
    for mechanism in ("mcar", "difficulty"):
        data = load_features(Pitfall(missing_rate=[0.3, 0.0], missing_mechanism=mechanism), seed=0,
                             root=str(feature_root))
        kept = data.pool.mask[:, 0]
        assert (1 - kept.float().mean()).item() == pytest.approx(0.3, abs=0.05)
        ratio[mechanism] = (hardness[~kept].mean() / hardness[kept].mean()).item()
    assert ratio["difficulty"] > 1.15 and abs(ratio["mcar"] - 1) < 0.05


def test_feature_noise_changes_only_the_named_modality(feature_root):
    clean = load_features(Pitfall(), seed=0, root=str(feature_root))
    noisy = load_features(Pitfall(feature_noise=[0.0, 1.5]), seed=0, root=str(feature_root))
    both = load_features(Pitfall(feature_noise=[1.0, 1.5]), seed=0, root=str(feature_root))
    for split in ("pool", "val", "test"):
        a, b = getattr(clean, split), getattr(noisy, split)
        assert torch.equal(a.x["image"], b.x["image"]) and torch.equal(a.mask, b.mask)
        present = a.mask[:, 1]
        residual = (b.x["text"] - a.x["text"])[present]
        assert residual.std().item() == pytest.approx(1.5, rel=0.05)
        assert (b.x["text"][~present] == 0).all()  # missing rows stay zero
        assert torch.equal(getattr(both, split).x["text"], b.x["text"])  # each modality has its own noise
    # ... drawn from its own stream: the image and text noise sequences are uncorrelated.
    image_noise = (both.pool.x["image"] - clean.pool.x["image"]).flatten()
    text_noise = (both.pool.x["text"] - clean.pool.x["text"]).flatten()
    k = min(len(image_noise), len(text_noise))
    assert abs(torch.corrcoef(torch.stack([image_noise[:k], text_noise[:k]]))[0, 1]) < 0.1


def test_synthetic_only_pitfalls_are_refused_on_real_data(feature_root):
    for interaction in ({"synergy": 1.0}, {"redundancy": 0.5, "uniqueness": 0.5}):
        with pytest.raises(ConfigError, match="synthetic-only"):
            load_features(Pitfall(interaction=interaction), seed=0, root=str(feature_root))
    for pitfall in ("synergy", "uniqueness"):
        with pytest.raises(ConfigError, match="pitfall.interaction=.*synthetic-only"):
            prepare(compose_config(["dataset=features", f"pitfall={pitfall}", *FEATURE_ROOT]))
    prepare(compose_config(["dataset=features", "pitfall=modality_difficulty", *FEATURE_ROOT]))  # real pitfalls pass
    prepare(compose_config(["dataset=mfeat", "pitfall=missing_modality"]))


@pytest.mark.parametrize(("overrides", "message"), [
    (["dataset=mfeat", "dataset.modalities=[pix,digits]"], "dataset.modalities=['pix', 'digits']: a non-empty list"),
    (["dataset=mfeat", "dataset.test_fraction=0.9"], "val_fraction + test_fraction = 1.1 must be < 1"),
    (["dataset=mfeat", "pitfall.feature_noise=-1.0"], "pitfall.feature_noise=-1.0: a number >= 0"),
    (["dataset=mfeat", "pitfall.feature_noise=[0.0,1.0,2.0]"], "(2 modalities: ['pix', 'fou'])"),
    (["dataset=features", "dataset.modalities=[image,y]"], "dataset.modalities=['image', 'y']"),
    (["dataset=features", "dataset.num_classes=1"], "dataset.num_classes=1: an integer >= 2"),
])
def test_real_dataset_configs_are_validated(overrides, message):
    with pytest.raises(ConfigError) as err:
        prepare(compose_config([*overrides, *FEATURE_ROOT] if "dataset=features" in overrides else overrides))
    assert message in str(err.value)


def test_per_modality_lists_are_checked_against_the_modalities_in_the_file(feature_root):
    with pytest.raises(ConfigError, match=r"pitfall.missing_rate=\[0.1, 0.2, 0.3\]: .*\['image', 'text'\]"):
        load_features(Pitfall(missing_rate=[0.1, 0.2, 0.3]), seed=0, root=str(feature_root))


# end to end

def test_active_learning_on_mfeat_ends_well_above_chance(tmp_path):
    cfg = compose_config(["dataset=mfeat", "logger=none", "trainer.device=cpu", "trainer.epochs=30",
                          "al.initial_size=100", "al.query_size=50", "al.cycles=1"])
    summary = run(cfg, tmp_path)
    assert summary["final/acc"] > 0.5  # chance is 0.1
    assert {"final/gap/neglect", "final/deficit/fou", "final/ref_acc/fou", "aubc/gap_neglect"} <= set(summary)
    assert not any(k.startswith(("final/probe_digit", "ground_truth")) for k in summary)  # no ground truth here


def test_image_files_keep_their_shape_and_train_with_a_cnn(tmp_path):
    # 8x8 digit images (N, 1, 8, 8) next to a 4-d pure-noise modality, some images missing (NaN rows),
    # missing modalities drawn by difficulty (class-centroid distance on the flattened images).
    digits = load_digits()
    g = np.random.default_rng(0)
    images = (digits.images / 16).astype(np.float32)[:, None]
    missing = g.random(len(images)) < 0.1
    images[missing] = np.nan
    mask = np.stack([~missing, np.ones_like(missing)], 1)
    save_features(tmp_path / "data", "all", {"img": images, "noise": g.normal(size=(len(images), 4))},
                  digits.target, mask)
    cfg = compose_config([f"dataset.root={tmp_path / 'data'}", "dataset=features", "logger=none", "trainer.device=cpu",
                          "+model.encoders.img={_target_: mmal.models.encoders.ConvEncoder, _partial_: true}",
                          "pitfall.missing_rate=[0.2,0.0]", "pitfall.missing_mechanism=difficulty",
                          "trainer.epochs=30", "trainer.lr=5e-3", "al.initial_size=300", "al.query_size=100",
                          "al.cycles=1", "query=badge"])
    exp = prepare(cfg)
    assert exp.data.shapes == {"img": (1, 8, 8), "noise": (4,)} and exp.data.num_classes == 10
    assert type(exp.build_model().encoders[0]).__name__ == "ConvEncoder"
    pool = exp.data.pool
    assert torch.isfinite(pool.x["img"]).all() and not pool.x["img"][~pool.mask[:, 0]].any()  # NaN rows zeroed
    assert 0.15 < 1 - pool.mask[:, 0].float().mean().item() < 0.4  # the file's 10 % and the pitfall's 20 %
    summary = run(cfg, tmp_path / "run")
    assert summary["final/acc"] > 0.5  # 0.71 measured; chance 0.1
    assert summary["final/masked_acc/noise"] < 0.2  # the noise modality alone is at chance (0.09 measured)
    assert summary["final/ref_acc/noise"] < 0.2 and summary["final/deficit/noise"] == 0.0  # nothing to neglect
