"""The published folder layouts of the raw datasets ``mmal-prepare`` reads, as lists of samples.

A layout function takes the folder the user downloaded (``--root``) and the preprocessing ``Options`` (it
reads those it needs: ``fps`` picks the frame folders) and returns a ``Layout``: the class names, the
modalities with their kind (``mmal.prepare.kinds``), and one ``Sample`` per row in the order the rows will
be written. Nothing is decoded here: a layout only lists files, so that every problem with the folder
itself is reported before any extraction starts. Index files are UTF-8 (a byte-order mark is skipped), and
so must be the names of the files and folders a layout lists: ``sources.csv`` names them.

- **UPMC Food-101** (Wang et al., 2015; the layout of its Kaggle release, which BMMAL and mmbt read)::

      <root>/images/{train,test}/<class>/<file>.jpg
      <root>/texts/{train,test}_titles.csv     rows: <file>,<text>,<class>  (an optional header row)

  ``pool`` = the official train split, ``test`` = the official test split; classes = the folders of
  ``images/train``, sorted (label = position). An empty text, or an image file that is not there, is an
  absent modality for that row.
- **CREMA-D** (Cao et al., 2014; the raw release plus the frame folders of OGM-GE's
  ``data/CREMAD/video_preprocessing.py``)::

      <root>/AudioWAV/<clip>.wav                       <clip> = <actor>_<sentence>_<emotion>_<level>
      <root>/Image-<fps:02d>-FPS/<clip>/<frame>.jpg
      <root>/{train,test}.csv   optional; rows: <clip>,<emotion>  (OGM-GE's data/CREMAD split files)

  Six emotions in OGM-GE's label order (NEU HAP SAD FEA DIS ANG), read from the clip name. Without the
  split files every clip of ``AudioWAV`` or the frame folders is split 90/10 stratified by emotion with
  seed 0 (OGM-GE's files hold 6,698 and 744 clips; split files that list a clip twice, in one file or in
  both, are refused). A WAV (``.wav`` in any case) or frame folder that is not there is an absent modality
  for that clip.
- **AVE** (Tian et al., 2018; the release's split files plus the audio and the event-segment frames that
  PMR's ``data/AVE/mp4_to_wav.py`` and ``video_preprocessing.py`` (``extractImage_SE``) write)::

      <root>/{train,val,test}Set.txt     rows: <category>&<video id>&<quality>&<start s>&<end s>
      <root>/Audios/<video id>.wav
      <root>/Image-<fps:02d>-FPS-SE/<video id>/<frame>.jpg

  ``pool``/``val``/``test`` = the release's train/val/test sets; 28 categories, sorted (label = position);
  a video listed twice in one split keeps its first row, as PMR's loader does. The audio is the event
  segment [start, end) of the WAV, tiled to 10 s (PMR's ``extractWav_SE``).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from mmal.errors import ConfigError
from mmal.prepare.decode import IMAGE_SUFFIXES
from mmal.prepare.kinds import AUDIO, DEFAULT_OPTIONS, FRAMES, IMAGE, TEXT, Kind, Options

CREMAD_EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")  # OGM-GE's class_dict order
CREMAD_TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Sample:
    """One row: its split (``pool``, ``val`` or ``test``), label, a name that identifies it in the raw data,
    per modality its source (a file, a folder of frames, a text, or None where the modality is absent), and
    the part of the audio to read, in seconds (None = all of it)."""

    split: str
    label: int
    name: str
    sources: dict[str, Path | str | None]
    segment: tuple[float, float] | None = None


@dataclass
class Layout:
    """What a raw dataset folder holds: classes, modality kinds, samples, and the index files (CSV) whose
    checksums the manifest records next to those of every source file."""

    dataset: str
    classes: list[str]
    kinds: dict[str, Kind]  # modality -> its kind
    samples: list[Sample]
    index_files: list[Path] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)  # how the rows were chosen, for the manifest
    splits: tuple[str, ...] = ("pool", "test")  # val, when absent, is drawn from the pool at load time
    seconds: float = 3.0  # audio clips are tiled or cut to this length unless --seconds says otherwise


def food101(root: Path, options: Options = DEFAULT_OPTIONS) -> Layout:
    """UPMC Food-101 under ``root`` (module docstring)."""
    train_images = root / "images" / "train"
    if not train_images.is_dir():
        raise ConfigError("--root", str(root), f"no folder {train_images}: UPMC Food-101 keeps its images in "
                                               "images/{train,test}/<class>/ (docs/datasets.md)")
    classes = sorted(_utf8(p, root).name for p in train_images.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ConfigError("--root", str(root), f"{train_images} holds {len(classes)} class folders; at least 2")
    label = {c: i for i, c in enumerate(classes)}
    samples, index_files = [], []
    for split, official in (("pool", "train"), ("test", "test")):
        table = root / "texts" / f"{official}_titles.csv"
        if not table.is_file():
            raise ConfigError("--root", str(root), f"no file {table}: UPMC Food-101 lists its {official} split as "
                                                   f"rows <image file>,<text>,<class> in texts/{official}_titles.csv")
        index_files.append(table)
        for line, row in enumerate(csv.reader(io.StringIO(_text(table, root), newline="")), start=1):
            if line == 1 and row and not row[0].lower().endswith(IMAGE_SUFFIXES):
                continue  # a header row (the Kaggle copy has one: image_path,text,food)
            if len(row) < 3 or row[-1].strip() not in label:
                raise ConfigError("--root", str(root), f"{table} line {line}: expected <image file>,<text>,"
                                                       f"<class> with a class from {train_images}, got {row}")
            name, cls = row[0].strip(), row[-1].strip()
            text = ",".join(row[1:-1]).strip()  # a text with unquoted commas spans several fields
            image = root / "images" / official / cls / name
            samples.append(Sample(split, label[cls], name, {"image": image if image.is_file() else None,
                                                            "text": text or None}))
    used = {s.label for s in samples if s.split == "pool"}
    if unused := [c for c in classes if label[c] not in used]:
        raise ConfigError("--root", str(root), f"the class folder {train_images / unused[0]} has no row in "
                                               "texts/train_titles.csv: every folder of images/train is a class, "
                                               "so remove the folders of classes you do not use")
    return Layout("food101", classes, {"image": IMAGE, "text": TEXT}, samples, index_files,
                  {"splits": "pool = texts/train_titles.csv, test = texts/test_titles.csv (official)"})


def cremad(root: Path, options: Options = DEFAULT_OPTIONS) -> Layout:
    """CREMA-D under ``root`` with frames extracted at ``options.fps`` frames per second (module docstring)."""
    fps = options.fps
    audio, frames = root / "AudioWAV", root / f"Image-{fps:02d}-FPS"
    if not audio.is_dir():
        raise ConfigError("--root", str(root), f"no folder {audio}: CREMA-D's raw release keeps one WAV per clip "
                                               "in AudioWAV/ (docs/datasets.md)")
    if not frames.is_dir():
        raise ConfigError("--fps", fps, f"no folder {frames}: the frames of every clip, as OGM-GE's "
                                        f"video_preprocessing.py writes them at {fps} frame(s) per second")
    wavs, folders = _wav_files(audio), _frame_folders(frames)
    tables = [root / "train.csv", root / "test.csv"]
    if any(t.is_file() for t in tables):
        missing = [str(t) for t in tables if not t.is_file()]
        if missing:
            raise ConfigError("--root", str(root), f"{missing[0]} is missing: give both train.csv and test.csv "
                                                   "(OGM-GE's split) or neither (a stratified 90/10 split)")
        clips = {split: _cremad_table(t) for split, t in zip(("pool", "test"), tables)}
        _refuse_repeated(clips, tables, root)
        notes = {"splits": "pool = train.csv, test = test.csv (OGM-GE's split files)"}
    else:
        names = sorted(set(wavs) | set(folders))  # a clip with frames but no WAV is a row with audio absent
        if not names:
            raise ConfigError("--root", str(root), f"no .wav files in {audio} and no frame folders in {frames}")
        labels = [_cremad_emotion(n, wavs.get(n) or folders[n]) for n in names]
        try:
            pool, test = train_test_split(np.array(names), test_size=CREMAD_TEST_FRACTION, stratify=labels,
                                          random_state=0)
        except ValueError as err:  # too few clips of an emotion
            raise ConfigError("--root", str(root), f"cannot split the {len(names)} clips of {audio} 90/10 stratified "
                                                   f"by emotion ({err}); give train.csv and test.csv") from None
        clips = {"pool": sorted(pool), "test": sorted(test)}
        notes = {"splits": f"every clip of AudioWAV, split stratified by emotion: test = {CREMAD_TEST_FRACTION} "
                           "(sklearn train_test_split, random_state=0)"}
    samples = []
    for split, names in clips.items():
        for name in names:
            label = CREMAD_EMOTIONS.index(_cremad_emotion(name, wavs.get(name) or audio / f"{name}.wav"))
            samples.append(Sample(split, label, name, {"audio": wavs.get(name), "visual": folders.get(name)}))
    present = [t for t in tables if t.is_file()]
    return Layout("cremad", list(CREMAD_EMOTIONS), {"audio": AUDIO, "visual": FRAMES}, samples, present, notes)


def _wav_files(folder: Path) -> dict[str, Path]:
    """The WAV files of ``folder`` by clip name, whatever the case of their suffix (``.wav``, ``.WAV``)."""
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == ".wav":
            _utf8(path, folder.parent)
            if path.stem in files:
                raise ConfigError("--root", str(folder.parent), f"{files[path.stem]} and {path.name}: two WAV files "
                                                                "of one clip; keep one")
            files[path.stem] = path
    return files


def _frame_folders(frames: Path) -> dict[str, Path]:
    """The frame folders under ``frames`` by clip name; a folder without images counts as not there."""
    return {_utf8(p, frames.parent).name: p for p in sorted(frames.iterdir())
            if p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir())}


def _utf8(path: Path, root: Path) -> Path:
    """``path``, refused when its name is not UTF-8: ``sources.csv`` (UTF-8) names every source, and a name
    it cannot write would stop the preparation after its last row."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("--root", str(root), f"{os.fsencode(path)!r}: a name that is not UTF-8; rename it in "
                                               "UTF-8 (e.g. `convmv -f latin1 -t utf-8 --notest <file>`)") from None
    return path


def _text(path: Path, root: Path) -> str:
    """An index file's text: UTF-8, with or without a byte-order mark (spreadsheet programs write one);
    anything else is refused, naming the line."""
    data = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ConfigError("--root", str(root), f"{path} line {line}: byte {data[err.start]:#04x} is not UTF-8 text; "
                                               f"save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name}`, "
                                               "if it is Latin-1)") from None


def _cremad_table(path: Path) -> list[str]:
    """The clip names of one of OGM-GE's split files (rows ``<clip>,<emotion>``), checking each label."""
    names = []
    for line, row in enumerate(csv.reader(io.StringIO(_text(path, path.parent), newline="")), start=1):
        if len(row) != 2 or row[1] not in CREMAD_EMOTIONS or _cremad_emotion(row[0], path) != row[1]:
            raise ConfigError("--root", str(path.parent), f"{path} line {line}: expected <clip>,<emotion> with the "
                                                          f"clip's own emotion from {list(CREMAD_EMOTIONS)}, got {row}")
        names.append(row[0])
    return names


def _refuse_repeated(clips: dict[str, list[str]], tables: list[Path], root: Path) -> None:
    """Refuse split files that list a clip more than once: in both, its test row would be in the pool too;
    twice in one, it would be two rows."""
    lines = defaultdict(list)  # clip -> "<file> line <n>" of each of its rows
    for names, table in zip(clips.values(), tables):
        for line, name in enumerate(names, start=1):
            lines[name].append(f"{table.name} line {line}")
    if repeated := [f"{name} ({', '.join(where)})" for name, where in lines.items() if len(where) > 1]:
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise ConfigError("--root", str(root), f"clips listed more than once in {tables[0].name} and "
                                               f"{tables[1].name} (a clip in both would put a test row in the "
                                               f"pool): {'; '.join(repeated[:5])}{more}. List each clip once, in "
                                               "one of the two files")


def _cremad_emotion(name: str, path: Path) -> str:
    parts = name.split("_")
    if len(parts) != 4 or parts[2] not in CREMAD_EMOTIONS:
        raise ConfigError("--root", str(path.parent), f"{path}: a CREMA-D clip is named "
                                                      f"<actor>_<sentence>_<emotion>_<level> with an emotion from "
                                                      f"{list(CREMAD_EMOTIONS)}, got {name!r}")
    return parts[2]


def ave(root: Path, options: Options = DEFAULT_OPTIONS) -> Layout:
    """AVE under ``root`` with event-segment frames extracted at ``options.fps`` (module docstring)."""
    fps = options.fps
    audio, frames = root / "Audios", root / f"Image-{fps:02d}-FPS-SE"
    if not audio.is_dir():
        raise ConfigError("--root", str(root), f"no folder {audio}: one WAV per video, as PMR's mp4_to_wav.py "
                                               "writes it from AVE/<video id>.mp4 (docs/datasets.md)")
    if not frames.is_dir():
        raise ConfigError("--fps", fps, f"no folder {frames}: the event-segment frames of every video, as PMR's "
                                        f"video_preprocessing.py (extractImage_SE) writes them at {fps} per second")
    tables = {split: root / f"{name}Set.txt" for split, name in (("pool", "train"), ("val", "val"), ("test", "test"))}
    rows = {split: _ave_table(table) for split, table in tables.items()}
    wavs, folders = _wav_files(audio), _frame_folders(frames)
    classes = sorted({category for split_rows in rows.values() for category, *_ in split_rows})
    samples, repeated = [], 0
    for split, split_rows in rows.items():
        seen = set()
        for category, video, start, end in split_rows:
            if video in seen:
                repeated += 1
                continue
            seen.add(video)
            samples.append(Sample(split, classes.index(category), video,
                                  {"audio": wavs.get(video), "visual": folders.get(video)}, segment=(start, end)))
    return Layout("ave", classes, {"audio": AUDIO, "visual": FRAMES}, samples, list(tables.values()),
                  {"splits": "pool = trainSet.txt, val = valSet.txt, test = testSet.txt (the AVE release)",
                   "repeated_videos_left_out": repeated}, splits=("pool", "val", "test"), seconds=10.0)


def _ave_table(path: Path) -> list[tuple[str, str, float, float]]:
    """(category, video id, start, end) of each row of an AVE split file (rows ``<category>&<video id>&
    <quality>&<start>&<end>``; a header row ``Category&VideoID&...`` is skipped)."""
    if not path.is_file():
        raise ConfigError("--root", str(path.parent), f"no file {path}: AVE lists its splits in trainSet.txt, "
                                                      "valSet.txt and testSet.txt")
    rows = []
    for line, text in enumerate(_text(path, path.parent).splitlines(), start=1):
        fields = text.strip().split("&")
        if not text.strip() or (line == 1 and fields[0] == "Category"):
            continue
        try:
            category, video, _, start, end = fields
            rows.append((category, video, float(start), float(end)))
            if not 0 <= rows[-1][2] < rows[-1][3]:
                raise ValueError
        except ValueError:
            raise ConfigError("--root", str(path.parent), f"{path} line {line}: expected <category>&<video id>&"
                                                          f"<quality>&<start s>&<end s> with start < end, got "
                                                          f"{text.strip()!r}") from None
    return rows


LAYOUTS: dict[str, Callable[[Path, Options], Layout]] = {"food101": food101, "cremad": cremad, "ave": ave}
