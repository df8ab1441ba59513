"""mmal-prepare never writes rows whose count, labels or sources disagree with its manifest: a preparation
stopped by a corrupt file, then resumed after each edit of the source tree its messages suggest (remove the
file, replace it, add a file, or mark it absent), or after the content of a file already prepared was
replaced, is either refused with a message that says what changed and what to do, nothing written being
lost, or gives exactly what a fresh preparation of the edited tree gives. And one --out takes one
preparation at a time."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import file_digests

from mmal.checkpoint import locked
from mmal.errors import ConfigError
from mmal.prepare import prepare
from mmal.prepare.decode import CorruptSource
from mmal.prepare.fixtures import cremad_tree, food101_tree
from mmal.prepare.layouts import LAYOUTS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _assert_same_preparation(out: Path, fresh: Path) -> None:
    """``out`` holds what a preparation from scratch (``fresh``) holds: every array, sources.csv, the counts."""
    ours, theirs = json.loads((out / "manifest.json").read_text()), json.loads((fresh / "manifest.json").read_text())
    assert ours["splits"] == theirs["splits"] and ours["dropped"] == theirs["dropped"]
    assert (out / "sources.csv").read_text() == (fresh / "sources.csv").read_text()
    for split, counts in ours["splits"].items():
        for name in ("y", "mask", *ours["modalities"]):
            array = np.load(out / split / f"{name}.npy")
            assert len(array) == counts["rows"], (split, name)
            assert np.array_equal(array, np.load(fresh / split / f"{name}.npy")), (split, name)


# (dataset, which file turns corrupt, the edit, what the resume must do). CREMA-D without split files draws
# its 90/10 split from the list of clips: a clip that comes or goes may change the rows already written (then
# the resume is refused); in this tree the rows written stay as they were.
CASES = [
    ("cremad", "wav with frames", "remove", "consistent"),  # the clip stays, its audio absent
    ("cremad", "wav without frames", "remove", "consistent"),  # the clip goes, after the rows written
    ("cremad", "wav without frames", "replace", "consistent"),
    ("cremad", "wav without frames", "add", "consistent"),  # and a new clip, after the rows written
    ("cremad", "wav without frames", "absent", "consistent"),  # --on-corrupt absent
    ("food101", "image", "remove", "consistent"),  # the image absent
    ("food101", "image", "replace", "consistent"),
    ("food101", "image", "add", "refused"),  # and the image of a row written as absent appears
    ("food101", "image", "absent", "consistent"),
    # and the file of a row already written gets other bytes (another file's): its arrays hold the old ones
    ("cremad", "wav with frames", "overwrite written", "refused"),
    ("food101", "image", "overwrite written", "refused"),
]


@pytest.mark.parametrize(("dataset", "victim", "edit", "expected"), CASES)
def test_a_resume_after_each_suggested_edit_is_refused_or_equals_a_fresh_preparation(tmp_path, text_model, dataset,
                                                                                     victim, edit, expected):
    root, out = tmp_path / "raw", tmp_path / "out"
    if dataset == "cremad":
        cremad_tree(root)
        options = {"raw": ["audio", "visual"], "image_size": 8, "n_mels": 16, "seconds": 1.0, "batch_size": 4}
        pool = [s for s in LAYOUTS["cremad"](root).samples if s.split == "pool"]
        frames = victim == "wav with frames"
        row = next(i for i, s in enumerate(pool) if i >= 4 and (s.sources["visual"] is not None) == frames)
        file, added = pool[row].sources["audio"], root / "AudioWAV" / "1011_DFA_NEU_XX.wav"
        absent_written = None
    else:
        food101_tree(root)
        options = {"raw": ["image"], "models": {"text": text_model}, "image_size": 8, "batch_size": 4}
        pool = [s for s in LAYOUTS["food101"](root).samples if s.split == "pool"]
        absent_written = next(i for i, s in enumerate(pool) if s.sources["image"] is None)
        row = next(i for i, s in enumerate(pool) if i >= absent_written + 4 and s.sources["image"])
        file, added = pool[row].sources["image"], root / "images" / "train" / "apple_pie" / pool[absent_written].name
    modality = "audio" if dataset == "cremad" else "image"
    first = next(i for i, s in enumerate(pool[:4]) if s.sources[modality] is not None)  # a row of the first batch
    written = pool[first].sources[modality]
    good, written_bytes = file.read_bytes(), written.read_bytes()
    file.write_bytes(bytes(1000))  # zeros: a file that is there but cannot be decoded
    with pytest.raises(CorruptSource, match=file.name):
        prepare(dataset, root, out, progress=False, **options)
    assert json.loads((out / ".incomplete" / "progress.json").read_text())["pool"] >= 4  # rows were written

    if edit == "remove":
        file.unlink()
    elif edit == "replace":
        file.write_bytes(good)
    elif edit == "add":
        file.write_bytes(good)
        added.write_bytes(good)
    elif edit == "overwrite written":
        file.write_bytes(good)
        written.write_bytes(good)
    else:
        options["on_corrupt"] = "absent"
    before = file_digests(out)
    try:
        prepare(dataset, root, out, progress=False, **options)
        outcome = "consistent"
    except ConfigError as err:
        outcome = "refused"
        if edit == "overwrite written":
            assert re.search(rf"--root=.*changed since the unfinished preparation in .*\.incomplete wrote its rows: 1 "
                             rf"source\(s\) of rows already written hold other bytes than those rows were prepared "
                             rf"from \(their SHA-256 differs\): pool row {first} \({pool[first].name}\): {modality} "
                             rf"{re.escape(str(written.relative_to(root)))}\. Put the files back as they were to "
                             r"resume, or delete .*\.incomplete to start over", str(err)), str(err)
        else:
            assert re.search(r"--root=.*changed since the unfinished preparation in .*\.incomplete wrote the first "
                             r"\d+ of its \d+ pool rows: pool row \d+ \(.*\) has other sources or another label .* "
                             r"Put the files back as they were to resume, or delete .*\.incomplete to start over",
                             str(err))
        assert file_digests(out) == before  # nothing written is lost
    assert outcome == expected
    if outcome == "refused":  # as the message says: the files as they were, and it resumes
        if edit == "remove":
            file.write_bytes(good)
        elif edit == "overwrite written":
            written.write_bytes(written_bytes)
        else:
            added.unlink()
        prepare(dataset, root, out, progress=False, **options)
    prepare(dataset, root, tmp_path / "fresh", progress=False, **options)
    _assert_same_preparation(out, tmp_path / "fresh")


def test_a_row_that_appears_after_the_rows_written_is_prepared_and_the_arrays_grow(tmp_path):
    """OGM-GE's split files list a clip with no WAV and no frames (left out); its WAV appears before the
    resume, after the rows written: the resume prepares it and every array has the rows of now."""
    root, out = tmp_path / "raw", tmp_path / "out"
    tree = cremad_tree(root, split_files=True)
    options = {"raw": ["audio", "visual"], "image_size": 8, "n_mels": 16, "seconds": 1.0, "batch_size": 4,
               "progress": False}
    pool = tree["split"]["pool"]
    late = root / "AudioWAV" / f"{pool[45]}.wav"  # a clip without frames, near the end of the pool
    victim = root / "AudioWAV" / f"{pool[21]}.wav"
    assert pool[45].startswith("1001_") and not (root / "Image-01-FPS" / pool[45]).exists()
    late_bytes, good = late.read_bytes(), victim.read_bytes()
    late.unlink()
    victim.write_bytes(bytes(100))
    with pytest.raises(CorruptSource):
        prepare("cremad", root, out, **options)
    assert json.loads((out / ".incomplete" / "progress.json").read_text())["pool"] == 20
    victim.write_bytes(good)
    late.write_bytes(late_bytes)
    manifest = prepare("cremad", root, out, **options)
    assert manifest["splits"]["pool"]["rows"] == len(pool) and manifest["dropped"] == []
    prepare("cremad", root, tmp_path / "fresh", **options)
    _assert_same_preparation(out, tmp_path / "fresh")


def test_a_second_preparation_into_the_same_out_is_refused_while_the_first_runs(tmp_path):
    root, out = tmp_path / "raw", tmp_path / "out"
    cremad_tree(root, clips_per_emotion=3, split_files=True)
    options = {"raw": ["audio", "visual"], "image_size": 8, "n_mels": 16, "seconds": 1.0, "progress": False}
    with locked(out / ".incomplete"):  # what a running mmal-prepare holds (mmal.checkpoint's run lock)
        with pytest.raises(ConfigError, match=r"--out=.*is being written by another mmal-prepare run right now; "
                                              r"wait for it to end, or give another --out"):
            prepare("cremad", root, out, **options)
        assert [p.name for p in (out / ".incomplete").iterdir()] == [".lock"]  # nothing written beside the lock
    prepare("cremad", root, out, **options)  # once it ends, the folder is free
    assert (out / "manifest.json").is_file() and not (out / ".incomplete").exists()
