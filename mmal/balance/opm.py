"""OPM: on-the-fly prediction modulation, adaptive modality dropout (Wei, Hu, Du and Wen, T-PAMI 2024)."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window, modality_scores
from mmal.errors import check_number
from mmal.hooks import Batch, drop_modalities


class OPM(BalanceMethod):
    """Drop the modality that dominates the batch from the fused model's input, with a probability that grows
    with its lead.

    Per training step in the window, before the forward pass (authors' code: ``GeWu-Lab/BML_TPAMI2024``,
    ``code/models/Classifier.py``, ``calcu_q`` and ``Modality_drop``; generalised to M modalities as
    ``GeWu-Lab/BalanceBenchmark``'s ``OPM_trainer``):

    - score s_m: the softmax probability of the true class from modality m alone, over the batch;
    - r_m = tanh(relu(s_m / (sum of the other modalities' scores + 1e-5) - 1)): with two modalities
      tanh(relu(s_a / s_b - 1)), the authors' ratio;
    - drop probability q_m = q_base (1 + lam r_m) where r_m > 0, else 0, clipped to [0, 1]: only a modality
      that leads is ever dropped;
    - with probability ``p_exe`` the step drops: each row loses modality m with probability q_m, independently
      (the authors' Bernoulli(1 - q) mask per row and modality); otherwise the step trains on the batch as it is;
    - the loss is the cross-entropy of the fused prediction on the dropped input.

    Departures, forced by mmal's models and protocol (docs/balance.md):

    - s_m comes from the fused model with every other modality masked (``modality_scores``, as OGM-GE here),
      computed by a forward pass of its own in eval mode (no dropout masks drawn) before the training forward;
      the authors split the last linear layer of a concatenation fusion in the training forward itself. It is
      the mean over the rows that have m (the authors sum: with every modality present the ratios are equal);
    - a dropped modality is masked as a missing one is (the presence mask, as ``trainer.modality_dropout``
      does), so the fusion sees it absent; the authors zero its features and divide every feature by
      1 - theta, theta = sum_m d_m q_m / sum_m d_m, which mmal's fusions (trained to read the mask) do not need;
    - a row that would lose every modality keeps its own (the authors leave it out of the loss); with two
      modalities only the leader is dropped, so this happens only on rows that have nothing else;
    - the window is a fraction of the fit's steps: the default 0.06 to 1 is the authors' warm-up (no drop in
      epochs 0 to 5 of 100) and then every step.

    Args:
        q_base: the base drop probability of a leading modality (the authors' script: 0.5).
        lam: how much the lead raises it (the authors' script: 0.5).
        p_exe: the probability that a step drops at all (the authors' script: 0.7).
        start, end: the window, fractions of the fit's steps.

    ``state()``: per modality, over the window's steps, the mean ratio r (``opm_ratio/<m>``), the mean drop
    probability q (``opm_drop/<m>``) and the share of the rows that have m where it was dropped
    (``opm_dropped/<m>``).

    Stacked (``BalanceMethod``), each member as alone: its scores and probabilities are its row of (K, M), and
    its draws (the step's coin, then a (B, M) uniform) come from its own generator (alone: the global one,
    seeded alike), in the order of its draws alone. A step's values reach the host in one transfer.
    """

    name = "opm"

    def __init__(self, q_base: float = 0.5, lam: float = 0.5, p_exe: float = 0.7, start: float = 0.06,
                 end: float = 1.0):
        self.q_base = check_number("balance.q_base", q_base, 0, maximum=1)
        self.lam = check_number("balance.lam", lam, 0)
        self.p_exe = check_number("balance.p_exe", p_exe, 0, maximum=1)
        self.window = check_window(start, end)

    def key(self) -> Hashable:
        return type(self), self.q_base, self.lam, self.p_exe, self.window

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["opm_ratio", "opm_drop", "opm_dropped"])

    def drop_probabilities(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """Ratios r and drop probabilities q (..., M) from the scores (..., M); a modality without a score (NaN)
        gets r NaN and q 0, and does not count among the others."""
        known = scores.nan_to_num(0.0)
        others = known.sum(-1, keepdim=True) - known
        ratios = torch.tanh((scores / (others + 1e-5) - 1).relu())
        drop = torch.where(ratios > 0, self.q_base * (1 + self.lam * ratios), torch.zeros_like(ratios))
        return ratios, drop.clamp(0.0, 1.0)

    def masked(self, model: nn.Module, batch: Batch) -> Batch:
        if not self.in_window(batch.step):
            return batch
        model.eval()  # the scores' forward draws no dropout masks: the training's own are those of plain training
        try:
            with torch.no_grad():
                scores = modality_scores(model, model(batch.x, batch.mask), batch)  # ([K,] M)
        finally:
            model.train()
        ratios, drop = self.drop_probabilities(scores)
        device, rows = batch.mask.device, batch.mask.shape[-2:]
        coins, uniforms = [], []
        for generator in self.generators:  # member k's draws, in the order of its draws alone
            coins.append(torch.rand(1, generator=generator, device=device))
            uniforms.append(torch.rand(rows, generator=generator, device=device))
        execute, uniform = torch.stack(coins) >= 1 - self.p_exe, torch.stack(uniforms)  # (K, 1), (K, B, M)
        if not self.members:
            execute, uniform = execute[0], uniform[0]
        mask = drop_modalities(batch.mask, (uniform < 1 - drop[..., None, :]) | ~execute[..., None])
        present = batch.mask.float().sum(-2)
        dropped = (batch.mask & ~mask).float().sum(-2) / present  # ([K,] M); NaN where no row has m
        self.track_tensors({"opm_ratio": ratios, "opm_drop": drop, "opm_dropped": dropped})
        return Batch(batch.x, mask, batch.y, batch.step)
