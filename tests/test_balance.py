"""Balancing methods (mmal.balance): each rule against its formula on hand-built batches, the window and the
missing-modality cases, the fused model as the only one balanced, the configuration refusals, and the fused
models of several jobs with one method trained as one stacked model, each bitwise as alone."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_config

from mmal.balance import MLA, OGMGE, PMR, modality_logits
from mmal.balance.pmr import class_means, prototype_logits
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.hooks import Batch
from mmal.log import read_jsonl
from mmal.metrics.references import References
from mmal.models import MultimodalClassifier
from mmal.models.encoders import MLPEncoder
from mmal.models.fusion import IntermediateFusion, SharedHeadFusion
from mmal.train import run
from mmal.training import Member, Trainer, _Slot

# Dropout off: the masked forward passes below are then the training forward's own embeddings.
NO_DROPOUT = ["model.encoder.dropout=0", "fusion.dropout=0"]


def _model_and_batch(*overrides: str, rows: int = 64):
    """A fresh model of the config and a training batch of the pool, with its gradients after backward."""
    no_dropout = NO_DROPOUT[:1] if "fusion=shared" in overrides else NO_DROPOUT  # the shared head has none
    exp = prepare(compose_config([*TINY, *no_dropout, *overrides]))
    torch.manual_seed(0)
    model = exp.build_model().train()
    pool = exp.data.pool
    idx = torch.arange(rows)
    batch = Batch({m: v[idx] for m, v in pool.x.items()}, pool.mask[idx], pool.y[idx], step=0)
    out = model(batch.x, batch.mask)
    F.cross_entropy(out.logits, batch.y).backward()
    return model, out, batch


def _scores(model, batch) -> torch.Tensor:
    """Mean true-class probability of each modality alone: the full model run with the others masked."""
    scores = []
    with torch.no_grad():
        for i in range(batch.mask.shape[1]):
            only = torch.zeros_like(batch.mask)
            only[:, i] = batch.mask[:, i]
            probs = model(batch.x, only).logits.softmax(-1)
            present = batch.mask[:, i]
            scores.append(probs[present].gather(1, batch.y[present, None]).mean())
    return torch.stack(scores)


def _weights(model, i: int) -> list[torch.nn.Parameter]:
    return [p for p in model.encoders[i].parameters() if p.dim() >= 2]


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_ogm_coefficients_are_the_papers_eq10_and_ratios_against_the_weakest_modality():
    ogm = OGMGE(alpha=0.3)
    ratios, coeffs = ogm.coefficients(torch.tensor([0.9, 0.3]))
    assert ratios.tolist() == pytest.approx([3.0, 1.0])
    assert coeffs.tolist() == pytest.approx([1 - math.tanh(0.9), 1.0])  # 0.2837: the dominant one slowed
    ratios, coeffs = OGMGE(alpha=0.8).coefficients(torch.tensor([0.6, 0.3, 0.45, float("nan")]))
    assert ratios[:3].tolist() == pytest.approx([2.0, 1.0, 1.5])
    assert coeffs.tolist() == pytest.approx([1 - math.tanh(1.6), 1.0, 1 - math.tanh(1.2), 1.0])
    assert math.isnan(ratios[3])  # a modality absent from the batch: no ratio, not slowed


@pytest.mark.parametrize("fusion", ["intermediate", "late", "mean", "gated", "shared"])
def test_modality_logits_are_the_fused_model_with_the_other_modalities_masked(fusion):
    model, out, batch = _model_and_batch(f"fusion={fusion}")
    logits = modality_logits(model, out, batch.mask)
    for i in range(2):
        only = torch.zeros_like(batch.mask)
        only[:, i] = True
        with torch.no_grad():
            assert torch.allclose(logits[i], model(batch.x, only).logits, atol=1e-6)
    assert model.fusion.training  # back in training mode


def test_ogm_slows_the_dominant_encoders_weights_by_its_coefficient_and_nothing_else():
    model, out, batch = _model_and_batch()
    before = _grads(model)
    scores = _scores(model, batch)
    dominant = int(scores.argmax())
    expected = 1 - math.tanh(0.3 * (scores[dominant] / scores.min()).item())
    ogm = OGMGE(alpha=0.3, enhance=False)
    ogm.start(model, None, total_steps=10)
    ogm.after_backward(model, out, batch)

    scaled = {id(p) for p in _weights(model, dominant)}
    for name, p in model.named_parameters():
        if id(p) in scaled:
            assert torch.allclose(p.grad, before[name] * expected, rtol=1e-5), name
            assert not torch.allclose(p.grad, before[name]), name
        else:  # the other encoder, every bias, the fusion
            assert torch.equal(p.grad, before[name]), name
    state = ogm.state()
    assert state[f"ogm_coeff/{'ab'[dominant]}"] == pytest.approx(expected, rel=1e-5)
    assert state[f"ogm_coeff/{'ab'[1 - dominant]}"] == 1.0
    assert state[f"ogm_ratio/{'ab'[dominant]}"] == pytest.approx((scores.max() / scores.min()).item(), rel=1e-5)


def test_ogm_ge_adds_noise_with_the_unmodulated_gradients_std_from_the_global_generator():
    model, out, batch = _model_and_batch()
    before = _grads(model)
    scores = _scores(model, batch)
    coeffs = [1 - math.tanh(0.3 * r) if r > 1 else 1.0 for r in (scores / scores.min()).tolist()]
    ogm = OGMGE(alpha=0.3)
    ogm.start(model, None, total_steps=10)
    torch.manual_seed(5)
    ogm.after_backward(model, out, batch)

    torch.manual_seed(5)  # the authors' rule, drawn in the same order: modality by modality, weight by weight
    names = {id(p): n for n, p in model.named_parameters()}
    for i, coeff in enumerate(coeffs):
        for p in _weights(model, i):
            g = before[names[id(p)]]
            expected = g * coeff + torch.zeros_like(g).normal_(0, g.std().item() + 1e-8)
            assert torch.allclose(p.grad, expected, atol=1e-7), names[id(p)]
            noise = p.grad - g * coeff
            assert noise.std().item() == pytest.approx(g.std().item(), rel=0.15)
    for name, p in model.named_parameters():
        if p.dim() < 2 or name.startswith("fusion"):
            assert torch.equal(p.grad, before[name]), name


def test_outside_the_window_gradients_are_untouched_and_the_ratio_is_still_logged():
    model, out, batch = _model_and_batch()
    before = _grads(model)
    ogm = OGMGE(start=0.0, end=0.5)
    ogm.start(model, None, total_steps=10)
    batch.step = 5  # 5 / 10 is outside [0, 0.5)
    ogm.after_backward(model, out, batch)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    state = ogm.state()
    assert math.isnan(state["ogm_coeff/a"]) and state["ogm_ratio/a"] >= 1.0


def test_a_modality_missing_from_the_whole_batch_is_neither_scored_nor_modulated():
    model, _, batch = _model_and_batch()
    model.zero_grad()
    batch.mask[:, 1] = False  # b missing from every row
    out = model(batch.x, batch.mask)
    F.cross_entropy(out.logits, batch.y).backward()
    before = _grads(model)
    ogm = OGMGE(enhance=False)
    ogm.start(model, None, total_steps=10)
    ogm.after_backward(model, out, batch)
    # a is the only scored modality: its ratio is 1, it is not slowed
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    state = ogm.state()
    assert state["ogm_ratio/a"] == 1.0 and state["ogm_coeff/a"] == 1.0
    assert math.isnan(state["ogm_ratio/b"]) and math.isnan(state["ogm_coeff/b"])


@pytest.mark.parametrize("method", ["ogm_ge", "pmr", "mla"])
def test_the_balancing_method_trains_the_fused_model_only_and_its_references_as_without_it(method):
    exp = prepare(compose_config([*TINY, f"balance={method}", "fusion=shared"]))
    torch.manual_seed(0)
    initial = exp.build_model()
    rows = torch.arange(60)
    trained = {}
    for balanced in (True, False):
        fused = Member(copy.deepcopy(initial), exp.data.pool, rows, hooks=(exp.balance,) if balanced else ())
        members = [fused, *References().members(initial, exp.data, rows).values()]
        if balanced:  # the fused model alone, its two references stacked together
            slots = [_Slot(member, 3, 0, k == 0) for k, member in enumerate(members)]
            assert [len(g) for g in exp.trainer._groups(slots)] == [1, 2]
        exp.trainer.fit_together(members, 3)
        trained[balanced] = [m.model.state_dict() for m in members]
    for balanced_ref, plain_ref in zip(trained[True][1:], trained[False][1:]):
        assert all(torch.equal(balanced_ref[k], plain_ref[k]) for k in plain_ref)
    assert not all(torch.equal(trained[True][0][k], trained[False][0][k]) for k in trained[False][0])


def test_methods_that_cannot_train_a_model_are_refused_before_any_work_with_the_keys():
    for method in ("ogm_ge", "pmr"):
        with pytest.raises(ConfigError, match=rf"balance='{method}': needs per-modality encoders.*EarlyFusion"):
            prepare(compose_config([*TINY, f"balance={method}", "fusion=early"]))
    one_modality = MultimodalClassifier({"a": (8,)}, 3, partial(MLPEncoder), partial(IntermediateFusion))
    with pytest.raises(ConfigError, match=r"balance='ogm_ge': needs at least two modalities"):
        OGMGE().check(one_modality)  # a features dataset may have one; the synthetic generator refuses it
    with pytest.raises(ConfigError, match=r"balance.alpha=-1: "):
        prepare(compose_config([*TINY, "balance=ogm_ge", "balance.alpha=-1"]))
    with pytest.raises(ConfigError, match=r"balance.end=0.2: "):
        prepare(compose_config([*TINY, "balance=ogm_ge", "balance.start=0.3", "balance.end=0.2"]))
    with pytest.raises(ConfigError, match=r"balance.alpah=0.5: not a parameter of mmal.balance.OGMGE"):
        prepare(compose_config([*TINY, "balance=ogm_ge", "+balance.alpah=0.5"]))
    with pytest.raises(ConfigError, match=r"balance.momentum=1: a number >= 0 and < 1"):
        prepare(compose_config([*TINY, "balance=pmr", "balance.momentum=1"]))


def test_a_balanced_run_logs_the_methods_state_per_cycle_and_plots_it(tmp_path):
    summary = run(compose_config([*TINY, "balance=ogm_ge"]), tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    for record in records:
        assert 0 < record["balance/ogm_coeff/a"] <= 1 and record["balance/ogm_ratio/b"] >= 1
    assert summary["final/balance/ogm_coeff/a"] == records[-1]["balance/ogm_coeff/a"]
    assert (tmp_path / "balance.png").stat().st_size > 0


def test_modality_dropout_is_the_trainers_option_and_none_is_plain_training():
    dropout = compose_config([*TINY, "balance=modality_dropout"])
    assert dropout.trainer.modality_dropout == 0.5 and "balance" not in dropout
    assert prepare(dropout).balance is None
    plain, default = compose_config([*TINY, "balance=none"]), compose_config(TINY)
    assert plain == default and "balance" not in plain and prepare(plain).balance is None


def test_pmr_prototypes_are_class_means_of_present_rows_and_a_class_without_rows_is_left_out():
    e = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [9.0, 9.0]])
    y = torch.tensor([0, 0, 1, 1])
    present = torch.tensor([True, True, True, False])  # the last row lacks the modality
    means = class_means(e, y, present, num_classes=3)
    assert means[:2].tolist() == [[2.0, 1.0], [0.0, 4.0]]
    assert torch.isnan(means[2]).all()  # no row of class 2
    logits = prototype_logits(torch.tensor([[2.0, 4.0]]), means)
    assert logits[0, :2].tolist() == pytest.approx([-3.0, -2.0])  # minus the Euclidean distances
    assert logits[0, 2] == float("-inf")


def test_pmr_blends_each_epochs_prototypes_with_the_previous_ones_from_eval_mode_embeddings():
    model, _, batch = _model_and_batch("model.encoder.dropout=0.5")  # eval mode matters with dropout
    pmr = PMR(momentum=0.2)
    pmr.start(model, None, total_steps=10)
    pmr.start_epoch(model, 0, batch)

    def means() -> list[torch.Tensor]:
        model.eval()
        with torch.no_grad():
            embeddings = model(batch.x, batch.mask).embeddings
        model.train()
        return [class_means(e, batch.y, batch.mask[:, i], 4) for i, e in enumerate(embeddings)]

    first = means()
    assert all(torch.equal(p, f) for p, f in zip(pmr.prototypes, first))
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.1)
    second = means()
    pmr.start_epoch(model, 1, batch)
    assert model.training
    for p, f, s in zip(pmr.prototypes, first, second):
        assert torch.allclose(p, 0.8 * s + 0.2 * f)


def test_pmr_adds_alpha_times_the_prototype_cross_entropy_of_the_weaker_modality_only():
    model, _, batch = _model_and_batch()
    pmr = PMR(alpha=0.7)
    pmr.start(model, None, total_steps=10)
    pmr.start_epoch(model, 0, batch)
    model.zero_grad()
    out = model(batch.x, batch.mask)
    # the rule by hand: distances as the authors write them, sqrt of the dot product of the difference
    pces, scores = [], []
    for e, protos in zip(out.embeddings, pmr.prototypes):
        distances = ((e[:, None, :] - protos[None]) ** 2).sum(-1).sqrt()
        pces.append(F.cross_entropy(-distances, batch.y))
        scores.append((-distances).softmax(-1).gather(1, batch.y[:, None]).mean())
    weak = int(torch.stack(scores).argmin())
    term = pmr.loss(model, out, batch)
    assert term.item() == pytest.approx(0.7 * pces[weak].item(), rel=1e-5)
    term.backward()  # the term reaches the weaker modality's encoder, not the leading one's
    assert all(p.grad is None or not p.grad.any() for p in model.encoders[1 - weak].parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.encoders[weak].parameters())
    state = pmr.state()
    assert state[f"pmr_weight/{'ab'[weak]}"] == 0.7 and state[f"pmr_weight/{'ab'[1 - weak]}"] == 0.0
    assert state[f"pmr_ratio/{'ab'[weak]}"] == pytest.approx((scores[weak] / max(scores)).item(), rel=1e-5)
    batch.step = 7  # outside the default window, the first two thirds of the steps
    assert pmr.loss(model, out, batch) is None


def test_the_shared_head_weighs_present_modalities_by_softmax_of_minus_entropy_as_mla():
    torch.manual_seed(0)
    fusion = SharedHeadFusion([6, 6], num_classes=3)
    e = [torch.randn(5, 6), torch.randn(5, 6)]
    mask = torch.tensor([[True, True]] * 3 + [[True, False], [False, False]])
    fused, logits = fusion(e, mask)
    per = [fusion.head(x) for x in e]
    entropy = [-(p.softmax(-1) * p.log_softmax(-1)).sum(-1) for p in per]
    top = torch.maximum(*entropy)  # BalanceBenchmark's weights: exp(max H - H_m), normalised
    w = [torch.exp(top - h) for h in entropy]
    expected = (per[0] * w[0][:, None] + per[1] * w[1][:, None]) / (w[0] + w[1])[:, None]
    assert torch.allclose(logits[:3], expected[:3], atol=1e-6)
    assert torch.allclose(logits[3], per[0][3], atol=1e-6)  # one modality present: its own head
    assert torch.equal(logits[4], torch.zeros(3))  # none present: uniform
    assert torch.allclose(fusion.head(fused[:4]), logits[:4], atol=1e-6)  # logits are the head on the fused output


def test_mla_trains_each_modality_in_turn_on_its_own_rows_with_one_step_each():
    mla = MLA()
    model, _, batch = _model_and_batch("fusion=shared")
    mla.start(model, None, total_steps=10)
    batch.mask[:4, 1] = False  # 4 rows without b
    parts = mla.passes(batch)
    assert [p.mask.sum(0).tolist() for p in parts] == [[64, 0], [0, 60]]  # a on its rows, then b on its rows
    assert torch.equal(parts[1].y, batch.y[4:]) and torch.equal(parts[1].x["b"], batch.x["b"][4:])
    outside = MLA(start=0.5)
    outside.start(model, None, total_steps=10)
    assert outside.passes(batch) == [batch]  # step 0 is outside [0.5, 1): one plain step

    exp = prepare(compose_config([*TINY, "balance=mla", "fusion=shared", "trainer.batch_size=16"]))
    torch.manual_seed(0)
    fused = Member(exp.build_model(), exp.data.pool, torch.arange(40), hooks=(exp.balance,))
    exp.trainer.fit_together([fused], 0)  # 5 epochs of 3 batches, two modalities: 30 steps
    assert exp.balance.steps_taken == 30
    assert set(exp.balance.state()) == {"mla_loss/a", "mla_loss/b"}


def test_mla_projects_the_shared_heads_weight_gradient_as_the_gs_plugin():
    model, _, batch = _model_and_batch("fusion=shared")
    mla = MLA()
    mla.start(model, None, total_steps=10)
    mla.start_epoch(model, 0, batch)
    head = model.fusion.head.weight
    part = mla.passes(batch)[1]  # modality b's step
    model.zero_grad()
    out = model(part.x, part.mask)
    F.cross_entropy(out.logits, part.y).backward()
    before = head.grad.clone()
    mla.after_backward(model, out, part)  # the fit's first step: the projector is not used yet
    assert torch.equal(head.grad, before)
    mla.after_backward(model, out, part)
    r = out.embeddings[1].detach().mean(0, keepdim=True)
    k = r.T  # the identity times r
    projector = torch.eye(r.shape[1]) - k @ k.T / (0.1 + r @ k)  # a = 0.1 ** (1 + 0 / 1) at the epoch's start
    projector = projector / projector.norm()
    assert torch.allclose(mla.projector, projector, atol=1e-6)
    assert torch.allclose(head.grad, before + before @ projector.T, atol=1e-6)


def test_mla_needs_the_shared_head():
    with pytest.raises(ConfigError, match=r"balance='mla': trains the modalities through one shared head: use "
                                          r"fusion=shared \(fusion IntermediateFusion"):
        prepare(compose_config([*TINY, "balance=mla"]))


def _jobs(exp, n: int = 3, rows: int = 52) -> list[tuple[MultimodalClassifier, torch.Tensor, int]]:
    """``n`` AL runs of one config at a training: each its own initial weights, labeled rows (as many) and seed."""
    jobs = []
    for j in range(n):
        torch.manual_seed(j)
        labeled = torch.randperm(len(exp.data.pool), generator=torch.Generator().manual_seed(j))[:rows]
        jobs.append((exp.build_model(), labeled.sort().values, 10 + j))
    return jobs


def _same_state(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(x == y or math.isnan(x) and math.isnan(y)
                                        for x, y in zip(a.values(), b.values()))


def _stacked_and_alone(trainer: Trainer, jobs, hooks) -> tuple[list[Member], list[Member], list]:
    """Every job's fused model trained once in one ``fit_jobs`` call and once alone (``fit_together`` of the job),
    each with a fresh hook of its own (``hooks(j)``); the random states each left."""
    stacked, alone = ([Member(copy.deepcopy(model), data, rows, hooks=hooks(j))
                       for j, (model, data, rows, _) in enumerate(jobs)] for _ in range(2))
    states = [[], [cpu for cpu, _ in trainer.fit_jobs([([member], job[-1]) for member, job in zip(stacked, jobs)])]]
    for member, job in zip(alone, jobs):
        trainer.fit_together([member], job[-1])
        states[0].append(torch.get_rng_state())
    return stacked, alone, states


# b missing from 70 % of the rows: members' batches of 16 have it in other rows, and in an epoch's last batch of 4
# (52 rows) a member may have none
MISSING_B = ["pitfall=missing_modality", "pitfall.missing_rate=[0.0,0.7]"]


@pytest.mark.parametrize("overrides", [
    ["balance=ogm_ge", "trainer.modality_dropout=0.3"],
    ["balance=ogm_ge", "balance.enhance=false"],
    ["balance=ogm_ge", *MISSING_B],  # a member whose batch lacks b: not scored, not modulated, no noise drawn
    ["balance=pmr", "model.aux_heads=true"],
    ["balance=pmr", *MISSING_B],
    ["balance=mla", "fusion=shared"],
], ids=["ogm_ge+modality_dropout", "ogm", "ogm_ge+missing", "pmr+aux", "pmr+missing", "mla"])
def test_fused_models_of_several_jobs_with_one_method_stack_bitwise_as_each_alone(overrides):
    exp = prepare(compose_config([*TINY, "trainer.batch_size=16", *overrides]))
    jobs = [(model, exp.data.pool, rows, seed) for model, rows, seed in _jobs(exp)]
    states = assert_one_stack_as_each_alone(exp.trainer, jobs, lambda j: (copy.deepcopy(exp.balance),))
    assert all(not math.isnan(value) for value in states[0].values())  # the method acted, its state is the job's own


def assert_one_stack_as_each_alone(trainer: Trainer, jobs, hooks) -> list[dict[str, float]]:
    """The jobs' fused models, each with a fresh ``hooks(j)``, make one stack, and train in it bitwise as each
    alone: weights, the method's state, and the global random state the job goes on with (a method's draws come
    from the member's own generator). Returns the stacked members' states, which must differ from job to job."""
    slots = [_Slot(Member(model, data, rows, hooks=hooks(j)), seed, j, True)
             for j, (model, data, rows, seed) in enumerate(jobs)]
    assert [len(group) for group in trainer._groups(slots)] == [len(jobs)]  # one stack
    stacked, alone, (after_alone, after_stacked) = _stacked_and_alone(trainer, jobs, hooks)
    for a, b, state_a, state_b in zip(alone, stacked, after_alone, after_stacked):
        assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        assert _same_state(a.hooks[0].state(), b.hooks[0].state()), (a.hooks[0].state(), b.hooks[0].state())
        assert torch.equal(state_a, state_b)
    states = [member.hooks[0].state() for member in stacked]
    assert states[0] != states[1] != states[2]
    return states


def test_members_with_other_methods_or_settings_train_apart_each_as_alone():
    exp = prepare(compose_config([*TINY, "trainer.batch_size=16"]))
    methods = [lambda: (OGMGE(alpha=0.3),), lambda: (OGMGE(0.3),), lambda: (OGMGE(alpha=0.8),),  # settings: the key
               lambda: (PMR(),), lambda: (), lambda: (OGMGE(alpha=0.3, enhance=False),), lambda: (OGMGE(),)]
    assert OGMGE(0.3).key() == OGMGE().key() == copy.deepcopy(OGMGE()).key() != OGMGE(enhance=False).key()
    jobs = [(model, exp.data.pool, rows, seed) for model, rows, seed in _jobs(exp, len(methods))]
    slots = [_Slot(Member(model, data, rows, hooks=methods[j]()), seed, j, True)
             for j, (model, data, rows, seed) in enumerate(jobs)]
    assert [[slot.job for slot in group] for group in exp.trainer._groups(slots)] == [[0, 1, 6], [2], [3], [4], [5]]
    stacked, alone, (after_alone, after_stacked) = _stacked_and_alone(exp.trainer, jobs, lambda j: methods[j]())
    for a, b, state_a, state_b in zip(alone, stacked, after_alone, after_stacked):
        assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        assert all(_same_state(h.state(), g.state()) for h, g in zip(a.hooks, b.hooks))
        assert torch.equal(state_a, state_b)


def test_a_model_that_does_not_stack_and_mla_where_rows_lack_a_modality_train_alone_with_their_method():
    gated = prepare(compose_config([*TINY, "balance=ogm_ge", "fusion=gated"]))
    jobs = [(model, gated.data.pool, rows, seed) for model, rows, seed in _jobs(gated, 2)]
    members = [Member(model, data, rows, hooks=(OGMGE(),)) for model, data, rows, _ in jobs]
    assert gated.trainer.alone_reason(members[0]) == "fusion.gates.0 is a linear layer with one output"
    stacked, alone, _ = _stacked_and_alone(gated.trainer, jobs, lambda j: (OGMGE(),))
    for a, b in zip(alone, stacked):
        assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))
        assert _same_state(a.hooks[0].state(), b.hooks[0].state())
    # MLA's steps take each modality's rows: members stack only where every row has every modality
    for overrides in (["pitfall=missing_modality"], ["trainer.modality_dropout=0.3"]):
        exp = prepare(compose_config([*TINY, "balance=mla", "fusion=shared", *overrides]))
        model, rows, _ = _jobs(exp, 1)[0]
        assert exp.trainer.alone_reason(Member(model, exp.data.pool, rows, hooks=(MLA(),))).startswith(
            "the training hook MLA makes its steps of a batch's rows by modality (passes)")
    assert exp.trainer.alone_reason(Member(model, exp.data.pool, rows)) is None
