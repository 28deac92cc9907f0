# SPDX-License-Identifier: Apache-2.0
"""Margin-MSE loss plugin (``medkd/distill/losses/margin_mse.py``): score and logits forms, invariances, gradients."""

from __future__ import annotations

import pytest
import torch

from medkd.distill import create_loss
from medkd.distill.losses.margin_mse import MarginMSELoss
from medkd.errors import ConfigError


def _scores(b: int = 6, k: int | None = None, seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    neg_shape = (b,) if k is None else (b, k)
    pos_shape = (b,) if k is None else (b, 1)
    student = {"score_pos": torch.randn(pos_shape, generator=g), "score_neg": torch.randn(neg_shape, generator=g)}
    teacher = {"score_pos": 3 * torch.randn(pos_shape, generator=g),
               "score_neg": 3 * torch.randn(neg_shape, generator=g)}
    return student, teacher


def _logits(n: int = 6, c: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), 2 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize(
    "s_pos, s_neg, t_pos, t_neg, expected",
    [
        ([2.0], [1.0], [3.0], [0.0], 4.0),  # ((2 - 1) - (3 - 0))^2
        ([0.0, 1.0], [1.0, 1.0], [0.0, 5.0], [-1.0, 5.0], 2.0),  # ((-1 - 1)^2 + 0) / 2
        # 2 queries x 2 negatives: margins (1, -1), (0, 0) vs (1, 1), (1, 0) -> squared errors 0, 4, 1, 0
        ([[1.0], [0.0]], [[0.0, 2.0], [0.0, 0.0]], [[1.0], [1.0]], [[0.0, 0.0], [0.0, 1.0]], 1.25),
    ],
)
def test_score_form_values(s_pos: list, s_neg: list, t_pos: list, t_neg: list, expected: float) -> None:
    student = {"score_pos": torch.tensor(s_pos), "score_neg": torch.tensor(s_neg)}
    teacher = {"score_pos": torch.tensor(t_pos), "score_neg": torch.tensor(t_neg)}
    got = float(create_loss("margin_mse")(student, teacher, {})["margin_mse"])
    assert got == pytest.approx(expected)


def test_positive_vector_against_negative_matrix_gets_a_trailing_axis() -> None:
    student, teacher = _scores(k=3)
    loss = create_loss("margin_mse")
    flat = {k: v.squeeze(1) if k == "score_pos" else v for k, v in student.items()}
    torch.testing.assert_close(loss(flat, teacher, {})["margin_mse"], loss(student, teacher, {})["margin_mse"])


@pytest.mark.parametrize("k", [None, 4])
def test_score_form_per_query_shift_invariance(k: int | None) -> None:
    student, teacher = _scores(k=k)
    shift = 10 * torch.randn(student["score_pos"].shape[0])
    shift = shift if k is None else shift[:, None]
    moved = {key: v + shift for key, v in student.items()}
    loss = create_loss("margin_mse")
    a, b = loss(student, teacher, {})["margin_mse"], loss(moved, teacher, {})["margin_mse"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # shifting only the positives is not a per-query shift and must change the loss
    pos_only = {**student, "score_pos": student["score_pos"] + 1.0}
    assert abs(float(loss(pos_only, teacher, {})["margin_mse"]) - float(a)) > 1e-3


def test_logits_form_per_row_shift_invariance() -> None:
    s, t, y = _logits()
    loss = create_loss("margin_mse")
    a = loss({"logits": s}, {"logits": t}, {"label": y})["margin_mse"]
    b = loss({"logits": s + 10 * torch.randn(s.shape[0], 1)}, {"logits": t}, {"label": y})["margin_mse"]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "s_pos, s_neg, sign_pos",
    [
        (1.0, 0.9, -1.0),  # margin 0.1 < teacher's 3: descent (-grad) raises s+ and lowers s-
        (5.0, -2.0, 1.0),  # margin 7 > teacher's 3: descent lowers s+ and raises s-
    ],
)
def test_gradient_signs_follow_the_margin_error(s_pos: float, s_neg: float, sign_pos: float) -> None:
    pos = torch.tensor([s_pos], requires_grad=True)
    neg = torch.tensor([s_neg], requires_grad=True)
    teacher = {"score_pos": torch.tensor([3.0]), "score_neg": torch.tensor([0.0])}
    create_loss("margin_mse")({"score_pos": pos, "score_neg": neg}, teacher, {})["margin_mse"].backward()
    assert torch.sign(pos.grad).item() == sign_pos
    assert torch.sign(neg.grad).item() == -sign_pos
    # d/ds+ of (m_s - m_t)^2 is 2 (m_s - m_t)
    assert pos.grad.item() == pytest.approx(2 * ((s_pos - s_neg) - 3.0))


def test_zero_when_student_margins_equal_teacher_margins() -> None:
    student, teacher = _scores(k=3)
    offset = torch.randn(student["score_pos"].shape[0], 1)
    same = {k: v + offset for k, v in teacher.items()}  # different scores, same margins
    loss = create_loss("margin_mse")
    assert float(loss(same, teacher, {})["margin_mse"]) == pytest.approx(0.0, abs=1e-10)
    assert float(loss(student, teacher, {})["margin_mse"]) > 0.1


def test_logits_form_equals_explicit_pairs() -> None:
    s, t, y = _logits(n=5, c=4)

    def pairs(z: torch.Tensor) -> dict[str, torch.Tensor]:
        pos = torch.stack([z[n, y[n]].repeat(3) for n in range(5)])
        neg = torch.stack([torch.stack([z[n, c] for c in range(4) if c != y[n]]) for n in range(5)])
        return {"score_pos": pos, "score_neg": neg}

    loss = create_loss("margin_mse")
    from_logits = loss({"logits": s}, {"logits": t}, {"label": y})["margin_mse"]
    explicit = loss(pairs(s), pairs(t), {})["margin_mse"]
    torch.testing.assert_close(from_logits, explicit)


def test_logits_form_dense_ignored_voxels_drop_out() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    y[0, :2] = -100
    loss = create_loss("margin_mse")
    dense = loss({"logits": s}, {"logits": t}, {"label": y})["margin_mse"]
    rows = lambda z: z.movedim(1, -1).reshape(-1, 3)  # noqa: E731
    keep = y.reshape(-1) != -100
    flat = loss({"logits": rows(s)[keep]}, {"logits": rows(t)[keep]}, {"label": y.reshape(-1)[keep]})["margin_mse"]
    torch.testing.assert_close(dense, flat)


@pytest.mark.parametrize("form", ["scores", "logits"])
def test_teacher_gets_no_gradient(form: str) -> None:
    if form == "scores":
        student, teacher = _scores(k=2)
        student = {k: v.requires_grad_() for k, v in student.items()}
        teacher = {k: v.requires_grad_() for k, v in teacher.items()}
        batch: dict = {}
    else:
        s, t, y = _logits()
        student, teacher, batch = {"logits": s.requires_grad_()}, {"logits": t.requires_grad_()}, {"label": y}
    create_loss("margin_mse")(student, teacher, batch)["margin_mse"].backward()
    assert all(v.grad is None for v in teacher.values())
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in student.values())


@pytest.mark.parametrize(
    "student, teacher, match",
    [
        ({"score_pos": torch.zeros(3), "score_neg": torch.zeros(3)}, {"logits": torch.zeros(3, 2)}, "teacher"),
        ({"score_pos": torch.zeros(3)}, {"score_pos": torch.zeros(3), "score_neg": torch.zeros(3)}, "score_neg"),
        ({"score_pos": torch.zeros(3), "score_neg": torch.zeros(3)},
         {"score_pos": torch.zeros(4), "score_neg": torch.zeros(4)}, "shape"),
        ({"score_pos": torch.zeros(3, 2), "score_neg": torch.zeros(3, 5)},
         {"score_pos": torch.zeros(3, 2), "score_neg": torch.zeros(3, 5)}, "broadcast"),
    ],
)
def test_bad_score_inputs_raise(student: dict, teacher: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_loss("margin_mse")(student, teacher, {})


def test_requires_declares_the_logits_form() -> None:
    assert MarginMSELoss.requires.student == ("logits",)
    assert MarginMSELoss.requires.teacher == ("logits",)
    assert MarginMSELoss.requires.batch == ("label",)
    out = create_loss("margin_mse")(*MarginMSELoss.example_inputs())
    assert list(out) == ["margin_mse"] and float(out["margin_mse"]) > 0


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        create_loss("margin_mse", temperature=2.0)
