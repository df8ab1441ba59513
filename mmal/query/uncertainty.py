"""Uncertainty sampling on the fused model's predicted class probabilities (Settles, 2009)."""

from __future__ import annotations

import torch
from torch import Tensor

from mmal.query.base import ScoringStrategy
from mmal.training import Predictions


class Entropy(ScoringStrategy):
    """Highest predictive entropy -sum_c p_c log p_c."""

    def score(self, pred: Predictions) -> Tensor:
        p = pred.probs
        return -(p * torch.log(p.clamp_min(1e-12))).sum(1)


class Margin(ScoringStrategy):
    """Smallest margin between the two most probable classes."""

    higher_is_better = False

    def score(self, pred: Predictions) -> Tensor:
        top2 = pred.probs.topk(2, dim=1).values
        return top2[:, 0] - top2[:, 1]


class LeastConfidence(ScoringStrategy):
    """Lowest probability of the predicted class (scored as 1 - max_c p_c)."""

    def score(self, pred: Predictions) -> Tensor:
        return 1 - pred.probs.max(1).values
