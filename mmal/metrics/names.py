"""Metric names: the keys of each cycle's record in ``metrics.jsonl``, of ``summary.json`` and of W&B, defined
once. What each modality-gap diagnostic measures is defined in :mod:`mmal.metrics.modality`'s docstring.

Every string here is part of the on-disk format (committed reports in ``docs/results`` and every run directory
use them): changing one renames a key, it does not refactor.
"""

from __future__ import annotations

# Bookkeeping: the cycle index (0 = the initial labeled set; W&B's step), the labeled count (every curve's x).
CYCLE = "cycle"
N_LABELED = "n_labeled"

# The fused model on the test set with every modality it has (mmal.metrics.classification_metrics).
ACC = "acc"
MACRO_F1 = "macro_f1"

# The fused model's cross-entropy on its labeled rows after the cycle's training (has the budget fit them?), and
# per modality the reference's, ref_train_loss/<m>.
TRAIN_LOSS = "train_loss"
REF_TRAIN_LOSS = "ref_train_loss"

# Test accuracy with every modality present / with none (the Shapley set function at its two ends).
V_ALL = "v/all"
V_NONE = "v/none"

# Per-modality families, one key per modality: per_modality(family, m) == "<family>/<m>". Every one is measured
# on the test rows where m is present (docs/design.md, "Modality-imbalance diagnostics").
REF_ACC = "ref_acc"  # the unimodal reference of m (trained on m alone, same labeled rows) on test
HEAD_ACC = "head_acc"  # the fused model's auxiliary head of m (models with aux heads)
MASKED_ACC = "masked_acc"  # the fused model with only m present (the others masked)
CHANCE = "chance"  # the majority-class share: what a constant prediction scores on those rows
DEFICIT = "deficit"  # decision level: (REF_ACC - the fused model's own m prediction) / (REF_ACC - CHANCE)
REPR_ACC = "repr_acc"  # a linear probe on the fused model's encoder m, fit on the labeled rows
REF_REPR_ACC = "ref_repr_acc"  # the same probe on the reference's encoder m
DEFICIT_REPR = "deficit_repr"  # representation level: (REF_REPR_ACC - REPR_ACC) / (REF_REPR_ACC - CHANCE)
PROBE_DIGIT = "probe_digit"  # a linear probe for m's latent digit on encoder m (synthetic data)
SHAPLEY = "shapley"  # Shapley value of m for accuracy, averaged over the rows that have m

# Whether m has anything to give, decided on the labeled rows alone, never on test (mmal.metrics.references):
# the cross-validated accuracy of a linear probe on m's own input over the labeled rows that have m, and whether
# it beats those rows' majority share by diagnostics.min_margin (1.0: m's reference joins the ensemble and its
# deficits are computed; 0.0: it stays out and its deficits read 0).
INPUT_CV_ACC = "input_cv_acc"
ENSEMBLE_MEMBER = "ensemble_member"

# Ground truth (``data.ground_truth``, no record key): best achievable accuracy from a subset of modalities,
# bayes_key(("a",)) == "bayes_acc/a", bayes_key(("a", "b")) == "bayes_acc/a+b", and from all of them. Defined by
# the data, which names its own ground truth (data never imports metrics).
from mmal.data.multimodal import BAYES_ACC, BAYES_ACC_ALL, bayes_key  # noqa: E402, F401

# The references' ensemble (mean of their log-probabilities over the modalities a row has) on test, and
# modality imbalance, one number per cycle: the ensemble's accuracy minus the fused model's (the headline:
# accuracy joint training lost against the modalities trained apart; per presence pattern as
# per_modality(GAP_ENSEMBLE, "a+b") when test rows differ in which modalities they have), the largest deficit
# over modalities, the same at the representation level, and max minus min of the Shapley values
# (contribution, not neglect).
ENSEMBLE_ACC = "ensemble_acc"
GAP_ENSEMBLE = "gap/ensemble"
GAP_NEGLECT = "gap/neglect"
GAP_NEGLECT_REPR = "gap/neglect_repr"
GAP_SHAPLEY = "gap/shapley"

# The 95 % paired-bootstrap interval over test rows of a per-cycle neglect number (mmal.metrics.bootstrap):
# ci_lo(GAP_ENSEMBLE) == "ci_lo/gap/ensemble".
CI_LO_PREFIX = "ci_lo/"
CI_HI_PREFIX = "ci_hi/"

# A balancing method's own state over a cycle's training (mmal.balance), e.g. "balance/ogm_coeff/a".
BALANCE_PREFIX = "balance/"

# Seconds each phase of a cycle took (the summary holds their sums, TOTAL_PREFIX + key).
TIME_PREFIX = "time/"
TIME_TRAIN = "time/train"
TIME_EVAL = "time/eval"
TIME_DIAGNOSE = "time/diagnose"
TIME_REFERENCE = "time/reference"  # training the unimodal references
TIME_SELECT = "time/select"

# The queried batch: share missing each modality, class histogram (a list), and the strategy's own statistics.
QUERY_PREFIX = "query/"
QUERY_MISSING_FRAC = "query/missing_frac"
QUERY_CLASS_HIST = "query/class_hist"

# Summary (``summary.json``): N_LABELED at the end, CYCLES (query rounds), and these prefixes before record keys.
CYCLES = "cycles"
FINAL_PREFIX = "final/"  # the last cycle's value of every float metric not under NOT_SUMMARISED
AUBC_PREFIX = "aubc/"  # area under the budget curve, aubc_key(metric), of each of AUBC_METRICS
TOTAL_PREFIX = "total_"  # summed over cycles: TOTAL_PREFIX + TIME_TRAIN == "total_time/train"
GROUND_TRUTH_PREFIX = "ground_truth/"  # the data's ground truth, e.g. "ground_truth/bayes_acc/all"
MODALITY_DROPOUT = "modality_dropout"  # trainer.modality_dropout
# Whether masked_acc (so deficit, gap/neglect, shapley) is the fused model's own prediction from the modality:
# a fusion whose logits decompose over modalities (MultimodalClassifier.masked_exact) or training with
# modality dropout; otherwise the masked prediction is out of distribution.
MASKED_IN_DISTRIBUTION = "masked_in_distribution"
CPU_KERNELS = "cpu_kernels"  # the kernels torch computed with (mmal.kernels.engage), e.g. "pinned: MKL COMPATIBLE, ..."
AUBC_METRICS = (ACC, MACRO_F1, GAP_ENSEMBLE, ENSEMBLE_ACC, GAP_NEGLECT, GAP_NEGLECT_REPR, GAP_SHAPLEY)  # summary order
NOT_SUMMARISED = (TIME_PREFIX, QUERY_PREFIX)


def per_modality(family: str, modality: str) -> str:
    """The key of ``family`` for one modality: ``per_modality(REF_ACC, "image") == "ref_acc/image"``."""
    return f"{family}/{modality}"


def prefix(family: str) -> str:
    """What every key of ``family`` starts with: ``prefix(REF_ACC) == "ref_acc/"``."""
    return f"{family}/"


def aubc_key(metric: str) -> str:
    """The summary key of ``metric``'s AUBC: ``aubc_key(GAP_NEGLECT) == "aubc/gap_neglect"``."""
    return AUBC_PREFIX + metric.replace("/", "_")


def ci_lo(key: str) -> str:
    """The key of the lower end of ``key``'s 95 % interval: ``ci_lo(GAP_ENSEMBLE) == "ci_lo/gap/ensemble"``."""
    return CI_LO_PREFIX + key


def ci_hi(key: str) -> str:
    """The key of the upper end of ``key``'s 95 % interval."""
    return CI_HI_PREFIX + key
