# SPDX-License-Identifier: Apache-2.0
"""Region losses against the reference formulas written out here (spec §2, test 3 and 4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss

from medkd.methods.bcp.losses import dice_ce, region_ce, region_dice, region_loss


def _setup(seed=0, b=3, c=4, shape=(12, 10)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, *shape, generator=g)
    labels = torch.randint(0, c, (b, *shape), generator=g)
    mask = torch.ones(shape)
    mask[2:9, 3:8] = 0
    return logits, labels, mask


def acdc_dice_reference(probs, labels, region, bg_all_ones=False):
    c = probs.shape[1]
    onehot = F.one_hot(labels, c).movedim(-1, 1).float()
    total = 0.0
    for k in range(c):
        r = torch.ones_like(region) if (bg_all_ones and k == 0) else region
        r = r.expand_as(labels).float()
        inter = (probs[:, k] * onehot[:, k] * r).sum()
        y = (onehot[:, k] * onehot[:, k] * r).sum()
        z = (probs[:, k] * probs[:, k] * r).sum()
        total += 1 - (2 * inter + 1e-10) / (z + y + 1e-10)
    return total / c


def la_dice_reference(probs, labels, region):
    n, c = probs.shape[:2]
    onehot = F.one_hot(labels, c).movedim(-1, 1).float()
    r = region.expand_as(labels).float().reshape(n, 1, -1)
    inter = (probs * onehot).reshape(n, c, -1).mul(r).sum(2)
    union = (probs + onehot).reshape(n, c, -1).mul(r).sum(2)
    return 1 - ((2 * inter + 1e-5) / (union + 1e-5)).mean()


@pytest.mark.parametrize("inside", [False, True])
def test_acdc_dice_matches_closed_form(inside):
    logits, labels, mask = _setup()
    region = 1 - mask if inside else mask
    probs = torch.softmax(logits, 1)
    assert float(region_dice(probs, labels, region, "acdc")) == pytest.approx(
        float(acdc_dice_reference(probs, labels, region)), abs=1e-5
    )


def test_la_dice_matches_closed_form():
    logits, labels, mask = _setup(c=2, shape=(8, 6, 5))
    mask = torch.ones(8, 6, 5)
    mask[1:6, 1:5, 0:3] = 0
    probs = torch.softmax(logits, 1)
    assert float(region_dice(probs, labels, mask, "la")) == pytest.approx(
        float(la_dice_reference(probs, labels, mask)), abs=1e-5
    )


def test_prefix_background_bug_switch_reproduces_old_loss():
    logits, labels, mask = _setup(seed=4)
    probs = torch.softmax(logits, 1)
    old = region_dice(probs, labels, mask, "acdc", background_unmasked=True)
    assert float(old) == pytest.approx(float(acdc_dice_reference(probs, labels, mask, bg_all_ones=True)), abs=1e-5)
    assert abs(float(old) - float(region_dice(probs, labels, mask, "acdc"))) > 1e-4


def test_naive_monai_softmax_true_differs():
    logits, labels, mask = _setup(seed=5)
    naive = MaskedDiceLoss(include_background=True, softmax=True, to_onehot_y=True, squared_pred=True, batch=True)
    value = naive(logits, labels[:, None], mask.expand_as(labels)[:, None].float())
    ours = region_dice(torch.softmax(logits, 1), labels, mask, "acdc")
    assert abs(float(value) - float(ours)) > 1e-3


def test_region_ce_is_normalised_by_the_region():
    logits, labels, mask = _setup(seed=6)
    ce = F.cross_entropy(logits, labels, reduction="none")
    expected = (ce * mask).sum() / (mask.expand_as(ce).sum() + 1e-16)
    assert float(region_ce(logits, labels, mask)) == pytest.approx(float(expected), rel=1e-6)
    assert float(region_ce(logits, labels, mask)) != pytest.approx(float((ce * mask).mean()), rel=1e-3)


def test_weights_apply_to_their_regions():
    """alpha multiplies exactly the terms of the region it is given for (test 4)."""
    logits, labels, mask = _setup(seed=7)
    other = torch.randint(0, 4, labels.shape, generator=torch.Generator().manual_seed(9))
    d11, c11 = region_loss(logits, labels, other, mask, w_outside=1.0, w_inside=1.0)
    d10, c10 = region_loss(logits, labels, other, mask, w_outside=1.0, w_inside=0.0)
    d01, c01 = region_loss(logits, labels, other, mask, w_outside=0.0, w_inside=1.0)
    dh, ch = region_loss(logits, labels, other, mask, w_outside=1.0, w_inside=0.5)
    assert float(d11) == pytest.approx(float(d10 + d01), rel=1e-6)
    assert float(dh) == pytest.approx(float(d10 + 0.5 * d01), rel=1e-6)
    assert float(ch) == pytest.approx(float(c10 + 0.5 * c01), rel=1e-6)
    # the inside term sees only the inside labels
    d01b, _ = region_loss(logits, labels * 0, other, mask, w_outside=0.0, w_inside=1.0)
    assert float(d01b) == pytest.approx(float(d01), rel=1e-6)


def test_dice_ce_is_half_sum_and_finite_gradients():
    logits, labels, _ = _setup(seed=8)
    logits.requires_grad_(True)
    loss = dice_ce(logits, labels)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    expected = 0.5 * (acdc_dice_reference(torch.softmax(logits, 1), labels, torch.ones(12, 10)) + F.cross_entropy(logits, labels))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
