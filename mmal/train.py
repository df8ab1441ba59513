"""The one entry point: compose the config, build data, model, trainer and strategy, run the AL loop.

    python -m mmal.train [group=option ...] [key=value ...]      # one run
    python -m mmal.train -m query=random,entropy seed=0,1,2       # a sweep
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

import mmal.schema  # noqa: F401  (registers the typed configs before Hydra composes)
from mmal.checkpoint import fingerprint, load_state
from mmal.config import check_budget, check_optimized_metric, check_strategy
from mmal.data import MultimodalDataset
from mmal.errors import ConfigError
from mmal.log import RunLog, Sink
from mmal.loop import run_active_learning
from mmal.models import MultimodalClassifier
from mmal.protocol import ALProtocol
from mmal.query import QueryStrategy
from mmal.training import Trainer

log = logging.getLogger("mmal")


def build(node: DictConfig, **kwargs: Any) -> Any:
    """Instantiate a config node after checking that each of its keys is a parameter of its target (and of
    every nested target's); a ``ConfigError`` from a constructor comes out as itself, not wrapped in
    Hydra's ``InstantiationException``."""
    check_keys(node, node._get_full_key(None))
    try:
        return instantiate(node, **kwargs)
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
    for key, child in node.items_ex(resolve=False):
        if isinstance(child, DictConfig):
            check_keys(child, f"{prefix}.{key}")


@dataclass
class Experiment:
    """Every component of one run, built from a composed config and checked (``prepare``)."""

    data: MultimodalDataset
    build_model: Callable[[], MultimodalClassifier]
    trainer: Trainer
    strategy: QueryStrategy
    protocol: ALProtocol
    sink: Sink


def prepare(cfg: DictConfig) -> Experiment:
    """Build every component of ``cfg``, each checking its own arguments, then the rules that cross groups;
    raises ``ConfigError`` at the first bad value. Nothing is written: this is all a run does before work.
    The components without data come first, then the data, then the model (which needs its shapes)."""
    check_optimized_metric(cfg)
    pitfall = build(cfg.pitfall, _convert_="all")
    check_keys(cfg.al, "al", ALProtocol)
    protocol = ALProtocol(**OmegaConf.to_container(cfg.al))
    trainer = build(cfg.trainer)
    strategy = build(cfg.query, _convert_="all")
    sink = build(cfg.logger)
    data = build(cfg.dataset, _partial_=True, _convert_="all")(pitfall=pitfall)
    check_budget(protocol, len(data.pool))
    build_model = functools.partial(build(cfg.model, _convert_="all"), shapes=data.shapes,
                                    num_classes=data.num_classes,
                                    fusion=build(cfg.fusion, _convert_="all"))
    check_strategy(cfg, strategy, build_model())
    return Experiment(data, build_model, trainer, strategy, protocol, sink)


def run(cfg: DictConfig, run_dir: Path, name: str = "run", group: str | None = None) -> dict[str, Any]:
    """Run one experiment from a composed config, writing into ``run_dir``; returns the summary.
    ``name`` and ``group`` label the run for the external logger."""
    exp = prepare(cfg)
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    resume = load_state(run_dir)
    if resume is not None and resume["fingerprint"] != fingerprint(config):
        raise ConfigError("run directory", str(run_dir), "holds a run of a different config; resume it with that "
                          "config or choose another directory (hydra.run.dir / hydra.sweep.dir)")
    if resume is not None and "summary" in resume:
        log.info("already finished, nothing to do: %s", run_dir)
        return resume["summary"]
    if resume is not None:
        log.info("resuming after cycle %d: %s", resume["cycle"], run_dir)
    exp.sink.start(run_dir, config, name, group, run_id=resume["run_id"] if resume else None)
    data = exp.data
    log.info("data: pool %d, val %d, test %d, %d classes, modalities %s; device %s",
             len(data.pool), len(data.val), len(data.test), data.num_classes, data.dims, exp.trainer.device)
    try:
        run_log = RunLog(run_dir, exp.sink, records=resume["records"] if resume else [])
        return run_active_learning(data, exp.build_model, exp.trainer, exp.strategy, run_log, exp.protocol,
                                   seed=cfg.seed, resume=resume, fingerprint=fingerprint(config))
    except BaseException:
        exp.sink.abort()  # close the external run as failed; metrics.jsonl keeps every finished cycle
        raise


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    name = f"{choices.query}-{choices.pitfall}-{choices.fusion}-s{cfg.seed}"
    sweep = Path(hydra_cfg.sweep.dir)
    group = f"{sweep.parent.name}_{sweep.name}" if hydra_cfg.mode == RunMode.MULTIRUN else None
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        summary = run(cfg, run_dir, name, group)
    except ConfigError as err:
        log.error("config error: %s", err)
        sys.exit(2)
    except Exception as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        # One failing job must not stop the sweep: record the error where the report finds it, go on.
        log.exception("job %s failed", run_dir)
        cause = err.__cause__ or err  # Hydra wraps errors raised while instantiating a component
        (run_dir / "error.txt").write_text(f"{type(cause).__name__}: {cause}\n\n{traceback.format_exc()}")
        return float("nan")
    return summary[cfg.optimized_metric]  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
