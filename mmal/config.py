"""Config validation: every value a user can get wrong is checked once, before any work, and fails
with one message naming the key, the bad value and what is allowed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from mmal.data.features import RESERVED as FEATURE_KEYS
from mmal.data.mfeat import VIEWS as MFEAT_VIEWS
from mmal.data.pitfall import INTERACTIONS, MISSING_MECHANISMS, SPLITS
from mmal.data.real import SYNTHETIC_ONLY, SYNTHETIC_ONLY_PITFALLS
from mmal.query import BALD, QueryStrategy, has_modality_predictions
from mmal.query.gap import WITHIN as GAP_SPLIT_WITHIN
from mmal.training import PRECISIONS


class ConfigError(ValueError):
    """A user error in the config: ``key=value: what is allowed``."""

    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


def validate(cfg: DictConfig) -> None:
    """Check the composed config; raise ``ConfigError`` at the first bad value."""
    _integer(cfg, "seed", 0)
    _integer(cfg, "al.initial_size", 1)
    _integer(cfg, "al.query_size", 1)
    _integer(cfg, "al.cycles", 0)
    _choice(cfg, "al.warm_start", [True, False])
    _integer(cfg, "trainer.epochs", 1)
    _integer(cfg, "trainer.batch_size", 1)
    _integer(cfg, "trainer.eval_batch_size", 1)
    if cfg.trainer.num_threads is not None:
        _integer(cfg, "trainer.num_threads", 1)
    _number(cfg, "trainer.lr", 0, strict=True)
    _number(cfg, "trainer.weight_decay", 0)
    _number(cfg, "trainer.aux_weight", 0)
    _choice(cfg, "trainer.device", ["auto", "cpu", "cuda"])
    if cfg.trainer.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device", "cuda", "CUDA is not available on this machine; use auto or cpu")
    _choice(cfg, "trainer.precision", list(PRECISIONS))
    if str(cfg.trainer.precision) == "16" and not torch.cuda.is_available():
        raise ConfigError("trainer.precision", "16", "float16 training needs CUDA; use 32 or bf16")

    for key in ("mc_samples", "max_iter", "max_clusters", "min_cluster_size", "neighbors", "batch_size"):
        if key in cfg.query:
            _integer(cfg, f"query.{key}", 1)
    if "overshoot" in cfg.query:
        _number(cfg, "query.overshoot", 0)
    if "within" in cfg.query:  # gap_split
        _choice(cfg, "query.within", list(GAP_SPLIT_WITHIN))
        _number(cfg, "query.scale", 0)
        _choice(cfg, "query.coverage", [True, False])

    dataset = cfg.dataset
    modalities = OmegaConf.select(cfg, "dataset.modalities")  # a mapping (synthetic), a list of names, or null
    num_modalities = len(modalities) if isinstance(modalities, (DictConfig, ListConfig)) else None
    loader = str(OmegaConf.select(cfg, "dataset._target_")).rsplit(".", 1)[-1]
    if loader in REAL_DATASETS:
        REAL_DATASETS[loader](cfg)
        _validate_real_pitfall(cfg)
    if "num_samples" in dataset:  # the synthetic generator's sizes
        for key in ("num_samples", "num_val", "num_test"):
            _integer(cfg, f"dataset.{key}", 1)
        _integer(cfg, "dataset.num_classes", 2)
        _integer(cfg, "dataset.nuisance_dim", 0)
        _integer(cfg, "dataset.bayes_samples", 1)
        latent = dataset.num_classes + dataset.nuisance_dim
        if not isinstance(dataset.modalities, DictConfig) or num_modalities < 2:
            raise ConfigError("dataset.modalities", dataset.modalities,
                              "a mapping name -> dim with >= 2 modalities")
        for name, dim in dataset.modalities.items():
            if not _is_int(dim) or dim < latent:
                raise ConfigError(f"dataset.modalities.{name}", dim,
                                  f"an integer >= num_classes + nuisance_dim = {latent} (the map must be injective)")
        if dataset.class_weights is not None:
            _numbers(cfg, "dataset.class_weights", dataset.num_classes, 0, positive_sum=True)
    _validate_pitfall(cfg, num_modalities)


def check_budget(cfg: DictConfig, pool_size: int) -> None:
    """The labeled budget initial_size + cycles * query_size must fit in the pool."""
    al = cfg.al
    if al.initial_size > pool_size:
        raise ConfigError("al.initial_size", al.initial_size, f"at most the pool size {pool_size}")
    unlabeled = pool_size - al.initial_size
    if al.cycles > 0 and al.query_size > unlabeled:  # with no query round any query_size is fine
        raise ConfigError("al.query_size", al.query_size,
                          f"at most the unlabeled pool, {pool_size} - {al.initial_size} = {unlabeled}")
    budget = al.initial_size + al.cycles * al.query_size
    if budget > pool_size:
        most = (pool_size - al.initial_size) // al.query_size
        raise ConfigError("al.cycles", al.cycles,
                          f"budget {al.initial_size} + {al.cycles} x {al.query_size} = {budget} exceeds the pool "
                          f"({pool_size}); at most {most} cycles")


def check_strategy(cfg: DictConfig, strategy: QueryStrategy, model: nn.Module) -> None:
    """The strategy can run on this model: per-modality predictions or dropout where it needs them."""
    if strategy.needs_modality_predictions and not has_modality_predictions(model):
        raise ConfigError("query._target_", cfg.query._target_,
                          f"needs per-modality predictions, which {cfg.fusion._target_} with model.aux_heads="
                          f"{cfg.model.aux_heads} lacks: use fusion=late or model.aux_heads=true")
    if isinstance(strategy, BALD) and not any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.modules()):
        raise ConfigError("query._target_", cfg.query._target_,
                          "MC dropout needs dropout > 0: set model.encoder.dropout or fusion.dropout")


def _validate_pitfall(cfg: DictConfig, num_modalities: int | None) -> None:
    p = cfg.pitfall
    if not isinstance(p.interaction, DictConfig) or not p.interaction:
        raise ConfigError("pitfall.interaction", p.interaction, f"a mapping with keys from {list(INTERACTIONS)}")
    for name, weight in p.interaction.items():
        if name not in INTERACTIONS:
            raise ConfigError(f"pitfall.interaction.{name}", weight, f"keys must be from {list(INTERACTIONS)}")
        _number(cfg, f"pitfall.interaction.{name}", 0)
    if sum(p.interaction.values()) <= 0:
        raise ConfigError("pitfall.interaction", p.interaction, "weights must not all be zero")
    _per_modality(cfg, "pitfall.noise", num_modalities, 0, strict=True)
    _per_modality(cfg, "pitfall.separation", num_modalities, 0)
    _per_modality(cfg, "pitfall.depth", num_modalities, 0, integer=True)
    _per_modality(cfg, "pitfall.feature_noise", num_modalities, 0)
    _per_modality(cfg, "pitfall.missing_rate", num_modalities, 0, below=1)
    _choice(cfg, "pitfall.missing_mechanism", list(MISSING_MECHANISMS))
    _number(cfg, "pitfall.missing_strength", 0, maximum=1)
    splits = p.missing_splits
    if not isinstance(splits, ListConfig) or any(s not in SPLITS for s in splits):
        raise ConfigError("pitfall.missing_splits", splits, f"a list with items from {list(SPLITS)}")
    if p.unique_probs is not None:
        _numbers(cfg, "pitfall.unique_probs", num_modalities, 0, positive_sum=True)


def _validate_mfeat(cfg: DictConfig) -> None:
    names = cfg.dataset.modalities
    if (not isinstance(names, ListConfig) or not names or any(m not in MFEAT_VIEWS for m in names)
            or len(set(names)) != len(names)):
        raise ConfigError("dataset.modalities", names, f"a non-empty list of distinct views from {list(MFEAT_VIEWS)}")
    _fractions(cfg)
    _optional_string(cfg, "dataset.data_dir")


def _validate_features(cfg: DictConfig) -> None:
    root = cfg.dataset.root
    if not isinstance(root, str) or not root:
        raise ConfigError("dataset.root", root, "a directory holding the feature files (docs/datasets.md)")
    names = cfg.dataset.modalities
    if names is not None and (not isinstance(names, ListConfig) or not names or len(set(names)) != len(names)
                              or any(not isinstance(m, str) or m in FEATURE_KEYS for m in names)):
        raise ConfigError("dataset.modalities", names,
                          f"null (every array in the files) or a non-empty list of distinct array names, "
                          f"none of {list(FEATURE_KEYS)}")
    if cfg.dataset.num_classes is not None:
        _integer(cfg, "dataset.num_classes", 2)
    _fractions(cfg)
    _choice(cfg, "dataset.standardise", [True, False])


def _fractions(cfg: DictConfig) -> None:
    """``dataset.val_fraction`` and ``dataset.test_fraction`` in (0, 1), summing to less than 1."""
    for key in ("dataset.val_fraction", "dataset.test_fraction"):
        v = OmegaConf.select(cfg, key)
        if not _is_number(v) or not 0 < v < 1:
            raise ConfigError(key, v, "a number > 0 and < 1")
    total = cfg.dataset.val_fraction + cfg.dataset.test_fraction
    if total >= 1:
        raise ConfigError("dataset.test_fraction", cfg.dataset.test_fraction,
                          f"val_fraction + test_fraction = {total:g} must be < 1 (the pool is the rest)")


def _validate_real_pitfall(cfg: DictConfig) -> None:
    """Real data has its own interaction structure: the synthetic-only ones are refused."""
    weights = cfg.pitfall.interaction
    if isinstance(weights, DictConfig) and any(_is_number(weights.get(k)) and weights.get(k) > 0
                                               for k in SYNTHETIC_ONLY):
        raise ConfigError("pitfall.interaction", weights, SYNTHETIC_ONLY_PITFALLS)


def _optional_string(cfg: DictConfig, key: str) -> None:
    v = OmegaConf.select(cfg, key)
    if v is not None and (not isinstance(v, str) or not v):
        raise ConfigError(key, v, "null or a path")


REAL_DATASETS = {"make_mfeat": _validate_mfeat, "load_features": _validate_features}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(cfg: DictConfig, key: str, minimum: int) -> None:
    v = OmegaConf.select(cfg, key)
    if not _is_int(v) or v < minimum:
        raise ConfigError(key, v, f"an integer >= {minimum}")


def _number(cfg: DictConfig, key: str, minimum: float, strict: bool = False, maximum: float | None = None) -> None:
    v = OmegaConf.select(cfg, key)
    low_ok = _is_number(v) and (v > minimum if strict else v >= minimum)
    if not low_ok or (maximum is not None and v > maximum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError(key, v, f"a number {bound}" + (f" and <= {maximum}" if maximum is not None else ""))


def _choice(cfg: DictConfig, key: str, allowed: Sequence[Any]) -> None:
    v = OmegaConf.select(cfg, key)
    if v not in allowed and str(v) not in [str(a) for a in allowed]:
        raise ConfigError(key, v, f"one of {list(allowed)}")


def _numbers(cfg: DictConfig, key: str, length: int | None, minimum: float, positive_sum: bool = False) -> None:
    v = OmegaConf.select(cfg, key)
    ok = isinstance(v, ListConfig) and all(_is_number(x) and x >= minimum for x in v)
    if ok and length is not None and len(v) != length:
        raise ConfigError(key, v, f"a list of {length} values, one per modality/class")
    if not ok or (positive_sum and sum(v) <= 0):
        raise ConfigError(key, v, f"a list of numbers >= {minimum}" + (" not all zero" if positive_sum else ""))


def _per_modality(cfg: DictConfig, key: str, num_modalities: int | None, minimum: float, strict: bool = False,
                  below: float | None = None, integer: bool = False) -> None:
    """A per-modality knob: one value for all modalities, or a list with one per modality."""
    v = OmegaConf.select(cfg, key)
    values = list(v) if isinstance(v, ListConfig) else [v]
    kind = "an integer" if integer else "a number"
    rule = (f"> {minimum}" if strict else f">= {minimum}") + (f" and < {below}" if below is not None else "")
    allowed = f"{kind} {rule}, or a list of such values with one per modality"
    if isinstance(v, ListConfig) and num_modalities is not None and len(v) != num_modalities:
        raise ConfigError(key, v, f"{allowed} ({num_modalities} modalities)")
    for x in values:
        good = (_is_int(x) if integer else _is_number(x)) and (x > minimum if strict else x >= minimum)
        if not good or (below is not None and x >= below):
            raise ConfigError(key, v, allowed)
