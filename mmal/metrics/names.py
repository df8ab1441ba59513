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

# Ground truth (``data.ground_truth``, no record key): best achievable accuracy from a subset of modalities,
# bayes_key(("a",)) == "bayes_acc/a", bayes_key(("a", "b")) == "bayes_acc/a+b", and from all of them.
BAYES_ACC = "bayes_acc"
BAYES_ACC_ALL = "bayes_acc/all"

# Modality imbalance, one number per cycle: the largest deficit over modalities (the headline), the same at the
# representation level, and max minus min of the Shapley values (contribution, not neglect).
GAP_NEGLECT = "gap/neglect"
GAP_NEGLECT_REPR = "gap/neglect_repr"
GAP_SHAPLEY = "gap/shapley"

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
MODALITY_DROPOUT = "modality_dropout"  # trainer.modality_dropout: whether masked evaluation was in-distribution
AUBC_METRICS = (ACC, MACRO_F1, GAP_NEGLECT, GAP_NEGLECT_REPR, GAP_SHAPLEY)  # in summary.json's order
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


def bayes_key(subset: tuple[str, ...]) -> str:
    """The ground-truth key of a subset of modalities: ``bayes_key(("a", "b")) == "bayes_acc/a+b"``."""
    return f"{BAYES_ACC}/{'+'.join(subset)}"
