"""PMR: prototypical modal rebalance (Fan et al., CVPR 2023)."""

from __future__ import annotations

import math
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmal.balance.base import BalanceMethod, check_window
from mmal.errors import check_number
from mmal.hooks import Batch
from mmal.models.classifier import ModelOutput


class PMR(BalanceMethod):
    """Speed up the modalities that learn slower with a prototype-based cross-entropy on their own embeddings.

    Authors' code (``fanyunfeng-bit/Modal-Imbalance-PMR``, ``main_Prototype_grad.py``; BalanceBenchmark's
    ``PMR_trainer`` is the same rule):

    - class prototypes per modality: the mean embedding of each class over the training rows, computed in
      eval mode before every epoch, and from the second epoch on blended with the previous ones,
      c <- (1 - momentum) c_new + momentum c_old;
    - prototype logits of modality m: minus the Euclidean distance of its embedding to each prototype; the
      prototype cross-entropy PCE_m is the cross-entropy of those logits;
    - score s_m: the softmax probability of the true class under those logits over the batch;
    - in the modulation window, loss = CE(fused) + alpha * sum of PCE_m over the modalities that score below
      the best (with two: the authors' ``ratio_a_p > 1 -> lam = alpha`` on the other modality's PCE, and
      no term at a tie).

    Departures (docs/balance.md):

    - with more than two modalities every modality below the best gets the term (the authors have two;
      BalanceBenchmark switches to an OGM-like gradient rule for three);
    - prototypes use every training row (the authors use the first tenth of a shuffled epoch's batches on
      CREMA-D: mmal's labeled sets are small and every class should get its prototype);
    - a class without training rows (frequent in the first AL cycles) has no prototype and is left out of
      the prototype softmax (the authors' code divides by its zero count); a row without modality m
      neither shapes m's prototypes nor counts in s_m or PCE_m;
    - the window is a fraction of the fit's steps: the default 0 to 2/3 is the authors' epochs 0 to 100 of
      150.

    Args:
        alpha: weight of the prototype cross-entropy (authors' default 1.0; BalanceBenchmark 0.6).
        momentum: weight of the previous epoch's prototypes (authors' default 0.2; BalanceBenchmark 0.5).
        start, end: the window, fractions of the fit's steps.

    ``state()``: per modality, the mean of s_m / max_j s_j over the window's steps (``pmr_ratio/<m>``, 1 =
    the best) and the mean weight of its PCE term (``pmr_weight/<m>``, 0 when it led).

    Stacked (``BalanceMethod``), each member as alone: its prototypes come from its own training rows
    (``start_epoch`` on the stacked model), its PCE_m and s_m from its own batch rows with m
    (``_stacked_terms``), and the term returned is the sum of the members' terms.
    """

    name = "pmr"

    def __init__(self, alpha: float = 1.0, momentum: float = 0.2, start: float = 0.0, end: float = 2 / 3):
        self.alpha = check_number("balance.alpha", alpha, 0)
        self.momentum = check_number("balance.momentum", momentum, 0, below=1)
        self.window = check_window(start, end)
        self.prototypes: list[Tensor] = []  # per modality (C, D_m); NaN rows for classes without rows

    def key(self) -> Hashable:
        return type(self), self.alpha, self.momentum, self.window

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        self.begin(model, total_steps, ["pmr_ratio", "pmr_weight"])
        self.prototypes = []

    @torch.no_grad()
    def start_epoch(self, model: nn.Module, epoch: int, rows: Batch) -> None:
        model.eval()
        try:
            embeddings = model(rows.x, rows.mask).embeddings
        finally:
            model.train()
        fresh = [class_means(e.float(), rows.y, rows.mask[..., i], model.num_classes) for i, e in enumerate(embeddings)]
        if self.prototypes:
            fresh = [(1 - self.momentum) * new + self.momentum * old for new, old in zip(fresh, self.prototypes)]
        self.prototypes = fresh  # per modality (C, D), stacked (K, C, D)
        for k, hook in enumerate(self.members):
            hook.prototypes = [p[k] for p in fresh]

    def loss(self, model: nn.Module, out: ModelOutput, batch: Batch) -> Tensor | None:
        if not self.in_window(batch.step):
            return None
        terms = self._stacked_terms if self.members else self._terms
        pces, scores = zip(*(terms(e, prototypes, batch.mask[..., i], batch.y)
                             for i, (e, prototypes) in enumerate(zip(out.embeddings, self.prototypes))))
        scores = torch.stack(scores, -1)  # ([K,] M)
        ratios = scores / scores.nan_to_num(-1.0).amax(-1, keepdim=True)
        k, m = len(self.generators), len(self.modalities)
        values = torch.cat([scores.reshape(-1), ratios.reshape(-1)]).tolist()  # one device sync per step
        scores_, ratios_ = values[:k * m], values[k * m:]
        best = [max([s for s in scores_[j * m:(j + 1) * m] if not math.isnan(s)], default=-1.0) for j in range(k)]
        term = None
        for i, modality in enumerate(self.modalities):
            scored = [not math.isnan(scores_[j * m + i]) for j in range(k)]
            weights = [self.alpha if on and scores_[j * m + i] < best[j] else 0.0 for j, on in enumerate(scored)]
            self.track(f"pmr_ratio/{modality}", [ratios_[j * m + i] if on else None for j, on in enumerate(scored)])
            self.track(f"pmr_weight/{modality}", [w if on else None for w, on in zip(weights, scored)])
            if any(weights):
                weight = torch.tensor(weights, device=pces[i].device) if self.members else weights[0]
                term = weight * pces[i] if term is None else term + weight * pces[i]
        return term if term is None or not self.members else term.sum()

    @staticmethod
    def _terms(e: Tensor, prototypes: Tensor, present: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """PCE_m and s_m of one model over the batch rows with modality m (s_m NaN without any)."""
        logits = prototype_logits(e[present].float(), prototypes)
        y = y[present]
        if not len(y):
            return logits.sum(), torch.tensor(float("nan"), device=e.device)
        return F.cross_entropy(logits, y), logits.detach().softmax(-1).gather(1, y[:, None]).mean()

    @staticmethod
    def _stacked_terms(e: Tensor, prototypes: Tensor, present: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``_terms`` of every member (K,), without taking rows: a row without m gets finite logits that no
        gradient reaches, and each member's PCE_m is the sum of its present rows' cross-entropies over their
        count, whose gradient is bitwise the mean's. s_m is each member's mean over its own rows (a sum that
        skipped rows would add in another order)."""
        logits = torch.where(present[..., None], prototype_logits(e.float(), prototypes), 0.0)  # (K, B, C)
        keep = present.to(logits.dtype)
        rows = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
        pce = (rows * keep).sum(-1) / keep.sum(-1).clamp_min(1)
        truth = logits.detach().softmax(-1).gather(-1, y[..., None])[..., 0]  # (K, B)
        if present.all():
            return pce, truth.mean(-1)
        return pce, torch.stack([t[p].mean() for t, p in zip(truth, present)])  # NaN for a member without m


def class_means(embeddings: Tensor, y: Tensor, present: Tensor, num_classes: int) -> Tensor:
    """(C, D): the mean embedding of each class over the rows where the modality is present; NaN for a class
    without such rows. Stacked: (K, C, D) from (K, n, D)."""
    keep = present.to(embeddings.dtype)
    onehot = F.one_hot(y, num_classes).to(embeddings.dtype) * keep[..., None]  # ([K,] n, C)
    sums = onehot.mT @ embeddings
    return sums / onehot.sum(-2)[..., None]  # 0 / 0 = NaN for an empty class


def prototype_logits(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """(n, C), stacked (K, n, C): minus the Euclidean distance to each prototype; -inf for a class without one
    (left out of the softmax). Distances are computed directly, not through the product trick (exact near zero,
    where a row sits on its own class's prototype, and with a zero gradient there)."""
    distances = torch.cdist(embeddings, prototypes.nan_to_num(0.0), compute_mode="donot_use_mm_for_euclid_dist")
    return (-distances).masked_fill(torch.isnan(prototypes).any(-1).unsqueeze(-2), float("-inf"))
