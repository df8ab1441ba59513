"""mmal-prepare on tiny trees in the published layouts of UPMC Food-101 and CREMA-D (tests/raw_fixtures.py),
with random-initialised backbones: the arrays have the right shapes, row order, labels and missing-modality
mask, hold what the backbone computes on exactly those files, resume after a stop without recomputing, and
every bad input is refused with its path before anything is lost. Then the prepared data trains with every
query strategy and the imbalance diagnostics, on embeddings and end to end on raw tensors."""

from __future__ import annotations

import csv
import gc
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from scipy.io import wavfile

from mmal.data.features import load_features
from mmal.data.pitfall import Pitfall
from mmal.errors import ConfigError
from mmal.log import read_jsonl
from mmal.prepare import prepare
from mmal.prepare.decode import CorruptSource, read_audio, read_frames, read_image
from mmal.prepare.extractors import LogMel, Pixels, Pretrained, PretrainedText
from mmal.prepare.fixtures import (
    AVE_CATEGORIES,
    EMOTIONS,
    FOOD_CLASSES,
    ave_tree,
    cremad_tree,
    food101_tree,
    random_backbones,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    return random_backbones(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def food(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("UPMC_Food101")
    return root, food101_tree(root)


@pytest.fixture(scope="module")
def food_prepared(food, models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "food101"
    prepare("food101", food[0], out, models=models, batch_size=5, progress=False)
    return out


def _rows(out: Path, split: str) -> list[dict]:
    with open(out / "sources.csv") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def test_food101_arrays_follow_the_csv_rows_with_labels_mask_and_the_backbones_embeddings(food, food_prepared,
                                                                                          models):
    root, expected = food
    image_model = Pretrained(models["image"], "--image-model", "cpu")
    text_model = PretrainedText(models["text"], "--text-model", "cpu")
    for split in ("pool", "test"):
        arrays = {k: np.load(food_prepared / split / f"{k}.npy") for k in ("image", "text", "y", "mask", "modalities")}
        rows = expected[split]
        assert list(arrays["modalities"]) == ["image", "text"]
        assert arrays["image"].shape == (len(rows), 12) and arrays["text"].shape == (len(rows), 16)  # hidden sizes
        assert [r["name"] for r in _rows(food_prepared, split)] == [name for name, *_ in rows]  # the CSV's order
        assert arrays["y"].tolist() == [label for _, label, _, _ in rows]
        assert arrays["mask"].tolist() == [[has_image, has_text] for *_, has_image, has_text in rows]
        assert not arrays["image"][~arrays["mask"][:, 0]].any() and not arrays["text"][~arrays["mask"][:, 1]].any()
    # Row by row, what the backbone gives on that very file and text (batching changes no row).
    pool = expected["pool"]
    texts = {row[0]: row[1] for row in csv.reader(open(root / "texts" / "train_titles.csv"))}  # noqa: SIM115
    image = np.load(food_prepared / "pool" / "image.npy")
    text = np.load(food_prepared / "pool" / "text.npy")
    for i in (0, 7, len(pool) - 1):
        name, label, has_image, has_text = pool[i]
        if has_image:
            picture, sha = read_image(root / "images" / "train" / FOOD_CLASSES[label] / name)
            np.testing.assert_allclose(image[i], image_model([picture])[0], rtol=1e-4, atol=1e-5)
            assert _rows(food_prepared, "pool")[i]["image_sha256"] == sha
        if has_text:
            np.testing.assert_allclose(text[i], text_model([texts[name]])[0], rtol=1e-4, atol=1e-5)
    assert image.std(0).min() > 0  # the embeddings differ between rows


def test_food101_manifest_records_checksums_backbones_settings_and_the_absent_rows(food, food_prepared, models):
    root, expected = food
    manifest = json.loads((food_prepared / "manifest.json").read_text())
    assert manifest["classes"] == list(FOOD_CLASSES) and manifest["modalities"] == ["image", "text"]
    settings = manifest["settings"]
    assert settings["modalities"]["image"]["weights_sha256"] == _sha256(models["image"] / "model.safetensors")
    assert settings["modalities"]["text"]["model"] == "BertModel"
    assert settings["modalities"]["image"]["processor"] in ("ConvNextImageProcessorPil", "ConvNextImageProcessor")
    assert settings["index_files"]["texts/train_titles.csv"] == _sha256(root / "texts" / "train_titles.csv")
    assert settings["max_length"] == 128 and settings["precision"] == "fp32"
    pool = expected["pool"]
    assert manifest["splits"]["pool"] == {"rows": len(pool), "absent": {"image": 1, "text": 3},
                                          "corrupt": {"image": 0, "text": 0}}
    assert manifest["sources_sha256"] == _sha256(food_prepared / "sources.csv")
    missing = [r for r in _rows(food_prepared, "pool") if r["image_status"] == "absent"]
    assert [r["name"] for r in missing] == ["apple_pie_1.jpg"]
    assert not (food_prepared / ".incomplete").exists()


def test_prepared_food101_loads_as_features_with_its_mask(food_prepared):
    data = load_features(Pitfall(), 0, str(food_prepared), val_fraction=0.2)
    assert data.modalities == ("image", "text") and data.num_classes == 3
    assert len(data.pool) + len(data.val) == 36 and len(data.test) == 12
    absent = (~data.pool.mask).sum(0) + (~data.val.mask).sum(0)
    assert absent.tolist() == [1, 3]


def test_cremad_with_ogm_ge_split_files_raw_tensors_of_the_exact_files(tmp_path):
    root = tmp_path / "CREMA-D"
    tree = cremad_tree(root, split_files=True)
    out = tmp_path / "cremad_raw"
    prepare("cremad", root, out, raw=["audio", "visual"], frames=2, image_size=16, n_mels=32, seconds=1.0,
            batch_size=7, progress=False)
    for split in ("pool", "test"):
        names = tree["split"][split]
        audio, visual = np.load(out / split / "audio.npy"), np.load(out / split / "visual.npy")
        y, mask = np.load(out / split / "y.npy"), np.load(out / split / "mask.npy")
        assert [r["name"] for r in _rows(out, split)] == names  # train.csv / test.csv order
        assert audio.shape == (len(names), 1, 32, 98) and audio.dtype == np.float32  # 1 s: 98 frames of 10 ms
        assert visual.shape == (len(names), 6, 16, 16) and visual.dtype == np.uint8  # 2 frames stacked
        assert y.tolist() == [EMOTIONS.index(n.split("_")[2]) for n in names]
        assert mask[:, 0].all() and mask[:, 1].tolist() == [not n.startswith("1001_") for n in names]
    pool = tree["split"]["pool"]
    i = next(k for k, n in enumerate(pool) if n.startswith("1003_"))  # a 22,050 Hz file: resampled to 16 kHz
    wave, _ = read_audio(root / "AudioWAV" / f"{pool[i]}.wav", 16000, 1.0)
    assert np.array_equal(np.load(out / "pool" / "audio.npy")[i], LogMel(32, 1.0)([wave])[0])
    frames, _ = read_frames(root / "Image-01-FPS" / pool[i], 2)
    assert np.array_equal(np.load(out / "pool" / "visual.npy")[i], Pixels(16, frames=2)([frames])[0])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["pool"]["absent"] == {"audio": 0, "visual": 6}  # the 1001_ clips, all in pool
    assert manifest["splits"]["test"]["absent"] == {"audio": 0, "visual": 0}
    assert manifest["settings"]["modalities"]["audio"] == {"raw": "LogMel"}


def test_read_frames_takes_evenly_spaced_frames_and_the_middle_one_alone(tmp_path):
    root = tmp_path / "crema"
    cremad_tree(root, clips_per_emotion=2)
    folder = next(p for p in (root / "Image-01-FPS").iterdir())
    files = sorted(folder.iterdir())
    middle, _ = read_image(files[1])
    (one,), _ = read_frames(folder, 1)
    assert np.array_equal(np.asarray(one), np.asarray(middle))
    three, _ = read_frames(folder, 3)
    assert [np.asarray(f).tolist() for f in three] == [np.asarray(read_image(p)[0]).tolist() for p in files]


def test_cremad_without_split_files_splits_every_clip_90_10_by_emotion(tmp_path, models):
    root = tmp_path / "CREMA-D"
    tree = cremad_tree(root)
    out = tmp_path / "cremad"
    manifest = prepare("cremad", root, out, models=models, progress=False)
    test = [r["name"] for r in _rows(out, "test")]
    pool = [r["name"] for r in _rows(out, "pool")]
    assert len(test) == 6 and sorted(n.split("_")[2] for n in test) == sorted(EMOTIONS)  # one clip per emotion
    assert sorted(pool + test) == sorted(n for names in tree["names"].values() for n in names)
    assert np.load(out / "pool" / "audio.npy").shape == (54, 16)
    assert np.load(out / "pool" / "visual.npy").shape == (54, 12)
    assert "random_state=0" in manifest["settings"]["rows"]["splits"]


def test_a_stopped_preparation_resumes_after_its_last_batch_and_equals_an_uninterrupted_one(tmp_path, models):
    root = tmp_path / "UPMC_Food101"
    food101_tree(root)
    whole = tmp_path / "whole"
    prepare("food101", root, whole, models=models, batch_size=4, progress=False)

    order = [r["name"] for r in _rows(whole, "pool")]
    victim = root / "images" / "train" / "baklava" / next(n for n in order[9:] if n.startswith("baklava"))
    good = victim.read_bytes()
    victim.write_bytes(b"not a jpeg")
    out = tmp_path / "stopped"
    with pytest.raises(CorruptSource, match=str(victim)):
        prepare("food101", root, out, models=models, batch_size=4, progress=False)
    done = json.loads((out / ".incomplete" / "progress.json").read_text())["pool"]
    row = order.index(victim.name)
    assert done == row // 4 * 4 and done >= 8  # every batch before the corrupt file is kept
    # A row prepared before the stop is not computed again: mark one and find the mark in the result.
    kept = np.load(out / ".incomplete" / "pool" / "image.npy", mmap_mode="r+")
    kept[0] = 42.0
    kept.flush()
    del kept
    victim.write_bytes(good)
    prepare("food101", root, out, models=models, batch_size=4, progress=False)
    resumed, expected = np.load(out / "pool" / "image.npy"), np.load(whole / "pool" / "image.npy")
    assert (resumed[0] == 42.0).all()
    assert np.array_equal(resumed[1:], expected[1:])
    for name in ("text", "y", "mask"):
        for split in ("pool", "test"):
            assert np.array_equal(np.load(out / split / f"{name}.npy"), np.load(whole / split / f"{name}.npy"))
    assert (out / "sources.csv").read_text() == (whole / "sources.csv").read_text()


def test_on_corrupt_absent_marks_the_file_absent_and_names_it(tmp_path, models):
    root = tmp_path / "UPMC_Food101"
    food101_tree(root)
    victim = root / "images" / "test" / "baklava" / "baklava_2.jpg"
    victim.write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    manifest = prepare("food101", root, out, models=models, on_corrupt="absent", progress=False)
    assert manifest["splits"]["test"]["corrupt"] == {"image": 1, "text": 0}
    row = next(r for r in _rows(out, "test") if r["name"] == "baklava_2.jpg")
    assert row["image_status"] == "corrupt" and row["image_source"] == "images/test/baklava/baklava_2.jpg"
    assert not np.load(out / "test" / "mask.npy")[int(row["row"]), 0]


def test_rerunning_a_finished_preparation_does_nothing_and_other_settings_are_refused(food, food_prepared, models):
    before = {p: p.stat().st_mtime_ns for p in food_prepared.rglob("*")}
    prepare("food101", food[0], food_prepared, models=models, batch_size=64, progress=False)  # speed is no setting
    assert {p: p.stat().st_mtime_ns for p in food_prepared.rglob("*")} == before
    with pytest.raises(ConfigError, match=r"--out=.*finished preparation with other settings \(max_length: 128 "
                                          r"there, 32 now\)"):
        prepare("food101", food[0], food_prepared, models=models, max_length=32, progress=False)
    with pytest.raises(ConfigError, match=r"other settings \(image_size: None there, 64 now\)"):  # raw images
        prepare("food101", food[0], food_prepared, models=models, raw=["image"], progress=False)
    assert {p: p.stat().st_mtime_ns for p in food_prepared.rglob("*")} == before


def test_an_unfinished_preparation_of_other_settings_and_a_folder_of_other_files_are_refused(tmp_path, food,
                                                                                              models):
    out = tmp_path / "out"
    (out / ".incomplete").mkdir(parents=True)
    (out / ".incomplete" / "settings.json").write_text(json.dumps({"dataset": "cremad"}))
    with pytest.raises(ConfigError, match=r"unfinished preparation with other settings \(dataset: 'cremad' there"):
        prepare("food101", food[0], out, models=models, progress=False)
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"--out=.*other files"):
        prepare("food101", food[0], other, models=models, progress=False)
    assert [p.name for p in other.iterdir()] == ["notes.txt"] and (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("change", "message"), [
    (lambda root, models: {"models": {**models, "image": root / "nowhere"}},
     r"--image-model=.*nowhere.*config.json.*hf download microsoft/resnet-50"),
    (lambda root, models: {"models": {"text": models["text"]}},
     r"--image-model=None: a local model folder for food101's 'image' modality, or --raw image"),
    (lambda root, models: {"models": models, "raw": ["text"]}, r"--raw=\['text'\]: .*stored raw: \['image'\]"),
    (lambda root, models: {"models": {"image": models["image"]}},  # no advice that is refused next (--raw text)
     r"--text-model=None: a local model folder for food101's 'text' modality \(text cannot be stored raw\)$"),
    (lambda root, models: {"models": models, "device": "tpu"}, r"--device='tpu': one of \['auto', 'cpu', 'cuda'\]"),
    (lambda root, models: {"models": models, "batch_size": 0}, r"--batch-size=0: an integer >= 1"),
    (lambda root, models: {"models": models, "root": root / "images"}, r"--root=.*no folder .*images/images/train"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, food, models, change, message):
    kwargs = {"root": food[0], **change(food[0], models)}
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        prepare("food101", kwargs.pop("root"), out, progress=False, **kwargs)
    assert not out.exists()


def test_a_text_model_folder_without_tokenizer_files_is_refused(tmp_path, food, models):
    """transformers would build a tokenizer of special tokens alone: every text the same embedding."""
    bare = tmp_path / "bert"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((models["text"] / name).read_bytes())
    with pytest.raises(ConfigError, match=r"--text-model=.*bert.*no tokenizer there: .* has no tokenizer files"):
        prepare("food101", food[0], tmp_path / "out", models={**models, "text": bare}, progress=False)
    assert not (tmp_path / "out").exists()


def test_distinct_texts_get_distinct_embeddings(food_prepared, food):
    text, mask = np.load(food_prepared / "pool" / "text.npy"), np.load(food_prepared / "pool" / "mask.npy")
    texts = {row[0]: row[1] for row in csv.reader(open(food[0] / "texts" / "train_titles.csv"))}  # noqa: SIM115
    present = [texts[r["name"]] for r in _rows(food_prepared, "pool") if r["text_status"] == "present"]
    assert len(np.unique(text[mask[:, 1]].round(5), axis=0)) == len(set(present))


def test_a_class_folder_without_rows_is_refused(tmp_path):
    root = tmp_path / "food"
    food101_tree(root)
    (root / "images" / "train" / "ramen").mkdir()
    with pytest.raises(ConfigError, match=r"--root=.*the class folder .*images/train/ramen has no row in "
                                          r"texts/train_titles.csv"):
        prepare("food101", root, tmp_path / "out", raw=["image"], progress=False)
    assert not (tmp_path / "out").exists()


def test_cremad_reads_upper_case_wav_files_and_keeps_clips_with_frames_but_no_wav(tmp_path):
    root = tmp_path / "CREMA-D"
    cremad_tree(root)
    loud = root / "AudioWAV" / "1002_IEO_ANG_XX.wav"
    loud.rename(loud.with_suffix(".WAV"))
    (root / "AudioWAV" / "1003_TIE_SAD_XX.wav").unlink()  # its frames are there
    out = tmp_path / "out"
    manifest = prepare("cremad", root, out, raw=["audio", "visual"], image_size=8, n_mels=16, seconds=1.0,
                       progress=False)
    rows = {r["name"]: r for split in ("pool", "test") for r in _rows(out, split)}
    assert len(rows) == 60 and manifest["dropped"] == []
    assert rows["1002_IEO_ANG_XX"]["audio_status"] == "present"
    assert rows["1002_IEO_ANG_XX"]["audio_source"] == "AudioWAV/1002_IEO_ANG_XX.WAV"
    assert (rows["1003_TIE_SAD_XX"]["audio_status"], rows["1003_TIE_SAD_XX"]["visual_status"]) == ("absent", "present")


def _cli_on_cremad(tmp_path: Path, *flags: str) -> None:
    from mmal.prepare.cli import main

    main(["cremad", "--root", str(tmp_path / "CREMA-D"), "--out", str(tmp_path / "out"), "--raw", "audio", "visual",
          "--image-size", "8", "--n-mels", "16", "--seconds", "1", "--batch-size", "4", *flags])


def test_the_command_line_reports_the_absent_and_corrupt_modalities_of_each_split(tmp_path, capsys):
    cremad_tree(tmp_path / "CREMA-D", clips_per_emotion=4, split_files=True)
    (tmp_path / "CREMA-D" / "AudioWAV" / "1003_TIE_SAD_XX.wav").write_bytes(bytes(100))
    _cli_on_cremad(tmp_path, "--on-corrupt", "absent")
    out = capsys.readouterr().out
    assert "prepared cremad: pool 18 rows (absent: visual 6; corrupt: audio 1), test 6 rows in" in out, out


def test_a_decode_error_is_the_last_line_on_the_console_not_a_progress_bar(tmp_path, capsys):
    cremad_tree(tmp_path / "CREMA-D", clips_per_emotion=4, split_files=True)
    (tmp_path / "CREMA-D" / "AudioWAV" / "1002_IEO_SAD_XX.wav").write_bytes(bytes(100))
    with pytest.raises(SystemExit) as stop:
        _cli_on_cremad(tmp_path)
    assert stop.value.code == 1
    del stop
    gc.collect()  # a progress bar left open draws itself again when it is collected
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert lines[-1].startswith("mmal-prepare: error: ") and "1002_IEO_SAD_XX.wav: cannot be read" in lines[-1]


def test_bad_layouts_name_the_file_and_line(tmp_path):
    root = tmp_path / "food"
    food101_tree(root)
    with open(root / "texts" / "test_titles.csv", "a") as f:
        f.write("pizza_1.jpg,a pizza,pizza\n")
    lines = (root / "texts" / "test_titles.csv").read_text().count("\n")
    with pytest.raises(ConfigError, match=rf"test_titles.csv line {lines}: expected <image file>,<text>,<class>"):
        prepare("food101", root, tmp_path / "out", raw=["image"], progress=False)
    (root / "texts" / "test_titles.csv").unlink()
    with pytest.raises(ConfigError, match=r"no file .*texts/test_titles.csv"):
        prepare("food101", root, tmp_path / "out", raw=["image"], progress=False)
    crema = tmp_path / "crema"
    cremad_tree(crema, clips_per_emotion=2)
    (crema / "AudioWAV" / "1001_DFA_NEU_XX.wav").rename(crema / "AudioWAV" / "1001_DFA_CALM_XX.wav")
    with pytest.raises(ConfigError, match=r"1001_DFA_CALM_XX.wav: a CREMA-D clip is named .*'1001_DFA_CALM_XX'"):
        prepare("cremad", crema, tmp_path / "out", raw=["audio", "visual"], progress=False)
    with pytest.raises(ConfigError, match=r"--fps=2: no folder .*Image-02-FPS"):
        prepare("cremad", crema, tmp_path / "out", raw=["audio", "visual"], fps=2, progress=False)
    ave = tmp_path / "ave"
    ave_tree(ave, per_class=(2, 1, 1))
    (ave / "valSet.txt").write_text("")
    with pytest.raises(ConfigError, match=r"split 'val' has no row with any modality present \(pool = trainSet.txt"):
        prepare("ave", ave, tmp_path / "out", raw=["audio", "visual"], progress=False)
    assert not (tmp_path / "out").exists()


def _prepare_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mmal.prepare", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


@pytest.mark.slow
def test_the_command_line_prepares_and_reports_errors_with_exit_status(tmp_path, models):
    root = tmp_path / "UPMC_Food101"
    food101_tree(root)
    flags = ["--image-model", str(models["image"]), "--text-model", str(models["text"])]
    result = _prepare_cli(["food101", "--root", str(root), "--out", "out", *flags], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prepared food101: pool 36 rows (absent: image 1, text 3), test 12 rows in out" in result.stdout
    assert "train with: python -m mmal.train dataset=food101 dataset.root=out" in result.stdout
    bad = _prepare_cli(["food101", "--root", str(root), "--out", "other", "--image-model", "missing"], tmp_path)
    assert bad.returncode == 2 and "mmal-prepare: error: --image-model='missing': no model there" in bad.stderr
    (root / "images" / "train" / "baklava" / "baklava_3.jpg").write_bytes(b"broken")
    corrupt = _prepare_cli(["food101", "--root", str(root), "--out", "third", *flags], tmp_path)
    assert corrupt.returncode == 1
    assert "baklava_3.jpg: cannot be decoded as an image" in corrupt.stderr
    assert "rerun the same command" in corrupt.stderr


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# Every query strategy on the prepared fixtures, with the unimodal references of the neglect measure every
# cycle: on frozen embeddings (Food-101) and end to end with ConvEncoder on raw tensors (CREMA-D).
STRATEGIES = sorted(p.stem for p in (ROOT / "conf" / "query").glob("*.yaml"))
SMALL_RUN = ["logger=none", "trainer.device=cpu", "trainer.epochs=3", "al.initial_size=9", "al.query_size=6",
             "al.cycles=2", "dataset.val_fraction=0.2", "model.aux_heads=true", "diagnostics.every=1"]


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["food101", "ave", "cremad_raw"])
def test_prepared_fixtures_train_with_every_strategy_and_the_diagnostics(tmp_path, models, setting):
    if setting == "food101":
        root = tmp_path / "UPMC_Food101"
        food101_tree(root)
        prepare("food101", root, tmp_path / "data", models=models, progress=False)
        dataset = ["dataset=food101"]
    elif setting == "ave":
        root = tmp_path / "AVE_Dataset"
        ave_tree(root)
        prepare("ave", root, tmp_path / "data", models=models, progress=False)
        dataset = ["dataset=ave"]
    else:
        root = tmp_path / "CREMA-D"
        cremad_tree(root)
        prepare("cremad", root, tmp_path / "data", raw=["audio", "visual"], image_size=16, n_mels=16, seconds=1.0,
                progress=False)
        dataset = ["+experiment=cremad_raw", "model.encoders.audio.channels=[4,8]",
                   "model.encoders.visual.channels=[4,8]", "seed=0"]  # one seed of the experiment's grid
    # The stacked launcher: the 19 jobs in one process, their MLPs stacked (the CNNs of cremad_raw train alone).
    args = ["-m", *dataset, "dataset.root=data", f"query={','.join(STRATEGIES)}", *SMALL_RUN,
            "hydra/launcher=stacked", "hydra.launcher.n_jobs=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.sweep.subdir=${hydra.job.num}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    result = subprocess.run([sys.executable, "-m", "mmal.train", *args], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").glob("*/metrics.jsonl"))
    assert len(runs) == len(STRATEGIES) == 19
    modalities = ["image", "text"] if setting == "food101" else ["audio", "visual"]
    for path in runs:
        rows = read_jsonl(path)
        assert [r["n_labeled"] for r in rows] == [9, 15, 21], path
        for m in modalities:  # the neglect measure against a reference trained on m alone, every cycle
            assert all(0 <= r[f"ref_acc/{m}"] <= 1 and 0 <= r[f"masked_acc/{m}"] <= 1 for r in rows), path
        assert all(np.isfinite(r["gap/neglect"]) for r in rows), path


@pytest.mark.slow
def test_the_readme_prepare_commands_run_as_shown(tmp_path):
    """The README's mmal-prepare block, line by line, on fixture trees and random backbones at the paths it
    names; the training lines get a budget the fixtures can hold and the CPU."""
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "mmal-prepare" in b)
    lines = [line for line in block.splitlines() if line.strip()]
    assert [line.split()[0] for line in lines] == ["mmal-prepare", "python", "mmal-prepare", "python"]
    food101_tree(tmp_path / "data" / "raw" / "UPMC_Food101")
    cremad_tree(tmp_path / "data" / "raw" / "CREMA-D")
    made = random_backbones(tmp_path / "made")
    for kind, name in (("image", "resnet-50"), ("text", "bert-base-uncased")):
        (tmp_path / "models").mkdir(exist_ok=True)
        made[kind].rename(tmp_path / "models" / name)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"HF_HUB_OFFLINE": "1"}
    small = ["al.initial_size=9", "al.query_size=6", "al.cycles=1", "trainer.epochs=2", "dataset.val_fraction=0.2",
             "logger=none"]
    for i, line in enumerate(lines):
        args = shlex.split(line)
        if args[0] == "mmal-prepare":
            command = [str(Path(sys.executable).parent / "mmal-prepare"), *args[1:]]  # the console script
        else:
            args = [a for a in args[1:] if a != "trainer.device=cuda"]
            command = [sys.executable, *args, *small, "trainer.device=cpu", f"hydra.run.dir=run{i}"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{line}\n{result.stderr[-2000:]}"
        if args[0] != "mmal-prepare":
            assert [r["n_labeled"] for r in read_jsonl(tmp_path / f"run{i}" / "metrics.jsonl")] == [9, 15]
    assert json.loads((tmp_path / "data" / "cremad_raw" / "manifest.json").read_text())["arrays"]["audio"] == {
        "shape": [1, 128, 298], "dtype": "float32"}


def test_ave_three_splits_event_segments_and_repeated_videos(tmp_path):
    root = tmp_path / "AVE_Dataset"
    expected = ave_tree(root)
    out = tmp_path / "ave"
    manifest = prepare("ave", root, out, raw=["audio", "visual"], frames=2, image_size=8, n_mels=16, seconds=2.0,
                       batch_size=5, progress=False)
    assert manifest["classes"] == sorted(AVE_CATEGORIES) == list(AVE_CATEGORIES)
    assert manifest["settings"]["rows"]["repeated_videos_left_out"] == 1
    for split in ("pool", "val", "test"):
        rows = expected[split]
        assert [r["name"] for r in _rows(out, split)] == [video for video, *_ in rows]
        assert np.load(out / split / "y.npy").tolist() == [label for _, label, *_ in rows]
        assert np.load(out / split / "mask.npy").tolist() == [[True, has_frames] for *_, has_frames in rows]
        assert np.load(out / split / "audio.npy").shape == (len(rows), 1, 16, 198)  # 2 s: 198 frames of 10 ms
    # The audio of a row is its event segment, tiled to 2 s; a 22,050 Hz file is resampled first.
    i = next(k for k, (video, *_) in enumerate(expected["pool"]) if video[3] == "2")
    video, _, start, end, _ = expected["pool"][i]
    rate, samples = wavfile.read(root / "Audios" / f"{video}.wav")
    assert rate == 22050
    wave, _ = read_audio(root / "Audios" / f"{video}.wav", 16000, 2.0, (start, end))
    whole, _ = read_audio(root / "Audios" / f"{video}.wav", 16000, 30.0)
    segment = whole[start * 16000:end * 16000]
    assert np.array_equal(wave, np.tile(segment, 3)[:32000])
    assert np.array_equal(np.load(out / "pool" / "audio.npy")[i], LogMel(16, 2.0)([wave])[0])
    data = load_features(Pitfall(), 0, str(out))  # three splits: val as given
    assert (len(data.pool), len(data.val), len(data.test)) == (24, 6, 9)


@pytest.mark.slow
def test_the_training_command_a_raw_preparation_prints_trains_its_cnn(prepared_roots, tmp_path):
    manifest = json.loads((prepared_roots["cremad_raw"] / "manifest.json").read_text())
    command = shlex.split(manifest["train"])
    assert command[:4] == ["python", "-m", "mmal.train", "dataset=cremad"]
    assert "+model.encoders.audio={_target_: mmal.models.encoders.ConvEncoder, _partial_: true}" in command
    small = ["al.initial_size=9", "al.query_size=6", "al.cycles=1", "trainer.epochs=2", "dataset.val_fraction=0.2",
             "logger=none", "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, *command[1:], *small], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    used = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert used.count("mmal.models.encoders.ConvEncoder") == 2
    assert [r["n_labeled"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [9, 15]
