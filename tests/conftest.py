from __future__ import annotations

import hashlib
import os
from pathlib import Path

# One thread per test process, before numpy and torch start theirs: the suite runs a worker per core
# (pytest-xdist), and BLAS/OpenMP threads spinning for a descheduled sibling slowed a scikit-learn fit 19x.
for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

import pytest  # noqa: E402  (after the threads are set)
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import mmal.schema  # noqa: E402, F401  (registers the typed configs, as mmal.train does)

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF.parent

# A run small enough for a unit test: tiny splits, few epochs, CPU, and no unimodal references (they would
# triple the training; tests/test_diagnostics.py and tests/test_resume.py run them).
TINY = [
    "dataset.num_samples=300", "dataset.num_val=100", "dataset.num_test=300", "dataset.bayes_samples=2000",
    "al.initial_size=20", "al.query_size=10", "al.cycles=2", "trainer.epochs=5", "trainer.device=cpu", "logger=none",
    "diagnostics.every=0",
]


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The config a user gets from ``python -m mmal.train <overrides>``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_cfg() -> DictConfig:
    return compose_config(TINY)


@pytest.fixture(scope="session")
def prepared_roots(tmp_path_factory) -> dict[str, Path]:
    """The fixture trees of Food-101, CREMA-D and AVE prepared by mmal-prepare (embeddings of tiny random
    backbones), as ``dataset=food101`` / ``cremad`` / ``ave`` read them, and CREMA-D's raw tensors
    (``cremad_raw``): name -> root."""
    from mmal.prepare import prepare
    from mmal.prepare.fixtures import ave_tree, cremad_tree, food101_tree, random_backbones

    base = tmp_path_factory.mktemp("prepared_roots")
    models = random_backbones(base / "models")
    food101_tree(base / "UPMC_Food101")
    cremad_tree(base / "CREMA-D")
    ave_tree(base / "AVE_Dataset")
    roots = {"food101": base / "food101", "cremad": base / "cremad", "ave": base / "ave"}
    for dataset, raw in (("food101", "UPMC_Food101"), ("cremad", "CREMA-D"), ("ave", "AVE_Dataset")):
        prepare(dataset, base / raw, roots[dataset], models=models, progress=False)
    roots["cremad_raw"] = base / "cremad_raw"  # raw tensors, as +experiment=cremad_raw reads them
    prepare("cremad", base / "CREMA-D", roots["cremad_raw"], raw=["audio", "visual"], image_size=16, n_mels=16,
            seconds=1.0, progress=False)
    return roots


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A tiny random text backbone (the one mmal-prepare needs for Food-101's titles)."""
    from mmal.prepare.fixtures import random_backbones

    return random_backbones(tmp_path_factory.mktemp("models"))["text"]


def file_digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
