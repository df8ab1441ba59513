"""The kinds of modality ``mmal-prepare`` knows (``image``, ``frames``, ``text``, ``audio``), each an object
that says what it needs: the backbone flag that embeds it, the options that decide its numbers, whether it
can be stored raw, and how one of its sources is read and checksummed. A layout names the kind of each of
its modalities; the preparation asks the kind, never the kind's name. ``Options`` holds those preprocessing
options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmal.errors import ConfigError, check_int, check_number
from mmal.prepare.decode import file_digest, frames_digest, read_audio, read_frames, read_image, text_digest
from mmal.prepare.extractors import (
    Extractor,
    LogMel,
    Pixels,
    Pretrained,
    PretrainedAudio,
    PretrainedFrames,
    PretrainedText,
)

FLAGS = {"image_size": "--image-size", "frames": "--frames", "fps": "--fps", "n_mels": "--n-mels",
         "seconds": "--seconds", "max_length": "--text-max-length"}


@dataclass(frozen=True)
class Options:
    """The preprocessing choices that decide the prepared numbers (docs/datasets.md, "Options"): side of raw
    images and frames, frames per clip, which ``Image-<fps>-FPS`` folder, raw log-mel bands, clip seconds
    (None = the dataset's), tokens per text. Checked on construction, named by their flags."""

    image_size: int = 64
    frames: int = 1
    fps: int = 1
    n_mels: int = 128
    seconds: float | None = None
    max_length: int = 128

    def __post_init__(self):
        for name in ("image_size", "frames", "fps", "n_mels", "max_length"):
            check_int(FLAGS[name], getattr(self, name), 1)
        if self.seconds is not None:
            check_number(FLAGS["seconds"], self.seconds, 0.1)


DEFAULT_OPTIONS = Options()


@dataclass(frozen=True)
class Kind:
    """One kind of modality.

    Attributes:
        name: as ``manifest.json`` records it.
        model: which backbone embeds it (``image``, ``text``, ``audio``: the flag ``--<model>-model``).
        options: the ``Options`` that decide its embeddings; raw_options: those that decide its raw tensors,
            None when it cannot be stored raw.
        pretrained: ``(folder, flag, device, bf16, options) -> Extractor`` of a local backbone folder.
        raw: ``options -> Extractor`` of raw tensors, None when it cannot be stored raw.
        read: ``(source, segment, options, rate) -> (item, sha256 hex)``: one source (a file, a folder of
            frames, a text) as the extractor takes it; ``rate`` is the audio rate the extractor wants.
        digest: ``(source, options) -> sha256 hex``: the checksum ``read`` gives, without decoding (raises
            ``OSError`` when the source cannot be read).
    """

    name: str
    model: str
    options: tuple[str, ...]
    raw_options: tuple[str, ...] | None
    pretrained: Callable[[Path, str, str, bool, Options], Pretrained]
    raw: Callable[[Options], Extractor] | None
    read: Callable[[Any, tuple[float, float] | None, Options, int | None], tuple[Any, str]]
    digest: Callable[[Any, Options], str]

    @property
    def flag(self) -> str:
        return f"--{self.model}-model"

    def extractor(self, modality: str, dataset: str, raw: bool, folder: str | Path | None, options: Options,
                  device: str, bf16: bool) -> Extractor:
        """What ``modality`` (of this kind) becomes: raw tensors, or embeddings of the backbone ``folder``."""
        if raw:
            return self.raw(options)
        if not folder:
            instead = f", or --raw {modality} to store it as raw tensors" if self.raw else f" ({self.name} cannot " \
                                                                                          "be stored raw)"
            raise ConfigError(self.flag, None, f"a local model folder for {dataset}'s {modality!r} modality{instead}")
        return self.pretrained(Path(folder), self.flag, device, bf16, options)

    def settings(self, raw: bool) -> tuple[str, ...]:
        """The options that decide this modality's numbers."""
        return self.options + (self.raw_options if raw else ())


IMAGE = Kind("image", "image", (), ("image_size",),
             pretrained=lambda folder, flag, device, bf16, o: Pretrained(folder, flag, device, bf16),
             raw=lambda o: Pixels(o.image_size),
             read=lambda path, segment, o, rate: read_image(path),
             digest=lambda path, o: file_digest(path))
FRAMES = Kind("frames", "image", ("frames", "fps"), ("image_size",),  # frames go through the image model
              pretrained=lambda folder, flag, device, bf16, o: PretrainedFrames(folder, flag, device, bf16),
              raw=lambda o: Pixels(o.image_size, o.frames),
              read=lambda folder, segment, o, rate: read_frames(folder, o.frames),
              digest=lambda folder, o: frames_digest(folder, o.frames))
TEXT = Kind("text", "text", ("max_length",), None,
            pretrained=lambda folder, flag, device, bf16, o: PretrainedText(folder, flag, device, bf16, o.max_length),
            raw=None,
            read=lambda text, segment, o, rate: (text, text_digest(text)),
            digest=lambda text, o: text_digest(text))
AUDIO = Kind("audio", "audio", ("seconds",), ("n_mels",),
             pretrained=lambda folder, flag, device, bf16, o: PretrainedAudio(folder, flag, device, bf16),
             raw=lambda o: LogMel(o.n_mels, o.seconds),
             read=lambda path, segment, o, rate: read_audio(path, rate, o.seconds, segment),
             digest=lambda path, o: file_digest(path))
