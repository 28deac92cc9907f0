# SPDX-License-Identifier: Apache-2.0
"""Property tests of ``kd``, ``dkd``, ``ce`` and ``dice`` (spec ``distillation_plugins.md`` §3.1-3.2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medkd.distill import create_loss
from medkd.distill.terms import TermSpec, WeightedTerms


def _logits(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _kd(s: torch.Tensor, t: torch.Tensor, T: float = 4.0, **batch) -> torch.Tensor:
    return create_loss("kd", temperature=T)({"logits": s}, {"logits": t}, batch)["kd"]


def test_kd_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    s = _logits(8, 5)
    assert float(_kd(s, s.clone())) == pytest.approx(0.0, abs=1e-7)
    assert float(_kd(s, _logits(8, 5, seed=1))) > 0


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_gradient_is_T_times_ps_minus_pt_over_N(T: float) -> None:
    s, t = _logits(6, 4).requires_grad_(True), _logits(6, 4, seed=1)
    _kd(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t / T, 1)) / s.shape[0]
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_kd_high_temperature_limit_is_centred_squared_logit_difference() -> None:
    s, t = _logits(5, 6).double(), _logits(5, 6, seed=1).double()
    T = 1e4
    d = s - t
    limit = ((d - d.mean(1, keepdim=True)) ** 2).sum(1).mean() / (2 * s.shape[1])
    assert float(_kd(s, t, T)) == pytest.approx(float(limit), rel=1e-3)


def test_kd_weight_zero_leaves_cross_entropy() -> None:
    s, t, y = _logits(6, 3), _logits(6, 3, seed=1), torch.tensor([0, 1, 2, 0, 1, 2])
    terms = WeightedTerms([TermSpec(name="ce", plugin="ce"), TermSpec(name="kd", plugin="kd", weight=0.0)])
    total, _ = terms({"logits": s}, {"logits": t}, {"label": y})
    assert float(total) == pytest.approx(float(F.cross_entropy(s, y)))


@pytest.mark.parametrize("spatial", [(4, 5), (3, 4, 5)])
def test_kd_dense_ignores_voxels_and_resizes_the_teacher(spatial: tuple[int, ...]) -> None:
    s, t = _logits(2, 3, *spatial), _logits(2, 3, *spatial, seed=1)
    label = torch.randint(0, 3, (2, *spatial), generator=torch.Generator().manual_seed(2))
    label.view(-1)[::3] = -100
    keep = label.reshape(-1) != -100
    rows_s, rows_t = s.movedim(1, -1).reshape(-1, 3)[keep], t.movedim(1, -1).reshape(-1, 3)[keep]
    assert float(_kd(s, t, label=label)) == pytest.approx(float(_kd(rows_s, rows_t)), rel=1e-6)
    big = F.interpolate(t, scale_factor=2, mode="bilinear" if len(spatial) == 2 else "trilinear")
    assert torch.isfinite(_kd(s, big, label=label))
    changed = s.clone()
    changed.movedim(1, -1).reshape(-1, 3)[~keep] += 5.0  # ignored voxels do not count
    assert float(_kd(changed, t, label=label)) == pytest.approx(float(_kd(s, t, label=label)), rel=1e-6)


def _mdistiller_dkd(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, T: float):
    """mdistiller's ``dkd_loss``, written out with its masks (``size_average=False`` then ``/ batch``)."""
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    other = ~gt
    ps, pt = F.softmax(s / T, 1), F.softmax(t / T, 1)

    def cat_mask(p):
        return torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], 1)

    bs, bt = cat_mask(ps), cat_mask(pt)
    tckd = F.kl_div(torch.log(bs), bt, reduction="sum") * T**2 / y.shape[0]
    pt2 = F.softmax(t / T - 1000.0 * gt, dim=1)
    log_ps2 = F.log_softmax(s / T - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_ps2, pt2, reduction="sum") * T**2 / y.shape[0]
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize(("alpha", "beta", "T"), [(1.0, 8.0, 4.0), (1.0, 2.0, 4.0), (0.5, 0.5, 1.0)])
def test_dkd_matches_mdistiller_after_warmup(alpha: float, beta: float, T: float) -> None:
    s, t, y = _logits(10, 7), _logits(10, 7, seed=1, scale=3.0), torch.arange(10) % 7
    ours = create_loss("dkd", alpha=alpha, beta=beta, temperature=T, warmup=20)(
        {"logits": s}, {"logits": t}, {"label": y}, {"epoch": 20})["dkd"]
    assert float(ours) == pytest.approx(float(_mdistiller_dkd(s, t, y, alpha, beta, T)), rel=1e-5)


def test_dkd_decomposes_kd_exactly() -> None:
    """KL(p_t || p_s) = TCKD + (1 - p_t,y) * NCKD per sample (DKD paper, Eq. 4)."""
    from medkd.distill.losses.dkd import dkd_parts

    s, t, y, T = _logits(9, 6).double(), _logits(9, 6, seed=1, scale=2.0).double(), torch.arange(9) % 6, 2.0
    tckd, nckd = dkd_parts(s, t, y, T)
    pt_y = F.softmax(t / T, 1).gather(1, y[:, None])[:, 0]
    kl = T**2 * (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1)
    assert torch.allclose(tckd + (1 - pt_y) * nckd, kl, atol=1e-10)


@pytest.mark.parametrize(("epoch", "factor"), [(0, 0.0), (5, 0.25), (10, 0.5), (20, 1.0), (35, 1.0)])
def test_dkd_ramp_is_min_epoch_over_warmup(epoch: float, factor: float) -> None:
    s, t, y = _logits(6, 4), _logits(6, 4, seed=1), torch.arange(6) % 4
    loss = create_loss("dkd", warmup=20)
    full = loss({"logits": s}, {"logits": t}, {"label": y}, {"epoch": 100})["dkd"]
    now = loss({"logits": s}, {"logits": t}, {"label": y}, {"epoch": epoch})["dkd"]
    assert float(now) == pytest.approx(factor * float(full), abs=1e-7)


def test_dkd_dense_with_ignored_voxels_equals_rows() -> None:
    s, t = _logits(2, 4, 3, 3), _logits(2, 4, 3, 3, seed=1)
    y = torch.randint(0, 4, (2, 3, 3), generator=torch.Generator().manual_seed(3))
    y[0, 0] = -100
    keep = y.reshape(-1) != -100
    loss = create_loss("dkd", warmup=0)
    dense = loss({"logits": s}, {"logits": t}, {"label": y})["dkd"]
    rows = loss({"logits": s.movedim(1, -1).reshape(-1, 4)[keep]}, {"logits": t.movedim(1, -1).reshape(-1, 4)[keep]},
                {"label": y.reshape(-1)[keep]})["dkd"]
    assert float(dense) == pytest.approx(float(rows), rel=1e-6)


def test_ce_term_equals_cross_entropy_with_ignore_index() -> None:
    s, y = _logits(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(1))
    y[1] = -100
    ours = create_loss("ce")({"logits": s}, {}, {"label": y})["ce"]
    assert float(ours) == pytest.approx(float(F.cross_entropy(s, y, ignore_index=-100)), rel=1e-6)
    y[:] = -100
    assert float(create_loss("ce")({"logits": s}, {}, {"label": y})["ce"]) == 0.0  # nothing left: 0, not NaN


def test_dice_term_is_small_for_a_perfect_prediction_and_large_for_a_wrong_one() -> None:
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[:, 2:6, 2:6] = 1
    perfect = torch.stack([1 - y, y], 1).float() * 30
    dice = create_loss("dice")
    assert float(dice({"logits": perfect}, {}, {"label": y})["dice"]) < 1e-3
    assert float(dice({"logits": -perfect}, {}, {"label": y})["dice"]) > 0.9
    with pytest.raises(ValueError, match="dense logits"):
        dice({"logits": torch.zeros(2, 2)}, {}, {"label": torch.zeros(2, dtype=torch.long)})
