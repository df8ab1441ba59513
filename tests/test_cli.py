"""The command line as users meet it: every config option composes, bad configs fail clearly,
the default run and a multirun complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, TINY, compose_config
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmal.checkpoint import locked
from mmal.config import check_budget
from mmal.data import MultimodalDataset, Pitfall, make_synthetic
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.log import Sink, read_jsonl
from mmal.models import MultimodalClassifier
from mmal.protocol import ALProtocol
from mmal.query import QueryStrategy
from mmal.schema import PitfallConfig, SyntheticConfig, TrainerConfig, defaults_of
from mmal.training import Trainer


def _train(args: list[str], cwd: Path, command: tuple[str, ...] = (sys.executable, "-m", "mmal.train")
           ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # users see the short message
    # No timeout: a busy machine runs several times slower, and a test must not depend on wall-clock time.
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Real datasets have no size knobs: they drop TINY's dataset.* overrides and take these instead.
REAL_DATASET_OVERRIDES = {"mfeat": [], "watch": [], "features": [f"dataset.root={ROOT / 'examples' / 'features'}"]}


def _tiny(group: str, option: str, prepared: dict[str, Path]) -> list[str]:
    if group == "dataset" and option in prepared:  # prepared by mmal-prepare from fixture trees (conftest)
        return [o for o in TINY if not o.startswith("dataset.")] + [f"dataset.root={prepared[option]}",
                                                                    "dataset.val_fraction=0.2"]  # unused by ave
    if group == "dataset" and option != "synthetic":
        return [o for o in TINY if not o.startswith("dataset.")] + REAL_DATASET_OVERRIDES[option]
    return TINY


@pytest.mark.parametrize("group", ["dataset", "pitfall", "model", "fusion", "query", "al", "trainer", "logger"])
def test_every_option_of_every_group_composes_and_instantiates(group, prepared_roots):
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        cfg = compose_config([*_tiny(group, option, prepared_roots), f"{group}={option}"])
        pitfall = instantiate(cfg.pitfall, _convert_="all")
        assert isinstance(pitfall, Pitfall)
        data = instantiate(cfg.dataset, _partial_=True, _convert_="all")(pitfall=pitfall)
        assert isinstance(data, MultimodalDataset)
        model = instantiate(cfg.model, _convert_="all")(shapes=data.shapes, num_classes=data.num_classes,
                                                         fusion=instantiate(cfg.fusion))
        assert isinstance(model, MultimodalClassifier)
        assert model(data.test.x, data.test.mask).logits.shape == (len(data.test), data.num_classes)
        assert isinstance(instantiate(cfg.query), QueryStrategy)
        assert isinstance(instantiate(cfg.trainer), Trainer)
        assert isinstance(instantiate(cfg.logger), Sink)
        assert {"initial_size", "query_size", "cycles", "warm_start"} <= set(cfg.al)


BAD = [
    (["query=nope"], "Could not find 'query/nope'"),
    (["pitfall=nope"], "Could not find 'pitfall/nope'"),
    (["al.query_size=0"], "al.query_size=0: an integer >= 1"),
    (["al.initial_size=-5"], "al.initial_size=-5: an integer >= 1"),
    (["dataset.num_samples=0"], "dataset.num_samples=0: an integer >= 1"),
    # Typed groups (mmal.schema): Hydra refuses a wrong type, a choice outside its enum and an unknown key at
    # composition, in its own words, naming the key.
    (["trainer.epochs=two"], "'two' of type 'str' could not be converted to Integer\n    full_key: trainer.epochs"),
    (["al.cycles=1.5"], "Value '1.5' of type 'float' could not be converted to Integer\n    full_key: al.cycles"),
    (["dataset.num_val=many"], "'many' of type 'str' could not be converted to Integer\n    full_key: dataset.num_val"),
    (["pitfall.missing_strength=[1]"], "full_key: pitfall.missing_strength"),
    (["trainer.device=tpu"], "Invalid value 'tpu', expected one of [auto, cpu, cuda]\n    full_key: trainer.device"),
    (["pitfall.missing_mechanism=sometimes"],
     "Invalid value 'sometimes', expected one of [mcar, class, difficulty]\n    full_key: pitfall.missing_mechanism"),
    (["pitfall.missing_splits=[pool,train]"], "Invalid value 'train', expected one of [pool, val, test]"),
    (["trainer.epoch=5"], "Key 'epoch' not in 'TrainerConfig'\n    full_key: trainer.epoch"),
    (["al.cycle=5"], "Key 'cycle' not in 'ALProtocol'\n    full_key: al.cycle"),
    (["pitfall.nosie=2.0"], "Key 'nosie' not in 'PitfallConfig'\n    full_key: pitfall.nosie"),
    (["dataset.num_sample=100"], "Key 'num_sample' not in 'SyntheticConfig'\n    full_key: dataset.num_sample"),
    # Every other key must be a parameter of the group's target.
    (["+al.query_sze=5"], "al.query_sze=5: not a parameter of mmal.protocol.ALProtocol: one of ['initial_size'"),
    (["+trainer.foo=1"], "trainer.foo=1: not a parameter of mmal.training.Trainer"),
    (["query=bald", "+query.mc_sample=3"], "query.mc_sample=3: not a parameter of mmal.query.BALD: one of ['mc_sa"),
    (["+fusion.heads=2"], "fusion.heads=2: not a parameter of mmal.models.fusion.IntermediateFusion"),
    (["+model.encoder.width=8"], "model.encoder.width=8: not a parameter of mmal.models.encoders.MLPEncoder"),
    (["trainer.hooks=[{_target_: mmal.hooks.AuxiliaryHeadLoss, wieght: 2}]"],
     "trainer.hooks[0].wieght=2: not a parameter of mmal.hooks.AuxiliaryHeadLoss: one of ['weight']"),
    (["trainer.optimizer._target_=torch.optim.Nope"], "trainer.optimizer._target_='torch.optim.Nope': an importable"),
    # Ranges, checked by each component's constructor.
    (["trainer.lr=0"], "trainer.lr=0.0: a number > 0"),  # typed: the 0 became a float at composition
    (["trainer.precision=64"], "trainer.precision='64': one of ['32', 'bf16', '16']"),
    (["query=bald", "query.mc_samples=0"], "query.mc_samples=0: an integer >= 1"),
    (["query=gap_split", "query.within=all"], "query.within='all': one of ['joint', 'margin']"),
    (["fusion.dropout=2.0"], "fusion.dropout=2.0: a number >= 0 and < 1"),
    (["model.encoder.hidden_dim=0"], "model.encoder.hidden_dim=0: an integer >= 1"),
    (["optimized_metric=aubc/nope"], "optimized_metric='aubc/nope': one of ['aubc/acc'"),
    (["pitfall=missing_modality", "pitfall.missing_rate=[0.0,1.0]"], "pitfall.missing_rate=[0.0, 1.0]"),
    (["pitfall.missing_rate=-0.1"], "pitfall.missing_rate=-0.1: a number >= 0 and < 1"),
    (["pitfall.noise=[1.0,2.0,3.0]"], "(2 modalities: ['a', 'b'])"),
    (["+pitfall.interaction.chaos=1.0"], "pitfall.interaction.chaos=1.0: keys must be from"),
    (["al.query_size=5000"], "al.query_size=5000: at most the unlabeled pool, 2000 - 20 = 1980"),
    (["al.cycles=100", "al.query_size=50"],
     "al.cycles=100: budget 20 + 100 x 50 = 5020 exceeds the pool (2000); at most 39 cycles"),
    (["dataset.modalities={a: 3, b: 32}"], "dataset.modalities.a=3: an integer >= num_classes + nuisance_dim = 8"),
    (["trainer.modality_dropout=1.0"], "trainer.modality_dropout=1.0: a number >= 0 and < 1"),
    (["+seeds=3"], "seeds=3: not a top-level key of mmal's config: one of ['dataset', 'pitfall'"),
    (["plots=sometimes"], "plots='sometimes': auto (a single run draws its figures, a sweep's jobs do not), true"),
    (["dataset.modalities={a: 32}"], "dataset.modalities={'a': 32}: a mapping name -> dim with >= 2 modalities"),
    (["dataset.class_weights=[1,0,0,0]"],
     "dataset.class_weights=[1.0, 0.0, 0.0, 0.0]: at least 2 classes with a positive weight"),
    (["dataset.num_test=1"], "dataset='1 test rows': a test split with at least 2 classes; this one has 1"),
    (["dataset.num_samples=1000000000"], "dataset.num_samples=1000000000: the synthetic data would take about"),
    (["trainer.lr=inf"], "trainer.lr=inf: a finite number > 0"),
    (["trainer.weight_decay=inf"], "trainer.weight_decay=inf: a finite number >= 0"),
    (["pitfall.noise=inf"], "pitfall.noise=inf: a finite number > 0, or a list of such values"),
    (["pitfall.separation=[2.0,nan]"], "pitfall.separation=[2.0, nan]: a finite number >= 0, or a list"),
    (["diagnostics.every=-1"], "diagnostics.every=-1: an integer >= 0"),
    (["diagnostics.min_margin=0"], "diagnostics.min_margin=0: a number > 0 and < 1"),
    (["+diagnostics.cadence=2"], "diagnostics.cadence=2: not a parameter of mmal.metrics.references.References"),
    (["diagnostics.every=0", "optimized_metric=aubc/gap_neglect"],
     "optimized_metric='aubc/gap_neglect': a metric that needs no unimodal references: diagnostics.every=0"),
    (["query=modality_entropy"], "needs per-modality predictions: use fusion=late or model.aux_heads=true"),
    (["query=ensemble_disagreement", "diagnostics.every=2"],
     "diagnostics.every=2: 1, since mmal.query.EnsembleDisagreement reads the unimodal references every cycle"),
    (["query=deficit_bmmal", "diagnostics.every=3"],
     "diagnostics.every=3: 1, since mmal.query.DeficitBMMAL reads the unimodal references every cycle"),
    (["query=pattern_badge", "diagnostics.every=0"],
     "diagnostics.every=0: 1, since mmal.query.PatternBadge reads the unimodal references every cycle"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_config_is_refused_with_a_message_naming_the_key(overrides, message):
    try:
        prepare(compose_config(overrides))
    except ConfigError as err:
        refusal = str(err)
    except HydraException as err:  # at composition: Hydra's message, with OmegaConf's cause naming the key
        refusal = f"{err}\n{err.__cause__ or ''}"
    else:
        raise AssertionError(f"{overrides} was accepted")
    assert message in refusal


# The same refusals as users meet them: one message on the console, no traceback, nothing written.
CLI_BAD = [(o, m) for o, m in BAD if o[0] in ("query=nope", "trainer.epochs=two", "al.cycle=5", "+al.query_sze=5",
                                               "trainer.lr=0", "pitfall.noise=[1.0,2.0,3.0]", "query=modality_entropy")]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), CLI_BAD, ids=[" ".join(o) for o, _ in CLI_BAD])
def test_bad_config_fails_with_one_clear_message(overrides, message, tmp_path):
    result = _train([*overrides, f"hydra.run.dir={tmp_path}/run"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # failed before any work


@pytest.mark.parametrize("header", ["", "defaults:\n  - trainer_schema\n  - _self_\n"], ids=["bare", "typed"])
def test_a_trainer_yaml_missing_keys_takes_the_defaults(header, tmp_path):
    # Once a crash (an OmegaConf traceback on trainer.num_threads); a user's own trainer option lists only
    # what it changes, with or without the typed base.
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "mine.yaml").write_text(header + "_target_: mmal.training.Trainer\nepochs: 3\nlr: 0.01\n")
    others = [o for o in TINY if not o.startswith("trainer.")]
    others += [f"hydra.searchpath=[file://{tmp_path}]", "trainer=mine"]
    exp = prepare(compose_config(others))
    assert (exp.trainer.epochs, exp.trainer.lr, exp.trainer.batch_size, exp.trainer.precision) == (3, 0.01, 64, "32")
    # A misspelt key: the typed option refuses it at composition, the bare one when the trainer is built.
    typo, error, message = (("trainer.epoch=3", HydraException, "Could not override 'trainer.epoch'") if header else
                            ("+trainer.epoch=3", ConfigError, "trainer.epoch=3: not a parameter of mmal.training"))
    with pytest.raises(error, match=message):
        prepare(compose_config([*others, typo]))


def test_a_modalities_mapping_on_the_command_line_gives_exactly_those_modalities():
    three = prepare(compose_config(["logger=none", "dataset.modalities={a: 32, b: 32, c: 16}"])).data
    assert three.dims == {"a": 32, "b": 32, "c": 16}
    two = prepare(compose_config(["logger=none", "dataset.modalities={a: 32, c: 16}"])).data
    assert two.dims == {"a": 32, "c": 16}  # replaced whole, not merged into the default {a: 32, b: 32}
    assert prepare(compose_config(["logger=none"])).data.dims == {"a": 32, "b": 32}


def test_a_pitfall_knob_that_the_data_does_not_use_never_blocks_it():
    # Synthetic data ignores feature_noise (two values in pitfall=modality_difficulty): four modalities run.
    four = ["logger=none", "dataset.num_samples=300", "dataset.bayes_samples=2000", "pitfall=modality_difficulty",
            "dataset.modalities={a: 16, b: 16, c: 16, d: 16}", "pitfall.noise=[0.7,2.0,1.0,1.0]",
            "pitfall.depth=[1,3,1,1]"]
    assert prepare(compose_config(four)).data.dims == {m: 16 for m in "abcd"}
    # ... but a knob it uses still needs one value per modality.
    with pytest.raises(ConfigError, match=r"pitfall.depth=\[1, 3\]: one value, or a list with one per modality"):
        prepare(compose_config([*four[:-1]]))
    # Real data ignores noise, separation and depth: mfeat with three views takes the two-value defaults.
    three = ["logger=none", "dataset=mfeat", "pitfall=modality_difficulty", "dataset.modalities=[pix,fou,kar]",
             "pitfall.feature_noise=[0.0,1.5,0.0]"]
    assert prepare(compose_config(three)).data.modalities == ("pix", "fou", "kar")
    with pytest.raises(ConfigError, match=r"pitfall.feature_noise=\[0.0, 1.5\]: one value, or a list"):
        prepare(compose_config(three[:-1]))


SCHEMAS = {Trainer: TrainerConfig, Pitfall: PitfallConfig, make_synthetic: SyntheticConfig}


@pytest.mark.parametrize("yaml, target", [("trainer/default.yaml", Trainer), ("pitfall/none.yaml", Pitfall),
                                           ("dataset/synthetic.yaml", make_synthetic), ("al/default.yaml", ALProtocol)])
def test_the_default_yamls_repeat_their_components_defaults(yaml, target):
    # The component is the one source of a default (mmal.schema); the YAML documents the values, so it must
    # hold the same ones. Left out: the YAML's interpolations (seed: ${seed}) and the trainer's optimizer,
    # which the YAML spells out as the AdamW partial (foreach=true: bitwise Trainer's default, AdamW).
    values = OmegaConf.to_container(OmegaConf.load(CONF / yaml))
    source = defaults_of(target)
    keys = [k for k in values if k not in ("defaults", "_target_", "optimizer", "seed")]
    assert set(keys) <= set(source)
    for key in keys:
        expected = source[key]
        assert values[key] == (list(expected) if isinstance(expected, tuple) else expected), key
    # ... and the typed schema's defaults are the component's.
    if target is not ALProtocol:
        schema = OmegaConf.to_container(OmegaConf.structured(SCHEMAS[target]), enum_to_str=True)
        assert {k: schema[k] for k in keys} == {k: values[k] for k in keys}
    assert Trainer().num_threads == 1  # once None here and 1 in the schema


def test_building_a_trainer_leaves_the_process_thread_count_alone():
    threads = torch.get_num_threads()
    other = 2 if threads != 2 else 3
    try:
        exp = prepare(compose_config([*TINY, f"trainer.num_threads={other}"]))
        assert torch.get_num_threads() == threads  # checking a config (a sweep checks every job's) changes nothing
        exp.trainer.predict(exp.build_model(), exp.data.test)
        assert torch.get_num_threads() == other  # the trainer's setting applies once it works
    finally:
        torch.set_num_threads(threads)


def test_the_budget_check_allows_a_fully_labeled_pool_without_query_rounds():
    check_budget(ALProtocol(initial_size=2000, cycles=0), 2000)  # the fully supervised reference
    with pytest.raises(ConfigError, match="al.query_size=20: at most the unlabeled pool, 2000 - 2000 = 0"):
        check_budget(ALProtocol(initial_size=2000, cycles=1), 2000)


@pytest.mark.slow
def test_default_run_learns_and_ends_well_above_chance(tmp_path):
    result = _train([f"hydra.run.dir={tmp_path}"], ROOT)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["cycle"] for r in records] == list(range(11))
    assert [r["n_labeled"] for r in records] == list(range(20, 221, 20))
    assert records[-1]["acc"] >= 0.6
    assert records[-1]["acc"] > records[0]["acc"] + 0.1  # AL works: accuracy grows with labels
    assert "cycle 10/10" in result.stderr + result.stdout  # progress on the console
    assert (tmp_path / "summary.json").exists() and (tmp_path / ".hydra" / "config.yaml").exists()
    assert len(list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))) == 1  # W&B is on, offline, by default
    assert "W&B init failed" not in result.stderr and "W&B log failed" not in result.stderr  # and it worked
    # One console line says where the W&B run is; wandb's own banner and history (~35 lines) stay silent.
    assert "W&B run " in result.stderr + result.stdout
    assert not [line for line in (result.stderr + result.stdout).splitlines() if line.startswith("wandb:")]


@pytest.mark.slow
def test_multirun_sweep_runs_every_job(tmp_path):
    overrides = [o for o in TINY if not o.startswith(("trainer.device", "logger"))]  # default device and W&B
    result = _train(["-m", "query=random,entropy", "seed=0,1", *overrides, f"hydra.sweep.dir={tmp_path}"], ROOT)
    assert result.returncode == 0, result.stderr
    assert "sweep done: 4 of 4 jobs finished, 0 failed, 0 refused" in result.stdout + result.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    named = [set(p.name.split("_", 1)[1].split(",")) for p in jobs]  # job directories are named by overrides
    assert sorted(len(n & {"query=random", "query=entropy"}) for n in named) == [1, 1, 1, 1]
    assert len(jobs) == 4
    first = {}
    for job in jobs:
        records = read_jsonl(job / "metrics.jsonl")
        assert [r["n_labeled"] for r in records] == [20, 30, 40]
        assert len(list(job.glob("wandb/offline-run-*/run-*.wandb"))) == 1  # one W&B run per job
        cfg = (job / ".hydra" / "overrides.yaml").read_text()
        seed = "seed=1" in cfg
        first.setdefault(seed, set()).add(records[0]["acc"])
    # Random and entropy share cycle 0 for each seed; the two seeds differ.
    assert len(first[False]) == 1 and len(first[True]) == 1 and first[False] != first[True]


@pytest.mark.slow
def test_a_sweep_with_bad_jobs_starts_none_and_lists_every_bad_one(tmp_path):
    overrides = [o for o in TINY if not o.startswith(("trainer.epochs", "al.cycles"))]
    # jobs 0-5: epochs 0, 5, -1 x cycles 1, 500; 500 cycles of 10 exceed the 300-row pool (known from the data)
    result = _train(["-m", "trainer.epochs=0,5,-1", "al.cycles=1,500", *overrides, f"hydra.sweep.dir={tmp_path}"],
                    ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "sweep refused, no job started: 5 of 6 jobs have config errors" in output
    lines = {int(line.split()[1]): line for line in output.splitlines() if line.startswith("  job ")}
    assert sorted(lines) == [0, 1, 3, 4, 5]  # job 2 (5 epochs, 1 cycle) is the good one
    for job, error in [(0, "trainer.epochs=0: an integer >= 1"), (1, "trainer.epochs=0: an integer >= 1"),
                       (3, "al.cycles=500: budget 20 + 500 x 10 = 5020 exceeds the pool (300); at most 28 cycles"),
                       (4, "trainer.epochs=-1: an integer >= 1"), (5, "trainer.epochs=-1: an integer >= 1")]:
        assert lines[job].startswith(f"  job {job} (trainer.epochs=") and lines[job].endswith(f"): {error}")
    assert "Traceback" not in output
    assert [p.name for p in tmp_path.iterdir()] == ["multirun.yaml"]  # Hydra's record of the sweep; no job ran


@pytest.mark.slow
def test_a_sweep_whose_job_directories_would_be_too_long_to_create_is_refused(tmp_path):
    # Hydra names a job <num>_<every override>: with enough overrides that exceeds a file name's 255 bytes.
    extra = ["model.encoder.hidden_dim=16", "model.encoder.out_dim=8", "model.encoder.num_hidden=1",
             "trainer.batch_size=32", "trainer.lr=0.002", "trainer.weight_decay=0.0001", "dataset.class_weights=null"]
    result = _train(["-m", "seed=0,1", *TINY, *extra, f"hydra.sweep.dir={tmp_path}"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "sweep refused, no job started: 2 of 2 jobs have config errors" in output
    assert "hydra.sweep.subdir='0_al.cycles=2,al.initial_size=20,al.quer...': the job's directory name is 389 bytes" \
        in output
    assert "more than the 255 a file system accepts; name jobs by number (hydra.sweep.subdir=${hydra.job.num})" \
        in output
    assert "Traceback" not in output and [p.name for p in tmp_path.iterdir()] == ["multirun.yaml"]
    numbered = _train(["-m", "seed=0,1", *TINY, *extra, f"hydra.sweep.dir={tmp_path / 'numbered'}",
                       "hydra.sweep.subdir=${hydra.job.num}"], ROOT)
    assert numbered.returncode == 0, numbered.stderr
    assert sorted(p.name for p in (tmp_path / "numbered").iterdir()) == ["0", "1", "multirun.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"]],
                         ids=["basic", "joblib", "stacked"])
def test_a_sweep_whose_jobs_fail_or_are_refused_while_running_runs_the_rest_and_says_so_with_exit_status_1(
        launcher, tmp_path):
    # The issue's sweep: lr 1e6 and 1e7 pass every check and diverge in cycle 0 (jobs 0 and 2); job 3's directory
    # is held by another run when the job starts, which no check before the sweep can see.
    overrides = [o for o in TINY if not o.startswith("al.cycles")]
    with locked(tmp_path / "3"):
        result = _train(["-m", *launcher, "fusion=early", "trainer.lr=1e6,0.001,1e7,0.002", "al.cycles=1", *overrides,
                         f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    closing = output[output.index("sweep done: "):].splitlines()
    assert closing[0] == "sweep done: 1 of 4 jobs finished, 2 failed, 1 refused (exit status 1)"
    diverged = "DivergenceError: cycle 0: training diverged: non-finite weights"
    assert closing[1].startswith(f"  failed: {tmp_path / '0'}: {diverged}") and "trainer.lr=1000000.0" in closing[1]
    assert closing[2].startswith(f"  failed: {tmp_path / '2'}: {diverged}") and "trainer.lr=10000000.0" in closing[2]
    assert closing[3] == f"  refused: {tmp_path / '3'}: run directory='{tmp_path / '3'}': is in use by another mmal " \
        "run; wait for it to end or choose another directory (hydra.run.dir / hydra.sweep.dir)"
    assert len(closing) == 4
    for bad in (tmp_path / "0", tmp_path / "2"):  # each failed job's error where the report finds it
        assert (bad / "error.txt").read_text().startswith(diverged)
        assert not (bad / "summary.json").exists() and (bad / ".hydra" / "overrides.yaml").exists()
    assert (tmp_path / "1" / "summary.json").exists() and len(read_jsonl(tmp_path / "1" / "metrics.jsonl")) == 2
    assert {p.name for p in (tmp_path / "3").iterdir()} <= {".lock", "train.log"}  # the refused job wrote nothing
    assert "Traceback" not in output and "Traceback" not in (tmp_path / "0" / "error.txt").read_text()


@pytest.mark.slow
def test_a_sweep_rerun_with_another_config_into_the_same_directory_is_refused_before_any_job(tmp_path):
    # job directories named by number only, so that the changed config lands in the same two directories
    args = ["-m", "seed=0,1", *TINY, "al.cycles=1", f"hydra.sweep.dir={tmp_path}",
            "hydra.sweep.subdir=${hydra.job.num}"]
    assert _train(args, ROOT).returncode == 0
    summaries = {p: p.read_bytes() for p in tmp_path.glob("*/summary.json")}
    assert len(summaries) == 2
    result = _train([*args, "trainer.epochs=3"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "2 of 2 jobs have config errors" in output and output.count("differing: trainer.epochs)") == 2
    assert {p: p.read_bytes() for p in tmp_path.glob("*/summary.json")} == summaries
    assert _train(args, ROOT).returncode == 0  # the same sweep again: both jobs already finished


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_cycle_and_the_keys(tmp_path):
    # lr = 1e6 drives every weight to NaN within the first cycle; once this ran to the end at chance.
    overrides = [o for o in TINY if not o.startswith("trainer.epochs")] + ["trainer.epochs=20", "trainer.lr=1e6"]
    result = _train([*overrides, f"hydra.run.dir={tmp_path}"], ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "cycle 0: training diverged: non-finite weights" in output and "trainer.lr=1000000.0" in output
    assert "Traceback" not in output
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_the_mmal_train_console_script_works_from_any_directory(tmp_path):
    script = Path(sys.executable).parent / "mmal-train"  # installed by pip install -e . next to this Python
    result = _train([*TINY, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, command=(str(script),))
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 3


def test_device_auto_picks_what_is_there():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert Trainer(device="auto").device.type == expected


# Bayes accuracy of (a, b) each pitfall config must produce: catches a config that composes but means
# something else (Hydra merges mappings key by key, so a pitfall inheriting `none` could keep its weights).
PITFALL_BAYES = {
    "none": (0.82, 0.82), "redundancy": (0.99, 0.99), "uniqueness": (0.60, 0.60), "synergy": (0.25, 0.25),
    "modality_difficulty": (0.98, 0.63), "missing_modality": (0.82, 0.82), "competition": (0.996, 0.964),
}


@pytest.mark.parametrize("pitfall", sorted(PITFALL_BAYES))
def test_each_pitfall_config_makes_the_data_it_describes(pitfall):
    assert set(PITFALL_BAYES) == set(_options("pitfall"))
    cfg = compose_config([*TINY, f"pitfall={pitfall}", "dataset.bayes_samples=20000", "dataset.num_samples=4000"])
    data = instantiate(cfg.dataset, _partial_=True, _convert_="all")(pitfall=instantiate(cfg.pitfall, _convert_="all"))
    gt = data.ground_truth
    assert (gt["bayes_acc/a"], gt["bayes_acc/b"]) == pytest.approx(PITFALL_BAYES[pitfall], abs=0.02)
    missing_b = 1 - data.pool.mask[:, 1].float().mean().item()
    assert missing_b == pytest.approx(0.5 if pitfall == "missing_modality" else 0.0, abs=0.03)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_grid_composes_and_validates(experiment, prepared_roots, tmp_path):
    from mmal.sweep import check_jobs
    from mmal.train import prepare

    # An experiment on data mmal-prepare writes runs here on the prepared fixture tree, with a budget that
    # tree holds (the real CREMA-D pool, 6,028 rows after val, holds cremad_raw's 120 + 10 x 120).
    on_fixture = {"cremad_raw": [f"dataset.root={prepared_roots['cremad_raw']}", "dataset.val_fraction=0.2",
                                 "al.initial_size=12", "al.query_size=6", "al.cycles=2"]}.get(experiment, [])
    cfg = compose_config([f"+experiment={experiment}", *on_fixture])
    prepare(cfg)  # every component builds and the grid's budget fits its pool
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra_cfg = compose("config", [f"+experiment={experiment}", *on_fixture], return_hydra_config=True).hydra
    params = hydra_cfg.sweeper.params
    assert {"query", "seed"} <= set(params)
    queries = params.query.split(",")
    # Every strategy of the grid builds and fits the grid's model (bmmal needs model.aux_heads), the other
    # swept keys at their first value, as mmal's sweeper checks a grid before its first job.
    first = [f"{k}={str(v).split(',')[0]}" for k, v in params.items() if k not in ("query", "seed")]
    jobs = [(q, compose_config([f"+experiment={experiment}", *on_fixture, *first, f"query={q}"]), tmp_path / q)
            for q in queries]
    assert check_jobs(jobs) == {}
