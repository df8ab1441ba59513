"""Every fusion respects the missing-modality mask; fusions built from the real config files."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

FUSIONS = ["early", "intermediate", "late", "mean", "sum", "gated"]
DIMS = {"a": 12, "b": 7, "c": 9}
SHAPES = {m: (d,) for m, d in DIMS.items()}


def _model(fusion: str, aux_heads: bool = True):
    cfg = compose_config([f"fusion={fusion}", f"model.aux_heads={aux_heads}"])
    torch.manual_seed(0)
    model = instantiate(cfg.model, _convert_="all")(shapes=SHAPES, num_classes=5, fusion=instantiate(cfg.fusion))
    return model.eval()


def _batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, 3, generator=g) > 0.4
    mask[0] = False  # a sample with every modality missing
    mask[1] = True
    x = {m: torch.randn(n, d, generator=g) * mask[:, i, None] for i, (m, d) in enumerate(DIMS.items())}
    return x, mask


@pytest.mark.parametrize("fusion", FUSIONS)
def test_missing_modality_contributes_nothing(fusion):
    model = _model(fusion)
    x, mask = _batch()
    noisy = {m: torch.where(mask[:, i, None], v, torch.randn_like(v) * 100) for i, (m, v) in enumerate(x.items())}
    with torch.no_grad():
        clean, garbage = model(x, mask), model(noisy, mask)
    assert torch.equal(clean.logits, garbage.logits)
    assert torch.equal(clean.fused, garbage.fused)
    assert torch.equal(clean.aux_logits, garbage.aux_logits)
    assert torch.isfinite(clean.logits).all()
    for i, emb in enumerate(clean.embeddings):
        assert (emb[~mask[:, i]] == 0).all()
    # The inputs do matter where present: changing a present modality changes the logits.
    changed = dict(x, a=x["a"] + 1.0)
    with torch.no_grad():
        assert not torch.allclose(model(changed, mask).logits[mask[:, 0]], clean.logits[mask[:, 0]])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_outputs_have_the_documented_shapes(fusion):
    model = _model(fusion)
    x, mask = _batch(n=10)
    out = model(x, mask)
    assert out.logits.shape == (10, 5)
    assert out.aux_logits.shape == (10, 3, 5)
    assert out.fused.shape[0] == 10
    assert [e.shape[0] for e in out.embeddings] == [10, 10, 10]
    expected_dims = list(DIMS.values()) if fusion == "early" else [64, 64, 64]
    assert [e.shape[1] for e in out.embeddings] == expected_dims


def test_late_fusion_is_the_mean_of_present_modalities_logits():
    model = _model("late", aux_heads=False)
    x, mask = _batch(n=32)
    with torch.no_grad():
        out = model(x, mask)
        per = torch.stack([head(e) for head, e in zip(model.fusion.heads, out.embeddings)], dim=1)  # (B, M, C)
    for b in range(2, 32):
        present = mask[b]
        expected = per[b, present].mean(0) if present.any() else torch.zeros(5)
        assert torch.allclose(out.logits[b], expected, atol=1e-6)
    assert torch.equal(out.logits[0], torch.zeros(5))


def test_gated_weights_are_zero_exactly_on_missing_modalities():
    model = _model("gated")
    x, mask = _batch()
    with torch.no_grad():
        model(x, mask)
    w = model.fusion.last_weights
    assert (w[~mask] == 0).all()
    assert torch.allclose(w[mask.any(1)].sum(1), torch.ones(int(mask.any(1).sum())))


def test_unequal_embedding_sizes_are_refused_by_mean_fusion():
    from mmal.models import MultimodalClassifier
    from mmal.models.encoders import MLPEncoder
    from mmal.models.fusion import MeanFusion

    def encoder(in_shape):
        return MLPEncoder(in_shape, out_dim=in_shape[0])  # embedding size follows the input size
    with pytest.raises(ValueError, match="equal embedding sizes"):
        MultimodalClassifier(SHAPES, 5, encoder, functools.partial(MeanFusion))
