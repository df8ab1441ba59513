"""What one modality's decoded samples become in the prepared arrays: frozen embeddings of a pretrained
backbone, or raw tensors for end-to-end training with ``mmal.models.encoders.ConvEncoder``.

Backbones are Hugging Face ``transformers`` models loaded **only** from a local folder (``config.json``,
the weights, and the preprocessor or tokenizer files), never from the hub: a folder the user fetched once
with ``hf download <model> --local-dir <folder>`` on a machine with internet. Which model a folder holds is
its own business; the defaults documented in docs/datasets.md are the backbones of the published work:

- images and frames: ``microsoft/resnet-50`` (ResNet-50, ImageNet; the pooled 2,048-d output), as
  BMMAL's Food-101 image encoder. torchvision models are not offered: torchvision cannot be imported
  beside the CPU build of PyTorch mmal's CI installs, and the ResNet-50 of ``transformers`` is the same
  network;
- text: ``bert-base-uncased`` (the 768-d output at [CLS]), as BMMAL and mmbt;
- audio: ``MIT/ast-finetuned-audioset-10-10-0.4593`` (Audio Spectrogram Transformer on 128 log-mel bands,
  16 kHz; its pooled 768-d output).

Raw tensors: images and frames resized (shorter side) and centre-cropped to ``size`` x ``size``, stored
uint8 (3, S, S), frames stacked on channels (3k, S, S); audio as a log-mel spectrogram (1, n_mels, T)
computed by ``transformers``' ``ASTFeatureExtractor`` (Kaldi-compatible fbank, 25 ms windows every 10 ms)
without its normalisation (mmal standardises with pool statistics when it loads the arrays).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmal.errors import ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@contextlib.contextmanager
def _no_empty_mel_filter_warning():
    """AST's 128 bands over a 512-point FFT at 16 kHz leave the lowest filters without a frequency bin (Kaldi's
    fbank and the pretrained AST have them too); transformers warns about it each time it builds them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        yield


class Extractor:
    """Maps a batch of decoded samples of one modality to an array ``(B, *shape)`` of ``dtype``."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __call__(self, items: Sequence) -> np.ndarray:
        raise NotImplementedError


class Pretrained(Extractor):
    """Frozen embeddings of a local ``transformers`` image model folder (module docstring): the pooled
    output, in eval mode, no gradients, on ``device``; ``bf16`` runs the forward pass under bfloat16
    autocast (CUDA). The subclasses for frames, text and audio say how their preprocessor is loaded and
    called and which output is the embedding."""

    example = "microsoft/resnet-50"  # what the refusal of a folder that is not there suggests fetching

    def __init__(self, folder: Path, key: str, device: str, bf16: bool = False):
        import transformers  # the [prepare] extra

        self.folder, self.device, self.bf16 = folder, device, bf16
        weights = [folder / w for w in WEIGHT_FILES if (folder / w).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            raise ConfigError(key, str(folder), f"no model there: expected a Hugging Face model folder with "
                                                f"config.json and {' or '.join(WEIGHT_FILES)} at {folder.resolve()}; "
                                                f"fetch one once on a machine with internet, e.g. `hf download "
                                                f"{self.example} --local-dir {folder}` (nothing downloads "
                                                f"at run time)")
        self.weights = weights[0]
        try:
            self.model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval().to(device)
            self.processor = self._processor(transformers, folder)
        except (OSError, ValueError) as err:
            raise ConfigError(key, str(folder), f"cannot load the model or its preprocessor files from "
                                                f"{folder.resolve()}: {err}") from None
        self._check(key)
        self.shape, self.dtype = self(self._probe()).shape[1:], np.dtype(np.float32)

    def _processor(self, transformers, folder: Path):
        return transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)

    def _check(self, key: str) -> None:
        """Refuse a preprocessor that loaded but cannot be what the folder's model was trained with."""

    def _probe(self) -> list:
        """One item, to learn the embedding's shape."""
        return [_grey()]

    def _inputs(self, items: list) -> dict:
        return self.processor(items, return_tensors="pt")

    def _pool(self, out) -> torch.Tensor:
        return out.pooler_output

    @torch.inference_mode()
    def __call__(self, items: Sequence) -> np.ndarray:
        return self._embed(list(items))

    def _embed(self, items: list) -> np.ndarray:
        inputs = {k: v.to(self.device) for k, v in self._inputs(items).items()}
        with torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(**inputs)
        return self._pool(out).float().flatten(1).cpu().numpy()


class PretrainedFrames(Pretrained):
    """The mean embedding of each clip's frames."""

    def _probe(self) -> list:
        return [[_grey()]]

    @torch.inference_mode()
    def __call__(self, items: Sequence) -> np.ndarray:
        counts = [len(frames) for frames in items]
        flat = self._embed([image for frames in items for image in frames])
        return np.stack([part.mean(0) for part in np.split(flat, np.cumsum(counts)[:-1])])


class PretrainedText(Pretrained):
    """The last layer's output at the first token ([CLS]) of each text, truncated to ``max_length`` tokens."""

    example = "bert-base-uncased"

    def __init__(self, folder: Path, key: str, device: str, bf16: bool = False, max_length: int = 128):
        self.max_length = max_length
        super().__init__(folder, key, device, bf16)

    def _processor(self, transformers, folder: Path):
        return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def _check(self, key: str) -> None:
        # transformers builds a tokenizer of special tokens alone when the folder has no tokenizer files
        if len(self.processor) <= len(self.processor.all_special_ids):
            raise ConfigError(key, str(self.folder), f"no tokenizer there: {self.folder.resolve()} has no tokenizer "
                                                     "files (tokenizer.json, or vocab.txt and tokenizer_config.json); "
                                                     f"fetch the whole model folder, e.g. `hf download {self.example} "
                                                     f"--local-dir {self.folder}`")

    def _probe(self) -> list:
        return ["a"]

    def _inputs(self, items: list) -> dict:
        return self.processor(items, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")

    def _pool(self, out) -> torch.Tensor:
        return out.last_hidden_state[:, 0]


class PretrainedAudio(Pretrained):
    """The pooled output of an audio model (AST) on its own features of each waveform, at its ``rate``."""

    example = "MIT/ast-finetuned-audioset-10-10-0.4593"

    def _processor(self, transformers, folder: Path):
        with _no_empty_mel_filter_warning():
            return transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)

    @property
    def rate(self) -> int:
        return getattr(self.processor, "sampling_rate", None) or 16000

    def _probe(self) -> list:
        return [np.zeros(self.rate, np.float32)]

    def _inputs(self, items: list) -> dict:
        return self.processor(items, sampling_rate=self.rate, return_tensors="pt")


class Pixels(Extractor):
    """Raw images as uint8 (3, size, size), resized (shorter side) and centre-cropped; with ``frames``, each
    item is a clip of that many frames, stacked on channels: (3 * frames, size, size)."""

    def __init__(self, size: int, frames: int | None = None):
        self.size, self.frames = size, frames
        self.shape, self.dtype = (3 * (frames or 1), size, size), np.dtype(np.uint8)

    def __call__(self, items: Sequence) -> np.ndarray:
        clips = items if self.frames else [[image] for image in items]
        return np.stack([np.concatenate([self._square(image) for image in clip]) for clip in clips])

    def _square(self, image) -> np.ndarray:
        from PIL import Image

        scale = self.size / min(image.size)
        w, h = max(self.size, round(image.width * scale)), max(self.size, round(image.height * scale))
        image = image.resize((w, h), Image.Resampling.BILINEAR)
        left, top = (w - self.size) // 2, (h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


class LogMel(Extractor):
    """Raw audio as a log-mel spectrogram (1, n_mels, frames) (module docstring)."""

    def __init__(self, n_mels: int, seconds: float, rate: int = 16000):
        from transformers import ASTFeatureExtractor

        frames = 1 + (round(rate * seconds) - round(0.025 * rate)) // round(0.010 * rate)  # Kaldi fbank, snip_edges
        with _no_empty_mel_filter_warning():
            self.fbank = ASTFeatureExtractor(num_mel_bins=n_mels, max_length=frames, sampling_rate=rate,
                                             do_normalize=False)
        self.rate = rate
        self.shape, self.dtype = (1, n_mels, frames), np.dtype(np.float32)

    def __call__(self, items: Sequence) -> np.ndarray:
        bands = self.fbank(list(items), sampling_rate=self.rate, return_tensors="np")["input_values"]  # (B, T, n)
        return bands.transpose(0, 2, 1)[:, None].astype(np.float32)


def _grey():
    from PIL import Image

    return Image.new("RGB", (32, 32), (128, 128, 128))
