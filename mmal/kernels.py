"""The CPU kernels mmal computes with, pinned so that a command gives the same numbers on every x86-64 CPU
(docs/design.md, "Reproducibility").

PyTorch's CPU build picks its kernels by instruction set, per machine: MKL its matrix products (a Xeon with
AVX-512 rounded the default run's cycle 10 to accuracy 0.8945 where AVX2 machines print 0.8980), ATen its
vectorised element-wise ops and reductions (8 or 16 lanes sum in a different order), oneDNN its
convolutions. ``pin_environment`` fixes each before the library starts:

- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility on its SSE2 code branch, the one
  branch MKL runs on every x86-64 CPU, Intel or not (``AVX2`` is honoured on Intel CPUs only: elsewhere MKL
  falls back to its per-CPU ``AUTO`` dispatch);
- ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels (a CPU without AVX2 runs its plain ones instead);
- ``OPENBLAS_CORETYPE=Haswell`` where it is unset: numpy's OpenBLAS (scikit-learn's probes) on its AVX2
  kernels; a value the environment sets is kept, since some machines set it to avoid OpenBLAS bugs;
- oneDNN off (``torch.backends.mkldnn.enabled = False``, by ``check``): convolutions take ATen's own path,
  whose products are MKL's.

They are read when each library starts (MKL at its first call, ATen at its first dispatch, OpenBLAS when
numpy loads), so ``import mmal`` sets them, before anything imports torch or numpy: every entry point,
script, test and worker process (joblib's and submitit's inherit the environment, and import mmal) computes
with them. ``check`` reads back what took effect, and the run records it.

Guaranteed: the same numbers on every x86-64 CPU with AVX2 for the same command, the same thread count
(``trainer.num_threads``, 1 by default) and ``trainer.precision=32``. Outside it: ARM CPUs, a GPU, CPUs
without AVX2, mixed precision (``bf16`` products go through oneDNN), and more than one thread. Opting out:
``MMAL_CPU_KERNELS=native`` leaves the environment as it is (each library's fastest kernels for the CPU it
runs on, and whatever ``MKL_CBWR`` the user set). The cost is measured in docs/benchmarks.md ("Pinned
kernels").
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

OPT_OUT = "MMAL_CPU_KERNELS"  # "native" turns the pinning off; "pinned" (or unset) keeps it
PINNED = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}
UNLESS_SET = {"OPENBLAS_CORETYPE": "Haswell"}
_MKL_BRANCH, _MKL_COMPATIBLE = 1, 3  # MKL_CBWR_BRANCH and MKL_CBWR_COMPATIBLE of mkl_cbwr.h


def pinning() -> bool:
    """Whether this process pins its kernels (``MMAL_CPU_KERNELS`` is not ``native``)."""
    return os.environ.get(OPT_OUT, "pinned").strip().lower() != "native"


def pin_environment() -> None:
    """Set the variables of the module docstring, unless opted out. Called by ``import mmal``."""
    if not pinning():
        return
    os.environ.update(PINNED)
    for key, value in UNLESS_SET.items():
        os.environ.setdefault(key, value)


@functools.cache
def engage() -> str:
    """Switch oneDNN off (when pinning; once per process, by the trainer before it computes) and describe
    the kernels torch computes with, as the summary's ``cpu_kernels`` records it: ``pinned`` or ``native``,
    MKL's branch (``COMPATIBLE``, ``AUTO``, ``OFF``) and ATen's capability (``AVX2``, ``AVX512``, ...), e.g.
    ``pinned: MKL COMPATIBLE, ATen AVX2``. Torch imported and used before ``import mmal`` may have started
    with other kernels: then it says ``NOT pinned`` and names them."""
    import torch

    if pinning():
        torch.backends.mkldnn.enabled = False
    aten, branch = torch.backends.cpu.get_cpu_capability(), _mkl_branch(torch)
    # ATen runs its plain kernels on a CPU without AVX2 (then they are the pinned ones), and AVX2 elsewhere.
    took = branch == "COMPATIBLE" and aten == ("AVX2" if torch.cpu._is_avx2_supported() else "DEFAULT")
    state = "native" if not pinning() else "pinned" if took else "NOT pinned (torch started before mmal)"
    if state.startswith("NOT"):
        logging.getLogger("mmal").warning("CPU kernels %s: MKL %s, ATen %s; import mmal before torch for the "
                                          "same numbers on every CPU (mmal/kernels.py)", state, branch, aten)
    return f"{state}: MKL {branch}, ATen {aten}"


def _mkl_branch(torch) -> str:
    """MKL's code branch as ``mkl_serv_cbwr_get`` reports it (torch's CPU build links MKL statically)."""
    lib = "libtorch_cpu.dylib" if sys.platform == "darwin" else "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "none"  # a build without MKL (ARM, macOS)
    value = get(_MKL_BRANCH)
    return {1: "OFF", 2: "AUTO", 3: "COMPATIBLE"}.get(value, str(value))
