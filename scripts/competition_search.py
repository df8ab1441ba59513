"""Search the synthetic generator for modality competition: a setting where JOINT training of the fused
model loses accuracy that the modalities trained apart give (docs/competition.md).

For each setting and seed: draw the synthetic data (``make_synthetic``, data seed = the seed), build the
fused ``MultimodalClassifier`` with the seed's initial weights (``mmal.loop.initial_model``), draw
``n_labels`` pool rows at random (``mmal.loop.initial_labeled``), and train the fused model and one unimodal
reference per modality (a deep copy of the initial model, every other modality masked: ``pool.only(i)``)
together with the same trainer and training seed (``Trainer.fit_together``), as ``mmal.loop`` does. Then on
the test split:

- ``ref_acc/<m>``: reference m's accuracy (``test.only(i)``);
- ``ensemble_acc``: per row, argmax of the mean over the references of the modalities the row has of their
  log-probabilities; a reference whose accuracy beats chance (majority-class share) by less than 0.05 is
  left out, and a row with none of the others takes every reference it has (Du et al. 2023's uni-modal
  ensemble; mmal's ``gap/ensemble``);
- ``gap`` = ``ensemble_acc`` - ``acc`` (the fused model). Positive = joint training lost accuracy.

One CSV row per (setting, seed); then a table per setting: mean gap, std over seeds, paired t-test p of
ensemble vs fused accuracies over seeds (``scipy.stats.ttest_rel``), Bayes(all), Bayes(dominant) and the
cost of full neglect = Bayes(all) - Bayes(dominant) (the dominant modality: the setting's ``dominant``, a, the
modality made faster to fit), and the same on the test split's presence patterns (rows without a modality
have the Bayes accuracy of the subset they have; a model of the dominant modality alone is at chance on rows
without it).

    python scripts/competition_search.py --grid coarse --seeds 0 1 --out coarse.csv      # first, coarse
    python scripts/competition_search.py --grid confirm --seeds 0 1 2 3 4 --out confirm.csv
    python scripts/competition_search.py --grid confirm --seeds 0 1 2 3 4 --epoch-scale 2 --out confirm_x2.csv
    python scripts/competition_search.py --grid confirm --only m30_k10_int --seeds 0 1 2 3 4 5 6 7 8 9
    python scripts/competition_search.py --grid all --seeds 0 1 --out all.csv     # every grid (~25 min, one core)
    python scripts/competition_search.py --table coarse.csv confirm.csv           # only print the tables
    python scripts/competition_search.py --grid none --spec '{"name": "x", "epochs": 50, "num_classes": 8,
        "pitfall": {"noise": [0.6, 0.8], "separation": 2.5, "depth": [1, 3], "missing_rate": [0.3, 0.0]}}'

The grids, in the order the search ran them (docs/competition.md has every table): coarse, explore,
explore2, explore3, explore4, explore5 (no missing modality: redundancy, uniqueness and their mixtures),
missing, missing2, missing3, missing4, missing5 (a missing on some rows), confirm (the best settings and
their controls), many (many classes, nothing missing, against symmetric controls).

The training seed is the seed itself (mmal.loop derives one from it), so a run differs from
``python -m mmal.train`` with the same seed; docs/competition.md compares the two.

Run it with one thread (it sets ``torch.set_num_threads(1)``) and ``nice`` on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import csv
import functools
import itertools
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from mmal.data import Pitfall, make_synthetic
from mmal.loop import initial_labeled, initial_model
from mmal.models import MultimodalClassifier
from mmal.models.encoders import MLPEncoder
from mmal.models.fusion import IntermediateFusion, LateFusion, MeanFusion
from mmal.training import Member, Trainer

MIN_MARGIN = 0.05  # mmal's diagnostics.min_margin
FUSIONS = {  # conf/fusion/*.yaml
    "intermediate": functools.partial(IntermediateFusion, head_hidden=128, head_hidden_layers=1),
    "late": functools.partial(LateFusion, head_hidden=128, head_hidden_layers=0),
    "sum": functools.partial(MeanFusion, head_hidden=128, head_hidden_layers=1, reduce="sum"),
    "mean": functools.partial(MeanFusion, head_hidden=128, head_hidden_layers=1, reduce="mean"),
}
# Defaults of a setting: conf/dataset/synthetic.yaml, conf/model/mlp.yaml, conf/trainer/default.yaml.
DEFAULTS = {
    "pitfall": {},  # Pitfall(**...): interaction, unique_probs, noise, separation, depth
    "modalities": {"a": 32, "b": 32},
    "nuisance_dim": 4,
    "num_classes": 4,
    "num_samples": 2000,
    "num_test": 2000,
    "n_labels": 220,
    "fusion": "intermediate",
    "epochs": 100,
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "dropout": 0.1,
    "batch_size": 64,
    "dominant": "a",  # the modality that fits faster by design: cost of full neglect = Bayes(all) - Bayes(it)
}


def setting(name: str, **knobs) -> dict:
    unknown = set(knobs) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{name}: unknown knobs {sorted(unknown)}")
    return {"name": name, **copy.deepcopy(DEFAULTS), **knobs}


def _mix(red: float, noise, depth, sep=3.0, **kw) -> dict:
    """Redundancy + uniqueness where the uniqueness rows are b's alone (unique_probs [0, 1]): a is informative
    on the redundancy share of the rows only, b on every row."""
    return {"pitfall": {"interaction": {"redundancy": red, "uniqueness": 1 - red, "synergy": 0.0},
                        "unique_probs": [0.0, 1.0], "noise": noise, "separation": sep, "depth": depth}, **kw}


def _uni(probs, noise, depth, sep=3.0, **kw) -> dict:
    """Pure uniqueness with a skewed towards a (unique_probs)."""
    return {"pitfall": {"interaction": {"redundancy": 0.0, "uniqueness": 1.0, "synergy": 0.0},
                        "unique_probs": probs, "noise": noise, "separation": sep, "depth": depth}, **kw}


def _red(noise, depth, sep=2.0, **kw) -> dict:
    """Pure redundancy: both modalities see the class, a easier."""
    return {"pitfall": {"interaction": {"redundancy": 1.0, "uniqueness": 0.0, "synergy": 0.0},
                        "noise": noise, "separation": sep, "depth": depth}, **kw}


BIG = {"num_samples": 6000, "n_labels": 2000}
OVERFIT = {"weight_decay": 0.0, "dropout": 0.0}


def grids() -> dict[str, list[dict]]:
    coarse = [
        # pure redundancy, a easy and shallow, b noisy and deep: complementary noise (Bayes(all) > Bayes(a))
        setting("red_n.6-1.2_d1-3_late", **_red([0.6, 1.2], [1, 3], fusion="late", epochs=200, **OVERFIT)),
        setting("red_n.6-1.2_d1-3_int", **_red([0.6, 1.2], [1, 3], epochs=200, **OVERFIT)),
        setting("red_n.6-1.2_d1-3_int_big", **_red([0.6, 1.2], [1, 3], epochs=100, **OVERFIT, **BIG)),
        # redundancy + b-only uniqueness rows: a is informative on `red` of the rows, b on all
        setting("mix80_late", **_mix(0.8, [0.5, 1.2], [1, 3], fusion="late", epochs=200, **OVERFIT)),
        setting("mix80_int", **_mix(0.8, [0.5, 1.2], [1, 3], epochs=200, **OVERFIT)),
        setting("mix80_sum", **_mix(0.8, [0.5, 1.2], [1, 3], fusion="sum", epochs=200, **OVERFIT)),
        setting("mix80_int_big", **_mix(0.8, [0.5, 1.2], [1, 3], epochs=100, **OVERFIT, **BIG)),
        setting("mix80_late_big", **_mix(0.8, [0.5, 1.2], [1, 3], fusion="late", epochs=100, **OVERFIT, **BIG)),
        setting("mix80_int_big_a256_nu16", **_mix(0.8, [0.5, 1.2], [1, 3], epochs=100, modalities={"a": 256, "b": 32},
                                                  nuisance_dim=16, **OVERFIT, **BIG)),
        setting("mix60_int_big", **_mix(0.6, [0.5, 1.0], [1, 3], epochs=100, **OVERFIT, **BIG)),
        # pure uniqueness skewed to a
        setting("uni80_int_big", **_uni([0.8, 0.2], [0.5, 1.0], [1, 3], epochs=100, **OVERFIT, **BIG)),
        setting("uni80_late_big", **_uni([0.8, 0.2], [0.5, 1.0], [1, 3], fusion="late", epochs=100, **OVERFIT, **BIG)),
        setting("uni80_int_big_a256_nu16", **_uni([0.8, 0.2], [0.5, 1.0], [1, 3], epochs=100,
                                                  modalities={"a": 256, "b": 32}, nuisance_dim=16, **OVERFIT, **BIG)),
    ]
    mid = {"num_samples": 4000, "n_labels": 1000}
    explore = [
        # b-only share 10-20 %, a linear (depth 0), b behind a deep map (depth 4): b is informative on every
        # row but slow to learn; in joint training the redundancy rows stop teaching b once a fits them
        setting("mix90_a0_b4", **_mix(0.9, [0.5, 1.0], [0, 4], **BIG)),
        setting("mix90_a0_b4_ovf", **_mix(0.9, [0.5, 1.0], [0, 4], **OVERFIT, **BIG)),
        setting("mix80_a0_b4", **_mix(0.8, [0.5, 1.0], [0, 4], **BIG)),
        setting("mix80_a0_b4_ovf", **_mix(0.8, [0.5, 1.0], [0, 4], **OVERFIT, **BIG)),
        setting("mix80_a0_b4_mid", **_mix(0.8, [0.5, 1.0], [0, 4], **mid)),
        setting("mix80_a0_b4_late", **_mix(0.8, [0.5, 1.0], [0, 4], fusion="late", **BIG)),
        setting("mix80_an.8_a0_b4", **_mix(0.8, [0.8, 1.0], [0, 4], **BIG)),
        # pure redundancy, a linear and noisier, b deep and cleaner: Bayes(b) > Bayes(a), b slow
        setting("red_n1-.8_d0-4", **_red([1.0, 0.8], [0, 4], **BIG)),
        setting("red_n1-.8_d0-4_ovf", **_red([1.0, 0.8], [0, 4], **OVERFIT, **BIG)),
        setting("red_n1-.8_d0-4_mid", **_red([1.0, 0.8], [0, 4], **mid)),
    ]
    wide = {"modalities": {"a": 256, "b": 32}}
    nuis = {"modalities": {"a": 256, "b": 32}, "nuisance_dim": 24}
    explore2 = [
        # a many-dimensional and linear (Adam moves its many first-layer weights coherently: fast), b deep;
        # large nuisance_dim: rows a cannot classify can be memorised from a's noise instead of learning b
        setting("red_w_late", **_red([0.9, 0.7], [0, 3], fusion="late", **wide, **BIG)),
        setting("red_w_int", **_red([0.9, 0.7], [0, 3], **wide, **BIG)),
        setting("red_w_nu24_late", **_red([0.9, 0.7], [0, 3], fusion="late", **nuis, **BIG)),
        setting("red_w_nu24_int_ovf", **_red([0.9, 0.7], [0, 3], **nuis, **OVERFIT, **BIG)),
        setting("red_w_nu24_late_e50", **_red([0.9, 0.7], [0, 3], fusion="late", epochs=50, **nuis, **BIG)),
        setting("mix80_w_nu24_late", **_mix(0.8, [0.5, 1.0], [0, 4], fusion="late", **nuis, **BIG)),
        setting("mix80_w_nu24_int", **_mix(0.8, [0.5, 1.0], [0, 4], **nuis, **BIG)),
    ]
    m80 = lambda **kw: _mix(0.8, [0.5, 1.2], [1, 3], **kw)  # noqa: E731  (the coarse grid's mix80)
    explore3 = [
        # the only positive region of the coarse grid (mix80 at 220 labels): budget, fusion, regularisation
        setting("mix80_int_reg", **m80(epochs=200)),
        setting("mix80_late_reg", **m80(fusion="late", epochs=200)),
        setting("mix80_int_500", **m80(epochs=200, n_labels=500, **OVERFIT)),
        setting("mix80_late_500", **m80(fusion="late", epochs=200, n_labels=500, **OVERFIT)),
        setting("mix80_int_1000", **m80(epochs=100, n_labels=1000, num_samples=4000, **OVERFIT)),
        setting("mix70_int", **_mix(0.7, [0.5, 1.2], [1, 3], epochs=200, **OVERFIT)),
        setting("mix90_int", **_mix(0.9, [0.5, 1.2], [1, 3], epochs=200, **OVERFIT)),
        setting("mix80_b1.5_int", **_mix(0.8, [0.5, 1.5], [1, 3], epochs=200, **OVERFIT)),
        setting("mix80_b1.2d5_int", **_mix(0.8, [0.5, 1.2], [1, 5], epochs=200, **OVERFIT)),
        # many classes: many prototype features per modality, each learned separately
        setting("red_k10_int", **_red([0.7, 0.9], [0, 3], sep=3.0, num_classes=10, modalities={"a": 64, "b": 32},
                                     **OVERFIT, **BIG)),
    ]
    explore4 = [
        # redundancy, under-trained: b's reference just converges, the fused model's b branch gets less gradient
        setting("red_w_late_500_e50", **_red([0.9, 0.7], [0, 3], fusion="late", epochs=50, n_labels=500, **wide)),
        setting("red_w_int_500_e50", **_red([0.9, 0.7], [0, 3], epochs=50, n_labels=500, **wide)),
        setting("red_w_late_e20", **_red([0.9, 0.7], [0, 3], fusion="late", epochs=20, **wide, **BIG)),
        # b-only rows plus a imperfect on the redundancy rows (so b helps there too)
        setting("mix80_an.8_int", **_mix(0.8, [0.8, 1.2], [0, 3], epochs=200, **OVERFIT)),
        setting("mix80_an.8_late", **_mix(0.8, [0.8, 1.2], [0, 3], fusion="late", epochs=200, **OVERFIT)),
        setting("mix80_an.8_int_500", **_mix(0.8, [0.8, 1.2], [0, 3], epochs=200, n_labels=500, **OVERFIT)),
        # a's uninformative rows compact (low noise): hard to memorise from a, its reference near uniform there
        setting("mix80_an.2_int", **_mix(0.8, [0.2, 1.2], [1, 3], epochs=200, **OVERFIT)),
        setting("mix80_int_100", **m80(epochs=200, n_labels=100, **OVERFIT)),
        setting("mix70_b1_int", **_mix(0.7, [0.5, 1.0], [1, 3], epochs=200, **OVERFIT)),
    ]
    explore5 = [
        # trainer levers on mix80 at 220 labels: faster fitting (lr, smaller batches) and longer training
        setting("mix80_int_lr3e-3", **m80(epochs=200, lr=3e-3, **OVERFIT)),
        setting("mix80_int_lr1e-2", **m80(epochs=200, lr=1e-2, **OVERFIT)),
        setting("mix80_int_bs16", **m80(epochs=100, batch_size=16, **OVERFIT)),
        setting("mix80_late_e400", **m80(fusion="late", epochs=400, **OVERFIT)),
        setting("mix80_sum_reg", **m80(fusion="sum", epochs=200)),
        setting("mix85_an.3_b5", **_mix(0.85, [0.3, 1.2], [0, 5], epochs=200, **OVERFIT)),
        setting("mix80_an.3_b5_late", **_mix(0.8, [0.3, 1.2], [0, 5], fusion="late", epochs=200, **OVERFIT)),
        setting("mix80_an.3_b5_a256", **_mix(0.8, [0.3, 1.2], [0, 5], epochs=200, modalities={"a": 256, "b": 32},
                                             **OVERFIT)),
        setting("mix80_int_300", **m80(epochs=200, n_labels=300, **OVERFIT)),
    ]
    def miss(rate, noise=(0.6, 1.0), depth=(1, 3), sep=2.0, **kw) -> dict:
        """Redundancy with a missing (MCAR, every split) on a share `rate` of the rows: on those rows the fused
        model has only its b branch, which joint training on the other rows taught little."""
        out = _red(list(noise), list(depth), sep=sep, **kw)
        out["pitfall"]["missing_rate"] = [rate, 0.0]
        return out

    missing = [
        setting("miss30_int", **miss(0.3, epochs=200, **OVERFIT)),
        setting("miss30_late", **miss(0.3, fusion="late", epochs=200, **OVERFIT)),
        setting("miss30_sum", **miss(0.3, fusion="sum", epochs=200, **OVERFIT)),
        setting("miss30_int_reg", **miss(0.3, epochs=100)),
        setting("miss30_int_500", **miss(0.3, epochs=200, n_labels=500, **OVERFIT)),
        setting("miss30_int_1000", **miss(0.3, epochs=100, n_labels=1000, num_samples=4000, **OVERFIT)),
        setting("miss50_int", **miss(0.5, epochs=200, **OVERFIT)),
        setting("miss30_an.3_b1.2d4_int", **miss(0.3, noise=(0.3, 1.2), depth=(0, 4), sep=2.0, epochs=200,
                                                 **OVERFIT)),
        setting("miss30_mix80_int", **{**_mix(0.8, [0.5, 1.2], [1, 3], epochs=200, **OVERFIT)}),
    ]
    missing[-1]["pitfall"]["missing_rate"] = [0.3, 0.0]
    missing2 = [  # the default regularisation (wd 1e-4, dropout 0.1), which gave the biggest gap above
        setting("miss30_int_reg_e50", **miss(0.3, epochs=50)),
        setting("miss30_int_reg_e200", **miss(0.3, epochs=200)),
        setting("miss40_int_reg", **miss(0.4, epochs=100)),
        setting("miss50_int_reg", **miss(0.5, epochs=100)),
        setting("miss30_late_reg", **miss(0.3, fusion="late", epochs=100)),
        setting("miss30_sum_reg", **miss(0.3, fusion="sum", epochs=100)),
        setting("miss30_int_reg_500", **miss(0.3, epochs=100, n_labels=500)),
        setting("miss30_bn.8_int_reg", **miss(0.3, noise=(0.6, 0.8), epochs=100)),
        setting("miss30_bd1_int_reg", **miss(0.3, noise=(0.6, 1.2), depth=(1, 1), epochs=100)),
        setting("miss30_int_wd0", **miss(0.3, epochs=100, weight_decay=0.0)),
        setting("miss30_int_do0", **miss(0.3, epochs=100, dropout=0.0)),
    ]
    missing3 = [  # the study's 50 epochs (conf/experiment/synthetic_study.yaml), default regularisation
        setting("m30_int", **miss(0.3, epochs=50)),
        setting("m30_sum", **miss(0.3, fusion="sum", epochs=50)),
        setting("m30_late", **miss(0.3, fusion="late", epochs=50)),
        setting("m30_bn.8_int", **miss(0.3, noise=(0.6, 0.8), epochs=50)),
        setting("m30_bn.8_sum", **miss(0.3, noise=(0.6, 0.8), fusion="sum", epochs=50)),
        setting("m40_bn.8_int", **miss(0.4, noise=(0.6, 0.8), epochs=50)),
        setting("m30_an.4_int", **miss(0.3, noise=(0.4, 1.0), epochs=50)),
        setting("m30_an.4_bn.8_sum", **miss(0.3, noise=(0.4, 0.8), fusion="sum", epochs=50)),
        setting("m30_bn.8d4_int", **miss(0.3, noise=(0.6, 0.8), depth=(1, 4), epochs=50)),
    ]
    missing4 = [
        # more classes: the fused model's b-alone regime has fewer rows per class
        setting("m30_k8_int", **miss(0.3, noise=(0.6, 0.8), sep=2.5, epochs=50, num_classes=8)),
        setting("m30_k8_sum", **miss(0.3, noise=(0.6, 0.8), sep=2.5, fusion="sum", epochs=50, num_classes=8)),
        setting("m30_k8_late", **miss(0.3, noise=(0.6, 0.8), sep=2.5, fusion="late", epochs=50, num_classes=8)),
        # a many-dimensional (fits the rows that have it faster)
        setting("m30_wide_int", **miss(0.3, epochs=50, modalities={"a": 256, "b": 32})),
        setting("m20_int", **miss(0.2, epochs=50)),
        setting("m30_int_150", **miss(0.3, epochs=50, n_labels=150)),
        setting("m30_bn.8_late", **miss(0.3, noise=(0.6, 0.8), fusion="late", epochs=50)),
    ]
    k8 = {"noise": (0.6, 0.8), "sep": 2.5, "num_classes": 8}
    missing5 = [
        setting("m30_k8_int_e100", **miss(0.3, epochs=100, **k8)),
        setting("m30_k8_sum_e100", **miss(0.3, fusion="sum", epochs=100, **k8)),
        setting("m30_k10_int", **miss(0.3, epochs=50, **{**k8, "num_classes": 10})),
        setting("m30_k12_int", **miss(0.3, epochs=50, **{**k8, "num_classes": 12})),
        setting("m30_k8_bn1_int", **miss(0.3, epochs=50, **{**k8, "noise": (0.6, 1.0)})),
        setting("m40_k8_int", **miss(0.4, epochs=50, **k8)),
        setting("m30_k8_int_500", **miss(0.3, epochs=50, n_labels=500, **k8)),
    ]
    confirm = [  # the best settings at 50 epochs; run with --epoch-scale 2 for twice the epochs
        setting("m30_k8_int", **miss(0.3, epochs=50, **k8)),
        setting("m30_k10_int", **miss(0.3, epochs=50, **{**k8, "num_classes": 10})),
        setting("m30_k8_bn1_int", **miss(0.3, epochs=50, **{**k8, "noise": (0.6, 1.0)})),
        # controls: no competitor (a carries nothing: noise 50, its reference leaves the ensemble), and nothing
        # missing (no row where the fused model must predict from b alone)
        setting("m30_k8_bn1_int_ctrl_a_null", **miss(0.3, epochs=50, **{**k8, "noise": (50.0, 1.0)})),
        setting("m0_k8_bn1_int_ctrl_none_missing", **miss(0.0, epochs=50, **{**k8, "noise": (0.6, 1.0)})),
        # a as hard as b (same noise and depth): informative, but no faster than b
        setting("m30_k8_bn1_int_ctrl_symmetric", **miss(0.3, epochs=50, depth=(3, 3), **{**k8, "noise": (1.0, 1.0)})),
        setting("m30_k10_int_ctrl_a_null", **miss(0.3, epochs=50, **{**k8, "num_classes": 10, "noise": (50.0, 0.8)})),
        setting("m0_k10_int_ctrl_none_missing", **miss(0.0, epochs=50, **{**k8, "num_classes": 10})),
    ]
    many = []  # many classes, nothing missing: pure redundancy with a dominant, against symmetric controls
    for k in (10, 12, 16):
        many.append(setting(f"red_k{k}_int", **miss(0.0, epochs=50, noise=(0.6, 0.8), sep=2.5, num_classes=k)))
        many.append(setting(f"red_k{k}_int_ctrl_symmetric", **miss(0.0, epochs=50, noise=(0.8, 0.8), depth=(3, 3),
                                                                     sep=2.5, num_classes=k)))
    many.append(setting("red_k12_sum", **miss(0.0, fusion="sum", epochs=50, noise=(0.6, 0.8), sep=2.5, num_classes=12)))
    many.append(setting("red_k12_int_500", **miss(0.0, epochs=50, n_labels=500, noise=(0.6, 0.8), sep=2.5,
                                                  num_classes=12)))
    many.append(setting("red_k12_late", **miss(0.0, fusion="late", epochs=50, noise=(0.6, 0.8), sep=2.5,
                                               num_classes=12)))
    many.append(setting("red_k12_late_ctrl_symmetric", **miss(0.0, fusion="late", epochs=50, noise=(0.8, 0.8),
                                                              depth=(3, 3), sep=2.5, num_classes=12)))
    many.append(setting("m30_k10_late", **miss(0.3, fusion="late", epochs=50, noise=(0.6, 0.8), sep=2.5,
                                               num_classes=10)))
    many.append(setting("m30_k10_late_ctrl_symmetric", **miss(0.3, fusion="late", epochs=50, noise=(0.8, 0.8),
                                                              depth=(3, 3), sep=2.5, num_classes=10)))
    many.append(setting("m30_k10_int_ctrl_symmetric", **miss(0.3, epochs=50, noise=(0.8, 0.8), depth=(3, 3), sep=2.5,
                                                             num_classes=10)))
    many.append(setting("red_k16_late", **miss(0.0, fusion="late", epochs=50, noise=(0.6, 0.8), sep=2.5,
                                               num_classes=16)))
    many.append(setting("red_k16_late_ctrl_symmetric", **miss(0.0, fusion="late", epochs=50, noise=(0.8, 0.8),
                                                              depth=(3, 3), sep=2.5, num_classes=16)))
    many.append(setting("mix80_k8_int", **_mix(0.8, [0.6, 0.8], [1, 3], sep=2.5, epochs=50, num_classes=8)))
    out = {"coarse": coarse, "explore": explore, "explore2": explore2, "explore3": explore3, "explore4": explore4,
           "explore5": explore5, "missing": missing, "missing2": missing2, "missing3": missing3,
           "missing4": missing4, "missing5": missing5, "confirm": confirm, "many": many}
    seen = {}  # every grid once per setting name, in the order above
    for grid in list(out.values()):
        for s in grid:
            seen.setdefault(s["name"], s)
    out["all"] = list(seen.values())
    out["smoke"] = [setting("smoke", **_mix(0.8, [0.5, 1.2], [1, 3], epochs=5))]
    out["none"] = []
    return out


def build_data(s: dict, seed: int):
    return make_synthetic(Pitfall(**s["pitfall"]), seed, num_samples=s["num_samples"], num_test=s["num_test"],
                          modalities=dict(s["modalities"]), nuisance_dim=s["nuisance_dim"],
                          num_classes=s["num_classes"])


def run_one(s: dict, seed: int) -> dict:
    """Train the fused model and the references of setting ``s`` for ``seed``; the CSV row."""
    start = time.time()
    data = build_data(s, seed)
    encoder = functools.partial(MLPEncoder, hidden_dim=128, out_dim=64, num_hidden=1, dropout=s["dropout"])
    fusion = functools.partial(FUSIONS[s["fusion"]], dropout=s["dropout"])
    build = functools.partial(MultimodalClassifier, shapes=data.shapes, num_classes=data.num_classes,
                              encoder=encoder, fusion=fusion)
    model = initial_model(build, seed)
    initial = copy.deepcopy(model)
    rows = initial_labeled(len(data.pool), s["n_labels"], seed).nonzero()[:, 0]
    trainer = Trainer(epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], weight_decay=s["weight_decay"],
                      device="cpu", num_threads=1)
    refs = []  # as References.members: each reference on the labeled rows that have its modality
    for i, m in enumerate(data.modalities):
        pool = data.pool.only(i)
        refs.append(Member(copy.deepcopy(initial), pool, rows[pool.mask[rows, i]], f"reference {m}: "))
    trainer.fit_together([Member(model, data.pool, rows), *refs], seed)  # seed as training seed (loop: derived)

    test = data.test
    fused_correct = trainer.predict(model, test).probs.argmax(1) == test.y
    fused_acc = fused_correct.float().mean().item()
    row = {"setting": s["name"], "seed": seed}
    # The ensemble (mmal.metrics.references.ensemble_predictions): per row, the mean log-probability over the
    # usable references of the modalities the row has; a row with none of those, every reference it has.
    total = torch.zeros(len(test.y), data.num_classes)
    fallback = torch.zeros(len(test.y), data.num_classes)
    count = torch.zeros(len(test.y), 1)
    for i, m in enumerate(data.modalities):
        on = test.mask[:, i]
        log_probs = trainer.predict(refs[i].model, test.only(i)).probs.clamp_min(1e-12).log()
        acc = (log_probs.argmax(1) == test.y)[on].float().mean().item()
        chance = test.y[on].bincount().max().item() / int(on.sum())
        row[f"ref_acc/{m}"] = acc
        has = on[:, None].float()
        fallback += log_probs * has
        if acc - chance >= MIN_MARGIN:
            total += log_probs * has
            count += has
    total = torch.where(count > 0, total, fallback)
    # Ground truth on this test split's presence patterns: the Bayes accuracy of each row's present subset,
    # and that of a model that uses the dominant modality only (chance on rows without it).
    gt, names = data.ground_truth, data.modalities
    def bayes(present: tuple[str, ...]) -> float:  # noqa: E306
        if not present:
            return test.y.bincount().max().item() / len(test.y)
        return gt["bayes_acc/all"] if len(present) == len(names) else gt["bayes_acc/" + "+".join(present)]
    present = [tuple(m for m, has in zip(names, r) if has) for r in test.mask.tolist()]
    row["bayes_test"] = float(np.mean([bayes(p) for p in present]))
    row["bayes_test_dominant"] = float(np.mean([bayes(tuple(m for m in p if m == s["dominant"])) for p in present]))
    ens_correct = total.argmax(1) == test.y
    for i, m in enumerate(data.modalities):  # the fused model with only m present (exact for late fusion only)
        on = test.mask[:, i]
        masked = trainer.predict(model, test.only(i)).probs.argmax(1) == test.y
        row[f"masked_acc/{m}"] = masked[on].float().mean().item()
    ens_acc = ens_correct.float().mean().item()
    row.update({"acc": fused_acc, "ensemble_acc": ens_acc, "gap": ens_acc - fused_acc})
    # Diagnostics: the gap on the test rows where modality m alone is informative (uniqueness rows), and
    # every model's cross-entropy on its training rows (did the budget fit them?).
    for size in range(1, len(data.modalities) + 1):  # the gap per presence pattern (NaN: no such test row)
        for subset in itertools.combinations(range(len(data.modalities)), size):
            pattern = torch.zeros(len(data.modalities), dtype=torch.bool)
            pattern[list(subset)] = True
            on = (test.mask == pattern).all(1)
            name = "+".join(data.modalities[i] for i in subset)
            row[f"gap_present/{name}"] = ((ens_correct[on].float().mean() - fused_correct[on].float().mean()).item()
                                          if on.any() else float("nan"))
    for i, m in enumerate(data.modalities):
        alone = test.informative[:, i] & (test.informative.sum(1) == 1)
        row[f"gap_only/{m}"] = ((ens_correct[alone].float().mean() - fused_correct[alone].float().mean()).item()
                                if alone.any() else float("nan"))
    both = test.informative.all(1)
    row["gap_all_informative"] = (ens_correct[both].float().mean() - fused_correct[both].float().mean()).item() \
        if both.any() else float("nan")
    for label, member in [("fused", Member(model, data.pool, rows)), *zip(data.modalities, refs)]:
        probs = trainer.predict(member.model, member.data, member.rows).probs
        row[f"train_loss/{label}"] = torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(),
                                                                  member.data.y[member.rows]).item()
    row.update({k: v for k, v in data.ground_truth.items()})
    knobs = {k: v for k, v in s.items() if k not in ("name", "pitfall")}
    row.update({"pitfall": json.dumps(s["pitfall"], sort_keys=True),
                **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in knobs.items()}})
    row["seconds"] = round(time.time() - start, 1)
    return row


def summarise(rows: list[dict]) -> str:
    """The per-setting table (Markdown)."""
    from scipy.stats import ttest_rel

    by = defaultdict(list)
    for r in rows:
        by[(r["setting"], int(r["epochs"]), int(r["n_labels"]))].append(r)
    lines = ["| setting | labels | epochs | seeds | fused acc | ensemble acc | gap mean ± std | p (paired t) | "
             "ref accs | Bayes per modality | Bayes(all) | Bayes(dom) | cost of full neglect | Bayes(test rows) | "
             "cost of full neglect on the test rows |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, epochs, labels), rs in by.items():
        f = np.array([float(r["acc"]) for r in rs])
        e = np.array([float(r["ensemble_acc"]) for r in rs])
        gap = e - f
        p = ttest_rel(e, f).pvalue if len(rs) > 1 and np.std(gap) > 0 else float("nan")
        mods = [k.split("/", 1)[1] for k in rs[0] if k.startswith("ref_acc/")]
        refs = {m: np.mean([float(r[f"ref_acc/{m}"]) for r in rs]) for m in mods}
        bayes = {m: np.mean([float(r[f"bayes_acc/{m}"]) for r in rs]) for m in mods}
        b_all = np.mean([float(r["bayes_acc/all"]) for r in rs])
        dom = rs[0].get("dominant") or DEFAULTS["dominant"]  # CSVs written before the column existed
        b_test = np.mean([float(r.get("bayes_test", "nan")) for r in rs])
        b_test_dom = np.mean([float(r.get("bayes_test_dominant", "nan")) for r in rs])
        sd = gap.std(ddof=1) if len(rs) > 1 else float("nan")
        lines.append(
            f"| {name} | {labels} | {epochs} | {len(rs)} | {f.mean():.3f} | {e.mean():.3f} | {gap.mean():+.3f} ± "
            f"{sd:.3f} | {p:.3g} | " + " / ".join(f"{m} {v:.3f}" for m, v in refs.items()) + " | "
            + " / ".join(f"{m} {v:.3f}" for m, v in bayes.items())
            + f" | {b_all:.3f} | {dom} {bayes[dom]:.3f} | {b_all - bayes[dom]:.3f} | {b_test:.3f} | "
            f"{b_test - b_test_dom:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="coarse", choices=list(grids()),
                        help="a named grid (grids()); 'all' = every one, 'none' = only the --spec settings")
    parser.add_argument("--only", nargs="*", help="run only the settings whose names are listed")
    parser.add_argument("--spec", action="append", default=[],
                        help="an extra setting as JSON, e.g. '{\"name\": \"x\", \"epochs\": 50, \"pitfall\": {...}}'")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every setting's epochs")
    parser.add_argument("--out", default="competition.csv", help="CSV to append one row per (setting, seed)")
    parser.add_argument("--table", nargs="*", help="only print the table of these CSV files")
    args = parser.parse_args()
    if args.table:
        rows = [r for path in args.table for r in csv.DictReader(open(path))]
        print(summarise(rows))
        return
    torch.set_num_threads(1)
    settings = grids()[args.grid]
    if args.only:
        settings = [s for s in settings if s["name"] in args.only]
    settings += [setting(**json.loads(spec)) for spec in args.spec]
    rows = []
    out = Path(args.out)
    for s in settings:
        s = {**s, "epochs": int(round(s["epochs"] * args.epoch_scale))}
        for seed in args.seeds:
            row = run_one(s, seed)
            rows.append(row)
            new = not out.exists()
            with out.open("a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    writer.writeheader()
                writer.writerow(row)
            print(f"{s['name']} seed {seed}: fused {row['acc']:.3f} ensemble {row['ensemble_acc']:.3f} "
                  f"gap {row['gap']:+.3f} refs " + " ".join(f"{k[8:]} {v:.3f}" for k, v in row.items()
                                                            if k.startswith("ref_acc/"))
                  + " | gap on rows only m informs: " + " ".join(f"{k[9:]} {v:+.3f}" for k, v in row.items()
                                                                  if k.startswith("gap_only/"))
                  + f", both {row['gap_all_informative']:+.3f} | "
                  + " ".join(f"gap {k[12:]}-rows {v:+.3f}" for k, v in row.items()
                             if k.startswith("gap_present/") and not math.isnan(v))
                  + " | train loss "
                  + " ".join(f"{k[11:]} {v:.3f}" for k, v in row.items() if k.startswith("train_loss/"))
                  + f" ({row['seconds']} s)", flush=True)
    print(summarise(rows))


if __name__ == "__main__":
    sys.exit(main())
