# SPDX-License-Identifier: Apache-2.0
"""TGeo-KD (``tgeo``): the alpha mix, the geometry features, the class-mean EMA and the bilevel ``meta_step``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medkd.distill import create_loss
from medkd.distill.base import Requires
from medkd.distill.dense import IGNORE_INDEX, tempered_kl
from medkd.distill.losses.tgeo import TGeoLoss, geometry_features
from medkd.errors import ConfigError


def _inputs(seed: int = 0, n: int = 8, c: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), 2 * torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def _mix(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor | float, temp: float = 4.0):
    kd = temp**2 * tempered_kl(s, t, temp)
    return (alpha * kd + (1 - alpha) * F.cross_entropy(s, y, reduction="none")).mean()


def test_registered_requires_and_mlp_kept_out_of_parameters() -> None:
    loss = create_loss("tgeo", num_classes=4)
    assert type(loss).requires == Requires(student=("logits",), teacher=("logits",), batch=("label",))
    assert list(loss.parameters()) == []  # the student's optimiser never sees the MLP
    assert sum(p.numel() for p in loss.meta_parameters()) == (7 * 4 * 64 + 64) + (64 + 1)
    assert (loss.hidden, loss.meta_lr, loss.temperature) == (64, 1e-3, 4.0)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_constant_alpha_is_the_fixed_mix(alpha: float) -> None:
    s, t, y = _inputs()
    out = create_loss("tgeo", constant_alpha=alpha)({"logits": s}, {"logits": t}, {"label": y})
    assert list(out) == ["tgeo"]
    assert float(out["tgeo"]) == pytest.approx(float(_mix(s, t, y, alpha)), rel=1e-6)


def test_learned_alpha_in_open_unit_interval_and_used_in_the_mix() -> None:
    s, t, y = _inputs(1)
    torch.manual_seed(0)
    loss = create_loss("tgeo")  # num_classes taken from the first batch
    alpha = loss.alpha(s, t, y)
    assert alpha.shape == (8,)
    assert bool(((alpha > 0) & (alpha < 1)).all())
    assert alpha.std() > 0  # per sample, not one value
    out = loss({"logits": s}, {"logits": t}, {"label": y})
    assert float(out["tgeo"]) == pytest.approx(float(_mix(s, t, y, alpha.detach())), rel=1e-5)


def test_forward_backward_gives_the_mlp_no_gradient() -> None:
    s, t, y = _inputs(2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = create_loss("tgeo", num_classes=4)
    loss({"logits": s}, {"logits": t}, {"label": y})["tgeo"].backward()
    assert all(p.grad is None for p in loss.meta_parameters())
    assert t.grad is None
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_geometry_features_blocks() -> None:
    s, t, y = _inputs(3)
    mean = torch.rand(4, 4)
    r = geometry_features(s, t, y, mean)
    p_s, p_t, g = F.softmax(s, 1), F.softmax(t, 1), F.one_hot(y, 4).float()
    blocks = r.split(4, dim=1)
    assert r.shape == (8, 28)
    for got, want in zip(blocks, (p_s, p_t, g, p_s - p_t, p_s - g, p_t - g, mean[y])):
        assert torch.allclose(got, want, atol=1e-6)


def test_class_mean_ema_updates_present_classes_in_training_only() -> None:
    loss = create_loss("tgeo", num_classes=3, momentum=0.5)
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    s, y = torch.zeros(3, 3), torch.tensor([0, 0, 1])
    p = F.softmax(t, 1)
    loss({"logits": s}, {"logits": t}, {"label": y})
    assert torch.allclose(loss.class_mean[0], (p[0] + p[1]) / 2)  # first sighting: the batch mean
    assert torch.allclose(loss.class_mean[1], p[2])
    assert torch.allclose(loss.class_mean[2], torch.full((3,), 1 / 3))  # class 2 absent: untouched
    assert loss.class_seen.tolist() == [True, True, False]
    loss({"logits": s}, {"logits": t}, {"label": torch.tensor([1, 1, 1])})
    assert torch.allclose(loss.class_mean[1], 0.5 * p[2] + 0.5 * p.mean(0))  # EMA
    before = loss.class_mean.clone()
    loss.eval()
    loss({"logits": s}, {"logits": t}, {"label": torch.tensor([2, 2, 2])})
    assert torch.equal(loss.class_mean, before)


@pytest.mark.parametrize("spatial", [(6, 6), (4, 5, 3)])
def test_dense_per_voxel_with_ignored_voxels(spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, *spatial, generator=g), torch.randn(2, 3, *spatial, generator=g)
    y = torch.randint(0, 3, (2, *spatial), generator=g)
    y[1] = IGNORE_INDEX
    loss = create_loss("tgeo", constant_alpha=0.4)
    out = loss({"logits": s}, {"logits": t}, {"label": y})
    rows = lambda z: z[0].reshape(3, -1).T  # noqa: E731 - the labelled sample's voxels as rows
    assert float(out["tgeo"]) == pytest.approx(float(_mix(rows(s), rows(t), y[0].reshape(-1), 0.4)), rel=1e-5)
    s2 = s.clone()
    s2[1] = 50 * torch.randn_like(s2[1])
    torch.manual_seed(0)
    learned = create_loss("tgeo", num_classes=3).eval()  # eval: the class mean stays put between the calls
    a = learned({"logits": s}, {"logits": t}, {"label": y})["tgeo"]
    b = learned({"logits": s2}, {"logits": t}, {"label": y})["tgeo"]
    assert float(a) == pytest.approx(float(b), rel=1e-6)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(x))


def _meta_batches(seed: int = 0) -> tuple[dict, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(16, 3, generator=g), "label": torch.randint(0, 4, (16,), generator=g)}
    val = {"image": torch.randn(16, 3, generator=g), "label": torch.randint(0, 4, (16,), generator=g)}
    return batch, torch.randn(16, 4, generator=g), val


def test_meta_step_trains_the_mlp_and_leaves_the_student_alone() -> None:
    torch.manual_seed(0)
    student = _Toy()
    loss = create_loss("tgeo", num_classes=4, meta_lr=1e-2)
    state = copy.deepcopy(student.state_dict())
    mlp_before = [p.detach().clone() for p in loss.meta_parameters()]
    batch, teacher_logits, val = _meta_batches()
    logs = loss.meta_step(student, batch, teacher_logits, val, lr=0.1)
    assert set(logs) == {"meta_train", "meta_val", "alpha_mean"} and 0 < logs["alpha_mean"] < 1
    assert all(not torch.equal(a, b) for a, b in zip(mlp_before, loss.meta_parameters()))
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in state.items())  # BatchNorm stats included
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is None for p in loss.meta_parameters())


def test_meta_step_hypergradient_goes_through_the_unrolled_step() -> None:
    """With lr=0 the validation loss does not depend on alpha: the MLP's Adam step is a no-op."""
    torch.manual_seed(0)
    student, loss = _Toy(), create_loss("tgeo", num_classes=4)
    before = [p.detach().clone() for p in loss.meta_parameters()]
    loss.meta_step(student, *_meta_batches()[:2], _meta_batches()[2], lr=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, loss.meta_parameters()))


def test_meta_step_learns_to_trust_a_correct_teacher_over_noisy_labels() -> None:
    """Train labels are wrong, the teacher and the validation labels right: alpha (weight on KD) must grow."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g)
    x, xv = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    teacher_logits = 3 * x @ w
    noisy = (teacher_logits.argmax(1) + 1) % 4
    torch.manual_seed(0)
    student = nn.Linear(3, 4)
    loss = create_loss("tgeo", num_classes=4, meta_lr=1e-2)
    batch, val = {"image": x, "label": noisy}, {"image": xv, "label": (xv @ w).argmax(1)}
    first = loss.meta_step(student, batch, teacher_logits, val, lr=1.0)["alpha_mean"]
    for _ in range(30):
        last = loss.meta_step(student, batch, teacher_logits, val, lr=1.0)["alpha_mean"]
    assert last > first + 0.1


def test_meta_step_refused_with_constant_alpha() -> None:
    loss = create_loss("tgeo", constant_alpha=0.5)
    with pytest.raises(RuntimeError, match="constant_alpha"):
        loss.meta_step(_Toy(), *_meta_batches()[:2], _meta_batches()[2], lr=0.1)


def test_state_dict_round_trip_restores_mlp_and_class_mean() -> None:
    s, t, y = _inputs(4)
    torch.manual_seed(0)
    trained = create_loss("tgeo")
    trained({"logits": s}, {"logits": t}, {"label": y})
    trained.meta_step(nn.Linear(3, 4), {"image": torch.randn(8, 3), "label": y}, t,
                      {"image": torch.randn(8, 3), "label": y}, lr=0.1)
    torch.manual_seed(1)
    fresh = create_loss("tgeo")  # lazy: nothing built yet
    fresh.load_state_dict(trained.state_dict())
    assert torch.equal(fresh.class_mean, trained.class_mean)
    assert all(torch.equal(a, b) for a, b in zip(fresh.meta_parameters(), trained.meta_parameters()))
    assert torch.equal(fresh.alpha(s, t, y), trained.alpha(s, t, y))


def test_class_count_mismatch_raises() -> None:
    loss = create_loss("tgeo", num_classes=3)
    s, t, y = _inputs()
    with pytest.raises(ValueError, match="3 classes"):
        loss({"logits": s}, {"logits": t}, {"label": y})


@pytest.mark.parametrize("params", [{"temperature": 0.0}, {"hidden": 0}, {"meta_lr": -1.0}, {"num_classes": 0},
                                    {"constant_alpha": 1.5}, {"momentum": 1.0}])
def test_bad_values_raise(params: dict) -> None:
    with pytest.raises(ConfigError):
        create_loss("tgeo", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="hidden"):
        create_loss("tgeo", hiden=32)


def test_example_inputs_default() -> None:
    student, teacher, batch, ctx = TGeoLoss.example_inputs(0)
    torch.manual_seed(0)
    assert torch.isfinite(create_loss("tgeo")(student, teacher, batch, ctx)["tgeo"])
