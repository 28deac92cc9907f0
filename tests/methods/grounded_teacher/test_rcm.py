# SPDX-License-Identifier: Apache-2.0
"""The relational context module: confusion schedules, SAL weights by hand, SA limits, K = 1 identities, state."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from medkd.methods.grounded_teacher.rcm import (
    ConfusionEMA,
    CropBank,
    RelationalContext,
    confusion_alpha,
    sal_anchor_weights,
    sal_matrix,
    semantic_augment,
)


def _cube(frac: float) -> float:
    return 0.5 + 0.49 * frac**3


@pytest.mark.parametrize(
    ("t", "burn_in", "target", "expected"),
    [
        (0, 100, False, 0.5),
        (25, 100, False, _cube(0.5)),
        (49, 100, False, _cube(49 / 50)),
        (50, 100, False, 0.99),
        (5000, 100, False, 0.99),
        (40, 100, True, 0.5),  # the target matrix starts at B
        (100, 100, True, 0.5),
        (125, 100, True, _cube(0.5)),
        (149, 100, True, _cube(49 / 50)),
        (150, 100, True, 0.99),
        (3, 0, False, 0.99),
    ],
)
def test_confusion_alpha_schedule(t: int, burn_in: int, target: bool, expected: float) -> None:
    assert confusion_alpha(t, burn_in, target=target) == pytest.approx(expected)


def test_confusion_ema_hand_built_pairs() -> None:
    ema = ConfusionEMA(3)
    # iteration 0 (alpha 0.5): row 0 sees 0->0 three times and 0->1 once; row 2 sees 2->0 once; background dropped
    pairs = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 1], [2, 0], [1, -1], [-1, 2]])
    ema.update(pairs, confusion_alpha(0, 100, target=False))
    expected = torch.tensor([[0.375, 0.125, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    torch.testing.assert_close(ema.matrix, expected)
    # iteration 25 (alpha 0.56125): row 0 sees 0->2 twice; rows 1 and 2 untouched
    alpha = confusion_alpha(25, 100, target=False)
    ema.update(torch.tensor([[0, 2], [0, 2]]), alpha)
    expected[0] = expected[0] * alpha + torch.tensor([0.0, 0.0, 1.0]) * (1 - alpha)
    torch.testing.assert_close(ema.matrix, expected)
    ema.update(torch.zeros(0, 2, dtype=torch.long), 0.5)  # nothing to fold in
    torch.testing.assert_close(ema.matrix, expected)


def test_sal_matrix_and_weights_by_hand() -> None:
    c = torch.tensor([[0.5, 0.3, 0.0], [0.2, 0.0, 0.8], [0.1, 0.2, 0.0]])
    w = sal_matrix(c)
    # step 1: zero diagonals -> 1/3, other zeros -> 1e-3
    # step 2: row 0 sums to 0.801 and row 2 to 0.633 -> rescaled; row 1 sums to 1.333 -> kept
    expected = torch.tensor(
        [
            [1 - math.sqrt(0.5), math.sqrt(0.3 / 0.5), math.sqrt(1e-3 / 0.5)],
            [0.2, 1 / 3, 0.8],
            [math.sqrt(0.1 * 3), math.sqrt(0.2 * 3), 1 - math.sqrt(2 / 3)],
        ]
    )
    torch.testing.assert_close(w, expected)
    fn = sal_anchor_weights(w)
    g = torch.tensor([0, 0, 1, 2, 1])
    p = torch.tensor([0, 1, 2, 2, -1])
    raw = torch.tensor([1 - expected[0, 0], expected[0, 1], expected[1, 2], 1 - expected[2, 2]])
    fg = (raw / raw.mean() + 1) / 2
    torch.testing.assert_close(fn(g, p), torch.cat([fg, torch.ones(1)]))
    # all-background anchors keep weight 1
    torch.testing.assert_close(fn(torch.tensor([0, 1]), torch.tensor([-1, -1])), torch.ones(2))


def _mix_fixture(k: int = 3) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], CropBank]:
    images = torch.zeros(4, 1, 32, 32)
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [16.0, 16.0, 30.0, 28.0]])
    targets = [{"boxes": boxes.clone(), "labels": torch.tensor([0, 1])} for _ in range(4)]
    bank = CropBank(k)
    bank.add(torch.ones(1, 1, 32, 32), [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]] * 3),
                                          "labels": torch.tensor([0, 1, 2])}])
    return images, targets, bank


# class 0 is a majority class (0.9 > mean diagonal 0.6), confused with class 1; class 1 is a minority class
_C3 = torch.tensor([[0.9, 0.1, 0.0], [0.3, 0.4, 0.3], [0.0, 0.5, 0.5]])


@pytest.mark.parametrize("seed", range(12))
def test_semantic_augment_lambda_limits_and_soft_targets(seed: int) -> None:
    images, targets, bank = _mix_fixture()
    before = images.clone()
    out, new = semantic_augment(images, targets, _C3, bank, torch.Generator().manual_seed(seed),
                                target_domain=False, skip_image_prob=0.0)
    torch.testing.assert_close(images, before)  # inputs untouched
    assert targets[0]["labels"].tolist() == [0, 1] and "soft_labels" not in targets[0]
    for b, tg in enumerate(new):
        soft = tg["soft_labels"]
        assert soft.shape == (2, 3)
        torch.testing.assert_close(soft.sum(dim=1), torch.ones(2))
        for i, (box, g) in enumerate(zip(tg["boxes"].long().tolist(), [0, 1])):
            patch = out[b, 0, box[1]:box[3], box[0]:box[2]]
            lam = float(soft[i, g])
            # the crop is all ones and the image zeros: the patch is (1 - lambda) everywhere
            torch.testing.assert_close(patch, torch.full_like(patch, 1 - lam))
            if lam < 1:
                if g == 0:  # majority: min(lambda, 1 - lambda), label = the crop's class
                    assert lam <= 0.5 and int(tg["labels"][i]) == 1 and float(soft[i, 1]) == pytest.approx(1 - lam)
                else:  # minority: max(lambda, 1 - lambda), label kept
                    assert lam >= 0.5 and int(tg["labels"][i]) == 1


def test_semantic_augment_mixes_sometimes_and_respects_target_minority_rule() -> None:
    mixed_source, mixed_minority_target = 0, 0
    for seed in range(30):
        images, targets, bank = _mix_fixture()
        _, new = semantic_augment(images, targets, _C3, bank, torch.Generator().manual_seed(seed),
                                  target_domain=False, skip_image_prob=0.0)
        mixed_source += sum(int((tg["soft_labels"].max(dim=1).values < 1).sum()) for tg in new)
        out_t, new_t = semantic_augment(images, targets, _C3, bank, torch.Generator().manual_seed(seed),
                                        target_domain=True, skip_image_prob=0.0)
        mixed_minority_target += sum(int(tg["soft_labels"][1].max() < 1) for tg in new_t)
        assert float(out_t[:, 0, 16:28, 16:30].abs().sum()) == 0.0  # the minority box is never touched
    assert mixed_source > 0
    assert mixed_minority_target == 0


def test_semantic_augment_skips_small_crops_and_skipped_images() -> None:
    images, targets, _ = _mix_fixture()
    small = CropBank(3)
    small.add(torch.ones(1, 1, 32, 32), [{"boxes": torch.tensor([[0.0, 0.0, 3.0, 3.0]] * 3),
                                           "labels": torch.tensor([0, 1, 2])}])
    for seed in range(10):
        out, new = semantic_augment(images, targets, _C3, small, torch.Generator().manual_seed(seed),
                                    target_domain=False, skip_image_prob=0.0)
        assert float(out.abs().sum()) == 0.0
        _, _, bank = _mix_fixture()
        out, _ = semantic_augment(images, targets, _C3, bank, torch.Generator().manual_seed(seed),
                                  target_domain=False, skip_image_prob=1.0)
        assert float(out.abs().sum()) == 0.0


def test_crop_bank_keeps_last_50() -> None:
    bank = CropBank(3)
    for step in range(40):
        image = torch.full((1, 1, 16, 16), float(step))
        bank.add(image, [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 3), "labels": torch.tensor([0, 0, 2])}])
    assert len(bank[0]) == 50 and len(bank[1]) == 0 and len(bank[2]) == 40
    assert float(bank[0][-1].max()) == 39.0 and float(bank[0][0].max()) == 15.0  # oldest dropped first
    assert tuple(bank[0][0].shape) == (1, 8, 8)


def test_identity_at_one_class(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="medkd.methods.grounded_teacher.rcm"):
        rc = RelationalContext(1, burn_in=10)
    assert sum("K = 1" in r.getMessage() for r in caplog.records) == 1
    assert not rc.enabled and rc.anchor_weights(50, target=True) is None
    images = torch.rand(2, 1, 16, 16)
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([0])}] * 2
    rc.update(torch.tensor([[0, 0]]), 1, target=False)
    rc.save_crops(images, targets, target=False)
    out, new = rc.augment(images, targets, 20, torch.Generator().manual_seed(0), target=True)
    assert out is images and [t["labels"].tolist() for t in new] == [[0], [0]]
    # and the pieces themselves are identities on a 1 x 1 matrix with a full bank
    bank = CropBank(1)
    bank.add(torch.ones(1, 1, 16, 16), [{"boxes": torch.tensor([[0.0, 0.0, 12.0, 12.0]]), "labels": torch.tensor([0])}])
    for seed in range(5):
        out, new = semantic_augment(images, targets, torch.tensor([[0.7]]), bank, torch.Generator().manual_seed(seed),
                                    target_domain=False, skip_image_prob=0.0)
        torch.testing.assert_close(out, images)
        assert new[0]["soft_labels"].tolist() == [[1.0]]
    weights = sal_anchor_weights(sal_matrix(torch.tensor([[0.7]])))(torch.zeros(5, dtype=torch.long),
                                                                     torch.tensor([0, 0, -1, 0, -1]))
    torch.testing.assert_close(weights, torch.ones(5))


def test_relational_context_schedules() -> None:
    rc = RelationalContext(2, burn_in=100)
    rc.update(torch.tensor([[0, 0], [1, 0]]), 0, target=False)
    rc.update(torch.tensor([[0, 1], [1, 1]]), 100, target=True)
    src, tgt = rc.source.matrix, rc.target.matrix
    torch.testing.assert_close(rc.sa_matrix(500, target=False), src)
    torch.testing.assert_close(rc.sa_matrix(100, target=True), src)
    torch.testing.assert_close(rc.sa_matrix(600, target=True), 0.5 * src + 0.5 * tgt)
    torch.testing.assert_close(rc.sa_matrix(1100, target=True), tgt)
    torch.testing.assert_close(rc.sal_confusion(499, target=True), src)
    torch.testing.assert_close(rc.sal_confusion(500, target=True), tgt)
    g, p = torch.tensor([0, 1]), torch.tensor([0, 0])
    torch.testing.assert_close(rc.anchor_weights(499, target=True)(g, p),
                               sal_anchor_weights(sal_matrix(src))(g, p))
    torch.testing.assert_close(rc.anchor_weights(500, target=True)(g, p),
                               sal_anchor_weights(sal_matrix(tgt))(g, p))


def test_state_dict_round_trip() -> None:
    rc = RelationalContext(3, burn_in=4, skip_image_prob=0.0)
    images, targets, _ = _mix_fixture()
    for t in range(8):
        rc.update(torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1], [2, 1]]), t, target=False)
        rc.save_crops(torch.ones_like(images) * t, targets, target=False)
        if t >= 4:
            rc.update(torch.tensor([[0, 0], [1, 2]]), t, target=True)
            rc.save_crops(torch.ones_like(images), targets, target=True)
    state = rc.state_dict()
    other = RelationalContext(3, burn_in=4, skip_image_prob=0.0)
    other.load_state_dict(state)
    torch.testing.assert_close(other.source.matrix, rc.source.matrix)
    torch.testing.assert_close(other.target.matrix, rc.target.matrix)
    assert [len(other.source_bank[c]) for c in range(3)] == [len(rc.source_bank[c]) for c in range(3)]
    a = rc.augment(images, targets, 9, torch.Generator().manual_seed(3), target=False)
    b = other.augment(images, targets, 9, torch.Generator().manual_seed(3), target=False)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1][0]["soft_labels"], b[1][0]["soft_labels"])
    with pytest.raises(ValueError, match="K = 3"):
        RelationalContext(2, burn_in=4).load_state_dict(state)


def test_sal_matrix_zero_row() -> None:
    w = sal_matrix(torch.tensor([[0.75, 0.25], [0.0, 0.0]]))
    # the zero row becomes 1/2 everywhere (sum 1 -> rescaled): sqrt(0.5 / 0.5) off the diagonal, 1 - sqrt(0.5) on it
    torch.testing.assert_close(w[1], torch.tensor([1.0, 1 - math.sqrt(0.5)]))
