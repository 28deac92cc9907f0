# SPDX-License-Identifier: Apache-2.0
"""OFA-KD (``ofa``): the eps-sharpened target, soft cross-entropy at eps=1, exit branches, dense shapes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medkd.distill import create_loss
from medkd.distill.base import Requires
from medkd.distill.dense import IGNORE_INDEX
from medkd.distill.losses.ofa import OFALoss, ofa_loss, ofa_target
from medkd.errors import ConfigError


def _cls_inputs(seed: int = 0) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    student = {"logits": torch.randn(6, 5, generator=g), "feat:enc.layer1": torch.randn(6, 4, 4, 4, generator=g),
               "feat:enc.layer2": torch.randn(6, 8, 2, 2, generator=g)}
    return student, {"logits": 2 * torch.randn(6, 5, generator=g)}, {"label": torch.randint(0, 5, (6,), generator=g)}


def test_registered_and_requires() -> None:
    loss = create_loss("ofa")
    assert type(loss).requires == Requires(student=("logits", "feat:*"), teacher=("logits",), batch=("label",))
    assert (loss.eps, loss.temperature) == (1.0, 1.0)


def test_eps_one_is_soft_cross_entropy_with_the_teacher() -> None:
    student, teacher, batch = _cls_inputs()
    out = create_loss("ofa", eps=1.0)(student, teacher, batch)
    p_t = F.softmax(teacher["logits"], dim=1)
    want = -(p_t * F.log_softmax(student["logits"], dim=1)).sum(1).mean()
    assert float(out["ofa"]) == pytest.approx(float(want), rel=1e-6)
    assert torch.allclose(ofa_target(p_t, batch["label"], 1.0), p_t, atol=1e-6)


@pytest.mark.parametrize("eps", [1.2, 1.5, 2.0])
def test_eps_above_one_raises_gt_weight_and_lowers_the_others(eps: float) -> None:
    _, teacher, batch = _cls_inputs(1)
    p_t = F.softmax(teacher["logits"], dim=1)
    base, sharp = ofa_target(p_t, batch["label"], 1.0), ofa_target(p_t, batch["label"], eps)
    gt = F.one_hot(batch["label"], 5).bool()
    assert bool((sharp[gt] > base[gt]).all())
    assert bool((sharp[~gt] < base[~gt]).all())
    assert torch.allclose(sharp[gt], (p_t[gt] + 1) ** eps - 1)


def test_temperature_softens_both() -> None:
    student, teacher, batch = _cls_inputs(2)
    temp = 3.0
    got = ofa_loss(student["logits"], teacher["logits"], batch["label"], 1.0, temp)
    p_t = F.softmax(teacher["logits"] / temp, dim=1)
    assert torch.allclose(got, -(p_t * F.log_softmax(student["logits"] / temp, dim=1)).sum(1), atol=1e-6)


def test_branches_per_tap_are_trainable_and_teacher_gets_no_gradient() -> None:
    student, teacher, batch = _cls_inputs()
    student = {k: v.clone().requires_grad_(True) for k, v in student.items()}
    teacher = {"logits": teacher["logits"].clone().requires_grad_(True)}
    loss = create_loss("ofa")
    out = loss(student, teacher, batch)
    assert sorted(loss.branches) == ["enc__layer1", "enc__layer2"]  # tap names sanitised
    params = list(loss.parameters())
    assert len(params) == 4 and all(p.requires_grad for p in params)
    (out["ofa"] + out["ofa_branches"]).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)
    assert teacher["logits"].grad is None
    assert float(student["feat:enc.layer1"].grad.abs().sum()) > 0  # the branch losses train the stages too
    assert out["ofa_branches"].item() > 0


def test_eager_branches_with_stages_and_num_classes() -> None:
    loss = create_loss("ofa", stages=["feat:enc.layer1", "enc.layer2"], num_classes=5)
    assert sorted(loss.branches) == ["enc__layer1", "enc__layer2"]
    assert len(list(loss.parameters())) == 4  # registered before any forward (lazy input width)
    student, teacher, batch = _cls_inputs()
    student.pop("feat:enc.layer2")
    with pytest.raises(KeyError, match="enc.layer2"):
        loss(student, teacher, batch)


def test_only_listed_stages_get_branches() -> None:
    student, teacher, batch = _cls_inputs()
    loss = create_loss("ofa", stages=["enc.layer2"])
    loss(student, teacher, batch)
    assert list(loss.branches) == ["enc__layer2"]


def test_branch_loss_is_ofa_of_branch_logits() -> None:
    student, teacher, batch = _cls_inputs(3)
    torch.manual_seed(0)
    loss = OFALoss(eps=1.5, stages=["enc.layer1"], num_classes=5)
    out = loss(student, teacher, batch)
    head = loss.branches["enc__layer1"].head
    branch_logits = head(student["feat:enc.layer1"].mean(dim=(2, 3)))
    want = ofa_loss(branch_logits, teacher["logits"], batch["label"], 1.5).mean()
    assert out["ofa_branches"].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("spatial, feat_spatial", [((8, 8), (4, 4)), ((6, 6, 4), (3, 3, 2))])
def test_dense_with_ignored_voxels(spatial: tuple[int, ...], feat_spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, *spatial, generator=g, requires_grad=True)
    t = torch.randn(2, 3, *(2 * n for n in spatial), generator=g)  # teacher resized to the student
    feat = torch.randn(2, 6, *feat_spatial, generator=g)
    label = torch.randint(0, 3, (2, *spatial), generator=g)
    label[0] = IGNORE_INDEX
    loss = create_loss("ofa", eps=1.5)
    out = loss({"logits": s, "feat:dec": feat}, {"logits": t}, {"label": label})
    # changing the logits of ignored voxels changes nothing
    s2 = s.detach().clone()
    s2[0] = 100.0 * torch.randn_like(s2[0])
    out2 = loss({"logits": s2, "feat:dec": feat}, {"logits": t}, {"label": label})
    assert out2["ofa"].item() == pytest.approx(out["ofa"].item(), rel=1e-6)
    assert out2["ofa_branches"].item() == pytest.approx(out["ofa_branches"].item(), rel=1e-6)
    (out["ofa"] + out["ofa_branches"]).backward()
    assert float(s.grad[0].abs().sum()) == 0.0 and float(s.grad[1].abs().sum()) > 0
    assert loss.branches["dec"].head.weight.shape == (3, 6)


def test_all_ignored_gives_zero() -> None:
    student, teacher, _ = _cls_inputs()
    out = create_loss("ofa")(student, teacher, {"label": torch.full((6,), IGNORE_INDEX)})
    assert out["ofa"].item() == 0.0 and out["ofa_branches"].item() == 0.0


def test_example_inputs_build_branches() -> None:
    student, teacher, batch, ctx = OFALoss.example_inputs(seed=0)
    torch.manual_seed(0)
    out = create_loss("ofa")(student, teacher, batch, ctx)
    assert sorted(k for k in student if k.startswith("feat:")) == ["feat:layer1", "feat:layer2"]
    assert torch.isfinite(out["ofa"] + out["ofa_branches"])


@pytest.mark.parametrize("params", [{"eps": 0.0}, {"temperature": -1.0}, {"num_classes": 0}, {"stages": []},
                                    {"stages": "layer1"}, {"stages": ["a.b", "feat:a.b"]}])
def test_bad_values_raise(params: dict) -> None:
    with pytest.raises(ConfigError):
        create_loss("ofa", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="epsilon"):
        create_loss("ofa", epsilon=1.5)
