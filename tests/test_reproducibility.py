"""The same numbers on every x86-64 CPU (mmal/kernels.py): every process pins its kernels, whatever kernels
the environment it starts in would pick, and the README's default run prints exactly what the README shows.

A CPU is emulated by the variables that choose its kernels: ``MKL_CBWR`` (MKL's code branch; ``AUTO`` is
MKL's per-CPU dispatch) and ``ATEN_CPU_CAPABILITY`` (ATen's vectorised kernels; ``default`` is a CPU without
AVX2's, ``avx512`` an AVX-512 one's). Unpinned, the default run's cycle 10 reads ``gap/ensemble`` -0.050 with
ATen's plain kernels and -0.053 with MKL's AVX2 ones, against -0.052 pinned."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()
# The default run's console block: from its W&B line to the end of the block.
BLOCK = re.search(r"```\nW&B run .*?\n(.*?)```", README, re.S).group(1)
TIMES = re.compile(r"\s+(train|references|select) [\d.]+s")  # wall times differ from run to run
FOREIGN_CPUS = {  # what another CPU's libraries would pick, where this one supports it
    "a CPU without AVX2": {"MKL_CBWR": "AUTO", "ATEN_CPU_CAPABILITY": "default"},
    "an AVX-512 CPU": {"MKL_CBWR": "AUTO", "ATEN_CPU_CAPABILITY": "avx512"},
}


def _numbers(lines: list[str]) -> dict[str, str]:
    """Cycle or final line -> the line without its wall times and its run directory."""
    out = {}
    for line in lines:
        line = TIMES.sub("", line.split("  -> ")[0]).strip()
        if line.startswith(("cycle ", "final ")):
            out["final" if line.startswith("final") else " ".join(line.split()[:2])] = line
    return out


def _env(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "MMAL_CPU_KERNELS")}
    return {**env, **variables}


@pytest.mark.slow
@pytest.mark.parametrize("cpu", ["this CPU", "a CPU without AVX2"])
def test_the_default_run_prints_the_readme_numbers_whatever_kernels_the_environment_picks(cpu, tmp_path):
    shown = _numbers(BLOCK.splitlines())
    assert {"cycle 0/10", "cycle 1/10", "cycle 10/10", "final"} <= set(shown)
    env = _env(**FOREIGN_CPUS.get(cpu, {}))
    result = subprocess.run([sys.executable, "-m", "mmal.train", f"hydra.run.dir={tmp_path}"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = (result.stdout + result.stderr).splitlines()
    printed = _numbers([re.sub(r"^\[.*?\]\[mmal\]\[INFO\] - ", "", line) for line in lines])
    assert {key: printed.get(key) for key in shown} == shown
    assert '"cpu_kernels": "pinned: MKL COMPATIBLE, ATen AVX2"' in (tmp_path / "summary.json").read_text()


def _kernels(env: dict[str, str], code: str = "import mmal, torch") -> str:
    """What ``mmal.kernels.engage`` reports in a fresh process after ``code``."""
    code += "\nfrom mmal.kernels import engage\ntorch.ones(8, 8) @ torch.ones(8, 8)\nprint(engage())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_mmal_pins_the_kernels_and_native_leaves_the_environment_as_it_is():
    for foreign in FOREIGN_CPUS.values():
        assert _kernels(_env(**foreign)) == "pinned: MKL COMPATIBLE, ATen AVX2"
    foreign = FOREIGN_CPUS["a CPU without AVX2"]
    assert _kernels(_env(**foreign, MMAL_CPU_KERNELS="native")) == "native: MKL AUTO, ATen DEFAULT"
    # torch dispatched an op before mmal was imported: too late for ATen (MKL, not called yet, still takes its
    # branch), and the report says so.
    late = _kernels(_env(**foreign), "import torch\ntorch.ones(2) + 1\nimport mmal")
    assert late == "NOT pinned (torch started before mmal): MKL COMPATIBLE, ATen DEFAULT"
