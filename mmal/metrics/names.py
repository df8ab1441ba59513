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

# Per-modality families, one key per modality: per_modality(family, m) == "<family>/<m>".
PROBE_ACC = "probe_acc"  # a linear probe on modality m's embedding
PROBE_GAIN = "probe_gain"  # PROBE_ACC minus the same probe on the untrained encoder (logged by the loop)
UNIMODAL_ACC = "unimodal_acc"  # test accuracy with only modality m present
SHAPLEY = "shapley"  # Shapley value of modality m for accuracy
NEGLECT = "neglect"  # BAYES_ACC minus PROBE_ACC, when the data knows its Bayes accuracies

# Ground truth (``data.ground_truth``, no record key): best achievable accuracy from modality m alone / from all.
BAYES_ACC = "bayes_acc"
BAYES_ACC_ALL = "bayes_acc/all"

# Modality gaps: max minus min over modalities of the family each is built from.
GAP_UNIMODAL = "gap/unimodal"
GAP_PROBE = "gap/probe"
GAP_SHAPLEY = "gap/shapley"
GAPS = {GAP_UNIMODAL: UNIMODAL_ACC, GAP_PROBE: PROBE_ACC, GAP_SHAPLEY: SHAPLEY}

# Seconds each phase of a cycle took (the summary holds their sums, TOTAL_PREFIX + key).
TIME_PREFIX = "time/"
TIME_TRAIN = "time/train"
TIME_EVAL = "time/eval"
TIME_DIAGNOSE = "time/diagnose"
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
UNTRAINED_PREFIX = "untrained/"  # the probes of the untrained encoder, e.g. "untrained/probe_acc/<m>"
AUBC_METRICS = (ACC, MACRO_F1, GAP_UNIMODAL, GAP_PROBE, GAP_SHAPLEY)  # in summary.json's order
NOT_SUMMARISED = (TIME_PREFIX, QUERY_PREFIX)


def per_modality(family: str, modality: str) -> str:
    """The key of ``family`` for one modality: ``per_modality(PROBE_ACC, "image") == "probe_acc/image"``."""
    return f"{family}/{modality}"


def prefix(family: str) -> str:
    """What every key of ``family`` starts with: ``prefix(PROBE_ACC) == "probe_acc/"``."""
    return f"{family}/"


def aubc_key(metric: str) -> str:
    """The summary key of ``metric``'s AUBC: ``aubc_key(GAP_PROBE) == "aubc/gap_probe"``."""
    return AUBC_PREFIX + metric.replace("/", "_")
