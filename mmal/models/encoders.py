"""Per-modality encoders and the MLP block the heads share.

Every encoder is built as ``encoder(in_shape=...)`` from the per-sample shape of its modality (``(D,)`` for
flat features, ``(C, T)`` for time series, ``(C, H, W)`` for images), maps a batch ``(B, *in_shape)`` to an
embedding ``(B, out_dim)`` and exposes ``out_dim``. Encoders check their own hyperparameters under relative keys
(``dropout``); the classifier adds the prefix (``model.encoder`` or ``model.encoders.<modality>``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from mmal.errors import ConfigError, check_int, check_number, is_int


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_hidden: int, dropout: float = 0.0) -> nn.Sequential:
    """``num_hidden`` Linear-ReLU-Dropout blocks of width ``hidden_dim``, then a Linear to ``out_dim``.

    ``num_hidden=0`` is a single linear layer.
    """
    layers: list[nn.Module] = []
    for i in range(num_hidden):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
    layers.append(nn.Linear(hidden_dim if num_hidden else in_dim, out_dim))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Maps one modality (B, *in_shape), flattened, to an embedding (B, out_dim), ReLU-activated."""

    stacks = True  # works on a leading member dimension (mmal.models.stacked)

    def __init__(self, in_shape: tuple[int, ...], hidden_dim: int = 128, out_dim: int = 64, num_hidden: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        check_int("hidden_dim", hidden_dim, 1)
        check_int("out_dim", out_dim, 1)
        check_int("num_hidden", num_hidden, 0)
        check_number("dropout", dropout, 0, below=1)  # p = 1 would zero every activation
        self.net = nn.Sequential(mlp(math.prod(in_shape), hidden_dim, out_dim, num_hidden, dropout), nn.ReLU())
        self.out_dim = out_dim
        self.in_ndim = len(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(-self.in_ndim))  # the per-sample dimensions, whatever leads them


class IdentityEncoder(nn.Module):
    """No encoder: the 'embedding' is the (masked) input itself, flattened, as early fusion needs."""

    stacks = True  # works on a leading member dimension (mmal.models.stacked)

    def __init__(self, in_shape: tuple[int, ...]):
        super().__init__()
        self.out_dim = math.prod(in_shape)
        self.in_ndim = len(in_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(-self.in_ndim)


def conv_net(in_shape: tuple[int, ...], channels: Sequence[int], kernel_size: int, out_dim: int, dropout: float,
             cells: int, what: str) -> nn.Sequential:
    """The CNN that ``ConvEncoder`` (``in_shape`` (C, H, W)) and ``Conv1dEncoder`` ((C, T)) share, checked under
    relative keys: one convolution (``kernel_size``, padded to keep the size) - ReLU - max-pool stage per entry
    of ``channels``; every stage but the last halves the size (MaxPool 2), the last pools adaptively to
    ``cells`` per spatial dimension whatever the input size, so that the linear layer does not grow with it.
    Then dropout, a Linear to ``out_dim`` and ReLU. ``what`` names the inputs in a refusal ("8x8 images")."""
    if (isinstance(channels, str) or not isinstance(channels, Sequence) or not channels
            or not all(is_int(c) and c >= 1 for c in channels)):
        raise ConfigError("channels", channels, "a non-empty list of integers >= 1")
    check_int("out_dim", out_dim, 1)
    check_number("dropout", dropout, 0, below=1)  # p = 1 would zero every activation
    c_in, *size = in_shape
    if min(size) < 2 ** (len(channels) - 1):
        raise ConfigError("channels", channels, f"at most {1 + int(math.log2(min(size)))} entries for {what} "
                                                "(every stage but the last halves them)")
    conv, halve, adaptive = ((nn.Conv1d, nn.MaxPool1d, nn.AdaptiveMaxPool1d) if len(size) == 1
                             else (nn.Conv2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d))
    layers: list[nn.Module] = []
    for i, c in enumerate(channels):
        pool = adaptive(cells) if i == len(channels) - 1 else halve(2)
        layers += [conv(c_in, c, kernel_size=kernel_size, padding=kernel_size // 2), nn.ReLU(), pool]
        c_in = c
    layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * cells ** len(size), out_dim), nn.ReLU()]
    return nn.Sequential(*layers)


class ConvEncoder(nn.Module):
    """A small CNN for image modalities (B, C, H, W) -> (B, out_dim), ReLU-activated (``conv_net``): 3x3
    convolutions, the last stage pooled to a ``GRID`` x ``GRID`` map, so that small images (8x8) work."""

    stacks = False  # convolutions take no member dimension: trains alone (mmal.models.stacked)

    GRID = 2

    def __init__(self, in_shape: tuple[int, ...], channels: Sequence[int] = (16, 32), out_dim: int = 64,
                 dropout: float = 0.1):
        super().__init__()
        if len(in_shape) != 3:
            raise ConfigError("in_shape", tuple(in_shape), "ConvEncoder takes image samples of shape (C, H, W); "
                                                           "use it only for such a modality")
        _, h, w = in_shape
        self.net = conv_net(in_shape, channels, 3, out_dim, dropout, self.GRID, f"{h}x{w} images")
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Conv1dEncoder(nn.Module):
    """A small 1-D CNN for time-series modalities (B, C, T) -> (B, out_dim), ReLU-activated (``conv_net``), e.g.
    the raw sensor windows of ``dataset=watch`` (C = 3 axes, T = samples): convolutions of ``kernel_size``
    (odd), the last stage pooled to ``LENGTH`` steps, so that a coarse order of events survives."""

    stacks = False  # convolutions take no member dimension: trains alone (mmal.models.stacked)

    LENGTH = 4

    def __init__(self, in_shape: tuple[int, ...], channels: Sequence[int] = (16, 32), kernel_size: int = 5,
                 out_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        if len(in_shape) != 2:
            raise ConfigError("in_shape", tuple(in_shape), "Conv1dEncoder takes time-series samples of shape (C, T); "
                                                           "use it only for such a modality")
        if not is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError("kernel_size", kernel_size, "an odd integer >= 1 (padded to keep the length)")
        self.net = conv_net(in_shape, channels, kernel_size, out_dim, dropout, self.LENGTH,
                            f"series of {in_shape[1]} steps")
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
