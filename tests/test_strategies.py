"""Every query strategy: valid selections, and each one's numbers against its definition."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import pytest
import torch
from conftest import CONF, TINY, compose_config
from hydra.utils import instantiate

from mmal.config import check_strategy
from mmal.data import Pitfall, make_synthetic
from mmal.errors import ConfigError
from mmal.metrics.modality import shapley_values
from mmal.metrics.references import References
from mmal.models import MultimodalClassifier
from mmal.models.encoders import MLPEncoder
from mmal.models.fusion import EarlyFusion, IntermediateFusion
from mmal.query import Badge, DeficitBMMAL, EnsembleBadge, EnsembleDisagreement, PatternBadge, QueryContext
from mmal.query.badge import gradient_factor
from mmal.query.bmmal import contribution_weights, modality_contributions
from mmal.query.deepfool import DeepFool
from mmal.query.deficit_bmmal import pool_deficits
from mmal.query.gap import GapSplit, gap_shares, modality_agreement
from mmal.query.multimodal import Disagreement, ModalityEntropy
from mmal.query.pattern_badge import split_budget
from mmal.query.selection import kmeanspp_factored
from mmal.query.uncertainty import Margin, mutual_information
from mmal.training import Predictions, Trainer

STRATEGIES = sorted(p.stem for p in (CONF / "query").glob("*.yaml"))


@pytest.fixture(scope="module")
def pool_and_model():
    data = make_synthetic(Pitfall(missing_rate=[0.0, 0.3]), seed=0, num_samples=120, num_val=10, num_test=10,
                          bayes_samples=100)
    torch.manual_seed(0)
    model = MultimodalClassifier(data.shapes, 4, functools.partial(MLPEncoder, out_dim=16),
                                 functools.partial(IntermediateFusion), aux_heads=True)
    trainer = Trainer(epochs=20, device="cpu")
    initial = copy.deepcopy(model)
    trainer.fit(model, data.pool, torch.arange(40), seed=0)
    references = References().members(initial, data, torch.arange(40))  # what a cycle trains for the measure
    trainer.fit_together(list(references.values()), seed=0)
    return data.pool, model, trainer, {m: member.model for m, member in references.items()}


def _ctx(pool, model, trainer, references=None, labeled_count=40, seed=0):
    labeled = torch.zeros(len(pool), dtype=torch.bool)
    labeled[:labeled_count] = True
    return QueryContext(model, trainer, pool, labeled, torch.Generator().manual_seed(seed), references or {},
                        frozenset(references or {}))


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("k", [7, 80])  # 80 = every unlabeled sample
def test_every_strategy_returns_k_distinct_unlabeled_indices(name, k, pool_and_model):
    pool, model, trainer, references = pool_and_model
    strategy = instantiate(compose_config([f"query={name}"]).query)
    ctx = _ctx(pool, model, trainer, references)
    picked = strategy.select(ctx, k).indices
    assert picked.dtype == torch.long and picked.shape == (k,)
    assert picked.unique().numel() == k
    assert not ctx.labeled[picked].any()
    again = strategy.select(_ctx(pool, model, trainer, references), k).indices
    assert torch.equal(picked, again)  # same generator seed, same picks


def test_bald_is_the_mutual_information_from_its_definition():
    mc = torch.tensor([[[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]],
                       [[0.1, 0.9], [0.5, 0.5], [0.2, 0.8]]])  # (T=2, N=3, C=2)

    def h(p):
        return -sum(q * math.log(q) for q in p if q > 0)
    expected = [h([0.5, 0.5]) - (h([0.9, 0.1]) + h([0.1, 0.9])) / 2, 0.0, 0.0]
    assert mutual_information(mc).tolist() == pytest.approx(expected, abs=1e-6)


def test_modality_entropy_and_disagreement_on_hand_made_predictions(pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx = _ctx(pool, model, trainer)
    probs = ctx.modality_probs()
    assert probs.shape == (len(pool), 2, 4)
    row = int((pool.mask.all(1)).nonzero()[0])
    pa, pb = probs[row, 0], probs[row, 1]

    def h(p):
        return float(-(p * p.log()).sum())
    assert ModalityEntropy().score(ctx)[row].item() == pytest.approx((h(pa) + h(pb)) / 2, rel=1e-5)
    js = h((pa + pb) / 2) - (h(pa) + h(pb)) / 2
    assert Disagreement().score(ctx)[row].item() == pytest.approx(js, rel=1e-4, abs=1e-7)
    missing_b = int((~pool.mask[:, 1]).nonzero()[0])
    assert Disagreement().score(ctx)[missing_b].item() == pytest.approx(0.0, abs=1e-7)
    assert ModalityEntropy().score(ctx)[missing_b].item() == pytest.approx(h(probs[missing_b, 0]), rel=1e-5)


def test_gap_split_quality_and_shares_by_hand():
    fused = torch.tensor([[.9, .1], [.2, .8], [.6, .4], [.3, .7]])  # predicts 0, 1, 0, 1
    own = torch.tensor([[[.8, .2], [.4, .6], [.5, .5]],  # a predicts 0, 1, 1, 1; b predicts 1, 0, 0, 1
                        [[.3, .7], [.9, .1], [.5, .5]],
                        [[.1, .9], [.7, .3], [.5, .5]],
                        [[.2, .8], [.4, .6], [.5, .5]]])
    rows = torch.tensor([[True, True, False]] * 3 + [[True, False, False]])  # b missing in row 3, c everywhere
    quality = modality_agreement(fused, own, rows)
    assert quality[:2].tolist() == pytest.approx([3 / 4, 1 / 3]) and quality[2].isnan()
    assert gap_shares(quality, 12, 1.0) == [0, 5, 0]  # (3/4 - 1/3) * 12 = 5; no share without rows
    assert gap_shares(quality, 12, 0.0) == [0, 0, 0]
    # gaps 0.4 + 0.7 > 1: scaled to fill the batch, 3.64 and 6.36 rounded by the largest remainder
    assert gap_shares(torch.tensor([0.9, 0.5, 0.2]), 10, 1.0) == [0, 4, 6]


@pytest.mark.parametrize(("within", "coverage"), [("joint", True), ("margin", False)])
def test_gap_split_picks_follow_its_rule(within, coverage, pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx, k = _ctx(pool, model, trainer), 30
    strategy = GapSplit(within=within, coverage=coverage)
    selection = strategy.select(ctx, k)
    picked = selection.indices
    # The rule recomputed with plain loops: quality = agreement on unlabeled rows with the modality x coverage.
    fused, own = ctx.predict().probs, ctx.modality_probs()
    labeled, present = ctx.labeled.tolist(), pool.mask.tolist()
    quality = []
    for m in range(2):
        rows = [i for i in range(len(pool)) if present[i][m] and not labeled[i]]
        agree = sum(int(own[i, m].argmax() == fused[i].argmax()) for i in rows) / len(rows)
        covered = sum(present[i][m] for i in range(len(pool)) if labeled[i]) / sum(labeled)
        quality.append(agree * (covered if coverage else 1.0))
    weak = int(quality[1] < quality[0])
    share = round(abs(quality[0] - quality[1]) * k)
    assert share > 0 and selection.statistics[f"query/share/{pool.modalities[weak]}"] == share / k

    def margin(p):
        top = sorted(p.tolist(), reverse=True)
        return top[0] - top[1]
    free = [i for i in range(len(pool)) if not labeled[i]]
    for_weak = sorted((i for i in free if present[i][weak]),
                      key=lambda i: margin(own[i, weak]) + (margin(fused[i]) if within == "joint" else 0.0))
    rest = sorted(set(free) - set(for_weak[:share]), key=lambda i: margin(fused[i]))
    assert set(picked.tolist()) == set(for_weak[:share]) | set(rest[:k - share])
    # Without a share it is fused margin sampling, pick for pick.
    margin_picks = Margin().select(_ctx(pool, model, trainer), k).indices
    assert torch.equal(GapSplit(scale=0.0).select(_ctx(pool, model, trainer), k).indices, margin_picks)


def test_bmmal_contributions_match_brute_force_masked_evaluation(pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx = _ctx(pool, model, trainer)
    phi = modality_contributions(ctx)  # (N, 2)
    full = trainer.predict(model, pool).probs
    y_hat = full.argmax(1)
    for row in [0, 5, 17, int((~pool.mask[:, 1]).nonzero()[0])]:
        def v(present, row=row):
            mask = pool.mask[row : row + 1] & torch.tensor([present])
            with torch.no_grad():
                out = model({m: x[row : row + 1] for m, x in pool.x.items()}, mask)
            return out.logits.softmax(1)[0, y_hat[row]].item()
        game = {(): v([False, False]), (0,): v([True, False]), (1,): v([False, True]), (0, 1): v([True, True])}
        assert phi[row].tolist() == pytest.approx(shapley_values(game, 2), abs=1e-5)
    assert (phi[~pool.mask[:, 1], 1].abs() < 1e-6).all()  # a missing modality contributes nothing
    # Shares of |phi|: (5/7, 2/7) -> the weaker gets 1 - 3/7; (1/4, 3/4); equal; (3/4, 1/4) from a negative phi;
    # no contribution at all -> 1.
    w = contribution_weights(torch.tensor([[0.5, 0.2], [0.1, 0.3], [0.4, 0.4], [0.6, -0.2], [0.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[1.0, 4 / 7], [0.5, 1.0], [1.0, 1.0], [1.0, 0.5], [1.0, 1.0]]))


def test_deepfool_on_a_linear_model_finds_the_distance_to_the_boundary():
    torch.manual_seed(0)
    shapes = {"a": (3,), "b": (2,)}
    model = MultimodalClassifier(shapes, 3, MLPEncoder, functools.partial(EarlyFusion, head_hidden_layers=0)).eval()
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(50, 3, generator=g), "b": torch.randn(50, 2, generator=g)}
    mask = torch.ones(50, 2, dtype=torch.bool)
    mask[:10, 1] = False
    norms = DeepFool(max_iter=1, overshoot=0.0)._perturbation_norm(model, x, mask)
    # Linear logits W [x_a, x_b, mask] + c: the distance to the boundary with class k is
    # |f_k - f_y| / ||w_k - w_y|| over the present inputs only.
    weight = model.fusion.head[-1].weight  # (C, 3 + 2 + 2)
    with torch.no_grad():
        logits = model(x, mask).logits
    y = logits.argmax(1)
    for i in range(50):
        cols = list(range(3)) + ([3, 4] if mask[i, 1] else [])
        dist = min(abs(logits[i, k] - logits[i, y[i]]).item() / (weight[k, cols] - weight[y[i], cols]).norm().item()
                   for k in range(3) if k != y[i])
        assert norms[i].item() == pytest.approx(dist, rel=1e-3, abs=1e-3)
    x_flipped = DeepFool(max_iter=10)._perturbation_norm(model, x, mask)
    assert (x_flipped >= norms - 1e-4).all()


@pytest.mark.parametrize("query", ["modality_entropy", "disagreement", "gap_split"])
def test_modality_strategies_need_late_fusion_or_aux_heads(query):
    cfg = compose_config([*TINY, f"query={query}"])
    data = instantiate(cfg.dataset, _partial_=True, _convert_="all")(pitfall=instantiate(cfg.pitfall, _convert_="all"))

    def build(cfg):
        return instantiate(cfg.model, _convert_="all")(shapes=data.shapes, num_classes=4,
                                                       fusion=instantiate(cfg.fusion))
    with pytest.raises(ConfigError, match="use fusion=late or model.aux_heads=true"):
        check_strategy(cfg, instantiate(cfg.query), build(cfg))
    for fix in (["fusion=late"], ["model.aux_heads=true"]):
        ok = compose_config([*TINY, f"query={query}", *fix])
        check_strategy(ok, instantiate(ok.query), build(ok))


def test_bald_needs_dropout():
    cfg = compose_config([*TINY, "query=bald", "model.encoder.dropout=0.0", "fusion.dropout=0.0"])
    model = instantiate(cfg.model, _convert_="all")(shapes={"a": (32,), "b": (32,)}, num_classes=4,
                                                   fusion=instantiate(cfg.fusion))
    with pytest.raises(ConfigError, match="dropout > 0"):
        check_strategy(cfg, instantiate(cfg.query), model)


def test_ensemble_disagreement_reads_the_references_and_scores_where_the_ensemble_knows_more(pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx = _ctx(pool, model, trainer, references)
    probs = ctx.reference_probs()  # (N, M, C): each reference on its modality alone, uniform where it is missing
    assert probs.shape == (len(pool), 2, 4)
    for i, m in enumerate(pool.modalities):
        alone = trainer.predict(references[m], pool.only(i)).probs
        has = pool.mask[:, i]
        assert torch.equal(probs[has, i], alone[has]) and torch.allclose(probs[~has, i], torch.tensor(0.25))
    # The ensemble is the geometric mean of the references a row has, normalised (the mean log-probability that
    # gap/ensemble takes the argmax of): b missing -> a's prediction alone.
    product = probs[:, 0] * torch.where(pool.mask[:, 1:], probs[:, 1], torch.ones_like(probs[:, 1]))
    mean = product ** (1 / (1 + pool.mask[:, 1:].float()))
    assert torch.allclose(ctx.ensemble_probs(), mean / mean.sum(1, keepdim=True), atol=1e-5)
    # By hand: the ensemble sure of class 0 on rows 0 and 1, the fused model agreeing on row 0 only; the ensemble
    # unsure on row 2, where the fused model disagrees: row 1 scores highest, row 0 lowest.
    ctx = _ctx(pool, model, trainer, references)
    fused = torch.full((len(pool), 4), 0.25)
    fused[:3] = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.1, 0.8, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05]])
    ctx._cache[None] = Predictions(fused, fused, [fused, fused], None)
    sure, unsure = torch.tensor([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]), torch.tensor([0.4, 0.2, 0.2, 0.2])
    both = torch.stack([sure, sure, unsure]).log()
    ctx._cache["references"] = torch.cat([torch.stack([both.softmax(1)] * 2, 1),  # a and b agree on rows 0-2
                                          torch.full((len(pool) - 3, 2, 4), 0.25)])
    scores = EnsembleDisagreement().score(ctx)
    assert scores[:3].tolist() == pytest.approx([0.9 * 0.03, 0.9 * 0.9, 0.4 * 0.9], abs=1e-5)
    # Without references (a cycle that trains none) the context says why instead of scoring.
    with pytest.raises(ValueError, match="no unimodal references this cycle"):
        _ctx(pool, model, trainer).reference_probs()


def test_ensemble_badge_is_badge_where_the_ensemble_agrees_and_draws_first_where_it_does_not(pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx = _ctx(pool, model, trainer, references)
    fused = ctx.predict().probs
    ctx._cache["references"] = torch.stack([fused, fused], 1)  # references that agree with the fused model
    assert torch.equal(ctx.ensemble_probs().argmax(1), fused.argmax(1))
    assert torch.equal(EnsembleBadge().select(ctx, 15).indices,
                       Badge().select(_ctx(pool, model, trainer, references), 15).indices)
    # The ensemble names another class than the fused model on one unlabeled row: its gradient embedding is the
    # largest, so it is the first centre (the candidate of largest norm, as in BADGE).
    row = int(ctx.unlabeled[(fused[ctx.unlabeled].max(1).values).argmax()])  # where the fused model is surest
    other = torch.roll(fused, 1, dims=1)
    ctx = _ctx(pool, model, trainer, references)
    ctx._cache["references"] = torch.stack([torch.where(torch.arange(len(pool))[:, None] == row, other, fused)] * 2, 1)
    assert int(EnsembleBadge().select(ctx, 5).indices[0]) == row


def test_pattern_badge_gives_each_presence_pattern_its_share_of_the_disagreements(pool_and_model):
    pool, model, trainer, references = pool_and_model
    fused = _ctx(pool, model, trainer, references).predict().probs
    only_a = ~pool.mask[:, 1]  # the pool's two patterns: a+b, and a alone (b missing on 30 % of rows)
    labeled = _ctx(pool, model, trainer).labeled

    def with_ensemble(disagree: torch.Tensor) -> QueryContext:
        """A context whose references' ensemble names another class than the fused model on ``disagree``."""
        ctx = _ctx(pool, model, trainer, references)
        other = torch.where(disagree[:, None], torch.roll(fused, 1, dims=1), fused)
        ctx._cache["references"] = torch.stack([other, other], 1)
        return ctx

    # They part ways only on rows that lack b: the whole batch comes from those rows.
    ctx = with_ensemble(only_a)
    picked = PatternBadge().select(ctx, 12)
    assert only_a[picked.indices].all() and picked.statistics["query/share/a"] == 1.0
    assert picked.statistics["query/disagreement/a"] == 1.0 and picked.statistics["query/disagreement/a+b"] == 0.0
    # On 3 unlabeled rows of each pattern: half the batch each, BADGE inside each pattern.
    rows = {name: (on & ~labeled).nonzero().squeeze(1)[:3] for name, on in (("a", only_a), ("a+b", ~only_a))}
    disagree = torch.zeros(len(pool), dtype=torch.bool)
    disagree[torch.cat(list(rows.values()))] = True
    picked = PatternBadge().select(with_ensemble(disagree), 10)
    assert (only_a[picked.indices].sum(), (~only_a[picked.indices]).sum()) == (5, 5)
    # No disagreement: BADGE pick for pick.
    agree = with_ensemble(torch.zeros(len(pool), dtype=torch.bool))
    assert torch.equal(PatternBadge().select(agree, 15).indices,
                       Badge().select(_ctx(pool, model, trainer, references), 15).indices)
    # Every row of one pattern (b present everywhere), disagreement or not: BADGE pick for pick.
    whole = dataclasses.replace(pool, mask=torch.ones_like(pool.mask))
    ctx = _ctx(whole, model, trainer, references)
    ctx._cache["references"] = torch.stack([torch.roll(ctx.predict().probs, 1, dims=1)] * 2, 1)  # disagree
    picked = PatternBadge().select(ctx, 15)
    assert picked.statistics == {"query/share/a+b": 1.0, "query/disagreement/a+b": 1.0}
    assert torch.equal(picked.indices, Badge().select(_ctx(whole, model, trainer, references), 15).indices)


def test_split_budget_by_largest_remainders_within_capacity():
    assert split_budget([0, 0], [5, 5], 3) is None
    assert split_budget([3, 1], [10, 10], 8) == [6, 2]
    assert split_budget([3, 1], [2, 10], 8) == [2, 6]  # the full part's surplus goes to the other
    assert split_budget([5, 5, 5], [10, 10, 10], 10) == [4, 3, 3]  # one unit left: the first of equal remainders
    assert split_budget([1, 0, 0], [1, 5, 5], 4) == [1, 2, 1]  # the weighted part full: the rest by room
    assert split_budget([1, 1], [1, 1], 5) == [1, 1]  # never more than there is


def test_deficit_bmmal_scales_each_modality_block_by_its_pool_deficit(pool_and_model):
    pool, model, trainer, references = pool_and_model
    ctx = _ctx(pool, model, trainer, references)
    n, classes = len(pool), 4
    # By hand: with only a present the fused model gives the reference's class 0.5 where the reference gives it
    # 0.9 (deficit 0.4); with only b present it agrees with b's reference (deficit 0).
    sure = torch.tensor([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3]).expand(n, classes)
    half = torch.tensor([0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3]).expand(n, classes)
    ctx._cache["references"] = torch.stack([sure, sure], 1)
    only = [pool.mask & (torch.arange(2) == i) for i in range(2)]
    for mask, probs in zip(only, (half, sure)):
        ctx._cache[mask.numpy().tobytes()] = Predictions(probs, probs, [probs, probs], None)
    assert pool_deficits(ctx).tolist() == pytest.approx([0.4, 0.0], abs=1e-6)
    picked = DeficitBMMAL().select(ctx, 9)
    assert picked.statistics["query/deficit/a"] == pytest.approx(0.4, abs=1e-6)
    pred = ctx.predict()
    scaled = torch.cat([1.4 * pred.embeddings[0], pred.embeddings[1]], dim=1)
    expected = kmeanspp_factored(gradient_factor(pred.probs),
                                 scaled, 9, torch.Generator().manual_seed(0), candidates=~ctx.labeled)
    assert torch.equal(picked.indices, expected)
    # No deficit anywhere: the unscaled per-modality gradient embedding (BMMAL with every weight 1).
    ctx = _ctx(pool, model, trainer, references)
    ctx._cache["references"] = torch.stack([sure, sure], 1)
    for mask in only:
        ctx._cache[mask.numpy().tobytes()] = Predictions(sure, sure, [sure, sure], None)
    assert pool_deficits(ctx).tolist() == [0.0, 0.0]
    pred = ctx.predict()
    unscaled = torch.cat(pred.embeddings, dim=1)
    assert torch.equal(DeficitBMMAL().select(ctx, 9).indices,
                       kmeanspp_factored(gradient_factor(pred.probs),
                                         unscaled, 9, torch.Generator().manual_seed(0), candidates=~ctx.labeled))
