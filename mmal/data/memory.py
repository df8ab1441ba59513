"""Refusing a dataset that cannot fit in memory before allocating it: the kernel would kill the process
without a message."""

from __future__ import annotations

from typing import Any

from mmal.errors import ConfigError


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(key: str, value: Any, needed: int, what: str) -> None:
    """Raise ``ConfigError`` on ``key=value`` when ``needed`` bytes (for ``what``) exceed the memory available."""
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(key, value, f"{what} would take about {needed / 2**30:.1f} GiB, more than the "
                                      f"{available / 2**30:.1f} GiB of memory available")
