"""One run's components, built from a composed config and checked before any work (``prepare``).

Who checks what (docs/design.md, "Configuration"): Hydra checks the typed groups at composition
(``mmal.schema``), ``check_keys`` every key against its target's parameters, each component its own values
in its constructor, and ``mmal.config`` the rules that cross groups.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from mmal.balance import BalanceMethod
from mmal.config import check_budget, check_optimized_metric, check_splits, check_strategy
from mmal.data import MultimodalDataset
from mmal.data.pitfall import Pitfall
from mmal.errors import ConfigError
from mmal.log import Sink
from mmal.metrics.references import References
from mmal.models import MultimodalClassifier
from mmal.protocol import ALProtocol
from mmal.query import QueryStrategy
from mmal.training import Trainer

# Every top-level key of conf/config.yaml: the config groups, the seed and the metric a sweeper optimises.
TOP_LEVEL = ("dataset", "pitfall", "model", "fusion", "query", "al", "trainer", "balance", "diagnostics", "logger",
             "seed", "optimized_metric", "plots")
PLOTS = ("auto", True, False)  # the values of the top-level key plots


def build(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg[group]`` after checking that each of its keys is a parameter of its target (and of
    every nested target's); a ``ConfigError`` from a constructor comes out as itself, not wrapped in
    Hydra's ``InstantiationException``."""
    check_keys(cfg[group], group)
    try:
        return instantiate(cfg[group], **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):
            raise err.__cause__ from None
        raise


def check_keys(node: DictConfig, prefix: str, target: str | Callable | None = None) -> None:
    """Refuse a key that the node's ``_target_`` (or ``target``) does not take (``+query.mc_sample=5``), here
    and in nested nodes; a target that takes ``**kwargs`` takes any key. Hydra's typed groups refuse unknown
    keys at composition (``mmal.schema``), except keys added with ``+``: this covers those and every other
    group."""
    target = target or node.get("_target_")
    if callable(target):
        target = f"{target.__module__}.{target.__qualname__}"
    if isinstance(target, str):
        try:
            params = inspect.signature(get_object(target)).parameters
        except (ImportError, AttributeError, ValueError) as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"{prefix}._target_", target, f"an importable class or function ({reason})") from None
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            for key in node:
                if not key.startswith("_") and key not in params:
                    allowed = f"not a parameter of {target}: one of {list(params)}"
                    raise ConfigError(f"{prefix}.{key}", node[key], allowed)
    for key in node:
        child = node[key]  # None for a typed list or mapping that is null
        if isinstance(child, DictConfig):
            check_keys(child, f"{prefix}.{key}")
        elif isinstance(child, ListConfig):  # trainer.hooks: a list of {_target_: ...}
            for i, item in enumerate(child):
                if isinstance(item, DictConfig):
                    check_keys(item, f"{prefix}.{key}[{i}]")


@dataclass
class Experiment:
    """Every component of one run, built from a composed config and checked (``prepare``)."""

    data: MultimodalDataset
    build_model: Callable[[], MultimodalClassifier]
    trainer: Trainer
    strategy: QueryStrategy
    protocol: ALProtocol
    references: References
    sink: Sink
    balance: BalanceMethod | None = None


@dataclass
class Components:
    """The components that need no data (``build_components``)."""

    pitfall: Pitfall
    protocol: ALProtocol
    trainer: Trainer
    references: References
    strategy: QueryStrategy
    sink: Sink
    balance: BalanceMethod | None


def prepare(cfg: DictConfig) -> Experiment:
    """Build every component of ``cfg``, each checking its own arguments, then the rules that cross groups;
    raises ``ConfigError`` at the first bad value. Nothing is written: this is all a run does before work.
    The components without data come first, then the data, then the model (which needs its shapes)."""
    parts = build_components(cfg)
    data = build_data(cfg, parts.pitfall)
    build_model = model_builder(cfg, parts, len(data.pool), data.shapes, data.num_classes)
    return Experiment(data, build_model, parts.trainer, parts.strategy, parts.protocol, parts.references, parts.sink,
                      parts.balance)


def build_components(cfg: DictConfig) -> Components:
    """Every component that needs no data, each checked; and the top-level keys."""
    check_optimized_metric(cfg)
    for key in cfg:  # a key added at the top (+seeds=3) would be ignored silently
        if key not in TOP_LEVEL:
            raise ConfigError(key, cfg[key], f"not a top-level key of mmal's config: one of {list(TOP_LEVEL)}")
    if cfg.plots not in PLOTS:
        raise ConfigError("plots", cfg.plots, "auto (a single run draws its figures, a sweep's jobs do not), true "
                                              "or false")
    pitfall = build(cfg, "pitfall", _convert_="all")
    check_keys(cfg.al, "al", ALProtocol)
    protocol = ALProtocol(**OmegaConf.to_container(cfg.al))
    return Components(pitfall, protocol, build(cfg, "trainer"), build(cfg, "diagnostics"),
                      build(cfg, "query", _convert_="all"), build(cfg, "logger"), build_balance(cfg))


def build_balance(cfg: DictConfig) -> BalanceMethod | None:
    """The balancing method of ``balance=<name>``; None for plain training (``balance=none``, or a method that
    only sets other groups' keys, as ``modality_dropout`` sets ``trainer.modality_dropout``)."""
    if not cfg.get("balance"):
        return None
    method = build(cfg, "balance")
    if not isinstance(method, BalanceMethod):
        raise ConfigError("balance._target_", cfg.balance.get("_target_"), "a mmal.balance.BalanceMethod")
    return method


def build_data(cfg: DictConfig, pitfall: Pitfall) -> MultimodalDataset:
    """The dataset of ``cfg`` under ``pitfall``, with splits that can measure accuracy."""
    data = build(cfg, "dataset", _partial_=True, _convert_="all")(pitfall=pitfall)
    check_splits(data)
    return data


def model_builder(cfg: DictConfig, parts: Components, pool_size: int, shapes: dict[str, tuple[int, ...]],
                  num_classes: int) -> Callable[[], MultimodalClassifier]:
    """A function building a fresh model for data of these sizes, after the checks that need them: the
    budget fits the pool, and the model can give what the strategy needs."""
    check_budget(parts.protocol, pool_size)
    build_model = functools.partial(build(cfg, "model", _convert_="all"), shapes=shapes, num_classes=num_classes,
                                    fusion=build(cfg, "fusion", _convert_="all"))
    model = build_model()
    check_strategy(cfg, parts.strategy, model)
    if parts.balance:
        parts.balance.check(model)
        if parts.balance.teaches_from_references and cfg.diagnostics.every != 1:
            raise ConfigError("diagnostics.every", cfg.diagnostics.every,
                              f"1, since balance={parts.balance.name} learns from the unimodal references every cycle")
    return build_model
