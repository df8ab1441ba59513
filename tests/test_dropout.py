"""Counter-based dropout masks (mmal.models.dropout): exact integer hashing, the keep probability, masks that
change per call and per member, and a member's masks the same alone and in a stack."""

from __future__ import annotations

import torch

from mmal.hooks import drop_modalities
from mmal.models.dropout import CounterDropout, MaskKeys, counter_dropout, hash32, hash32_int, threshold


def test_the_tensor_hash_is_lowbias32_bit_for_bit():
    # lowbias32 on unsigned Python ints, as https://nullprogram.com/blog/2018/07/31/ publishes it
    def lowbias32(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 123456789, 0xDEADBEEF]
    values += torch.randint(0, 2 ** 32, (2000,), generator=torch.Generator().manual_seed(0)).tolist()
    signed = [v - 2 ** 32 if v >= 2 ** 31 else v for v in values]
    ours = hash32(torch.tensor(signed, dtype=torch.int32)).tolist()
    assert [h % 2 ** 32 for h in ours] == [lowbias32(v) for v in values]
    assert [hash32_int(v) for v in values] == ours


def test_masks_keep_the_asked_share_and_differ_per_call_and_member():
    keys = MaskKeys([11, 12], "dropout")
    masks = torch.stack([keys.keep((64, 64), 0.9, counter) for counter in range(20)])  # (20, 2, 64, 64)
    share = masks.float().mean().item()
    n = masks.numel()
    assert abs(share - 0.9) < 4 * (0.9 * 0.1 / n) ** 0.5  # four binomial standard errors
    assert threshold(0.9) == round(0.9 * 2 ** 32) - 2 ** 31 and threshold(1.0) == 2 ** 31
    dropped = (~masks).float()
    # consecutive calls, the two members, and neighbouring elements are uncorrelated: P(both dropped) = 0.01
    assert abs((dropped[1:] * dropped[:-1]).mean().item() - 0.01) < 0.003
    assert abs((dropped[:, 0] * dropped[:, 1]).mean().item() - 0.01) < 0.003
    assert abs((dropped[..., 1:] * dropped[..., :-1]).mean().item() - 0.01) < 0.003
    assert torch.equal(masks, torch.stack([MaskKeys([11, 12], "dropout").keep((64, 64), 0.9, c) for c in range(20)]))
    assert not torch.equal(masks[:, 0], torch.stack([MaskKeys([11], "modality_dropout").keep((64, 64), 0.9, c)[0]
                                                     for c in range(20)]))  # another stream, other masks


def test_a_members_dropout_masks_are_the_same_alone_and_in_a_stack():
    p, seeds = 0.25, [5, 7, 9]
    stacked = CounterDropout(p, MaskKeys(seeds, "dropout"), layer=1, stacked=True)
    alone = CounterDropout(p, MaskKeys([7], "dropout"), layer=1, stacked=False)
    other_layer = CounterDropout(p, MaskKeys([7], "dropout"), layer=2, stacked=False)
    for rows in (16, 16, 10):  # two full batches and a last short one
        x = torch.rand(3, rows, 32) + 0.5
        together, own = stacked(x), alone(x[1])
        assert torch.equal(together[1], own)
        assert torch.equal(own, x[1] * (own != 0).float().div(1 - p))  # kept elements scaled as nn.Dropout scales
        assert not torch.equal(together[0].div(x[0]) > 0, own.div(x[1]) > 0)  # the members differ
        assert not torch.equal(other_layer(x[1]), own)  # and so do the layers
    stacked.eval()
    assert torch.equal(stacked(x), x)  # inference: no dropout


def test_counter_dropout_swaps_the_layers_for_training_and_puts_them_back():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    original = model[1]
    with counter_dropout(model, 3):
        assert isinstance(model[1], CounterDropout) and model[1].p == 0.5
        first = model(torch.ones(6, 4))
        assert not torch.equal(first, model(torch.ones(6, 4)))  # the next call, another mask
    assert model[1] is original
    with counter_dropout(model, 3):  # a fresh stream: the same masks from the start
        assert torch.equal(model(torch.ones(6, 4)), first)


def test_modality_dropout_keeps_a_modality_per_row_and_drops_at_its_rate():
    mask = torch.ones(4000, 2, dtype=torch.bool)
    mask[:1000, 1] = False  # a quarter of the rows have a only
    kept = MaskKeys([0], "modality_dropout").keep(mask.shape, 0.7, 0)[0]
    out = drop_modalities(mask, kept)
    assert out.any(1).all() and not (out & ~mask).any()
    assert out[:1000, 0].all()  # a row's only modality is never dropped
    both = out[1000:]
    # a row of both: each kept w.p. 0.7, the pair (neither) falls back to both: P(a kept) = 0.7 + 0.09
    assert abs(both[:, 0].float().mean().item() - 0.79) < 0.03
