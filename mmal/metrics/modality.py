"""What the fused model does with each modality (docs/design.md, "Modality-imbalance diagnostics").

Every per-modality number is measured on the test rows where the modality is present: a row without m
says nothing about how the model uses m.

- ``masked_acc/<m>``: accuracy of the fused model with only m present (the others masked). Out of
  distribution for a model never trained with modalities missing, unless ``trainer.modality_dropout`` > 0.
- ``head_acc/<m>``: accuracy of the auxiliary head of m (models with ``aux_heads``).
- ``chance/<m>``: the share of the most frequent class, what a constant prediction scores.
- ``repr_acc/<m>``: a linear probe (standardised logistic regression) on the fused model's encoder m, fit
  on the labeled pool rows that have m (what an AL user has) and scored on test.
- ``probe_digit/<m>`` (synthetic data): the same probe fit to m's latent digit (``latent_class``; the label
  itself except under synergy), on the rows whose latent holds one. Under synergy every label probe is at
  chance; this one tells whether an encoder holds its modality's part of the answer.
- ``shapley/<m>``: Shapley value of m for accuracy, averaged over the rows that have m. On each row the
  players are the modalities the row has, and v(S) is whether the row is classified correctly with only
  S present; a modality the row lacks is a null player, so the average over rows with m is not shrunk by
  rows without it. ``gap/shapley``: max minus min over modalities.
- ``train_loss``: the fused model's mean cross-entropy on the labeled rows it was trained on (without
  dropout): about 0 once training has fit the labeled set, the check that the epoch budget converged.
- ``v/all``, ``v/none``: accuracy over all test rows with every modality the row has / with none.

The comparison with unimodal references (``ref_acc``, ``deficit``, ``gap/neglect``) is in
:mod:`mmal.metrics.references`. All 2^M masked evaluations go through one batched inference
(``evaluate_subsets``). The keys are spelled in :mod:`mmal.metrics.names`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.metrics import classification_metrics
from mmal.metrics.names import (
    CHANCE,
    GAP_SHAPLEY,
    HEAD_ACC,
    MASKED_ACC,
    PROBE_DIGIT,
    REPR_ACC,
    SHAPLEY,
    TRAIN_LOSS,
    V_ALL,
    V_NONE,
    per_modality,
)
from mmal.models.classifier import MultimodalClassifier
from mmal.training import Trainer


def subsets(num_modalities: int) -> list[tuple[int, ...]]:
    """Every subset of range(M), smallest first (the empty set is first, the full set last)."""
    return [s for r in range(num_modalities + 1) for s in itertools.combinations(range(num_modalities), r)]


def _shapley_terms(num_modalities: int, m: int) -> list[tuple[float, tuple[int, ...], tuple[int, ...]]]:
    """(weight, S with m, S without m) over every S not holding m: phi_m = sum weight * (v(S+m) - v(S))."""
    others = [i for i in range(num_modalities) if i != m]
    return [(math.factorial(r) * math.factorial(num_modalities - r - 1) / math.factorial(num_modalities),
             tuple(sorted((*s, m))), s)
            for r in range(num_modalities) for s in itertools.combinations(others, r)]


def shapley_values(value: dict[tuple[int, ...], float], num_modalities: int) -> list[float]:
    """Exact Shapley value of each player for the set function ``value`` (sorted tuples -> float)."""
    return [sum(w * (value[with_m] - value[without]) for w, with_m, without in _shapley_terms(num_modalities, m))
            for m in range(num_modalities)]


def linear_probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    """Accuracy of a standardised logistic regression (C=1, lbfgs, 500 iterations) fit on train, scored on
    test. With a single class in train the probe predicts that class; NaN with no train or test rows."""
    if len(test_y) == 0 or len(train_y) == 0:
        return float("nan")
    if train_y.unique().numel() < 2:
        return (test_y == train_y[0]).float().mean().item()
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe at its iteration cap still scores
        probe.fit(train_x.cpu().numpy(), train_y.cpu().numpy())
    return float(probe.score(test_x.cpu().numpy(), test_y.cpu().numpy()))


def cross_validated_probe_accuracy(x: Tensor, y: Tensor, folds: int = 5) -> float:
    """Mean accuracy of ``linear_probe_accuracy``'s probe over stratified folds of the rows ``x`` (n, ...)
    with labels ``y``: ``folds`` folds, fewer when the smallest class has fewer rows (at least 2), shuffled
    with a fixed seed so the same rows give the same number. NaN with fewer than two classes or four rows, or
    when no class has two rows (no stratified split exists: 10 classes, 8 labeled rows)."""
    counts = y.bincount()
    if (counts > 0).sum() < 2 or len(y) < 4 or counts.max() < 2:
        return float("nan")
    splits = StratifiedKFold(int(min(folds, max(2, counts[counts > 0].min()))), shuffle=True, random_state=0)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the probe's iteration cap; a class with fewer rows than folds
        scores = cross_val_score(probe, x.reshape(len(y), -1).cpu().numpy(), y.cpu().numpy(), cv=splits)
    return float(scores.mean())


def training_loss(probs: Tensor, y: Tensor) -> float:
    """Mean cross-entropy of predictions ``probs`` (n, C) against labels ``y``: on the rows a model was
    trained on, whether the training budget fit them (about 0: the labeled set is interpolated)."""
    return -probs.gather(1, y[:, None]).clamp_min(1e-12).log().mean().item() if len(y) else float("nan")


def chance_accuracy(y: Tensor) -> float:
    """The share of the most frequent class in ``y``: the accuracy of the best constant prediction."""
    return y.bincount().max().item() / len(y) if len(y) else float("nan")


@dataclass
class SubsetEvaluation:
    """Test predictions under every modality subset.

    ``correct`` (2^M, N) bool: row n is classified correctly with only ``subsets(M)[s]`` present (of the
    modalities the row has); ``probs`` (N, C), ``embeddings`` M x (N, D_m) and ``aux_probs`` (N, M, C) or
    None with every modality the row has."""

    correct: Tensor
    probs: Tensor
    embeddings: list[Tensor]
    aux_probs: Tensor | None

    def value(self) -> dict[tuple[int, ...], float]:
        """Accuracy over all rows under each subset."""
        num_modalities = len(self.embeddings)
        return dict(zip(subsets(num_modalities), self.correct.float().mean(1).tolist()))


def evaluate_subsets(trainer: Trainer, model: MultimodalClassifier, data: MultimodalData) -> SubsetEvaluation:
    """One batched inference of ``data`` under all 2^M presence masks."""
    n, num_modalities = len(data), len(data.modalities)
    sets = subsets(num_modalities)
    keep = torch.zeros(len(sets), num_modalities, dtype=torch.bool, device=data.mask.device)
    for i, s in enumerate(sets):
        keep[i, list(s)] = True
    masks = (data.mask[None] & keep[:, None]).reshape(-1, num_modalities)  # (2^M * N, M)
    rows = torch.arange(n, device=data.mask.device).repeat(len(sets))
    pred = trainer.predict(model, data, rows, masks)
    correct = (pred.probs.argmax(1) == data.y[rows]).view(len(sets), n)
    full = slice((len(sets) - 1) * n, None)  # the last subset is every modality
    aux = None if pred.aux_probs is None else pred.aux_probs[full]
    return SubsetEvaluation(correct, pred.probs[full], [e[full] for e in pred.embeddings], aux)


def present_row_shapley(correct: Tensor, present: Tensor) -> list[float]:
    """Per modality m, the mean over rows that have m of the row's Shapley value of m, v(S) = ``correct``
    under S (``evaluate_subsets``). NaN when no row has m."""
    num_modalities = present.shape[1]
    index = {s: i for i, s in enumerate(subsets(num_modalities))}
    c = correct.float()
    out = []
    for m in range(num_modalities):
        terms = _shapley_terms(num_modalities, m)
        phi = sum(w * (c[index[with_m]] - c[index[without]]) for w, with_m, without in terms)
        rows = present[:, m]
        out.append(phi[rows].mean().item() if rows.any() else float("nan"))
    return out


def modality_diagnostics(trainer: Trainer, model: MultimodalClassifier, data: MultimodalDataset,
                         labeled: Tensor, test: SubsetEvaluation) -> dict[str, float]:
    """``acc``, ``macro_f1`` and the fused model's per-modality diagnostics (module docstring), from the test
    evaluation ``test``; the probes are fit on the pool rows ``labeled`` (positions)."""
    names, present = data.modalities, data.test.mask
    out = classification_metrics(test.probs, data.test.y)
    value = test.value()
    out[V_ALL], out[V_NONE] = value[tuple(range(len(names)))], value[()]
    index = {s: i for i, s in enumerate(subsets(len(names)))}
    train = trainer.predict(model, data.pool, labeled)
    out[TRAIN_LOSS] = training_loss(train.probs, data.pool.y[labeled])
    for i, m in enumerate(names):
        rows = present[:, i]
        y = data.test.y[rows]
        out[per_modality(CHANCE, m)] = chance_accuracy(y)
        out[per_modality(MASKED_ACC, m)] = test.correct[index[(i,)]][rows].float().mean().item()
        if test.aux_probs is not None:
            out[per_modality(HEAD_ACC, m)] = (test.aux_probs[rows, i].argmax(1) == y).float().mean().item()
        has = data.pool.mask[labeled, i]
        out[per_modality(REPR_ACC, m)] = linear_probe_accuracy(
            train.embeddings[i][has], data.pool.y[labeled][has], test.embeddings[i][rows], y)
        if data.pool.latent_class is not None:
            out[per_modality(PROBE_DIGIT, m)] = digit_probe(
                train.embeddings[i], torch.where(has, data.pool.latent_class[labeled, i], -1),
                test.embeddings[i], torch.where(rows, data.test.latent_class[:, i], -1))
    shapley = present_row_shapley(test.correct, present)
    for m, phi in zip(names, shapley):
        out[per_modality(SHAPLEY, m)] = phi
    out[GAP_SHAPLEY] = float(np.nanmax(shapley) - np.nanmin(shapley))
    return out


def digit_probe(train_x: Tensor, train_digit: Tensor, test_x: Tensor, test_digit: Tensor) -> float:
    """``probe_digit``: a linear probe for the latent digit, fit and scored on the rows whose digit is >= 0
    (m present and its latent drawn around a prototype)."""
    on_train, on_test = train_digit >= 0, test_digit >= 0
    return linear_probe_accuracy(train_x[on_train], train_digit[on_train], test_x[on_test], test_digit[on_test])
