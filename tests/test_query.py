"""Query strategies: scores on hand-made probabilities, seeded tie-breaks, valid selections."""

from __future__ import annotations

import math

import pytest
import torch

from mmal.query import Entropy, LeastConfidence, Margin, QueryContext, top_k
from mmal.training import Predictions

PROBS = torch.tensor([
    [0.25, 0.25, 0.25, 0.25],  # most uncertain by every measure
    [0.97, 0.01, 0.01, 0.01],  # most certain
    [0.50, 0.45, 0.05, 0.00],  # small margin, moderate entropy
    [0.60, 0.20, 0.10, 0.10],
])


def _pred(probs):
    """A context whose model predicted ``probs`` on a pool of len(probs) samples, none labeled."""
    pred = Predictions(probs=probs, fused=probs, embeddings=[probs], aux_probs=None)
    return QueryContext(model=None, trainer=None, pool=None, labeled=torch.zeros(len(probs), dtype=torch.bool),
                        generator=torch.Generator().manual_seed(0), _cache={None: pred})


def test_entropy_scores_are_the_entropy():
    expected = [math.log(4), -(0.97 * math.log(0.97) + 3 * 0.01 * math.log(0.01)),
                -(0.5 * math.log(0.5) + 0.45 * math.log(0.45) + 0.05 * math.log(0.05)),
                -(0.6 * math.log(0.6) + 0.2 * math.log(0.2) + 2 * 0.1 * math.log(0.1))]
    assert Entropy().score(_pred(PROBS)).tolist() == pytest.approx(expected, abs=1e-6)


def test_scoring_strategies_label_the_best_scores():
    assert sorted(Entropy().select(_pred(PROBS), 2).indices.tolist()) == [0, 3]  # row 3 spreads more than row 2
    assert sorted(Margin().select(_pred(PROBS), 2).indices.tolist()) == [0, 2]
    assert sorted(LeastConfidence().select(_pred(PROBS), 2).indices.tolist()) == [0, 2]


def test_margin_and_least_confidence_scores():
    assert Margin().score(_pred(PROBS)).tolist() == pytest.approx([0.0, 0.96, 0.05, 0.4], abs=1e-6)
    assert not Margin.higher_is_better
    assert LeastConfidence().score(_pred(PROBS)).tolist() == pytest.approx([0.75, 0.03, 0.5, 0.4], abs=1e-6)


def test_top_k_takes_the_best_and_breaks_ties_by_the_seed():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.9, 0.2])
    picks = {tuple(top_k(scores, 2, torch.Generator().manual_seed(s)).tolist()) for s in range(30)}
    assert all(set(p) <= {1, 3, 4} and len(set(p)) == 2 for p in picks)
    assert len(picks) > 1  # different seeds break the three-way tie differently
    same = top_k(scores, 2, torch.Generator().manual_seed(3)), top_k(scores, 2, torch.Generator().manual_seed(3))
    assert torch.equal(*same)
    assert top_k(scores, 4, torch.Generator().manual_seed(0))[3].item() == 2
