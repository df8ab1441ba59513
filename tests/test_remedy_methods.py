"""OPM, UMT and MMPareto (mmal.balance.opm, .umt, .mmpareto): each rule against its authors' formula written out
here, the missing-modality cases, the window, the AL loop training UMT's teachers first (the references' numbers
unchanged), and the fused models of several jobs trained as one stack, each bitwise as alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_config
from test_balance import MISSING_B, NO_DROPOUT, _jobs, _model_and_batch, _scores, assert_one_stack_as_each_alone

from mmal.balance import OPM, UMT, MMPareto
from mmal.balance.mmpareto import min_norm_weight
from mmal.errors import ConfigError
from mmal.experiment import prepare
from mmal.hooks import Batch
from mmal.log import read_jsonl
from mmal.metrics.references import References
from mmal.train import run


def _calcu_q(p1: float, p2: float, q_base: float, lam: float) -> tuple[float, float]:
    """The authors' ``calcu_q`` (BML_TPAMI2024, code/models/Classifier.py) for two modalities, on floats."""
    ratio_1 = math.tanh(max(p1 / p2 - 1, 0.0))
    ratio_2 = math.tanh(max(p2 / p1 - 1, 0.0))
    q1 = q_base * (1 + lam * ratio_1) if ratio_1 > 0 else 0.0
    q2 = q_base * (1 + lam * ratio_2) if ratio_2 > 0 else 0.0
    return min(max(q1, 0.0), 1.0), min(max(q2, 0.0), 1.0)


def test_opm_drop_probabilities_are_the_authors_calcu_q_and_balancebenchmarks_for_three_modalities():
    opm = OPM(q_base=0.5, lam=0.5)
    for p1, p2 in [(0.6, 0.3), (0.3, 0.6), (0.45, 0.45), (0.9, 0.1)]:
        ratios, drop = opm.drop_probabilities(torch.tensor([p1, p2], dtype=torch.float64))
        assert drop.tolist() == pytest.approx(_calcu_q(p1, p2, 0.5, 0.5), abs=1e-4)
    assert _calcu_q(0.6, 0.3, 0.5, 0.5)[0] == pytest.approx(0.5 * (1 + 0.5 * math.tanh(1.0)))
    # three modalities: each score against the sum of the other two (BalanceBenchmark's OPM_trainer)
    ratios, drop = OPM(q_base=0.4, lam=1.0).drop_probabilities(torch.tensor([0.8, 0.3, 0.2], dtype=torch.float64))
    assert ratios.tolist() == pytest.approx([math.tanh(0.8 / 0.5 - 1), 0.0, 0.0], abs=1e-4)
    assert drop.tolist() == pytest.approx([0.4 * (1 + math.tanh(0.6)), 0.0, 0.0], abs=1e-4)
    # a modality the batch lacks: no score, never dropped, and not among the others
    ratios, drop = opm.drop_probabilities(torch.tensor([0.6, float("nan")]))
    assert math.isnan(ratios[1]) and drop.tolist() == [0.75, 0.0]  # against no other score: the full lead, tanh -> 1
    assert OPM(q_base=0.9, lam=0.5).drop_probabilities(torch.tensor([0.9, 0.1]))[1].tolist() == [1.0, 0.0]  # clipped


def test_opm_drops_the_leading_modality_from_every_row_that_has_another_and_nothing_else():
    model, out, batch = _model_and_batch(*MISSING_B)
    leader = int(_scores(model, batch).argmax())
    other = 1 - leader
    opm = OPM(q_base=1.0, lam=0.0, p_exe=1.0, start=0.0)  # q = 1 for the leader, 0 for the other, every step
    opm.start(model, None, total_steps=10)
    masked = opm.masked(model, batch)
    assert model.training  # left in training mode
    expected = batch.mask.clone()
    expected[batch.mask[:, other], leader] = False  # a row with only the leader keeps it
    assert torch.equal(masked.mask, expected) and masked.y is batch.y and masked.x is batch.x
    assert (batch.mask[:, leader] & ~batch.mask[:, other]).any()  # the batch has rows with only the leader
    name = "ab"
    state = opm.state()
    assert state[f"opm_drop/{name[leader]}"] == 1.0 and state[f"opm_drop/{name[other]}"] == 0.0
    share = (batch.mask[:, leader] & batch.mask[:, other]).sum() / batch.mask[:, leader].sum()
    assert state[f"opm_dropped/{name[leader]}"] == pytest.approx(share.item())
    assert state[f"opm_dropped/{name[other]}"] == 0.0


def test_opm_draws_a_coin_then_a_bernoulli_mask_from_the_global_generator_and_nothing_outside_its_window():
    model, out, batch = _model_and_batch()
    opm = OPM(start=0.5)
    opm.start(model, None, total_steps=10)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    assert opm.masked(model, batch) is batch  # step 0 lies before the window: nothing drawn
    assert torch.equal(torch.get_rng_state(), before)
    inside = Batch(batch.x, batch.mask, batch.y, step=5)
    _, drop = opm.drop_probabilities(_scores(model, batch))
    for seed in range(6):  # some steps drop (coin >= 1 - p_exe), some do not
        torch.manual_seed(seed)
        coin, uniform = torch.rand(1), torch.rand(batch.mask.shape)
        expected = batch.mask & (uniform < 1 - drop) if coin >= 1 - opm.p_exe else batch.mask
        expected = torch.where(expected.any(-1, keepdim=True), expected, batch.mask)
        torch.manual_seed(seed)
        assert torch.equal(opm.masked(model, inside).mask, expected), seed


def _teachers(exp, initial, rows, seed):
    """The job's unimodal references trained on its rows: UMT's teachers, modality -> model."""
    members = References().members(initial, exp.data, rows)
    exp.trainer.fit_together(list(members.values()), seed)
    return {m: member.model for m, member in members.items()}


def test_umt_adds_alpha_times_each_modalitys_embedding_mse_to_its_teacher_over_the_rows_that_have_it():
    model, _, batch = _model_and_batch(*MISSING_B)
    exp = prepare(compose_config([*TINY, *MISSING_B, "diagnostics.every=1"]))
    teachers = _teachers(exp, copy.deepcopy(model), torch.arange(80), 3)
    model.zero_grad(set_to_none=True)
    out = model(batch.x, batch.mask)
    teacher_grads = [p.grad.clone() for t in teachers.values() for p in t.parameters()]
    umt = UMT(alpha=0.7)
    umt.teach(teachers)
    umt.start(model, None, total_steps=10)
    term = umt.loss(model, out, batch)
    expected = 0.0
    for i, m in enumerate("ab"):
        rows = batch.mask[:, i]
        with torch.no_grad():
            target = teachers[m].eval().encoders[i](batch.x[m][rows])
        expected += 0.7 * ((out.embeddings[i][rows] - target) ** 2).mean()
    assert term.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not rows.all()  # b is missing from some rows
    term.backward()  # the gradient reaches the fused model's encoders, never the teachers'
    assert all(torch.equal(p.grad, g) for p, g in zip((p for t in teachers.values() for p in t.parameters()),
                                                      teacher_grads))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders.parameters())
    assert umt.state()["umt_mse/b"] > 0
    late = UMT(start=0.5)
    late.teach(teachers)
    late.start(model, None, total_steps=10)
    assert late.loss(model, out, batch) is None and math.isnan(late.state()["umt_mse/a"])


def test_a_umt_run_trains_the_references_first_with_their_numbers_unchanged_and_needs_them_every_cycle(tmp_path):
    overrides = [*TINY, "diagnostics.every=1", "pitfall=modality_difficulty"]
    plain = run(compose_config(overrides), tmp_path / "plain")
    umt = run(compose_config([*overrides, "balance=umt"]), tmp_path / "umt")
    records = {name: read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("plain", "umt")}
    for key in ("ref_acc/a", "ref_acc/b", "input_cv_acc/a"):  # cycle 0: the same labeled rows, the same references
        assert records["umt"][0][key] == records["plain"][0][key], key
    assert umt["final/acc"] != plain["final/acc"]
    assert all(record["balance/umt_mse/a"] > 0 for record in records["umt"])
    with pytest.raises(ConfigError, match=r"diagnostics.every=2: .*1, since balance=umt learns from the unimodal"):
        prepare(compose_config([*TINY, "diagnostics.every=2", "balance=umt"]))
    with pytest.raises(ConfigError, match=r"balance.p_exe=1.5: a number >= 0 and <= 1"):
        prepare(compose_config([*TINY, "balance=opm", "balance.p_exe=1.5"]))


@pytest.mark.parametrize("overrides", [["balance=opm", *MISSING_B], ["balance=opm", "trainer.modality_dropout=0.3"],
                                       ["balance=umt", *MISSING_B], ["balance=mmpareto", *MISSING_B]],
                         ids=["opm+missing", "opm+modality_dropout", "umt", "mmpareto+missing"])
def test_fused_models_of_several_jobs_with_each_new_method_stack_bitwise_as_each_alone(overrides):
    exp = prepare(compose_config([*TINY, "trainer.batch_size=16", "diagnostics.every=1", *overrides]))
    jobs = [(model, exp.data.pool, rows, seed) for model, rows, seed in _jobs(exp)]
    teachers = [_teachers(exp, copy.deepcopy(model), rows, seed) for model, _, rows, seed in jobs]

    def hooks(j):  # a fresh hook per job and training, with the job's own teachers
        hook = copy.deepcopy(exp.balance)
        hook.teach(teachers[j])
        return (hook,)

    assert_one_stack_as_each_alone(exp.trainer, jobs, hooks)


def _min_norm_element_from2(v1v1: float, v1v2: float, v2v2: float) -> float:
    """The authors' ``MinNormSolver._min_norm_element_from2`` (MMPareto_ICML2024, code/min_norm_solvers.py)."""
    if v1v2 >= v1v1:
        return 0.999
    if v1v2 >= v2v2:
        return 0.001
    return -1.0 * ((v1v2 - v2v2) / (v1v1 + v2v2 - 2 * v1v2))


def test_mmpareto_min_norm_weight_is_the_authors_two_task_solver():
    cases = [(4.0, -1.0, 2.0), (1.0, 2.0, 9.0), (9.0, 2.0, 1.0), (1.0, -0.5, 1.0), (2.0, 0.0, 0.0)]
    for v11, v12, v22 in cases:
        got = min_norm_weight(*(torch.tensor(v, dtype=torch.float64) for v in (v11, v12, v22)))
        assert got.item() == pytest.approx(_min_norm_element_from2(v11, v12, v22))
    # x1 = (2, 0), x2 = (-1, 1): |c x1 + (1 - c) x2|^2 = (3c - 1)^2 + (1 - c)^2 is smallest at c = 0.4
    assert min_norm_weight(torch.tensor(4.0), torch.tensor(-2.0), torch.tensor(2.0)).item() == pytest.approx(0.4)


@pytest.mark.parametrize("seed", [0, 11], ids=["gradients-agree", "both-conflict"])
def test_mmpareto_gives_each_encoder_the_authors_combination_of_its_multimodal_and_unimodal_gradients(seed):
    exp = prepare(compose_config([*TINY, *NO_DROPOUT, "balance=mmpareto", *MISSING_B]))
    torch.manual_seed(seed)  # initial weights whose two gradients agree on both encoders (0), conflict on both (11)
    model = exp.build_model().train()
    pool, idx = exp.data.pool, torch.arange(64)
    batch = Batch({m: v[idx] for m, v in pool.x.items()}, pool.mask[idx], pool.y[idx], step=0)
    # expected: the gradients of L_mm, of each L_m and of their sum, from a copy of the model
    twin = copy.deepcopy(model)
    out = twin(batch.x, batch.mask)
    fused = F.cross_entropy(out.logits, batch.y)
    unimodal = sum(F.cross_entropy(out.aux_logits[batch.mask[:, i], i], batch.y[batch.mask[:, i]]) for i in range(2))
    params = [list(enc.parameters()) for enc in twin.encoders]
    flat = [p for group in params for p in group]
    g_mm = torch.autograd.grad(fused, flat, retain_graph=True)
    g_u = torch.autograd.grad(unimodal, flat, retain_graph=True)
    (fused + unimodal).backward()
    expected, weights, first = [], [], 0
    for group in params:
        a, b = g_mm[first:first + len(group)], g_u[first:first + len(group)]
        first += len(group)
        v11, v12, v22 = (sum(float((x * y).sum()) for x, y in zip(u, v)) for u, v in ((a, a), (a, b), (b, b)))
        cos = v12 / math.sqrt(v11 * v22)
        k = 0.5 if cos > 0 else _min_norm_element_from2(v11, v12, v22)
        weights.append(1 - k)
        for p, x, y in zip(group, a, b):
            new = 2 * k * x + 2 * (1 - k) * y
            expected.append(1.5 * max(1.0, float(p.grad.norm() / new.norm())) * new)
    # the method, inside the trainer's step: its loss term, backward, after_backward
    hook = exp.balance
    hook.start(model, None, total_steps=10)
    out = model(batch.x, batch.mask)
    (F.cross_entropy(out.logits, batch.y) + hook.loss(model, out, batch)).backward()
    heads_before = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders")}
    hook.after_backward(model, out, batch)
    got = [p.grad for enc in model.encoders for p in enc.parameters()]
    assert all(torch.allclose(g, e, rtol=1e-4, atol=1e-7) for g, e in zip(got, expected))
    assert all(torch.equal(p.grad, heads_before[n]) for n, p in model.named_parameters() if n in heads_before)
    state = hook.state()
    assert [state["mmpareto_weight/a"], state["mmpareto_weight/b"]] == pytest.approx(weights, abs=1e-5)
    assert all(w == 0.5 for w in weights) if seed == 0 else all(w < 0.5 for w in weights)


def test_mmpareto_needs_the_unimodal_heads_and_turns_them_on():
    cfg = compose_config([*TINY, "balance=mmpareto"])
    assert cfg.model.aux_heads is True and cfg.trainer.aux_weight == 0
    with pytest.raises(ConfigError, match=r"balance='mmpareto': needs the unimodal heads: model.aux_heads=true"):
        prepare(compose_config([*TINY, "balance=mmpareto", "model.aux_heads=false"]))
    with pytest.raises(ConfigError, match=r"balance.gamma=0: a number > 0"):
        prepare(compose_config([*TINY, "balance=mmpareto", "balance.gamma=0"]))
    assert isinstance(prepare(compose_config([*TINY, "balance=mmpareto"])).balance, MMPareto)
