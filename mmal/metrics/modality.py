"""Modality-gap diagnostics (docs/design.md, "Modality-gap diagnostics"): how much the model relies on, and
how much its representation holds of, each modality.

- ``unimodal_acc/<m>``: test accuracy with only modality m present (the others masked).
- ``probe_acc/<m>``: a fixed-settings logistic-regression probe on the frozen embeddings of modality m,
  fit on ``val`` and scored on ``test``, both restricted to samples where m is present.
- ``probe_gain/<m>`` (logged by the loop): ``probe_acc/<m>`` minus the same probe on the untrained
  encoder (``probe_accuracies`` of the initial weights), i.e. what training put into the representation.
  On the synthetic data a probe on random initial features already finds most of what it finds later.
- ``shapley/<m>``: exact Shapley value of m for accuracy, v(S) = test accuracy with only S present.
- ``gap/unimodal``, ``gap/probe``, ``gap/shapley``: max minus min over modalities of each. With two
  modalities ``gap/shapley`` equals ``gap/unimodal`` exactly (phi_a - phi_b = v({a}) - v({b})); they part
  from three modalities on.
- ``neglect/<m>`` (when the data knows its Bayes accuracies): ``bayes_acc/<m> - probe_acc/<m>``, how much
  of what modality m could tell the representation leaves out (an upper bound: a probe fit on a small
  ``val`` split also falls short of the Bayes accuracy by itself).

All 2^M masked evaluations go through one batched inference (``evaluate_subsets``); its full-mask
part also gives ``acc``, ``macro_f1`` and the test embeddings the probes use (``modality_diagnostics``).
The keys are spelled in :mod:`mmal.metrics.names`.
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
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from mmal.data.multimodal import MultimodalData, MultimodalDataset
from mmal.metrics import classification_metrics
from mmal.metrics.names import BAYES_ACC, GAPS, NEGLECT, PROBE_ACC, SHAPLEY, UNIMODAL_ACC, V_ALL, V_NONE, per_modality
from mmal.models.classifier import MultimodalClassifier
from mmal.training import Trainer


def subsets(num_modalities: int) -> list[tuple[int, ...]]:
    """Every subset of range(M), smallest first (the empty set is first, the full set last)."""
    return [s for r in range(num_modalities + 1) for s in itertools.combinations(range(num_modalities), r)]


def shapley_values(value: dict[tuple[int, ...], float], num_modalities: int) -> list[float]:
    """Exact Shapley value of each player for the set function ``value`` (sorted tuples -> float)."""
    phi = [0.0] * num_modalities
    for m in range(num_modalities):
        others = [i for i in range(num_modalities) if i != m]
        for r in range(num_modalities):
            weight = math.factorial(r) * math.factorial(num_modalities - r - 1) / math.factorial(num_modalities)
            for s in itertools.combinations(others, r):
                phi[m] += weight * (value[tuple(sorted((*s, m)))] - value[s])
    return phi


def linear_probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> float:
    """Accuracy of a standardised logistic regression (C=1, lbfgs, 500 iterations) fit on train, scored on
    test. With a single class in train the probe predicts that class."""
    if len(test_y) == 0:
        return float("nan")
    if train_y.unique().numel() < 2:
        return (test_y == train_y[0]).float().mean().item() if len(train_y) else float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a probe at its iteration cap still scores
        probe.fit(train_x.cpu().numpy(), train_y.cpu().numpy())
    return float(probe.score(test_x.cpu().numpy(), test_y.cpu().numpy()))


@dataclass
class SubsetEvaluation:
    """Test predictions under every modality subset: ``value[S]`` = accuracy with only S present,
    ``probs`` (N, C) and ``embeddings`` M x (N, D_m) with every modality the data has."""

    value: dict[tuple[int, ...], float]
    probs: Tensor
    embeddings: list[Tensor]


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
    correct = (pred.probs.argmax(1) == data.y[rows]).float().view(len(sets), n)
    full = slice((len(sets) - 1) * n, None)  # the last subset is every modality
    return SubsetEvaluation(dict(zip(sets, correct.mean(1).tolist())), pred.probs[full],
                            [e[full] for e in pred.embeddings])


def probe_accuracies(trainer: Trainer, model: MultimodalClassifier, data: MultimodalDataset) -> dict[str, float]:
    """``probe_acc/<m>`` of ``model`` as it is, e.g. untrained: what a linear probe finds in each modality's
    embedding before training put anything there."""
    return _probes(data, trainer.predict(model, data.val).embeddings, trainer.predict(model, data.test).embeddings)


def _probes(data: MultimodalDataset, val_embeddings: list[Tensor], test_embeddings: list[Tensor]) -> dict[str, float]:
    out = {}
    for i, m in enumerate(data.modalities):
        on_val, on_test = data.val.mask[:, i], data.test.mask[:, i]
        out[per_modality(PROBE_ACC, m)] = linear_probe_accuracy(
            val_embeddings[i][on_val], data.val.y[on_val], test_embeddings[i][on_test], data.test.y[on_test])
    return out


def modality_diagnostics(trainer: Trainer, model: MultimodalClassifier, data: MultimodalDataset,
                         test: SubsetEvaluation) -> dict[str, float]:
    """``acc``, ``macro_f1`` and every modality-gap diagnostic, from the test evaluation ``test``."""
    names, value = data.modalities, test.value
    num_modalities = len(names)
    out = classification_metrics(test.probs, data.test.y)
    out.update(_probes(data, trainer.predict(model, data.val).embeddings, test.embeddings))
    for i, m in enumerate(names):
        out[per_modality(UNIMODAL_ACC, m)] = value[(i,)]
    for m, phi in zip(names, shapley_values(value, num_modalities)):
        out[per_modality(SHAPLEY, m)] = phi
    out[V_ALL], out[V_NONE] = value[tuple(range(num_modalities))], value[()]
    for gap, family in GAPS.items():
        values = [out[per_modality(family, m)] for m in names]
        out[gap] = float(np.nanmax(values) - np.nanmin(values))
    for m in names:
        bayes = per_modality(BAYES_ACC, m)
        if bayes in data.ground_truth:
            out[per_modality(NEGLECT, m)] = data.ground_truth[bayes] - out[per_modality(PROBE_ACC, m)]
    return out
