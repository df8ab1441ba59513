"""Per-modality encoders and the MLP block the heads share."""

from __future__ import annotations

from torch import Tensor, nn


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
    """Maps one modality (B, in_dim) to an embedding (B, out_dim), ReLU-activated."""

    def __init__(self, in_dim: int, hidden_dim: int = 128, out_dim: int = 64, num_hidden: int = 1,
                 dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(mlp(in_dim, hidden_dim, out_dim, num_hidden, dropout), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class IdentityEncoder(nn.Module):
    """No encoder: the 'embedding' is the (masked) input itself, as early fusion needs."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor) -> Tensor:
        return x
