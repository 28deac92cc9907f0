# SPDX-License-Identifier: Apache-2.0
"""PLD loss plugin (``medkd/distill/losses/pld.py``): CE and ListMLE limits, shift invariance, dense shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medkd.distill import create_loss
from medkd.distill.losses.pld import PLDLoss, plackett_luce_nll, teacher_order
from medkd.errors import ConfigError


def _inputs(n: int = 8, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), 3.0 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def _list_mle(s: torch.Tensor, order: list[int]) -> float:
    """ListMLE of one row, written out: -log P_PL(order | s) = sum_k [log sum_{j>=k} exp s_oj - s_ok]."""
    total = 0.0
    for k, cls in enumerate(order):
        total += math.log(sum(math.exp(float(s[o])) for o in order[k:])) - float(s[cls])
    return total


def _pi_star(t: torch.Tensor, y: int) -> list[int]:
    """The label, then the other classes by descending teacher logit (pure Python)."""
    rest = sorted((c for c in range(t.numel()) if c != y), key=lambda c: -float(t[c]))
    return [y, *rest]


def test_teacher_order_puts_label_first_then_teacher_ranking() -> None:
    _, t, y = _inputs()
    order = teacher_order(t, y)
    assert order.tolist() == [_pi_star(t[n], int(y[n])) for n in range(len(y))]


def test_one_hot_first_step_weight_is_cross_entropy() -> None:
    s, t, y = _inputs()
    order = teacher_order(t, y)
    weights = torch.zeros_like(s)
    weights[:, 0] = 1.0
    torch.testing.assert_close(plackett_luce_nll(s, order, weights), F.cross_entropy(s, y, reduction="none"))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_teacher_sure_of_label_gives_cross_entropy(temperature: float) -> None:
    s, _, y = _inputs()
    t = 200.0 * F.one_hot(y, s.shape[1]).float()  # q_t(y) = 1 up to exp(-50)
    out = create_loss("pld", temperature=temperature)({"logits": s}, {"logits": t}, {"label": y})
    torch.testing.assert_close(out["pld"], F.cross_entropy(s, y))


def test_unit_weights_give_list_mle() -> None:
    s, t, y = _inputs(n=5, c=6)
    order = teacher_order(t, y)
    got = plackett_luce_nll(s, order, torch.ones_like(s))
    want = torch.tensor([_list_mle(s[n], _pi_star(t[n], int(y[n]))) for n in range(5)])
    torch.testing.assert_close(got, want)


def test_uniform_teacher_weights_give_list_mle_over_classes() -> None:
    s, t, y = _inputs(n=5, c=6)
    out = create_loss("pld", temperature=1e6)({"logits": s}, {"logits": t}, {"label": y})["pld"]
    want = sum(_list_mle(s[n], _pi_star(t[n], int(y[n]))) for n in range(5)) / (5 * 6)
    assert float(out) == pytest.approx(want, rel=1e-4)


def test_matches_written_out_formula_with_teacher_weights() -> None:
    s, t, y = _inputs(n=4, c=4)
    q = torch.softmax(t / 2.0, dim=1)
    want = 0.0
    for n in range(4):
        order = _pi_star(t[n], int(y[n]))
        for k, cls in enumerate(order):
            lse = math.log(sum(math.exp(float(s[n, o])) for o in order[k:]))
            want += float(q[n, cls]) * (lse - float(s[n, cls]))
    got = create_loss("pld", temperature=2.0)({"logits": s}, {"logits": t}, {"label": y})["pld"]
    assert float(got) == pytest.approx(want / 4, rel=1e-5)


@pytest.mark.parametrize("shift", ["scalar", "per_row"])
def test_student_shift_invariance(shift: str) -> None:
    s, t, y = _inputs()
    c = torch.tensor(7.5) if shift == "scalar" else 10.0 * torch.randn(s.shape[0], 1)
    loss = create_loss("pld")
    a = loss({"logits": s}, {"logits": t}, {"label": y})["pld"]
    b = loss({"logits": s + c}, {"logits": t}, {"label": y})["pld"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_temperature_changes_the_weights() -> None:
    s, t, y = _inputs()
    a = create_loss("pld", temperature=1.0)({"logits": s}, {"logits": t}, {"label": y})["pld"]
    b = create_loss("pld", temperature=4.0)({"logits": s}, {"logits": t}, {"label": y})["pld"]
    assert abs(float(a) - float(b)) > 1e-3


@pytest.mark.parametrize("scale", [1.0, 1e3])
def test_gradient_finite_and_sums_to_zero_per_row(scale: float) -> None:
    s, t, y = _inputs()
    s = (scale * s).requires_grad_()
    t = (scale * t).requires_grad_()
    out = create_loss("pld")({"logits": s}, {"logits": t}, {"label": y})["pld"]
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0
    # shift invariance per row means the gradient along (1, ..., 1) vanishes
    torch.testing.assert_close(s.grad.sum(dim=1), torch.zeros(s.shape[0]), atol=1e-5, rtol=0)
    assert t.grad is None


@pytest.mark.parametrize("spatial", [(4, 5), (3, 4, 5)])
def test_dense_with_ignored_voxels_equals_kept_rows(spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    b, c = 2, 4
    s = torch.randn(b, c, *spatial, generator=g)
    t = 2.0 * torch.randn(b, c, *spatial, generator=g)
    y = torch.randint(0, c, (b, *spatial), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.3] = -100
    loss = create_loss("pld", temperature=2.0)
    dense = loss({"logits": s}, {"logits": t}, {"label": y})["pld"]
    rows_s, rows_t, rows_y = s.movedim(1, -1).reshape(-1, c), t.movedim(1, -1).reshape(-1, c), y.reshape(-1)
    keep = rows_y != -100
    assert 0 < int(keep.sum()) < rows_y.numel()
    flat = loss({"logits": rows_s[keep]}, {"logits": rows_t[keep]}, {"label": rows_y[keep]})["pld"]
    torch.testing.assert_close(dense, flat)


def test_all_voxels_ignored_gives_zero_with_graph() -> None:
    s = torch.randn(1, 3, 2, 2, requires_grad=True)
    y = torch.full((1, 2, 2), -100)
    out = create_loss("pld")({"logits": s}, {"logits": torch.randn(1, 3, 2, 2)}, {"label": y})["pld"]
    out.backward()
    assert out.item() == 0.0 and s.grad is not None


def test_requires_and_output_keys() -> None:
    assert PLDLoss.requires.student == ("logits",) and PLDLoss.requires.batch == ("label",)
    student, teacher, batch, ctx = PLDLoss.example_inputs()
    out = create_loss("pld")(student, teacher, batch, ctx)
    assert list(out) == ["pld"] and out["pld"].ndim == 0 and float(out["pld"]) > 0


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_bad_temperature_raises(temperature: float) -> None:
    with pytest.raises(ConfigError, match="temperature"):
        create_loss("pld", temperature=temperature)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="tau"):
        create_loss("pld", tau=4.0)
