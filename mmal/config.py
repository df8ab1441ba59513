"""The rules that cross config groups, checked before any work. Each component checks its own arguments
in its constructor (``mmal.errors``) and the typed groups are checked by Hydra at composition
(``mmal.schema``); what is left here needs two groups at once."""

from __future__ import annotations

from omegaconf import DictConfig

from mmal.data.multimodal import MultimodalDataset
from mmal.errors import ConfigError, check_choice
from mmal.metrics import names
from mmal.models.classifier import MultimodalClassifier
from mmal.protocol import ALProtocol
from mmal.query.base import QueryStrategy

# How to give a model each capability a strategy may need (QueryStrategy.needs, MultimodalClassifier.capabilities).
CAPABILITY_HINTS = {
    "modality_predictions": "needs per-modality predictions: use fusion=late or model.aux_heads=true",
    "dropout": "MC dropout needs dropout > 0: set model.encoder.dropout or fusion.dropout",
}
# Summary keys a sweep may optimise besides final/<metric> (mmal.loop.summarise).
OPTIMIZABLE = tuple(names.aubc_key(m) for m in names.AUBC_METRICS)


def check_budget(protocol: ALProtocol, pool_size: int) -> None:
    """The labeled budget initial_size + cycles * query_size must fit in the pool."""
    if protocol.initial_size > pool_size:
        raise ConfigError("al.initial_size", protocol.initial_size, f"at most the pool size {pool_size}")
    unlabeled = pool_size - protocol.initial_size
    if protocol.cycles > 0 and protocol.query_size > unlabeled:  # with no query round any query_size is fine
        raise ConfigError("al.query_size", protocol.query_size,
                          f"at most the unlabeled pool, {pool_size} - {protocol.initial_size} = {unlabeled}")
    if protocol.budget > pool_size:
        most = (pool_size - protocol.initial_size) // protocol.query_size
        raise ConfigError("al.cycles", protocol.cycles,
                          f"budget {protocol.initial_size} + {protocol.cycles} x {protocol.query_size} = "
                          f"{protocol.budget} exceeds the pool ({pool_size}); at most {most} cycles")


def check_splits(data: MultimodalDataset) -> None:
    """The labeled pool and the test split can measure accuracy: each holds at least 2 classes (with one, a
    constant prediction scores 1.0)."""
    for split in ("pool", "test"):
        y = getattr(data, split).y
        classes = y.unique().numel()
        if classes < 2:
            raise ConfigError("dataset", f"{len(y)} {split} rows", f"a {split} split with at least 2 classes; this one "
                              f"has {classes} (a larger num_{split}, other class_weights, or other files)")


def check_strategy(cfg: DictConfig, strategy: QueryStrategy, model: MultimodalClassifier) -> None:
    """The model has every capability the strategy needs, and a strategy that reads the unimodal references
    has them every cycle."""
    if "references" in strategy.needs and cfg.diagnostics.every != 1:
        raise ConfigError("diagnostics.every", cfg.diagnostics.every,
                          f"1, since {cfg.query._target_} reads the unimodal references every cycle")
    for need in sorted(strategy.needs - model.capabilities - {"references"}):
        raise ConfigError("query._target_", cfg.query._target_,
                          f"{CAPABILITY_HINTS.get(need, f'needs {need}')} (fusion {cfg.fusion._target_}, "
                          f"model.aux_heads={cfg.model.aux_heads})")


def check_optimized_metric(cfg: DictConfig) -> None:
    """``optimized_metric`` names a value the summary will hold: an AUBC or a final per-cycle metric."""
    metric = cfg.optimized_metric
    final = names.FINAL_PREFIX
    if not (isinstance(metric, str) and metric.startswith(final) and len(metric) > len(final)):
        check_choice("optimized_metric", metric, [*OPTIMIZABLE, f"{final}<metric>"])
    # deficit/<m>, deficit_repr/<m>, ref_acc/<m>, ref_repr_acc/<m>, gap/neglect(_repr) and their AUBCs
    if cfg.diagnostics.every == 0 and any(word in metric for word in ("neglect", "deficit", "ref_")):
        raise ConfigError("optimized_metric", metric, "a metric that needs no unimodal references: "
                          "diagnostics.every=0 trains none")
