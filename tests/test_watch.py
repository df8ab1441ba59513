"""dataset=watch: the smartwatch recordings seglearn ships, cut into windows, split by subject, as features or
raw windows (with the 1-D CNN encoder); checked against the file itself, read here independently."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import compose_config

from mmal.data import Pitfall, make_watch
from mmal.data.watch import CLASSES, FEATURES, subject_split, watch_file, window_features
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.models.encoders import Conv1dEncoder
from mmal.models.stacked import stackable
from mmal.train import run

CONV1D = [f"+model.encoders.{m}={{_target_: mmal.models.encoders.Conv1dEncoder, _partial_: true}}"
          for m in ("acc", "gyro")]


@pytest.fixture(scope="module")
def raw_file() -> dict:
    """The watch file as seglearn's ``load_watch`` reads it."""
    return np.load(watch_file(), allow_pickle=True).item()


@pytest.fixture(scope="module")
def raw_data():
    return make_watch(Pitfall(), seed=0, representation="raw")


def _windows(raw_file: dict, subjects: np.ndarray, window: int = 100, stride: int = 50) -> np.ndarray:
    """(N, 6, window): every window of the recordings of ``subjects``, in file order, sliced by hand."""
    out = [rec[start:start + window].T for rec, s in zip(raw_file["X"], raw_file["subject"]) if s in subjects
           for start in range(0, len(rec) - window + 1, stride)]
    return np.stack(out)


def test_the_file_is_found_and_read_without_importing_seglearn(raw_file):
    data = make_watch(Pitfall(), seed=0)
    assert "seglearn" not in sys.modules
    assert watch_file().parts[-3:] == ("seglearn", "data", "watch_dataset.npy")
    assert len(raw_file["X"]) == 140 and raw_file["X_labels"] == ["ax", "ay", "az", "wx", "wy", "wz"]
    assert data.modalities == ("acc", "gyro")


def test_window_counts_follow_the_recording_lengths(raw_file):
    lengths = np.array([len(x) for x in raw_file["X"]])
    assert lengths.min() == 947 and lengths.max() == 2618
    # the defaults (the documented count), another overlap, and windows as long as the shortest recording
    for window, stride, total in ((100, 50, 4677), (64, 40, 5943), (947, 947, 196)):
        data = make_watch(Pitfall(), seed=0, window=window, stride=stride)
        expected = int(((lengths - window) // stride + 1).sum())
        assert len(data.pool) + len(data.val) + len(data.test) == expected == total


def test_raw_windows_are_the_file_slices_standardised_per_axis_with_pool_statistics(raw_file, raw_data):
    members = subject_split(raw_file["subject"], 0, 3, 1)
    pool = _windows(raw_file, members["pool"])
    mean, std = pool.mean(axis=(0, 2), keepdims=True), pool.std(axis=(0, 2), keepdims=True)
    for split in ("pool", "val", "test"):
        got = torch.cat([getattr(raw_data, split).x[m] for m in ("acc", "gyro")], dim=1).numpy()  # (N, 6, 100)
        expected = (_windows(raw_file, members[split]) - mean) / std
        assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-5)
    # one window undone: recording 0's second window, samples 50-149 (subject 1's first recording)
    first = raw_file["X"][0]
    split = next(s for s in ("pool", "val", "test") if raw_file["subject"][0] in members[s])
    acc = getattr(raw_data, split).x["acc"][1].double().numpy()
    assert np.allclose(acc * std[0, :3] + mean[0, :3], first[50:150, :3].T, atol=1e-5)


def test_seven_classes_every_subject_in_one_split_and_each_split_with_every_class(raw_file, raw_data):
    assert raw_data.num_classes == 7 and list(CLASSES) == raw_file["y_labels"] == [
        "PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    lengths = np.array([len(x) for x in raw_file["X"]])
    per_class = np.bincount(raw_file["y"], weights=(lengths - 100) // 50 + 1).astype(int)
    got = sum(getattr(raw_data, s).y.bincount(minlength=7) for s in ("pool", "val", "test"))
    assert got.tolist() == per_class.tolist() == [502, 770, 780, 718, 723, 583, 601]
    for split in ("pool", "val", "test"):
        assert (getattr(raw_data, split).y.bincount(minlength=7) > 0).all()  # every subject did all seven
    members = subject_split(raw_file["subject"], 0, 3, 1)
    assert [len(members[s]) for s in ("pool", "val", "test")] == [6, 1, 3]
    assert sorted(np.concatenate(list(members.values())).tolist()) == list(range(1, 11))  # no subject twice
    windows = (lengths - 100) // 50 + 1
    for split, ids in members.items():  # the split holds exactly all windows of its subjects
        assert len(getattr(raw_data, split)) == windows[np.isin(raw_file["subject"], ids)].sum()


def test_the_split_is_drawn_from_the_seed(raw_file):
    subjects = raw_file["subject"]
    a, b, c = (subject_split(subjects, s, 3, 1) for s in (5, 5, 6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)
    x, y, z = (make_watch(Pitfall(), seed=s) for s in (5, 5, 6))
    assert torch.equal(x.test.x["gyro"], y.test.x["gyro"]) and torch.equal(x.pool.y, y.pool.y)
    sizes = [len(d.pool) for d in (x, z)]
    expected = [((np.array([len(r) for r in raw_file["X"]]) - 100) // 50 + 1)[np.isin(subjects, m["pool"])].sum()
                for m in (a, c)]
    assert sizes == expected and sizes[0] != sizes[1]


def test_window_features_are_the_documented_statistics():
    w = np.zeros((1, 3, 4))
    w[0, 0] = [1.0, 2.0, 3.0, 4.0]  # x ramps, y and z are 0: the magnitude equals x
    f = dict(zip(FEATURES, window_features(w)[0]))
    assert len(FEATURES) == 44
    expected = {"mean": 2.5, "std": np.sqrt(1.25), "min": 1.0, "max": 4.0, "p10": 1.3, "p25": 1.75, "p50": 2.5,
                "p75": 3.25, "p90": 3.7, "mean_abs_diff": 1.0, "energy": 7.5}
    for stat, value in expected.items():
        assert f[f"x_{stat}"] == pytest.approx(value) and f[f"norm_{stat}"] == pytest.approx(value)
        assert f[f"y_{stat}"] == 0.0


def test_features_are_the_statistics_of_the_windows_standardised_with_pool_statistics(raw_file):
    data = make_watch(Pitfall(), seed=0)
    assert data.shapes == {"acc": (44,), "gyro": (44,)}
    members = subject_split(raw_file["subject"], 0, 3, 1)
    pool, test = (_windows(raw_file, members[s]) for s in ("pool", "test"))
    columns = {"x_mean": lambda w: w[:, 3].mean(1),  # on gyro: wx
               "norm_max": lambda w: np.linalg.norm(w[:, 3:], axis=1).max(1),
               "z_p50": lambda w: np.median(w[:, 5], axis=1),
               "y_mean_abs_diff": lambda w: np.abs(np.diff(w[:, 4], axis=1)).mean(1),
               "x_energy": lambda w: (w[:, 3] ** 2).mean(1)}
    for name, stat in columns.items():
        i = FEATURES.index(name)
        mean, std = stat(pool).mean(), stat(pool).std(ddof=1)  # build_real_dataset: torch's std, per column
        assert np.allclose(data.pool.x["gyro"][:, i].numpy(), (stat(pool) - mean) / std, atol=1e-4), name
        assert np.allclose(data.test.x["gyro"][:, i].numpy(), (stat(test) - mean) / std, atol=1e-4), name


def test_pitfalls_apply_to_both_modalities():
    clean = make_watch(Pitfall(), seed=0)
    noisy = make_watch(Pitfall(feature_noise=[0.0, 2.0], missing_rate=[0.5, 0.0]), seed=0)
    assert torch.equal(noisy.pool.x["acc"][noisy.pool.mask[:, 0]], clean.pool.x["acc"][noisy.pool.mask[:, 0]])
    assert 1.9 < (noisy.pool.x["gyro"] - clean.pool.x["gyro"]).std() < 2.1
    assert 0.45 < 1 - noisy.pool.mask[:, 0].float().mean() < 0.55 and noisy.pool.mask[:, 1].all()
    with pytest.raises(ConfigError, match="synthetic-only"):
        make_watch(Pitfall(interaction={"synergy": 1.0}), seed=0)
    with pytest.raises(ConfigError, match=r"\(2 modalities: \['acc', 'gyro'\]\)"):
        make_watch(Pitfall(feature_noise=[0.0, 1.0, 2.0]), seed=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 1}, "dataset.window=1: an integer >= 2"),
    ({"window": 100.0}, "dataset.window=100.0: an integer >= 2"),
    ({"window": 948}, "dataset.window=948: an integer >= 2 and <= 947, the shortest recording"),
    ({"stride": 0}, "dataset.stride=0: an integer >= 1 and <= dataset.window (100)"),
    ({"stride": 101}, "dataset.stride=101: an integer >= 1 and <= dataset.window (100)"),
    ({"representation": "spectrogram"}, "dataset.representation='spectrogram': one of ['features', 'raw']"),
    ({"test_subjects": 0}, "dataset.test_subjects=0: an integer >= 1"),
    ({"val_subjects": 0}, "dataset.val_subjects=0: an integer >= 1"),
    ({"test_subjects": 7, "val_subjects": 3}, "dataset.test_subjects=7: test_subjects + val_subjects = 10 must be "
                                              "< the 10 subjects"),
    ({"data_file": ""}, "dataset.data_file='': null (the file seglearn ships) or the path"),
    ({"data_file": "/nonexistent/watch_dataset.npy"}, "dataset.data_file='/nonexistent/watch_dataset.npy': no such"),
])
def test_bad_arguments_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ConfigError) as err:
        make_watch(Pitfall(), seed=0, **kwargs)
    assert message in str(err.value)


def test_arguments_are_checked_before_the_file_is_read_and_a_wrong_file_is_named(tmp_path):
    absent = str(tmp_path / "absent.npy")
    with pytest.raises(ConfigError, match="dataset.window=1"):  # the file is not looked at first
        make_watch(Pitfall(), seed=0, window=1, data_file=absent)
    np.save(tmp_path / "other.npy", np.array({"X": [np.zeros((200, 6))]}, dtype=object))
    with pytest.raises(ConfigError, match=r"dataset.data_file='.*other.npy': not the seglearn watch file: expected"):
        make_watch(Pitfall(), seed=0, data_file=str(tmp_path / "other.npy"))
    data = make_watch(Pitfall(), seed=0, data_file=str(watch_file()))  # the same file, given by path
    assert torch.equal(data.test.x["acc"], make_watch(Pitfall(), seed=0).test.x["acc"])


def test_conv1d_encoder_maps_series_of_any_length_and_checks_its_arguments():
    for shape in [(3, 100), (1, 7), (6, 2)]:
        out = Conv1dEncoder(shape, channels=(4, 6), out_dim=10)(torch.rand(5, *shape))
        assert out.shape == (5, 10) and (out >= 0).all()  # ReLU-activated like the other encoders
    for kwargs, message in [({"in_shape": (3, 8, 8)}, "in_shape=(3, 8, 8): Conv1dEncoder takes time-series"),
                            ({"channels": []}, "channels=[]: a non-empty list of integers >= 1"),
                            ({"channels": [4, 4, 4, 4, 4, 4, 4, 4]}, "at most 7 entries for series of 100 steps"),
                            ({"kernel_size": 4}, "kernel_size=4: an odd integer >= 1"),
                            ({"out_dim": 0}, "out_dim=0: an integer >= 1"),
                            ({"dropout": 1.0}, "dropout=1.0: a number >= 0 and < 1")]:
        with pytest.raises(ConfigError) as err:
            Conv1dEncoder(**{"in_shape": (3, 100), **kwargs})
        assert message in str(err.value)
    with pytest.raises(ConfigError, match="model.encoders.acc.kernel_size=2"):  # under its config key
        prepare(compose_config(["dataset=watch", "dataset.representation=raw", "logger=none",
                                CONV1D[0].replace("_partial_: true", "_partial_: true, kernel_size: 2")]))


# end to end, through Hydra

def test_active_learning_on_watch_features_ends_well_above_chance(tmp_path):
    cfg = compose_config(["dataset=watch", "logger=none", "trainer.device=cpu", "trainer.epochs=20",
                          "al.initial_size=100", "al.query_size=50", "al.cycles=1"])
    summary = run(cfg, tmp_path)
    assert summary["final/acc"] > 0.5  # chance is 1/7; 0.77 measured
    assert {"final/gap/neglect", "final/ref_acc/acc", "final/ref_acc/gyro"} <= set(summary)


def test_active_learning_on_raw_windows_trains_the_conv1d_encoders(tmp_path):
    cfg = compose_config(["dataset=watch", "dataset.representation=raw", "logger=none", "trainer.device=cpu",
                          "trainer.epochs=30", "al.initial_size=100", "al.query_size=50",
                          "al.cycles=1", "diagnostics.every=0", *CONV1D])
    exp = prepare(cfg)
    model = exp.build_model()
    assert exp.data.shapes == {"acc": (3, 100), "gyro": (3, 100)}
    assert [type(e).__name__ for e in model.encoders] == ["Conv1dEncoder", "Conv1dEncoder"]
    assert not stackable(model)  # trains alone, as a ConvEncoder model does
    summary = run(cfg, tmp_path)
    assert summary["final/acc"] > 0.4  # chance is 1/7; 0.60 measured
