"""Training-time random masks from a counter-based hash, the same for a member alone and in a stack.

A member's dropout mask at the ``call``-th training forward of a dropout layer is a pure function of the
member's seed, the layer, ``call`` and the element's index in the member's tensor: element i is kept when
``hash32(hash32(i ^ k1) ^ w) < threshold``, with ``k1`` drawn from the seed once (``MaskKeys``) and ``w`` the
hash of (``k2``, layer, call). ``hash32`` is Wellons' lowbias32 (two multiply-xorshift rounds, bias 0.17),
computed on int32 with wraparound: integer arithmetic, so the masks are exactly the same on every CPU and on
a GPU, whatever kernel a machine dispatches. A stack of K members computes all their masks in one batched
hash instead of K Bernoulli draws from K generators (``StackedDropout`` did that to keep each member bitwise
equal to training alone; ``docs/benchmarks.md``, "Stacked sweeps"). Modality dropout (``Trainer``) draws its
masks the same way, one stream of its own.

The keep probability is quantised to 2^-32: ``threshold`` = round((1 - p) 2^32) - 2^31 on the hash read as a
signed int32 (uniform on [-2^31, 2^31)). Departure from ``nn.Dropout``: its masks come from the global
generator's Bernoulli draws; these come from the seed alone and draw nothing, so dropout no longer moves the
global random state (a hook that draws, e.g. OGM-GE's noise, still draws from it or its member's generator).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmal.seeding import derive_seed

_M1, _M2 = 0x7FEB352D, 0x846CA68B - (1 << 32)  # lowbias32's multipliers, the second as a signed int32


def hash32(x: Tensor) -> Tensor:
    """lowbias32 of each int32 element (bits read as unsigned; shifts are logical, products wrap mod 2^32)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * _M1
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * _M2
    return x ^ ((x >> 16) & 0xFFFF)


def hash32_int(x: int) -> int:
    """``hash32`` of one Python int (its low 32 bits), as a signed 32-bit value: the scalar counterpart, also
    the reference the tests check the tensor version against."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x ^= x >> 16
    return _signed(x)


def _signed(x: int) -> int:
    """An unsigned 32-bit value as the signed int32 with the same bits."""
    return x - (1 << 32) if x >= 1 << 31 else x


def threshold(keep: float) -> int:
    """The signed int32 below which a uniform hash keeps an element with probability ``keep``."""
    return round(keep * 2 ** 32) - 2 ** 31


class MaskKeys:
    """The key words (k1, k2) of K members' mask streams, from each member's seed and the stream's name
    (``derive_seed``: the same words on every machine)."""

    def __init__(self, seeds: Sequence[int], stream: str, device: torch.device | str = "cpu"):
        words = [derive_seed(seed, stream) for seed in seeds]  # 63 bits: k1 the low 32, k2 the high 31
        keys = torch.tensor([[_signed(w & 0xFFFFFFFF), w >> 32] for w in words], dtype=torch.int32, device=device)
        self.k1, self.k2 = keys[:, 0], keys[:, 1]
        self._scrambled: dict[tuple[int, ...], Tensor] = {}

    def keep(self, shape: Sequence[int], keep: float, counter: int) -> Tensor:
        """(K, *shape) bool: member k's mask for the counter ``counter`` of its stream, element i (flat index
        in ``shape``) kept with probability ``keep``."""
        shape = tuple(shape)
        scrambled = self._scrambled.get(shape)
        if scrambled is None:  # hash32(i ^ k1): the counter's part changes per call, this part per shape
            index = torch.arange(int(np.prod(shape)), dtype=torch.int32, device=self.k1.device).view(shape)
            scrambled = hash32(index[None] ^ self.k1.view(-1, *[1] * len(shape)))
            self._scrambled[shape] = scrambled
        # distinct counters give distinct words: hash32 is a bijection of 32-bit values
        word = hash32(self.k2 ^ hash32_int(counter)).view(-1, *[1] * len(shape))
        return hash32(scrambled ^ word) < threshold(keep)


class CounterDropout(nn.Module):
    """Dropout of K members from their ``MaskKeys``: member k's mask at this layer's c-th training forward is
    ``keys.keep`` at counter (layer, c). ``stacked``: inputs carry the member dimension first (K, B, ...);
    otherwise K is 1 and the input is the member's own (B, ...). Kept elements are divided by 1 - p, as
    ``nn.Dropout`` does."""

    stacks = True

    def __init__(self, p: float, keys: MaskKeys, layer: int, stacked: bool):
        super().__init__()
        self.p, self.keys, self.layer, self.stacked = p, keys, layer, stacked
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        counter = hash32_int(self.layer) + self.calls  # one layer's calls never share a counter
        self.calls += 1
        keep = self.keys.keep(x.shape[1:] if self.stacked else x.shape, 1 - self.p, counter)
        return x * keep.reshape(x.shape).to(x.dtype).div_(1 - self.p)


def dropout_layers(model: nn.Module) -> list[tuple[str, nn.Dropout]]:
    """``model``'s dropout layers in module order: a layer's index in this list names its mask stream."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Dropout)]


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of ``root``'s submodule ``name``."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent), child, new)


@contextlib.contextmanager
def counter_dropout(model: nn.Module, seed: int) -> Iterator[None]:
    """``model`` (alone, not stacked) with its dropout layers drawing ``CounterDropout`` masks from ``seed``
    for the block's duration, as its member would in a stack; its ``nn.Dropout`` layers are back afterwards
    (MC dropout at inference draws from the global generator)."""
    layers = dropout_layers(model)
    device = next(model.parameters()).device
    keys = MaskKeys([seed], "dropout", device)
    for i, (name, layer) in enumerate(layers):
        replace_module(model, name, CounterDropout(layer.p, keys, i, stacked=False))
    try:
        yield
    finally:
        for name, layer in layers:
            replace_module(model, name, layer)
