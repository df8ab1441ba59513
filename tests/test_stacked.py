"""Stacked training (mmal.models.stacked, Trainer.fit_together) against training each model alone: the same
weights to the last bit on one CPU thread, the same global random state, and the fallbacks where models
cannot stack."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from conftest import compose_config

from mmal.experiment import prepare
from mmal.hooks import TrainingHook
from mmal.metrics.references import References
from mmal.models import MultimodalClassifier
from mmal.models.encoders import ConvEncoder, MLPEncoder
from mmal.models.fusion import Fusion, IntermediateFusion
from mmal.models.stacked import StackedLinear, stack, stackable, unstack, unstackable_reason
from mmal.training import DivergenceError, Member, Trainer, _Slot


@pytest.fixture(autouse=True)
def one_thread():
    """Bitwise equality is promised on one thread (a batched product may split its work otherwise)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _experiment(*overrides: str):
    cfg = compose_config(["dataset.num_samples=300", "dataset.num_val=50", "dataset.num_test=200",
                          "dataset.bayes_samples=1000", "trainer.epochs=6", "trainer.batch_size=16",
                          "trainer.device=cpu", "logger=none", *overrides])
    exp = prepare(cfg)
    torch.manual_seed(0)
    return exp, exp.build_model()


def _alone(trainer: Trainer, member: Member, seed: int, first: bool) -> None:
    """What the trainer did before stacking: the loop on one model, the references under a forked random state."""
    if first:
        trainer.fit_together([member], seed)
    else:
        with torch.random.fork_rng(devices=[]):
            trainer.fit_together([member], seed)


def _slots(members: list[Member]) -> list[_Slot]:
    """The members of one job, as ``Trainer.fit_jobs`` sees them."""
    return [_Slot(member, 0, 0, k == 0) for k, member in enumerate(members)]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("overrides", [
    [],  # intermediate fusion
    ["fusion=late"],
    ["fusion=mean", "model.aux_heads=true"],
    ["fusion=early"],
    ["fusion=shared"],
    ["model.aux_heads=true", "trainer.modality_dropout=0.3"],
    ["trainer.optimizer._target_=torch.optim.SGD", "+trainer.optimizer.momentum=0.9"],
    ["trainer.optimizer.foreach=null", "+trainer.optimizer.fused=true"],  # the faster option (benchmarks.md)
    ["trainer.precision=bf16", "model.aux_heads=true"],  # autocast: bfloat16 gradients, float32 weights
], ids=["intermediate", "late", "mean+aux", "early", "shared", "aux+modality_dropout", "sgd", "fused_adamw", "bf16"])
def test_the_fused_model_and_its_references_train_together_bitwise_as_alone(overrides):
    exp, initial = _experiment(*overrides)
    data, trainer = exp.data, exp.trainer
    rows = torch.arange(90)  # batches of 16 and a last one of 10
    together = [Member(copy.deepcopy(initial), data.pool, rows),
                *References().members(initial, data, rows).values()]
    alone = [Member(copy.deepcopy(initial), m.data, m.rows) for m in together]
    assert stackable(initial) and len(trainer._groups(_slots(together))) == 1  # one stack of three

    torch.manual_seed(123)
    for i, member in enumerate(alone):
        _alone(trainer, member, 7, first=i == 0)
    after_alone = torch.get_rng_state()
    torch.manual_seed(123)
    trainer.fit_together(together, 7)

    for a, b in zip(alone, together):
        assert _same_weights(a.model, b.model), b.label or "the fused model"
    # the global generator is where fitting the fused model alone leaves it: the AL run cannot tell
    assert torch.equal(torch.get_rng_state(), after_alone)
    # and training did something: the references differ from the fused model and from their start
    assert not _same_weights(together[0].model, together[1].model)
    assert not _same_weights(together[1].model, initial)


def test_members_on_other_rows_or_models_that_do_not_stack_train_alone_with_the_same_results():
    exp, initial = _experiment("pitfall=missing_modality")
    data, trainer = exp.data, exp.trainer
    rows = torch.arange(120)
    references = References().members(initial, data, rows)
    members = [Member(copy.deepcopy(initial), data.pool, rows), *references.values()]
    sizes = [len(m.rows) for m in members]
    assert sizes[0] == sizes[1] > sizes[2]  # b is missing from some labeled rows: its reference has fewer
    groups = trainer._groups(_slots(members))
    assert [len(g) for g in groups] == [2, 1] and groups[1][0].member is members[2]
    alone = [Member(copy.deepcopy(initial), m.data, m.rows) for m in members]
    for i, member in enumerate(alone):
        _alone(trainer, member, 3, first=i == 0)
    trainer.fit_together(members, 3)
    assert all(_same_weights(a.model, b.model) for a, b in zip(alone, members))

    gated, model = _experiment("fusion=gated")  # one-output gates: a batched product would round differently
    assert not stackable(model) and len(gated.trainer._groups(_slots([Member(model, gated.data.pool, rows)] * 2))) == 2


class MaxFusion(Fusion):
    """A user's own fusion: the elementwise max of the embeddings, then a linear head. It says nothing of
    stacking, so it trains alone, correctly."""

    def __init__(self, dims: list[int], num_classes: int):
        super().__init__()
        self.head = torch.nn.Linear(dims[0], num_classes)

    def forward(self, embeddings, mask):
        fused = torch.stack(embeddings).amax(0)
        return fused, self.head(fused)


def test_a_component_declares_whether_it_stacks():
    exp, _ = _experiment()
    shapes, k = exp.data.shapes, exp.data.num_classes
    encoder = MLPEncoder  # the default sizes: a tiny layer (8 -> 4 on 8 rows) rounds otherwise (mmal.models.stacked)
    model = MultimodalClassifier(shapes, k, encoder, MaxFusion)
    assert unstackable_reason(model) == "fusion (MaxFusion) does not declare stacks = True"

    class StackingMaxFusion(MaxFusion):
        stacks = True  # its forward works on a leading member dimension: max over modalities, a linear head

    rows = torch.arange(40)
    torch.manual_seed(0)
    initial = MultimodalClassifier(shapes, k, encoder, StackingMaxFusion)
    assert unstackable_reason(initial) is None
    pair = [Member(copy.deepcopy(initial), exp.data.pool, rows) for _ in range(2)]
    assert len(exp.trainer._groups(_slots(pair))) == 1
    alone = Member(copy.deepcopy(initial), exp.data.pool, rows)
    _alone(exp.trainer, alone, 5, first=True)
    exp.trainer.fit_together(pair, 5)
    assert _same_weights(alone.model, pair[0].model) and _same_weights(alone.model, pair[1].model)
    conv = MultimodalClassifier({"img": (1, 8, 8), "b": (4,)}, 2, encoder,
                                functools.partial(IntermediateFusion, head_hidden=8),
                                encoders={"img": functools.partial(ConvEncoder, channels=(4,))})
    assert unstackable_reason(conv) == "encoders.0 (ConvEncoder) does not declare stacks = True"


def test_a_hook_that_is_not_stackable_an_unsuitable_optimizer_or_float16_keep_models_apart():
    class Probe(TrainingHook):
        pass

    exp, initial = _experiment()
    rows = torch.arange(40)
    pair = [Member(copy.deepcopy(initial), exp.data.pool, rows) for _ in range(2)]
    assert len(exp.trainer._groups(_slots(pair))) == 1
    assert len(Trainer(epochs=1, hooks=[Probe()], device="cpu")._groups(_slots(pair))) == 2
    lbfgs = Trainer(epochs=1, device="cpu", optimizer=torch.optim.LBFGS)
    assert len(lbfgs._groups(_slots(pair))) == 2


def test_stack_and_unstack_move_each_members_weights():
    _, initial = _experiment()
    models = [copy.deepcopy(initial) for _ in range(3)]
    with torch.no_grad():
        for k, model in enumerate(models):
            for p in model.parameters():
                p.fill_(k)
    stacked = stack(models, [0, 1, 2])
    layers = [m for m in stacked.modules() if isinstance(m, StackedLinear)]
    assert len(layers) == sum(isinstance(m, torch.nn.Linear) for m in initial.modules())
    assert all(torch.equal(layer.weight[k], torch.full_like(layer.weight[k], k)) for layer in layers for k in range(3))
    with torch.no_grad():
        for layer in layers:
            layer.weight.add_(10)
    unstack(stacked, models)
    assert all(torch.equal(p, torch.full_like(p, k + 10)) for k, model in enumerate(models)
               for name, p in model.named_parameters() if name.endswith("weight"))


def test_a_member_that_diverges_is_named():
    exp, initial = _experiment()
    rows = torch.arange(40)
    broken = copy.deepcopy(initial)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))  # NaN weights stay NaN whatever the training
    members = [Member(copy.deepcopy(initial), exp.data.pool, rows),
               Member(broken, exp.data.pool, rows, "the unimodal reference of b: ")]
    with pytest.raises(DivergenceError, match=r"^the unimodal reference of b: training diverged: non-finite "
                                              r"weights after 18 steps"):
        exp.trainer.fit_together(members, 0)
    assert all(torch.isfinite(p).all() for p in members[0].model.parameters())  # the fused model trained normally
