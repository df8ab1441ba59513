"""Raw datasets in the published layouts of UPMC Food-101 and CREMA-D, of random content, and
random-initialised backbone folders in the Hugging Face format ``mmal.prepare`` loads: what the tests
prepare end to end, offline, in seconds (tiny sizes), and what ``scripts/bench_prepare.py`` times
(real image sizes, real architectures). Deterministic for a seed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import wavfile

FOOD_CLASSES = ("apple_pie", "baby_back_ribs", "baklava")
EMOTIONS = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")


def _jpeg(path: Path, rng: np.random.Generator, tint: int, sizes: tuple[int, int] = (18, 40)) -> None:
    """A random JPEG of sides in ``sizes`` whose mean colour depends on ``tint`` (so classes differ in what
    a CNN can see)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = rng.integers(*sizes, size=2)
    pixels = rng.integers(0, 96, size=(h, w, 3)) + np.array([[[(60 * tint) % 160, 40, (100 * tint) % 160]]])
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def food101_tree(root: Path, train_per_class: int = 12, test_per_class: int = 4, seed: int = 0,
                 image_sizes: tuple[int, int] = (18, 40), text_words: int = 0) -> dict:
    """UPMC Food-101's layout under ``root``; returns what the test expects: per split the rows in order as
    (file, label, has_image, has_text). The first train row of each class has an empty text, the second
    train row of class 0 names an image that is not there; the train CSV has a header row. ``text_words``
    > 0 appends that many random words to every non-empty text (web-page-sized texts for timing)."""
    rng = np.random.default_rng(seed)
    expected = {}
    for split, official, per_class in (("pool", "train", train_per_class), ("test", "test", test_per_class)):
        rows = []
        for label, cls in enumerate(FOOD_CLASSES):
            for i in range(per_class):
                name = f"{cls}_{i}.jpg"
                has_image = not (split == "pool" and label == 0 and i == 1)
                if has_image:
                    _jpeg(root / "images" / official / cls / name, rng, label, image_sizes)
                words = ["recipe", cls.replace("_", " "), "with", "sauce, best"][: 1 + i % 4]
                words += ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 9))) for _ in range(text_words)]
                text = "" if split == "pool" and i == 0 else " ".join(words)
                rows.append((name, text, cls, label, has_image))
        order = rng.permutation(len(rows))  # the CSV's order is the prepared order, not sorted by class
        rows = [rows[i] for i in order]
        table = root / "texts" / f"{official}_titles.csv"
        table.parent.mkdir(parents=True, exist_ok=True)
        with open(table, "w", newline="") as f:
            writer = csv.writer(f)
            if split == "pool":
                writer.writerow(["image_path", "text", "food"])
            writer.writerows([(name, text, cls) for name, text, cls, _, _ in rows])
        expected[split] = [(name, label, has_image, bool(text)) for name, text, _, label, has_image in rows]
    return expected


def cremad_tree(root: Path, clips_per_emotion: int = 10, split_files: bool = False, seed: int = 0,
                image_sizes: tuple[int, int] = (18, 40), seconds: tuple[float, float] = (0.6, 1.8)) -> dict:
    """CREMA-D's raw layout plus OGM-GE's frame folders (``Image-01-FPS``) under ``root``: one WAV per clip
    (random noise whose loudness depends on the emotion; lengths in ``seconds``; every third clip at 22,050 Hz,
    the others 16 kHz) and 3 frames per clip. The first clip of each emotion has no frame folder. With
    ``split_files``, OGM-GE's ``train.csv``/``test.csv`` (the last clip of each emotion in test). Returns
    the clip names per emotion and the split when written."""
    rng = np.random.default_rng(seed)
    names = {}
    for label, emotion in enumerate(EMOTIONS):
        names[emotion] = []
        for i in range(clips_per_emotion):
            name = f"{1001 + i}_{['DFA', 'IEO', 'TIE'][i % 3]}_{emotion}_XX"
            names[emotion].append(name)
            rate = 22050 if i % 3 == 2 else 16000
            wave = rng.normal(0, 0.05 * (1 + label), size=int(rate * rng.uniform(*seconds)))
            (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
            wavfile.write(root / "AudioWAV" / f"{name}.wav", rate, (wave.clip(-1, 1) * 32767).astype(np.int16))
            if i > 0:
                for f in range(3):
                    _jpeg(root / "Image-01-FPS" / name / f"{f:05d}.jpg", rng, label, image_sizes)
    split = None
    if split_files:
        split = {"pool": [n for e in EMOTIONS for n in names[e][:-1]], "test": [names[e][-1] for e in EMOTIONS]}
        for part, table in (("pool", "train.csv"), ("test", "test.csv")):
            with open(root / table, "w", newline="") as f:
                csv.writer(f).writerows([(n, n.split("_")[2]) for n in split[part]])
    return {"names": names, "split": split}


AVE_CATEGORIES = ("Bark", "Church bell", "Male speech, man speaking")


def ave_tree(root: Path, per_class: tuple[int, int, int] = (8, 2, 3), seed: int = 0) -> dict:
    """AVE's split files plus PMR's audio and event-segment frame folders under ``root``: per category
    ``per_class`` videos in train/val/test, a WAV of 3-5 s each (every third at 22,050 Hz) and 2 frames;
    an event segment of whole seconds inside it. The first train video of each category has no frame
    folder; the first train video is listed a second time with another category (PMR's loader keeps the
    first). Returns per split the rows kept, in order, as (video id, label, start, end, has_frames)."""
    rng = np.random.default_rng(seed)
    expected = {}
    (root / "Audios").mkdir(parents=True, exist_ok=True)
    for split, name, count in zip(("pool", "val", "test"), ("train", "val", "test"), per_class):
        rows = []
        for label, category in enumerate(AVE_CATEGORIES):
            for i in range(count):
                video = f"{name[:2]}{label}{i}" + "".join(rng.choice(list("ABCDEFGHJK"), size=6))
                rate = 22050 if i % 3 == 2 else 16000
                duration = int(rng.integers(3, 6))
                start = int(rng.integers(0, duration - 1))
                end = int(rng.integers(start + 1, duration + 1))
                wave = rng.normal(0, 0.05 * (1 + label), size=rate * duration)
                wavfile.write(root / "Audios" / f"{video}.wav", rate, (wave.clip(-1, 1) * 32767).astype(np.int16))
                has_frames = not (split == "pool" and i == 0)
                if has_frames:
                    for f in range(2):
                        _jpeg(root / "Image-01-FPS-SE" / video / f"{f:05d}.jpg", rng, label)
                rows.append((category, video, start, end, label, has_frames))
        rows = [rows[i] for i in rng.permutation(len(rows))]
        lines = [f"{c}&{v}&good&{s}&{e}" for c, v, s, e, _, _ in rows]
        if split == "pool":
            first = rows[0]
            other = AVE_CATEGORIES[(AVE_CATEGORIES.index(first[0]) + 1) % len(AVE_CATEGORIES)]
            lines.append(f"{other}&{first[1]}&good&0&1")
        (root / f"{name}Set.txt").write_text("\n".join(lines) + "\n")
        expected[split] = [(v, label, s, e, f) for _, v, s, e, label, f in rows]
    return expected


def random_backbones(folder: Path, full_size: bool = False) -> dict[str, Path]:
    """Random-initialised image (ResNet), text (BERT) and audio (AST) folders with their preprocessor files,
    as ``hf download`` would leave real ones, built offline from configs. ``full_size``: the architectures
    and preprocessing of the documented defaults (ResNet-50 at 224 px, BERT-base, AST on 128 log-mel bands
    x 1,024 frames), for timing; else tiny ones, for tests. Random weights cost what trained ones cost."""
    import transformers as T

    paths = {k: folder / k for k in ("image", "text", "audio")}
    T.set_seed(0)
    if full_size:
        image, processor = T.ResNetConfig(), T.ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875)
        text = T.BertConfig()
        audio, fbank = T.ASTConfig(), T.ASTFeatureExtractor()
    else:
        image = T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], layer_type="basic")
        processor = T.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0)
        text = T.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
        audio = T.ASTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            num_mel_bins=16, max_length=64)
        fbank = T.ASTFeatureExtractor(num_mel_bins=16, max_length=64)
    T.ResNetModel(image).save_pretrained(paths["image"])
    processor.save_pretrained(paths["image"])
    letters = "abcdefghijklmnopqrstuvwxyz"  # a token per letter, first in a word and after it (WordPiece's ##)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *[f"##{c}" for c in letters], ","]
    paths["text"].mkdir(parents=True, exist_ok=True)
    (paths["text"] / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # positional: the vocabulary file is `vocab_file` in transformers 4 and `vocab` in 5 (a keyword is lost there)
    T.BertTokenizerFast(str(paths["text"] / "vocab.txt")).save_pretrained(paths["text"])
    text.vocab_size = len(vocab)
    T.BertModel(text).save_pretrained(paths["text"])
    fbank.save_pretrained(paths["audio"])
    T.ASTModel(audio).save_pretrained(paths["audio"])
    return paths
