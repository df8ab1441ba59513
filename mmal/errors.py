"""The one error a user's config can raise, and the argument checks every component uses to raise it.

Every component checks its own arguments in its constructor with these helpers, so a bad value fails
before any work with one line, ``key=value: what is allowed``. A component names its keys as they
appear in its config group (``epochs``); whoever builds it from a group adds the group's prefix
(``ConfigError.under("trainer")`` -> ``trainer.epochs``). This module imports nothing of mmal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A user error in the config: ``key=value: what is allowed``."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key inside ``prefix`` (``epochs`` -> ``trainer.epochs``)."""
        return ConfigError(f"{prefix}.{self.key}", self.value, self.allowed)


def _show(value: Any) -> str:
    """The value as the user wrote it: a config node as a plain container, an enum choice as its value."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if isinstance(value, Enum):
        value = value.value
    return repr(value)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): ``inf`` and ``nan`` pass no range check, so they are no numbers here."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _a_number(values: Sequence[Any]) -> str:
    """How the allowed value is named: "a finite number" when the value given was inf or nan."""
    non_finite = any(isinstance(x, float) and not math.isfinite(x) for x in values)
    return "a finite number" if non_finite else "a number"


def check_int(key: str, v: Any, minimum: int) -> int:
    if not is_int(v) or v < minimum:
        raise ConfigError(key, v, f"an integer >= {minimum}")
    return v


def check_number(key: str, v: Any, minimum: float, strict: bool = False, maximum: float | None = None,
                 below: float | None = None) -> float:
    """A number >= ``minimum`` (> with ``strict``), and <= ``maximum`` or < ``below`` when given."""
    low_ok = is_number(v) and (v > minimum if strict else v >= minimum)
    if not low_ok or (maximum is not None and v > maximum) or (below is not None and v >= below):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        upper = f" and <= {maximum}" if maximum is not None else f" and < {below}" if below is not None else ""
        raise ConfigError(key, v, f"{_a_number([v])} {bound}{upper}")
    return v


def check_choice(key: str, v: Any, allowed: Sequence[Any]) -> Any:
    if v not in allowed and str(v) not in [str(a) for a in allowed]:
        raise ConfigError(key, v, f"one of {list(allowed)}")
    return v


def check_numbers(key: str, v: Any, length: int | None, minimum: float, positive_sum: bool = False) -> list[float]:
    """A list of numbers >= ``minimum`` (of ``length`` items unless None; not all zero if ``positive_sum``)."""
    ok = isinstance(v, Sequence) and not isinstance(v, str) and all(is_number(x) and x >= minimum for x in v)
    if ok and length is not None and len(v) != length:
        raise ConfigError(key, v, f"a list of {length} values, one per modality/class")
    if not ok or (positive_sum and sum(v) <= 0):
        items = list(v) if isinstance(v, Sequence) and not isinstance(v, str) else [v]
        kind = "finite numbers" if _a_number(items) == "a finite number" else "numbers"
        raise ConfigError(key, v, f"a list of {kind} >= {minimum}" + (" not all zero" if positive_sum else ""))
    return list(v)


def check_per_modality(key: str, v: Any, num_modalities: int | None, minimum: float, strict: bool = False,
                       below: float | None = None, integer: bool = False) -> None:
    """A per-modality knob: one value for all modalities, or a list with one per modality (its length is
    checked when ``num_modalities`` is known)."""
    is_list = isinstance(v, Sequence) and not isinstance(v, str)
    values = list(v) if is_list else [v]
    kind = "an integer" if integer else _a_number(values)
    rule = (f"> {minimum}" if strict else f">= {minimum}") + (f" and < {below}" if below is not None else "")
    allowed = f"{kind} {rule}, or a list of such values with one per modality"
    if is_list and num_modalities is not None and len(v) != num_modalities:
        raise ConfigError(key, v, f"{allowed} ({num_modalities} modalities)")
    for x in values:
        good = (is_int(x) if integer else is_number(x)) and (x > minimum if strict else x >= minimum)
        if not good or (below is not None and x >= below):
            raise ConfigError(key, v, allowed)
