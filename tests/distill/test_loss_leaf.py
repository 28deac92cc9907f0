# SPDX-License-Identifier: Apache-2.0
"""LEAF loss plugin (``medkd/distill/losses/leaf.py``): value, pooling, lazy map, no teacher gradient, retrieval."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medkd.distill import create_loss
from medkd.distill.losses.leaf import LEAFLoss, pooled_embedding
from medkd.errors import ConfigError


def _identity(loss: nn.Module) -> nn.Module:
    with torch.no_grad():
        loss.projection.weight.copy_(torch.eye(loss.projection.weight.shape[0]))
        loss.projection.bias.zero_()
    return loss


def _recall_at_5(queries: torch.Tensor, index: torch.Tensor) -> float:
    """Share of queries whose own item (same row) is among the 5 nearest index rows (Euclidean)."""
    top = torch.cdist(queries, index).topk(5, dim=1, largest=False).indices
    return (top == torch.arange(len(queries))[:, None]).any(dim=1).float().mean().item()


def test_equal_embeddings_with_identity_map_give_zero() -> None:
    x = torch.randn(5, 6)
    loss = _identity(create_loss("leaf", student_dim=6, teacher_dim=6))
    assert loss({"embedding": x}, {"embedding": x.clone()}, {})["leaf"].item() == 0.0
    assert loss({"embedding": x}, {"embedding": x + 0.1}, {})["leaf"].item() > 0.0


def test_value_is_sum_over_dims_mean_over_samples() -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, generator=g), torch.randn(4, 2, generator=g)
    loss = create_loss("leaf", student_dim=3, teacher_dim=2)
    w, b = loss.projection.weight.detach(), loss.projection.bias.detach()
    want = sum(float(((y[i] - (w @ x[i] + b)) ** 2).sum()) for i in range(4)) / 4
    assert loss({"embedding": x}, {"embedding": y}, {})["leaf"].item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("spatial", [(), (3, 4), (2, 3, 4)])
def test_feature_taps_are_global_average_pooled(spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(3, 5, *spatial, generator=g)
    pooled = feat if not spatial else feat.mean(dim=tuple(range(2, feat.ndim)))
    torch.testing.assert_close(pooled_embedding({"feat:enc": feat}), pooled)
    teacher = torch.randn(3, 4, generator=g)
    torch.manual_seed(0)
    loss = create_loss("leaf", student_dim=5, teacher_dim=4)
    a = loss({"feat:enc": feat}, {"embedding": teacher}, {})["leaf"]
    b = loss({"embedding": pooled}, {"embedding": teacher}, {})["leaf"]
    torch.testing.assert_close(a, b)


def test_embedding_key_wins_then_first_tap_by_sorted_key() -> None:
    a, b, e = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    assert torch.equal(pooled_embedding({"feat:b": b, "feat:a": a}), a)
    assert torch.equal(pooled_embedding({"feat:a": a, "embedding": e}), e)
    with pytest.raises(ValueError, match="feat:"):
        pooled_embedding({"logits": a}, "teacher")
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        pooled_embedding({"embedding": torch.randn(3)})


def test_teacher_gets_no_gradient_and_the_map_does() -> None:
    x = torch.randn(4, 6, 2, 2, requires_grad=True)
    y = torch.randn(4, 3, requires_grad=True)
    loss = create_loss("leaf")
    loss({"feat:s": x}, {"feat:t": y}, {})["leaf"].backward()
    assert y.grad is None
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.parameters())


@pytest.mark.parametrize("student_dim, teacher_dim", [(None, None), (6, None), (None, 3)])
def test_lazy_map_reads_unknown_widths_from_the_first_batch(student_dim: int | None, teacher_dim: int | None) -> None:
    loss = create_loss("leaf", student_dim=student_dim, teacher_dim=teacher_dim)
    assert isinstance(loss.projection, nn.LazyLinear)
    loss({"embedding": torch.randn(2, 6)}, {"embedding": torch.randn(2, 3)}, {})
    assert loss.projection.weight.shape == (3, 6)
    assert sum(p.numel() for p in loss.parameters()) == 3 * 6 + 3
    # the built map stays fixed: another width now fails with a clear message
    with pytest.raises(ValueError, match="teacher embedding has width 4"):
        loss({"embedding": torch.randn(2, 6)}, {"embedding": torch.randn(2, 4)}, {})


def test_known_widths_build_a_plain_linear_and_are_checked() -> None:
    loss = create_loss("leaf", student_dim=6, teacher_dim=3)
    assert type(loss.projection) is nn.Linear and loss.projection.weight.shape == (3, 6)
    with pytest.raises(ValueError, match="student embedding has width 5, the linear map expects 6"):
        loss({"embedding": torch.randn(2, 5)}, {"embedding": torch.randn(2, 3)}, {})
    lazy = create_loss("leaf", student_dim=6)
    with pytest.raises(ValueError, match="student embedding has width 5"):
        lazy({"embedding": torch.randn(2, 5)}, {"embedding": torch.randn(2, 3)}, {})


def test_lazy_map_state_dict_round_trip() -> None:
    x, y = torch.randn(3, 5), torch.randn(3, 2)
    trained = create_loss("leaf")
    want = trained({"embedding": x}, {"embedding": y}, {})["leaf"]
    fresh = create_loss("leaf")
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh({"embedding": x}, {"embedding": y}, {})["leaf"], want)


def test_batch_size_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="3 student embeddings but 2 teacher"):
        create_loss("leaf")({"embedding": torch.randn(3, 4)}, {"embedding": torch.randn(2, 4)}, {})


def test_synthetic_retrieval_recall_at_5() -> None:
    """A student that sees a fixed random linear distortion of the teacher's embedding plus noise.

    Teacher embeddings are i.i.d. N(0, I_16): two archive items lie ~sqrt(32) ~ 5.7 apart and the nearest of 49
    others is still ~3 away. The student embedding x = A^T y + 0.1 noise (32-d, A of full rank 16) determines y up
    to the noise, so a trained linear map recovers y with a residual of ~0.4 (sqrt of the final loss), well under the
    item spacing: a query's own item should be its nearest neighbour, and recall@5 >= 0.9 leaves room for
    optimisation noise. An untrained (random) map returns vectors unrelated to the items: chance is 5/50 = 0.1.
    """
    g = torch.Generator().manual_seed(0)
    d_t, d_s = 16, 32
    distortion = torch.randn(d_t, d_s, generator=g) / d_t**0.5

    def items(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randn(n, d_t, generator=g)
        return y @ distortion + 0.1 * torch.randn(n, d_s, generator=g), y

    x_train, y_train = items(200)
    x_archive, y_archive = items(50)  # held out from training: the teacher-indexed archive
    torch.manual_seed(0)
    loss = create_loss("leaf")
    loss({"embedding": x_train[:2]}, {"embedding": y_train[:2]}, {})  # the runner's dry forward
    with torch.no_grad():
        untrained = _recall_at_5(loss.projection(x_archive), y_archive)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss({"embedding": x_train}, {"embedding": y_train}, {})["leaf"].backward()
        opt.step()
    with torch.no_grad():
        trained = _recall_at_5(loss.projection(x_archive), y_archive)
    assert untrained <= 0.3
    assert trained >= 0.9


def test_requires_and_example_inputs() -> None:
    assert LEAFLoss.requires.student == ("embedding|feat:*",) and LEAFLoss.requires.teacher == ("embedding|feat:*",)
    assert LEAFLoss.requires.missing({"embedding"}, {"feat:head"}, set()) == []
    assert LEAFLoss.requires.missing({"logits"}, {"feat:head"}, set()) != []
    assert LEAFLoss.requires.batch == ()
    student, teacher, batch, ctx = LEAFLoss.example_inputs(seed=3)
    again = LEAFLoss.example_inputs(seed=3)
    assert all(torch.equal(student[k], again[0][k]) for k in student)
    torch.manual_seed(0)
    out = create_loss("leaf")(student, teacher, batch, ctx)
    assert list(out) == ["leaf"] and out["leaf"].ndim == 0 and out["leaf"].item() > 0


@pytest.mark.parametrize("params", [{"student_dim": 0}, {"teacher_dim": -3}, {"student_dim": 2.5}])
def test_bad_width_raises(params: dict) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        create_loss("leaf", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'teacher_dim'"):
        create_loss("leaf", teacher_dims=8)
