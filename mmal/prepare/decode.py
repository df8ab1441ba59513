"""Reading one source of one sample (an image, a folder of frames, a WAV file, a text) into what an
extractor takes, with the SHA-256 of the bytes read, so the manifest can name exactly what went in; and
that SHA-256 alone, without decoding, so a resume can check that a source is still what was read.

A file that cannot be decoded raises ``CorruptSource`` naming it; the caller decides whether that stops
the preparation or marks the modality absent for that row (``--on-corrupt``).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # the image files of a frame folder


class CorruptSource(Exception):
    """A source file that is there but cannot be read as what its modality needs."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        self.only_source = False  # set by the preparation: its row has no other source (removing it drops the row)
        super().__init__(f"{path}: {reason}")


def read_image(path: Path):
    """(RGB PIL image, sha256 hex) of an image file."""
    from PIL import Image  # the [prepare] extra

    data = _read(path)
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB"), hashlib.sha256(data).hexdigest()
    except Exception as err:  # noqa: BLE001 (PIL raises many kinds; each means the same thing here)
        raise CorruptSource(path, f"cannot be decoded as an image ({type(err).__name__}: {err})") from None


def read_frames(folder: Path, count: int) -> tuple[list, str]:
    """``count`` frames of a clip, evenly spaced over its frame files in name order (the middle one for
    ``count=1``; repeated when the folder holds fewer), and the sha256 over their bytes in that order."""
    images, digest = [], hashlib.sha256()
    for path in _chosen_frames(folder, count):
        image, sha = read_image(path)
        images.append(image)
        digest.update(sha.encode())
    return images, digest.hexdigest()


def frames_digest(folder: Path, count: int) -> str:
    """The sha256 ``read_frames`` gives, without decoding the frames."""
    digest = hashlib.sha256()
    for path in _chosen_frames(folder, count):
        digest.update(file_digest(path).encode())
    return digest.hexdigest()


def _chosen_frames(folder: Path, count: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [files[int((i + 0.5) * len(files) / count)] for i in range(count)]


def read_audio(path: Path, rate: int, seconds: float, segment: tuple[float, float] | None = None
               ) -> tuple[np.ndarray, str]:
    """(waveform, sha256 hex): a WAV file as float32 mono in [-1, 1] at ``rate`` Hz, only its ``segment``
    [start, end) in seconds when given (AVE's event, as PMR's ``extractWav_SE`` cuts it), tiled (repeated
    from the start) or cut to exactly ``seconds``, as OGM-GE does for CREMA-D (``np.tile(samples, 3)[:22050*3]``)."""
    data = _read(path)
    try:
        source_rate, samples = wavfile.read(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001
        raise CorruptSource(path, f"cannot be read as a WAV file ({type(err).__name__}: {err})") from None
    if samples.size == 0:
        raise CorruptSource(path, "holds no audio samples")
    samples = _unit_scale(samples)
    wave = samples.astype(np.float32)
    if wave.ndim == 2:
        wave = wave.mean(axis=1)  # channels -> mono
    if source_rate != rate:
        wave = resample_poly(wave, rate, source_rate).astype(np.float32)
    if segment is not None:
        wave = wave[round(segment[0] * rate):round(segment[1] * rate)]
        if wave.size == 0:
            raise CorruptSource(path, f"holds no audio in the segment {segment[0]:g}-{segment[1]:g} s")
    length = round(rate * seconds)
    wave = np.tile(wave, -(-length // len(wave)))[:length]
    return np.clip(wave, -1.0, 1.0), hashlib.sha256(data).hexdigest()


def _unit_scale(samples: np.ndarray) -> np.ndarray:
    """PCM samples as floats in [-1, 1]: 8-bit WAV is unsigned around 128; 16- and 32-bit are signed, and SciPy
    returns 24-bit (and other widths up to 64) left-justified in the next signed integer, so each signed width
    divides by its dtype's half range. Float WAVs are in [-1, 1] already."""
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128) / 128
    if np.issubdtype(samples.dtype, np.signedinteger):
        return samples / float(2 ** (8 * samples.dtype.itemsize - 1))
    return samples


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 hex of a file, read in blocks (weights files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CorruptSource(path, f"cannot be read ({err.strerror})") from None
