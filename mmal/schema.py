"""Typed configs: the fixed shape of the ``al``, ``trainer``, ``pitfall`` and synthetic ``dataset`` groups.

Each dataclass is stored in Hydra's ConfigStore and named first in its YAML's defaults list, so Hydra
composes every YAML and override on top of it: an unknown key (``trainer.epoch=5``), a wrong type
(``al.cycles=ten``) or a closed choice outside its enum (``trainer.device=tpu``) fails at composition,
naming the key, before mmal runs. Ranges and rules that need more than a type are checked by each
component's constructor (``mmal.errors``). Importing this module (``mmal.train`` does) registers them.
The enums are str-valued: a component compares them with plain strings.

Where OmegaConf cannot type a field, it is ``Any`` and says why: a per-modality knob is one number or a
list (OmegaConf 2.3 has no unions), and the optimizer is any ``torch.optim`` partial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from mmal.data.pitfall import MISSING_MECHANISMS, SPLITS
from mmal.protocol import ALProtocol
from mmal.training import DEVICES

Device = Enum("Device", {d: d for d in DEVICES}, type=str)
MissingMechanism = Enum("MissingMechanism", {m: m for m in MISSING_MECHANISMS}, type=str)
Split = Enum("Split", {s: s for s in SPLITS}, type=str)


@dataclass
class TrainerConfig:
    _target_: str = "mmal.training.Trainer"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Any = None  # a partial of any torch.optim class: its keys depend on the class
    aux_weight: float = 1.0
    hooks: list[Any] = field(default_factory=list)  # TrainingHook configs, each with its own _target_
    device: Device = Device.auto
    precision: str = "32"  # 32 | bf16 | 16; a string, not an enum, so that trainer.precision=32 also works
    eval_batch_size: int = 8192
    modality_dropout: float = 0.0
    num_threads: Optional[int] = 1  # noqa: UP045 (OmegaConf reads Optional, not X | None, on Python 3.10)


@dataclass
class PitfallConfig:
    _target_: str = "mmal.data.Pitfall"
    interaction: dict[str, float] = field(default_factory=lambda: {"redundancy": 1.0})
    unique_probs: Optional[list[float]] = None  # noqa: UP045
    # Per-modality knobs: one number or a list with one per modality (no unions in OmegaConf: Any).
    noise: Any = 1.0
    separation: Any = 2.0
    depth: Any = 1
    feature_noise: Any = 0.0
    missing_rate: Any = 0.0
    missing_mechanism: MissingMechanism = MissingMechanism.mcar
    missing_strength: float = 1.0
    missing_splits: list[Split] = field(default_factory=lambda: list(Split))


@dataclass
class SyntheticConfig:
    _target_: str = "mmal.data.make_synthetic"
    seed: int = 0
    num_samples: int = 2000
    num_val: int = 500
    num_test: int = 2000
    num_classes: int = 4
    # Any and null (make_synthetic's default, {a: 32, b: 32}), so that a mapping on the command line replaces it
    # whole: Hydra merges it into a mapping node, where a new key fails ("Key 'c' is not in struct").
    modalities: Any = None
    nuisance_dim: int = 4
    class_weights: Optional[list[float]] = None  # noqa: UP045
    bayes_samples: int = 20000


def register() -> None:
    """Store the schemas under the names the YAMLs' defaults lists use (``<group>_schema``)."""
    store = ConfigStore.instance()
    store.store(group="al", name="al_schema", node=ALProtocol)
    store.store(group="trainer", name="trainer_schema", node=TrainerConfig)
    store.store(group="pitfall", name="pitfall_schema", node=PitfallConfig)
    store.store(group="dataset", name="synthetic_schema", node=SyntheticConfig)


register()
