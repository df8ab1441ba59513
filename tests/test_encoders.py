"""Encoders built from per-sample shapes: the MLP is unchanged on flat data, a CNN learns images of shape
(C, H, W) next to a flat modality, masking works for any shape, and bad hyperparameters fail clearly."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from sklearn.datasets import load_digits
from torch import nn

from mmal.data import MultimodalData, MultimodalDataset
from mmal.errors import ConfigError
from mmal.log import RunLog, read_jsonl
from mmal.loop import run_active_learning
from mmal.models import MultimodalClassifier
from mmal.models.encoders import ConvEncoder, IdentityEncoder, MLPEncoder, mlp
from mmal.models.fusion import EarlyFusion, IntermediateFusion
from mmal.protocol import ALProtocol
from mmal.training import Trainer


def test_mlp_encoder_on_flat_input_is_the_old_encoder_bit_for_bit():
    torch.manual_seed(0)
    encoder = MLPEncoder((12,), hidden_dim=16, out_dim=8, num_hidden=2, dropout=0.2)
    torch.manual_seed(0)
    reference = nn.Sequential(mlp(12, 16, 8, 2, 0.2), nn.ReLU())  # what MLPEncoder(in_dim=12) built
    assert list(encoder.net.state_dict()) == list(reference.state_dict())
    for (name, p), q in zip(encoder.net.named_parameters(), reference.parameters()):
        assert torch.equal(p, q), name
    x = torch.randn(20, 12)
    torch.manual_seed(1)
    got = encoder(x)  # training mode: dropout draws from the global generator
    torch.manual_seed(1)
    assert torch.equal(got, reference(x))
    assert torch.equal(encoder.eval()(x), reference.eval()(x))
    # An image-shaped modality is flattened first; a leading member dimension (mmal.models.stacked) stays.
    torch.manual_seed(0)
    image = MLPEncoder((1, 3, 4), hidden_dim=16, out_dim=8, num_hidden=2, dropout=0.2).eval()
    assert torch.equal(image(x.view(20, 1, 3, 4)), encoder(x))
    assert torch.equal(image(x.view(1, 20, 1, 3, 4))[0], encoder(x))
    assert encoder.out_dim == 8


def test_identity_encoder_flattens():
    encoder = IdentityEncoder((2, 3, 4))
    x = torch.randn(5, 2, 3, 4)
    assert encoder.out_dim == 24 and torch.equal(encoder(x), x.reshape(5, 24))


def test_conv_encoder_maps_images_of_any_size_to_out_dim():
    for shape in [(1, 8, 8), (3, 5, 7), (2, 32, 32)]:
        encoder = ConvEncoder(shape, channels=(4, 6), out_dim=10)
        out = encoder(torch.rand(3, *shape))
        assert out.shape == (3, 10) and (out >= 0).all()  # ReLU-activated like MLPEncoder
    assert ConvEncoder((1, 8, 8), channels=[2, 2, 2, 2])(torch.rand(2, 1, 8, 8)).shape == (2, 64)  # 8 -> 1 pixel


def _digits(num_pool: int = 400, num_val: int = 100, num_test: int = 500) -> MultimodalDataset:
    """scikit-learn's bundled 8x8 digits as an image modality ``img`` (N, 1, 8, 8) in [0, 1], plus a
    pure-noise modality ``noise`` (N, 8) that carries no label information (a control)."""
    digits = load_digits()
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(digits.target), generator=g)
    img = torch.tensor(digits.images, dtype=torch.float32)[perm, None] / 16
    noise = torch.randn(len(perm), 8, generator=g)
    y = torch.tensor(digits.target)[perm]

    def split(start: int, stop: int) -> MultimodalData:
        return MultimodalData({"img": img[start:stop], "noise": noise[start:stop]},
                              torch.ones(stop - start, 2, dtype=torch.bool), y[start:stop], ("img", "noise"))
    ends = [num_pool, num_pool + num_val, num_pool + num_val + num_test]
    return MultimodalDataset(split(0, ends[0]), split(ends[0], ends[1]), split(ends[1], ends[2]), num_classes=10)


def _digits_model(data: MultimodalDataset, seed: int = 0) -> MultimodalClassifier:
    torch.manual_seed(seed)
    return MultimodalClassifier(data.shapes, data.num_classes, functools.partial(MLPEncoder, out_dim=16),
                                functools.partial(IntermediateFusion, head_hidden=32),
                                encoders={"img": functools.partial(ConvEncoder, channels=(16, 32), out_dim=32)})


@pytest.fixture(scope="module")
def digits_trained():
    data = _digits()
    model = _digits_model(data)
    trainer = Trainer(epochs=40, batch_size=32, lr=5e-3, device="cpu")
    trainer.fit(model, data.pool, torch.arange(300), seed=0)  # a few hundred labeled rows
    return data, model, trainer


def _accuracy(trainer: Trainer, model: MultimodalClassifier, data: MultimodalData) -> float:
    return (trainer.predict(model, data).probs.argmax(1) == data.y).float().mean().item()


def test_dataset_shapes_and_flat_dims():
    data = _digits()
    assert data.shapes == {"img": (1, 8, 8), "noise": (8,)}
    assert data.dims == {"img": 64, "noise": 8}
    model = _digits_model(data)
    assert isinstance(model.encoders[0], ConvEncoder) and isinstance(model.encoders[1], MLPEncoder)
    assert [e.out_dim for e in model.encoders] == [32, 16]


def test_a_cnn_on_digit_images_learns_and_relies_on_the_images(digits_trained):
    data, model, trainer = digits_trained
    acc = _accuracy(trainer, model, data.test)  # measured 0.92 (0.91-0.93 over seeds); chance is 0.1
    assert acc > 0.8
    no_images = data.test.mask.clone()
    no_images[:, 0] = False
    masked = data.test.with_mask(no_images)
    assert (masked.x["img"] == 0).all() and torch.equal(masked.x["noise"], data.test.x["noise"])
    # The other modality is pure noise: without the images the model is at chance (measured 0.08-0.13).
    assert _accuracy(trainer, model, masked) < 0.25


def test_a_masked_image_row_contributes_nothing(digits_trained):
    data, model, _ = digits_trained
    x, mask = dict(data.test.x), data.test.mask.clone()
    mask[::2, 0] = False  # every other image missing
    zeros = dict(x, img=torch.where(mask[:, 0, None, None, None], x["img"], 0.0))
    garbage = dict(x, img=torch.where(mask[:, 0, None, None, None], x["img"], torch.randn_like(x["img"]) * 100))
    with torch.no_grad():
        clean, noisy = model(zeros, mask), model(garbage, mask)
    assert torch.equal(clean.logits, noisy.logits) and torch.equal(clean.fused, noisy.fused)
    assert (clean.embeddings[0][~mask[:, 0]] == 0).all()
    # ... and a present image does matter.
    with torch.no_grad():
        brighter = model(dict(zeros, img=zeros["img"] + 0.5), mask)
    assert not torch.allclose(clean.logits[1::2], brighter.logits[1::2])


def test_with_mask_zeroes_rows_of_any_shape():
    x = {"img": torch.full((4, 1, 2, 2), float("nan")), "flat": torch.ones(4, 3)}
    data = MultimodalData(x, torch.ones(4, 2, dtype=torch.bool), torch.zeros(4, dtype=torch.long), ("img", "flat"))
    mask = torch.tensor([[True, True], [False, True], [True, False], [False, False]])
    out = data.with_mask(mask)
    assert (out.x["img"][[1, 3]] == 0).all() and out.x["img"][[0, 2]].isnan().all()
    assert torch.equal(out.x["flat"], torch.tensor([[1.0] * 3, [1.0] * 3, [0.0] * 3, [0.0] * 3]))


def test_only_one_modality_is_with_mask_without_copying():
    x = {"img": torch.randn(4, 1, 2, 2), "flat": torch.randn(4, 3)}
    mask = torch.tensor([[True, True], [False, True], [True, False], [True, True]])
    x["img"][1] = 0  # the data contract: a missing row holds zeros
    x["flat"][2] = 0
    data = MultimodalData(x, mask, torch.zeros(4, dtype=torch.long), ("img", "flat"))
    for i, m in enumerate(("img", "flat")):
        alone = data.only(i)
        keep = torch.zeros_like(mask)
        keep[:, i] = mask[:, i]
        expected = data.with_mask(keep)
        assert torch.equal(alone.mask, expected.mask)
        assert all(torch.equal(alone.x[k], expected.x[k]) for k in x)
        assert alone.x[m].data_ptr() == x[m].data_ptr()  # the modality's own tensor, shared
        other = alone.x["flat" if m == "img" else "img"]
        assert set(other.stride()) == {0}  # the others: a broadcast zero, no memory


def test_early_fusion_takes_flattened_images():
    shapes = {"img": (1, 4, 4), "flat": (3,)}
    torch.manual_seed(0)
    model = MultimodalClassifier(shapes, 5, MLPEncoder, functools.partial(EarlyFusion),
                                 encoders={"img": ConvEncoder})  # early fusion has no encoders
    assert [e.out_dim for e in model.encoders] == [16, 3]
    out = model({"img": torch.rand(6, 1, 4, 4), "flat": torch.rand(6, 3)}, torch.ones(6, 2, dtype=torch.bool))
    assert out.logits.shape == (6, 5)


SHAPES = {"img": (1, 8, 8), "flat": (8,)}


def _build(encoder=MLPEncoder, **encoders):
    return MultimodalClassifier(SHAPES, 10, encoder, functools.partial(IntermediateFusion), encoders=encoders)


@pytest.mark.parametrize(("encoders", "encoder", "message"), [
    ({"img": functools.partial(ConvEncoder, channels=[])}, MLPEncoder,
     "model.encoders.img.channels=[]: a non-empty list of integers >= 1"),
    ({"img": functools.partial(ConvEncoder, channels=[8, 0])}, MLPEncoder, "model.encoders.img.channels=[8, 0]: "),
    ({"img": functools.partial(ConvEncoder, channels=[4] * 5)}, MLPEncoder,
     "model.encoders.img.channels=[4, 4, 4, 4, 4]: at most 4 entries for 8x8 images"),
    ({"img": functools.partial(ConvEncoder, dropout=-0.1)}, MLPEncoder, "model.encoders.img.dropout=-0.1: "),
    ({"img": functools.partial(ConvEncoder, out_dim=0)}, MLPEncoder, "model.encoders.img.out_dim=0: an integer >= 1"),
    ({"flat": ConvEncoder}, MLPEncoder, "model.encoders.flat.in_shape=(8,): ConvEncoder takes image samples"),
    ({}, functools.partial(MLPEncoder, dropout=1.5), "model.encoder.dropout=1.5: a number >= 0 and < 1"),
    ({}, functools.partial(MLPEncoder, dropout=1), "model.encoder.dropout=1: a number >= 0 and < 1"),
    ({}, functools.partial(MLPEncoder, hidden_dim=0), "model.encoder.hidden_dim=0: an integer >= 1"),
    ({}, functools.partial(MLPEncoder, num_hidden=-1), "model.encoder.num_hidden=-1: an integer >= 0"),
    ({}, functools.partial(MLPEncoder, out_dim=2.5), "model.encoder.out_dim=2.5: an integer >= 1"),
    ({}, ConvEncoder, "model.encoder.in_shape=(8,): ConvEncoder takes image samples"),  # the default, for all
    ({"txt": ConvEncoder}, MLPEncoder, "model.encoders=['txt']: keys must be modalities of the data: ['img', 'flat']"),
    ({"img": {"channels": [8]}}, MLPEncoder, "model.encoders.img={'channels': [8]}: an encoder factory"),
])
def test_bad_encoder_settings_name_their_key(encoders, encoder, message):
    with pytest.raises(ConfigError) as err:
        _build(encoder, **encoders)
    assert str(err.value).startswith(message)
    # One clean line: an encoder's own error is re-raised with the prefix, without its chained traceback.
    assert err.value.__cause__ is None and (err.value.__context__ is None or err.value.__suppress_context__)


def test_a_cnn_dropout_counts_for_mc_dropout():
    def build(conv_dropout: float) -> MultimodalClassifier:
        return MultimodalClassifier(SHAPES, 10, functools.partial(MLPEncoder, dropout=0.0),
                                    functools.partial(IntermediateFusion, dropout=0.0),
                                    encoders={"img": functools.partial(ConvEncoder, dropout=conv_dropout)})
    assert "dropout" in build(0.1).capabilities
    assert "dropout" not in build(0.0).capabilities


@pytest.mark.parametrize("strategy", ["deepfool", "bmmal", "mm_coreset", "gap_split"])
def test_an_image_modality_runs_through_the_whole_al_loop(strategy, tmp_path):
    # Strategies that touch the inputs (DeepFool perturbs them) or each modality's embedding, with the
    # image modality missing for some samples; the loop itself refuses a repeated or labeled pick.
    data = _digits(num_pool=200, num_val=100, num_test=100)
    missing = torch.arange(len(data.pool)) % 4 == 0  # every fourth pool image is missing
    data = MultimodalDataset(data.pool.with_mask(torch.stack([~missing, torch.ones_like(missing)], 1)), data.val,
                             data.test, num_classes=10)

    def build():
        torch.manual_seed(0)
        return MultimodalClassifier(data.shapes, 10, functools.partial(MLPEncoder, out_dim=16),
                                    functools.partial(IntermediateFusion, head_hidden=32), aux_heads=True,
                                    encoders={"img": functools.partial(ConvEncoder, out_dim=16)})
    query = instantiate(compose_config([f"query={strategy}"]).query, _convert_="all")
    summary = run_active_learning(data, build, Trainer(epochs=3, device="cpu"), query, RunLog(tmp_path),
                                  ALProtocol(initial_size=20, query_size=10, cycles=2), seed=0)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["n_labeled"] for r in records] == [20, 30, 40]
    assert 0 <= summary["final/acc"] <= 1 and records[0]["query/missing_frac/img"] <= 1
