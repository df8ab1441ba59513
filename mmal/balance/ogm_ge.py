"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022)."""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window, modality_scores
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

    Stacked (``BalanceMethod``), each member as alone: its scores, ratios and coefficients are its row of
    (K, M), its noise is drawn from its own generator (the one of its dropout masks, where alone both come from
    the global generator) in the order of its draws alone, and a member that did not score m keeps m's
    gradients. The step's values reach the host in one transfer (alone: one ``.item()`` per value before).
    """

    name = "ogm_ge"

    def __init__(self, alpha: float = 0.3, start: float = 0.0, end: float = 0.5, enhance: bool = True):
        self.alpha = check_number("balance.alpha", alpha, 0)
        self.window = check_window(start, end)
        self.enhance = bool(enhance)
        self._weights: list[list[nn.Parameter]] = []

    def key(self) -> Hashable:
        return type(self), self.alpha, self.window, self.enhance

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["ogm_ratio", "ogm_coeff"])
        matrix = 3 if self.members else 2  # a weight with two dimensions or more; stacked, after the member one
        self._weights = [[p for p in encoder.parameters() if p.dim() >= matrix] for encoder in model.encoders]

    def coefficients(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Ratios and coefficients (..., M) from the scores (..., M), stacked one row per member; NaN for an
        unscored modality (ratio NaN, coefficient 1)."""
        ratios = scores / scores.nan_to_num(math.inf).amin(-1, keepdim=True)
        # tanh is the one inexact operation of a row: on the (AVX2) development build it gives every float32 in
        # [1e-3, 9] bitwise whether the vectorised or the scalar loop computes it, so K rows equal K calls
        slowed = 1 - torch.tanh(self.alpha * ratios.relu())
        return ratios, torch.where(ratios > 1, slowed, torch.ones_like(ratios))

    def after_backward(self, model: nn.Module, out: ModelOutput, batch: Batch) -> None:
        scores = modality_scores(model, out, batch)  # ([K,] M); NaN: m absent from the batch
        ratios, coeffs = self.coefficients(scores)
        in_window = self.in_window(batch.step)
        stacked = bool(self.members)
        # Each weight's standard deviation per member, of the unmodulated gradient (row by row: bitwise the
        # member's own), and everything the state needs in one transfer: one device sync per step.
        noisy = in_window and self.enhance
        weights = [p for group in self._weights for p in group if p.grad is not None] if noisy else []
        stds = [p.grad.flatten(int(stacked)).std(-1) for p in weights]
        values = torch.cat([t.reshape(-1) for t in (scores, ratios, coeffs, *stds)]).tolist()
        k, m = len(self.generators), len(self.modalities)
        scores_, ratios_, coeffs_ = (values[j * k * m:(j + 1) * k * m] for j in range(3))
        std_of = {id(p): values[3 * k * m + j * k:3 * k * m + (j + 1) * k] for j, p in enumerate(weights)}
        for i, modality in enumerate(self.modalities):
            scored = [not math.isnan(scores_[j * m + i]) for j in range(k)]
            self.track(f"ogm_ratio/{modality}", [ratios_[j * m + i] if scored[j] else None for j in range(k)])
            if not in_window or not any(scored):
                continue
            self.track(f"ogm_coeff/{modality}", [coeffs_[j * m + i] if scored[j] else None for j in range(k)])
            coeff = coeffs[..., i]  # 1 for a member that did not score m
            for p in self._weights[i]:
                if p.grad is None:
                    continue
                scale = coeff.view(-1, *[1] * (p.dim() - 1)) if stacked else coeff
                if self.enhance:
                    noise = torch.zeros_like(p.grad)
                    for member, generator, std, on in zip(noise if stacked else [noise], self.generators,
                                                          std_of[id(p)], scored):
                        if on:  # member k's draws from its own generator, in the order of its draws alone
                            member.normal_(0, std + 1e-8, generator=generator)
                    grad = p.grad * scale + noise
                else:
                    grad = p.grad * scale
                if not all(scored):  # a member that did not score m keeps its gradient as it is
                    grad = torch.where(torch.tensor(scored, device=grad.device).view_as(scale), grad, p.grad)
                p.grad = grad
