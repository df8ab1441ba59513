"""The trainer's seam: the optimizer from config, and training hooks that add a loss term, change the
gradients after backward, and see every step."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import TINY, compose_config

from mmal.experiment import prepare
from mmal.hooks import AuxiliaryHeadLoss, TrainingHook
from mmal.training import Trainer


@pytest.fixture(scope="module")
def parts():
    """Data and a model factory of a tiny synthetic run (two modalities a, b; aux heads on)."""
    exp = prepare(compose_config([*TINY, "model.aux_heads=true"]))
    return exp.data, exp.build_model


class Recorder(TrainingHook):
    """Keeps what the trainer hands it: the optimizer, the step count, every batch's step index."""

    def start(self, model, optimizer, total_steps):
        self.optimizer, self.total_steps, self.steps = optimizer, total_steps, []

    def loss(self, model, out, batch):
        self.steps.append(batch.step)
        return None


def test_hooks_see_the_configured_optimizer_and_every_step(parts):
    data, build_model = parts
    recorder = Recorder()
    sgd = functools.partial(torch.optim.SGD, momentum=0.9)
    trainer = Trainer(epochs=3, batch_size=8, lr=0.05, weight_decay=0.0, optimizer=sgd, hooks=[recorder], device="cpu")
    trainer.fit(build_model(), data.pool, torch.arange(20), seed=0)
    assert isinstance(recorder.optimizer, torch.optim.SGD)
    assert recorder.optimizer.defaults["momentum"] == 0.9 and recorder.optimizer.defaults["lr"] == 0.05
    assert recorder.total_steps == 3 * 3  # 20 rows in batches of 8: 3 steps per epoch
    assert recorder.steps == list(range(9))
    assert isinstance(trainer.hooks[0], AuxiliaryHeadLoss)  # the auxiliary loss is the first hook


def test_the_optimizer_comes_from_config():
    sgd = ["trainer.optimizer._target_=torch.optim.SGD", "+trainer.optimizer.momentum=0.5"]
    exp = prepare(compose_config([*TINY, *sgd]))
    model = exp.build_model()
    opt = exp.trainer.optimizer(model.parameters(), lr=exp.trainer.lr, weight_decay=exp.trainer.weight_decay)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.5


class FreezeModality(TrainingHook):
    """Drops the gradients of one modality's encoder after backward, so the optimizer skips it."""

    def __init__(self, index: int):
        self.index = index

    def after_backward(self, model, out, batch):
        for p in model.encoders[self.index].parameters():
            p.grad = None


def test_after_backward_changes_what_the_step_updates(parts):
    data, build_model = parts
    model = build_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(epochs=2, batch_size=8, hooks=[FreezeModality(1)], device="cpu").fit(model, data.pool, torch.arange(40), 0)
    after = model.state_dict()
    frozen = [k for k in before if k.startswith("encoders.1.")]
    trained = [k for k in before if k.startswith("encoders.0.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)


class PullLogit(TrainingHook):
    """A loss term strong enough to decide training: class 0's logit pulled towards ``target``."""

    def __init__(self, target: float):
        self.target = target

    def loss(self, model, out, batch):
        return 100.0 * (out.logits[:, 0] - self.target).pow(2).mean()


def test_a_hook_loss_term_is_added_to_the_objective(parts):
    data, build_model = parts
    rows = torch.arange(40)
    model = Trainer(epochs=30, batch_size=8, lr=1e-2, hooks=[PullLogit(7.0)], device="cpu").fit(
        build_model(), data.pool, rows, 0)
    with torch.no_grad():
        logit = model(data.pool.subset(rows).x, data.pool.mask[rows]).logits[:, 0]
    assert logit.mean().item() == pytest.approx(7.0, abs=0.5)  # without the hook: -4.5


class GradNorm(TrainingHook):
    """Records the gradient norm each step, as a gradient-modulating method would read it."""

    def start(self, model, optimizer, total_steps):
        self.norms = []

    def after_backward(self, model, out, batch):
        self.norms.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm())


def test_hooks_see_unscaled_gradients_under_float16(parts):
    # precision=16 scales the loss (by 65536 at first) for its grad scaler; a hook must see the true gradients.
    data, build_model = parts
    norms = {}
    for precision in ("32", "16"):
        hook = GradNorm()
        trainer = Trainer(epochs=1, batch_size=8, hooks=[hook], device="cpu")
        trainer.precision = precision  # float16 is refused without CUDA; CPU autocast and GradScaler run it here
        torch.manual_seed(0)
        trainer.fit(build_model(), data.pool, torch.arange(16), seed=0)
        norms[precision] = torch.stack(hook.norms)
    assert torch.allclose(norms["16"], norms["32"], rtol=0.05)
