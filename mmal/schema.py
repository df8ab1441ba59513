"""Typed configs: the fixed shape of the ``al``, ``trainer``, ``pitfall`` and synthetic ``dataset`` groups.

Each dataclass is stored in Hydra's ConfigStore and named first in its YAML's defaults list, so Hydra
composes every YAML and override on top of it: an unknown key (``trainer.epoch=5``), a wrong type
(``al.cycles=ten``) or a closed choice outside its enum (``trainer.device=tpu``) fails at composition,
naming the key, before mmal runs. Ranges and rules that need more than a type are checked by each
component's constructor (``mmal.errors``). Importing this module (``mmal.train`` does) registers them.
The enums are str-valued: a component compares them with plain strings.

One source for every default: the component's own signature (``ALProtocol`` is its own schema; the others
are made here by ``schema_of`` from their target's defaults, with the type OmegaConf checks). The YAMLs
repeat the values to document them, and ``tests/test_cli.py`` checks that they equal the source.
Where OmegaConf cannot type a field, it is ``Any`` and says why: a per-modality knob is one number or a
list (OmegaConf 2.3 has no unions), and the optimizer is any ``torch.optim`` partial.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from mmal.data.pitfall import MISSING_MECHANISMS, SPLITS, Pitfall
from mmal.data.synthetic import make_synthetic
from mmal.protocol import ALProtocol
from mmal.training import DEVICES, Trainer

Device = enum.Enum("Device", {d: d for d in DEVICES}, type=str)
MissingMechanism = enum.Enum("MissingMechanism", {m: m for m in MISSING_MECHANISMS}, type=str)
Split = enum.Enum("Split", {s: s for s in SPLITS}, type=str)


def defaults_of(target: Callable) -> dict[str, Any]:
    """Each parameter of ``target`` that has a default -> that default (a dataclass field's factory called)."""
    if dataclasses.is_dataclass(target):
        return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(target)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return {name: p.default for name, p in inspect.signature(target).parameters.items() if p.default is not p.empty}


def schema_of(name: str, target: Callable, types: dict[str, Any]) -> type:
    """A dataclass named ``name`` with ``_target_`` and one field per entry of ``types`` (key -> the type that
    OmegaConf checks), each defaulting to ``target``'s own default, typed to that type (a tuple becomes a list,
    a string of an enum type its member); a parameter without a default is mandatory (``???``)."""
    defaults = defaults_of(target)
    fields: list[tuple[str, Any, Any]] = [("_target_", str, f"{target.__module__}.{target.__qualname__}")]
    for key, typ in types.items():
        # A parameter without a default is mandatory in the config too ("???" until a YAML sets it).
        default = dataclasses.field(default_factory=_factory(defaults[key], typ)) if key in defaults else MISSING
        fields.append((key, typ, default))
    return dataclasses.make_dataclass(name, fields)


def _factory(default: Any, typ: Any) -> Callable[[], Any]:
    """A fresh copy of ``default`` as a value of ``typ``, for each config made from the schema."""
    item = getattr(typ, "__args__", (None,))[0]  # list[Split] -> Split
    def make() -> Any:
        if isinstance(typ, type) and issubclass(typ, enum.Enum):
            return typ(default)
        if isinstance(default, Sequence) and not isinstance(default, str):
            return [item(v) if isinstance(item, type) and issubclass(item, enum.Enum) else v for v in default]
        return dict(default) if isinstance(default, dict) else default
    return make


TrainerConfig = schema_of("TrainerConfig", Trainer, {
    "epochs": int, "batch_size": int, "lr": float, "weight_decay": float,
    "optimizer": Any,  # a partial of any torch.optim class: its keys depend on the class
    "aux_weight": float,
    "hooks": list[Any],  # TrainingHook configs, each with its own _target_
    "device": Device,
    "precision": str,  # a string, not an enum, so that trainer.precision=32 also works
    "eval_batch_size": int, "modality_dropout": float,
    "num_threads": Optional[int],  # noqa: UP045 (OmegaConf reads Optional, not X | None, on Python 3.10)
})

PitfallConfig = schema_of("PitfallConfig", Pitfall, {
    "interaction": dict[str, float],
    "unique_probs": Optional[list[float]],  # noqa: UP045
    # Per-modality knobs: one number or a list with one per modality (no unions in OmegaConf: Any).
    "noise": Any, "separation": Any, "depth": Any, "feature_noise": Any, "missing_rate": Any,
    "missing_mechanism": MissingMechanism, "missing_strength": float, "missing_splits": list[Split],
})

SyntheticConfig = schema_of("SyntheticConfig", make_synthetic, {
    "seed": int,  # mandatory: conf/dataset/synthetic.yaml sets ${seed}
    "num_samples": int, "num_val": int, "num_test": int, "num_classes": int,
    # Any and null (make_synthetic's default, {a: 32, b: 32}), so that a mapping on the command line replaces it
    # whole: Hydra merges it into a mapping node, where a new key fails ("Key 'c' is not in struct").
    "modalities": Any,
    "nuisance_dim": int,
    "class_weights": Optional[list[float]],  # noqa: UP045
    "bayes_samples": int,
})


def register() -> None:
    """Store the schemas under the names the YAMLs' defaults lists use (``<group>_schema``)."""
    store = ConfigStore.instance()
    store.store(group="al", name="al_schema", node=ALProtocol)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="pitfall", name="pitfall_schema", node=PitfallConfig)
    store.store(group="dataset", name="synthetic_schema", node=SyntheticConfig)


register()
