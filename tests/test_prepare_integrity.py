"""mmal-prepare writes only rows that are what the source tree holds, or says why not in one line (issue 34,
items 5-11): a source replaced between a stop and the resume is refused, naming it; split files that list
a clip twice are refused; a row whose every source is corrupt is left out and named; a byte-order mark, a
Latin-1 index file, a file name that is not UTF-8 and an --out that cannot be a folder each get their
sentence; every PCM width of a WAV decodes to [-1, 1]; and the advice for a corrupt file works when
followed."""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import file_digests

from mmal.errors import ConfigError
from mmal.prepare import prepare
from mmal.prepare.cli import main
from mmal.prepare.decode import CorruptSource, read_audio
from mmal.prepare.fixtures import ave_tree, cremad_tree, food101_tree
from mmal.prepare.layouts import LAYOUTS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RAW = {"raw": ["audio", "visual"], "image_size": 8, "n_mels": 16, "seconds": 1.0, "batch_size": 4, "progress": False}
RAW_FLAGS = ["--raw", "audio", "visual", "--image-size", "8", "--n-mels", "16", "--seconds", "1", "--batch-size", "4"]


def _rows(out: Path, split: str) -> list[dict]:
    with open(out / "sources.csv") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def _same_preparation(out: Path, fresh: Path) -> None:
    ours, theirs = json.loads((out / "manifest.json").read_text()), json.loads((fresh / "manifest.json").read_text())
    assert ours["splits"] == theirs["splits"] and ours["dropped"] == theirs["dropped"]
    assert (out / "sources.csv").read_text() == (fresh / "sources.csv").read_text()
    for split in ours["splits"]:
        for name in ("y", "mask", *ours["modalities"]):
            assert np.array_equal(np.load(out / split / f"{name}.npy"), np.load(fresh / split / f"{name}.npy"))


def _cli(capsys, *args: str) -> tuple[int, list[str]]:
    """The exit status of ``mmal-prepare args`` and the lines it wrote to stderr."""
    try:
        main(list(args))
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err.strip("\n").split("\n")


# Item 5: the content of a source, not only its path, must be what the rows already written were read from.
def test_a_source_replaced_between_the_stop_and_the_resume_is_refused_naming_each_row_and_file(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    pool = cremad_tree(root, split_files=True)["split"]["pool"]
    victim = root / "AudioWAV" / f"{pool[21]}.wav"
    good = victim.read_bytes()
    victim.write_bytes(bytes(100))
    with pytest.raises(CorruptSource):
        prepare("cremad", root, out, **RAW)
    assert json.loads((out / ".incomplete" / "progress.json").read_text())["pool"] == 20
    victim.write_bytes(good)
    # Another file's bytes in a written clip's WAV, and in the frame read (the middle one) of another's.
    wav, frame = root / "AudioWAV" / f"{pool[3]}.wav", root / "Image-01-FPS" / pool[5] / "00001.jpg"
    originals = {wav: wav.read_bytes(), frame: frame.read_bytes()}
    wav.write_bytes((root / "AudioWAV" / f"{pool[30]}.wav").read_bytes())
    frame.write_bytes((root / "Image-01-FPS" / pool[30] / "00001.jpg").read_bytes())
    before = file_digests(out)
    with pytest.raises(ConfigError) as refused:
        prepare("cremad", root, out, **RAW)
    message = str(refused.value)
    assert message.startswith(f"--root='{root}': changed since the unfinished preparation in {out / '.incomplete'} "
                              "wrote its rows: 2 source(s) of rows already written hold other bytes than those rows "
                              "were prepared from (their SHA-256 differs): "
                              f"pool row 3 ({pool[3]}): audio AudioWAV/{pool[3]}.wav; "
                              f"pool row 5 ({pool[5]}): visual Image-01-FPS/{pool[5]}. "
                              "Put the files back as they were to resume, or delete "), message
    assert file_digests(out) == before  # nothing written is lost or overwritten
    for path, data in originals.items():  # as the message says
        path.write_bytes(data)
    prepare("cremad", root, out, **RAW)
    prepare("cremad", root, tmp_path / "fresh", **RAW)
    _same_preparation(out, tmp_path / "fresh")
    assert [r["audio_sha256"] for r in _rows(out, "pool")][3] == hashlib.sha256(originals[wav]).hexdigest()


# Item 6: a clip in both split files would be a test row in the pool; twice in one, two rows.
def test_split_files_that_list_a_clip_twice_are_refused_naming_the_clips_and_lines(tmp_path):
    root = tmp_path / "raw"
    split = cremad_tree(root, split_files=True)["split"]
    leak, twice = split["test"][2], split["pool"][7]
    with open(root / "train.csv", "a", newline="") as f:
        csv.writer(f).writerows([(leak, leak.split("_")[2]), (twice, twice.split("_")[2])])
    n = len(split["pool"])
    with pytest.raises(ConfigError) as refused:
        prepare("cremad", root, tmp_path / "out", **RAW)
    assert str(refused.value) == (
        f"--root='{root}': clips listed more than once in train.csv and test.csv (a clip in both would put a test "
        f"row in the pool): {twice} (train.csv line 8, train.csv line {n + 2}); {leak} (train.csv line {n + 1}, "
        "test.csv line 3). List each clip once, in one of the two files")
    assert not (tmp_path / "out").exists()


# Item 7: a row whose every source is corrupt has no data: it is left out and named, as a row without sources is.
def test_on_corrupt_absent_leaves_out_a_row_whose_every_source_is_corrupt_and_names_it(tmp_path, text_model):
    root = tmp_path / "raw"
    food101_tree(root)
    options = {"raw": ["image"], "models": {"text": text_model}, "image_size": 8, "batch_size": 4, "progress": False}
    only = root / "images" / "train" / "baklava" / "baklava_0.jpg"  # its text is empty: the image is its only source
    beside = root / "images" / "train" / "baklava" / "baklava_2.jpg"  # it has a text
    only.write_bytes(b"not a jpeg")
    beside.write_bytes(b"not a jpeg either")
    manifest = prepare("food101", root, tmp_path / "out", on_corrupt="absent", **options)
    assert manifest["dropped"] == ["baklava_0.jpg"]
    assert manifest["splits"]["pool"] == {"rows": 35, "absent": {"image": 1, "text": 2},
                                          "corrupt": {"image": 1, "text": 0}}
    rows = _rows(tmp_path / "out", "pool")
    assert "baklava_0.jpg" not in [r["name"] for r in rows] and [int(r["row"]) for r in rows] == list(range(35))
    kept = next(r for r in rows if r["name"] == "baklava_2.jpg")  # a corrupt file is named by its bytes too
    assert (kept["image_status"], kept["image_sha256"]) == ("corrupt", hashlib.sha256(b"not a jpeg either").hexdigest())
    for name in ("image", "text", "y", "mask"):
        assert len(np.load(tmp_path / "out" / "pool" / f"{name}.npy")) == 35
    assert np.load(tmp_path / "out" / "pool" / "mask.npy").any(axis=1).all()  # every row kept has data
    # The same as a preparation of the tree where that row has no source at all.
    only.unlink()
    prepare("food101", root, tmp_path / "without", on_corrupt="absent", **options)
    without = json.loads((tmp_path / "without" / "manifest.json").read_text())
    assert without["dropped"] == ["baklava_0.jpg"] and without["splits"]["pool"]["rows"] == 35
    assert (tmp_path / "out" / "sources.csv").read_text() == (tmp_path / "without" / "sources.csv").read_text()
    for name in ("image", "text", "y", "mask"):
        assert np.array_equal(np.load(tmp_path / "out" / "pool" / f"{name}.npy"),
                              np.load(tmp_path / "without" / "pool" / f"{name}.npy"))


def test_on_corrupt_absent_that_would_leave_a_split_empty_is_refused(tmp_path):
    root = tmp_path / "raw"
    split = cremad_tree(root, clips_per_emotion=3, split_files=True)["split"]
    for name in split["test"]:  # audio only, and corrupt
        (root / "AudioWAV" / f"{name}.wav").write_bytes(bytes(100))
        for frame in (root / "Image-01-FPS" / name).iterdir():
            frame.unlink()
    with pytest.raises(ConfigError, match=r"^--on-corrupt='absent': leaves no test row: each of its 6 rows has only "
                                          r"sources that cannot be decoded; replace them with good copies"):
        prepare("cremad", root, tmp_path / "out", **RAW, on_corrupt="absent")
    assert not (tmp_path / "out" / "manifest.json").exists()


# Item 8: a byte-order mark (spreadsheet programs write one) is no part of the first file name or category.
def test_a_byte_order_mark_in_a_headerless_index_file_is_skipped(tmp_path, text_model):
    root = tmp_path / "food"
    expected = food101_tree(root)
    table = root / "texts" / "test_titles.csv"  # headerless in the fixture
    table.write_bytes(codecs.BOM_UTF8 + table.read_bytes())
    first = LAYOUTS["food101"](root).samples[len(expected["pool"])]
    assert first.name == expected["test"][0][0] and first.sources["image"] is not None
    manifest = prepare("food101", root, tmp_path / "out", raw=["image"], models={"text": text_model}, image_size=8,
                       progress=False)
    assert manifest["splits"]["test"]["absent"] == {"image": 0, "text": 0}
    assert _rows(tmp_path / "out", "test")[0]["image_status"] == "present"
    ave = tmp_path / "ave"
    ave_tree(ave, per_class=(2, 1, 1))
    classes = LAYOUTS["ave"](ave).classes
    for name in ("trainSet.txt", "valSet.txt", "testSet.txt"):
        (ave / name).write_bytes(codecs.BOM_UTF8 + (ave / name).read_bytes())
    assert LAYOUTS["ave"](ave).classes == classes  # not a category "\ufeffBark"


# Item 9: every PCM width the wave module writes, each to [-1, 1] (8-bit WAV is unsigned around 128).
@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_pcm_width_decodes_a_full_scale_sine_to_the_same_values(tmp_path, width):
    rate, n = 16000, 800
    sine = np.sin(2 * np.pi * 440 * np.arange(n) / rate)
    top = 2 ** (8 * width - 1)
    q = np.round(sine * (top - 1)).astype(np.int64)
    data = (q + 128).astype(np.uint8).tobytes() if width == 1 else b"".join(
        int(v).to_bytes(width, "little", signed=True) for v in q)
    path = tmp_path / f"{8 * width}bit.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)
    decoded, _ = read_audio(path, rate, n / rate)
    assert decoded.dtype == np.float32 and decoded.shape == (n,)
    step = max(1 / top, 1e-7)  # one quantisation step (float32 keeps about 7 digits of 32-bit samples)
    np.testing.assert_allclose(decoded, sine, atol=2 * step)
    assert decoded.min() < -0.99 and decoded.max() > 0.99  # full scale, around 0


# Item 10: a sentence naming the file and what to do (exit status 2), before anything is written.
def test_a_latin_1_titles_file_is_refused_naming_the_file_and_line(tmp_path, capsys):
    root = tmp_path / "food"
    food101_tree(root)
    table = root / "texts" / "test_titles.csv"
    lines = table.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"recipe", "r\u00e9cipe".encode("latin-1"))
    table.write_bytes(b"\n".join(lines))
    code, err = _cli(capsys, "food101", "--root", str(root), "--out", str(tmp_path / "out"), "--raw", "image")
    assert code == 2 and err == [
        f"mmal-prepare: error: --root='{root}': {table} line 3: byte 0xe9 is not UTF-8 text; save the file as UTF-8 "
        "(e.g. `iconv -f latin1 -t utf-8 test_titles.csv`, if it is Latin-1)"]
    assert not (tmp_path / "out").exists()


def test_a_wav_whose_name_is_not_utf_8_is_refused_before_any_work(tmp_path, capsys):
    root = tmp_path / "raw"
    cremad_tree(root)
    wav = os.fsencode(root / "AudioWAV") + b"/1002_IEO_NEU_X\xe9.wav"
    os.rename(os.fsencode(root / "AudioWAV" / "1002_IEO_NEU_XX.wav"), wav)
    code, err = _cli(capsys, "cremad", "--root", str(root), "--out", str(tmp_path / "out"), *RAW_FLAGS)
    assert code == 2 and err == [
        f"mmal-prepare: error: --root='{root}': {wav!r}: a name that is not UTF-8; rename it in UTF-8 (e.g. "
        "`convmv -f latin1 -t utf-8 --notest <file>`)"]
    assert not (tmp_path / "out").exists()
    os.rename(wav, os.fsencode(root / "AudioWAV" / "1002_IEO_NEU_XX.wav"))  # as it says: then it prepares
    assert _cli(capsys, "cremad", "--root", str(root), "--out", str(tmp_path / "out"), *RAW_FLAGS)[0] == 0


@pytest.mark.parametrize("where", ["a file", "under a file", "under /proc"])
def test_an_out_that_cannot_be_a_folder_is_refused_naming_it(tmp_path, capsys, where):
    root = tmp_path / "raw"
    cremad_tree(root, clips_per_emotion=3, split_files=True)
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    if where == "a file":
        out, message = file, f"--out='{file}': is a file; give a new or empty folder (nothing there is touched)"
    elif where == "under a file":
        out, message = file / "out", f"--out='{file / 'out'}': cannot be created: {file} is a file; give a folder " \
                                     "elsewhere"
    else:  # /proc takes no new folder, not even from root (tests run as root: a read-only mode would not stop it)
        out = Path("/proc/mmal-test/out")
        message = ("--out='/proc/mmal-test/out': cannot be created (No such file or directory: /proc/mmal-test); "
                   "give a folder where you can write" if os.geteuid() == 0 else
                   "--out='/proc/mmal-test/out': cannot be created: /proc is not writable for this user")
    code, err = _cli(capsys, "cremad", "--root", str(root), "--out", str(out), *RAW_FLAGS)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"mmal-prepare: error: {message}"), err
    assert file.read_text() == "mine" and not Path("/proc/mmal-test").exists()


# Item 11: the advice for a corrupt file that is its row's only source must not lead into a refusal.
def test_the_advice_for_a_corrupt_file_that_is_its_rows_only_source_works_when_followed(tmp_path, capsys):
    root, out = tmp_path / "raw", tmp_path / "out"
    cremad_tree(root)  # no split files: the 90/10 split is drawn from the clips there
    clip = "1001_DFA_SAD_XX"  # no frames; a test row, after every pool row
    wav = root / "AudioWAV" / f"{clip}.wav"
    good = wav.read_bytes()
    wav.write_bytes(bytes(100))
    args = ["cremad", "--root", str(root), "--out", str(out), *RAW_FLAGS]
    code, err = _cli(capsys, *args)
    assert code == 1 and err[-1] == (
        f"mmal-prepare: error: {wav}: cannot be read as a WAV file (ValueError: File format b'\\x00\\x00\\x00\\x00' "
        f"not understood. Only 'RIFF', 'RIFX', and 'RF64' supported.). The rows before it are kept in "
        f"{out}/.incomplete: replace the file with a good copy and rerun the same command to resume, or add "
        "--on-corrupt absent to leave its row out (the file is its row's only source: do not remove it)")
    # What the old advice led to: without the file the clip is gone, the split is drawn anew, the pool moves.
    wav.unlink()
    code, err = _cli(capsys, *args)
    assert code == 2 and "changed since the unfinished preparation" in err[-1]
    wav.write_bytes(bytes(100))
    # The advice: --on-corrupt absent resumes and leaves the clip out ...
    assert _cli(capsys, *args, "--on-corrupt", "absent")[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped"] == [clip] and manifest["splits"]["test"]["rows"] == 5
    assert main(["cremad", "--root", str(root), "--out", str(tmp_path / "fresh"), *RAW_FLAGS, "--on-corrupt",
                 "absent"]) is None
    _same_preparation(out, tmp_path / "fresh")
    # ... or a good copy resumes and keeps it.
    other = tmp_path / "other"
    wav.write_bytes(bytes(100))
    assert _cli(capsys, "cremad", "--root", str(root), "--out", str(other), *RAW_FLAGS)[0] == 1
    wav.write_bytes(good)
    assert _cli(capsys, "cremad", "--root", str(root), "--out", str(other), *RAW_FLAGS)[0] == 0
    assert json.loads((other / "manifest.json").read_text())["splits"]["test"]["rows"] == 6
