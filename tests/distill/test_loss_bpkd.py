# SPDX-License-Identifier: Apache-2.0
"""BPKD (``bpkd``): boundary masks, edge and body terms, 2-D/3-D shapes, ignored voxels, spacing, no teacher grad."""

from __future__ import annotations

import pytest
import torch

from medkd.distill import create_loss
from medkd.distill.base import Requires
from medkd.distill.dense import IGNORE_INDEX
from medkd.distill.losses.bpkd import boundary_masks
from medkd.errors import ConfigError

SHAPES = [(2, 3, 12, 12), (2, 3, 8, 10, 6)]


def _blob_label(shape: tuple[int, ...]) -> torch.Tensor:
    """Class 0 everywhere, a box of class 1 and a smaller box of class 2 inside it."""
    label = torch.zeros(shape[:1] + shape[2:], dtype=torch.long)
    inner = (slice(None),) + tuple(slice(n // 4, 3 * n // 4 + 1) for n in shape[2:])
    label[inner] = 1
    label[(slice(None),) + tuple(slice(n // 2 - 1, n // 2 + 1) for n in shape[2:])] = 2
    return label


def _inputs(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), 3.0 * torch.randn(shape, generator=g), _blob_label(shape)


def test_registered_and_requires() -> None:
    loss = create_loss("bpkd")
    assert type(loss).requires == Requires(student=("logits",), teacher=("logits",), batch=("label",))
    assert (loss.lambda_body, loss.lambda_edge, loss.alpha, loss.temperature, loss.radius) == (20, 50, 2, 4, 3)


@pytest.mark.parametrize("shape", SHAPES)
def test_masks_sum_to_one_and_lie_in_unit_interval(shape: tuple[int, ...]) -> None:
    edge, body = boundary_masks(_blob_label(shape), shape[1], radius=1)
    assert edge.shape == shape
    assert torch.equal(edge + body, torch.ones(shape))
    assert float(edge.min()) >= 0 and float(edge.max()) <= 1 and float(edge.max()) > 0


def test_masks_mark_the_boundary_band_only() -> None:
    label = torch.zeros(1, 15, 15, dtype=torch.long)
    label[0, :, 8:] = 1  # a vertical boundary between columns 7 and 8
    edge, _ = boundary_masks(label, 2, radius=2)
    cols = (edge[0, 0] > 0).any(dim=0).nonzero().flatten().tolist()
    assert cols == list(range(4, 12))  # binary band 6..9 widened by the 5-wide average pool
    assert torch.allclose(edge[0, 0], edge[0, 1])  # both classes see the same band


def test_ignored_voxels_count_as_background_in_masks() -> None:
    label = torch.zeros(1, 10, 10, dtype=torch.long)
    with_ignore = label.clone()
    with_ignore[0, :, 6:] = IGNORE_INDEX
    assert torch.equal(boundary_masks(label, 2)[0], boundary_masks(with_ignore, 2)[0])


@pytest.mark.parametrize("radius, bad", [(2, (2, 1, 1)), (-1, None)])
def test_mask_radius_checked(radius: int, bad: tuple[int, ...] | None) -> None:
    with pytest.raises(ValueError, match="radius"):
        boundary_masks(torch.zeros(1, 5, 5, dtype=torch.long), 2, radius=bad if bad else radius)


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_label_gives_no_edge_term(shape: tuple[int, ...]) -> None:
    s, t, _ = _inputs(shape)
    out = create_loss("bpkd")({"logits": s}, {"logits": t}, {"label": torch.ones(shape[:1] + shape[2:]).long()})
    assert float(out["bpkd_edge"]) == 0.0
    assert float(out["bpkd_body"]) > 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_equal_logits_give_zero(shape: tuple[int, ...]) -> None:
    s, _, y = _inputs(shape)
    out = create_loss("bpkd")({"logits": s}, {"logits": s.clone()}, {"label": y})
    assert sorted(out) == ["bpkd_body", "bpkd_edge"]
    assert float(out["bpkd_edge"]) == pytest.approx(0.0, abs=1e-6)
    assert float(out["bpkd_body"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_different_logits_give_positive_terms_and_weights_scale(shape: tuple[int, ...]) -> None:
    s, t, y = _inputs(shape)
    base = create_loss("bpkd")({"logits": s}, {"logits": t}, {"label": y})
    assert float(base["bpkd_edge"]) > 0 and float(base["bpkd_body"]) > 0
    scaled = create_loss("bpkd", weight=0.5, lambda_edge=100.0, lambda_body=20.0)(
        {"logits": s}, {"logits": t}, {"label": y})
    assert float(scaled["bpkd_edge"]) == pytest.approx(float(base["bpkd_edge"]), rel=1e-5)
    assert float(scaled["bpkd_body"]) == pytest.approx(0.5 * float(base["bpkd_body"]), rel=1e-5)


def test_edge_term_matches_the_documented_formula() -> None:
    s, t, y = _inputs((2, 3, 12, 12), seed=3)
    temp, alpha = 4.0, 2.0
    loss = create_loss("bpkd", lambda_edge=1.0, alpha=alpha, temperature=temp)
    got = float(loss({"logits": s}, {"logits": t}, {"label": y})["bpkd_edge"])
    edge, _ = boundary_masks(y, 3, radius=3)
    log_s, log_t = (torch.log_softmax(z * edge / temp, dim=1) for z in (s, t))
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    on_edge = (edge > 0).any(1)
    want = sum(alpha * kl[on_edge & (y == c)].mean() for c in range(3) if bool((on_edge & (y == c)).any()))
    assert got == pytest.approx(temp**2 * float(want), rel=1e-5)


def test_body_term_matches_channel_wise_distillation() -> None:
    s, t, y = _inputs((2, 3, 12, 12), seed=4)
    temp = 4.0
    loss = create_loss("bpkd", lambda_body=1.0, temperature=temp)
    got = float(loss({"logits": s}, {"logits": t}, {"label": y})["bpkd_body"])
    _, body = boundary_masks(y, 3, radius=3)
    log_s, log_t = (torch.log_softmax((z * body / temp).flatten(2), dim=2) for z in (s, t))
    cwd = (log_t.exp() * (log_t - log_s)).sum(2)  # (B, C)
    assert got == pytest.approx(float(temp**2 * cwd.sum() / (2 * 3)), rel=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_ignored_voxels_do_not_change_the_loss(shape: tuple[int, ...]) -> None:
    s, t, y = _inputs(shape)
    y = y.clone()
    y[0, 0] = IGNORE_INDEX  # a slab of ignored voxels in sample 0
    y[1, -1] = IGNORE_INDEX
    ignored = (y == IGNORE_INDEX).unsqueeze(1).expand(shape)
    loss = create_loss("bpkd")
    before = loss({"logits": s}, {"logits": t}, {"label": y})
    s2 = torch.where(ignored, 50.0 * torch.randn(shape), s)
    t2 = torch.where(ignored, -50.0 * torch.randn(shape), t)
    after = loss({"logits": s2}, {"logits": t2}, {"label": y})
    for key in before:
        assert float(after[key]) == pytest.approx(float(before[key]), rel=1e-5, abs=1e-7)
    assert float(before["bpkd_edge"]) > 0 and float(before["bpkd_body"]) > 0


def test_all_ignored_gives_finite_zero_with_gradient_graph() -> None:
    s, t, _ = _inputs((1, 3, 6, 6))
    s.requires_grad_(True)
    out = create_loss("bpkd")({"logits": s}, {"logits": t}, {"label": torch.full((1, 6, 6), IGNORE_INDEX)})
    total = sum(out.values())
    total.backward()
    assert float(total.detach()) == 0.0
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_no_teacher_gradient_student_gets_one(shape: tuple[int, ...]) -> None:
    s, t, y = _inputs(shape)
    s.requires_grad_(True)
    t.requires_grad_(True)
    sum(create_loss("bpkd")({"logits": s}, {"logits": t}, {"label": y}).values()).backward()
    assert t.grad is None
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_teacher_resized_to_student() -> None:
    s, _, y = _inputs((2, 3, 12, 12))
    t = torch.randn(2, 3, 24, 24)
    out = create_loss("bpkd")({"logits": s}, {"logits": t}, {"label": y})
    assert all(torch.isfinite(v) for v in out.values())


def test_radius_mm_uses_spacing_per_axis() -> None:
    s, t, y = _inputs((1, 3, 8, 10, 6), seed=1)
    by_voxels = create_loss("bpkd", radius=2)({"logits": s}, {"logits": t}, {"label": y})
    by_mm = create_loss("bpkd", radius_mm=3.0)({"logits": s}, {"logits": t},
                                               {"label": y, "spacing": torch.tensor([[1.5, 1.5, 1.5]])})
    assert float(by_mm["bpkd_edge"]) == pytest.approx(float(by_voxels["bpkd_edge"]), rel=1e-6)
    loss = create_loss("bpkd", radius_mm=3.0)
    assert loss.radii({"spacing": [[1.0, 0.5, 5.0]]}, 3) == (3, 6, 1)  # at least one voxel per axis
    with pytest.raises(ValueError, match="spacing"):
        loss({"logits": s}, {"logits": t}, {"label": y})


@pytest.mark.parametrize("params", [{"temperature": 0.0}, {"radius": 0}, {"lambda_edge": -1.0},
                                    {"radius_mm": -2.0}, {"weight": -0.1}])
def test_bad_values_raise(params: dict) -> None:
    with pytest.raises(ConfigError):
        create_loss("bpkd", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="lambda_edge"):
        create_loss("bpkd", lambda_egde=3.0)


@pytest.mark.parametrize("logits, label", [(torch.randn(4, 3), torch.zeros(4).long()),
                                           (torch.randn(2, 3, 6, 6), torch.zeros(2, 5, 5).long())])
def test_bad_shapes_raise(logits: torch.Tensor, label: torch.Tensor) -> None:
    with pytest.raises(ValueError):
        create_loss("bpkd")({"logits": logits}, {"logits": logits}, {"label": label})
