"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window, modality_logits
from mmal.errors import check_number
from mmal.hooks import Batch
from mmal.models.classifier import ModelOutput


class OGMGE(BalanceMethod):
    """Slow down the encoder of the modality that dominates the batch, and add Gaussian noise to every
    encoder's gradient.

    Per training step, after backward (authors' code: ``GeWu-Lab/OGM-GE_CVPR2022``, ``main.py``,
    ``train_epoch``; generalised to M modalities as ``GeWu-Lab/BalanceBenchmark``'s ``OGM_trainer``):

    - score s_m: the softmax probability of the true class from modality m alone, over the batch;
    - discrepancy ratio rho_m = s_m / min_j s_j (with two modalities: s_a / s_v, as in the paper);
    - coefficient k_m = 1 - tanh(alpha * rho_m) when rho_m > 1, else 1 (the paper's Eq. 10, with the
      authors' ``relu(ratio)``, not ``ratio - 1``);
    - while the step lies in the modulation window, every weight (not bias) of modality m's encoder gets
      grad <- k_m * grad + N(0, std(grad) + 1e-8) (``enhance=True``, OGM-GE) or k_m * grad (OGM), the
      standard deviation being that of the unmodulated gradient, as in the authors' code.

    Departures, all forced by mmal's models and protocol (docs/balance.md):

    - modality m's logits are the fused model's with every other modality masked, from the step's own
      embeddings (``modality_logits``); the authors split the last linear layer of a concatenation fusion,
      which gives W_m e_m + b / M where mmal's masked fusion gives its own output (for a linear
      concatenation head: W_m e_m + b plus the mask features). This works with every fusion of mmal that
      has encoders;
    - s_m is the mean over the batch rows that have m (the authors sum over the batch: with every modality
      present the ratios are the same); a modality absent from the whole batch is neither scored nor
      modulated;
    - the window is a fraction of the fit's steps, ``start <= step / steps < end``: the default 0 to 0.5 is
      the first 50 of 100 epochs (the authors' ``0 <= epoch <= 50`` also includes epoch 50);
    - the modulated weights are every weight with two or more dimensions of the encoder (as BalanceBenchmark;
      the authors' ResNet encoders modulate their 4-D convolution kernels only).

    Args:
        alpha: the modulation strength. BalanceBenchmark's default 0.3; the authors recommend 0.1 for
            VGGSound and 0.8 for CREMA-D, and their script requires it.
        start, end: the modulation window, fractions of the fit's steps (the authors' defaults, 0 and 50 of
            100 epochs).
        enhance: add the generalisation-enhancement noise (OGM-GE); False = OGM.

    ``state()``: per modality, the mean ratio over the fit's steps (``ogm_ratio/<m>``) and the mean
    coefficient applied over the window's steps (``ogm_coeff/<m>``, 1 = not slowed).
    """

    name = "ogm_ge"

    def __init__(self, alpha: float = 0.3, start: float = 0.0, end: float = 0.5, enhance: bool = True):
        self.alpha = check_number("balance.alpha", alpha, 0)
        self.window = check_window(start, end)
        self.enhance = bool(enhance)
        self._weights: list[list[nn.Parameter]] = []

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["ogm_ratio", "ogm_coeff"])
        self._weights = [[p for p in encoder.parameters() if p.dim() >= 2] for encoder in model.encoders]

    def coefficients(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Ratios and coefficients (M,) from the scores (M,); NaN for an unscored modality (ratio NaN,
        coefficient 1)."""
        ratios = scores / scores.nan_to_num(math.inf).min()
        slowed = 1 - torch.tanh(self.alpha * ratios.relu())
        return ratios, torch.where(ratios > 1, slowed, torch.ones_like(ratios))

    def after_backward(self, model: nn.Module, out: ModelOutput, batch: Batch) -> None:
        logits = modality_logits(model, out, batch.mask)  # (M, B, C)
        truth = logits.softmax(-1).gather(-1, batch.y.expand(len(logits), -1)[..., None])[..., 0]  # (M, B)
        present = batch.mask.T.float()  # (M, B)
        scores = (truth * present).sum(1) / present.sum(1)  # NaN where m is absent from the batch
        ratios, coeffs = self.coefficients(scores)
        in_window = self.in_window(batch.step)
        for i, m in enumerate(self.modalities):
            if torch.isnan(scores[i]):
                continue
            self.track(f"ogm_ratio/{m}", ratios[i].item())
            if not in_window:
                continue
            coeff = coeffs[i].item()
            self.track(f"ogm_coeff/{m}", coeff)
            for p in self._weights[i]:
                if p.grad is None:
                    continue
                if self.enhance:
                    noise = torch.zeros_like(p.grad).normal_(0, p.grad.std().item() + 1e-8)
                    p.grad = p.grad * coeff + noise
                else:
                    p.grad.mul_(coeff)

