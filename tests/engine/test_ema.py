# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.ema: closed-form EMA, the two modes, train/eval handling, state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medkd.engine.ema import EMAMode, EMATeacher


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2))


def _fill(module: nn.Module, value: float) -> None:
    """Set every floating-point parameter and buffer of ``module`` to ``value``."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(value)


@pytest.mark.parametrize("mode", ["state_dict", "params", EMAMode.PARAMS])
@pytest.mark.parametrize("decay, steps", [(0.99, 5), (0.5, 3), (0.0, 2), (1.0, 4)])
def test_closed_form_after_k_steps(mode, decay: float, steps: int) -> None:
    student = _net()
    teacher = EMATeacher(student, decay=decay, mode=mode)
    t0 = 2.0
    _fill(teacher.module, t0)
    s = -1.0
    _fill(student, s)  # constant student: t_k = d^k t0 + (1 - d^k) s
    for _ in range(steps):
        teacher.update(student)
    expected = decay**steps * t0 + (1 - decay**steps) * s
    for name, param in teacher.module.named_parameters():
        torch.testing.assert_close(param, torch.full_like(param, expected), msg=name)


def test_params_mode_leaves_buffers_and_state_dict_mode_averages_them() -> None:
    student = _net()
    with torch.no_grad():
        student[1].running_mean.fill_(4.0)
        student[1].running_var.fill_(9.0)
        student[1].num_batches_tracked.fill_(17)
    by_mode = {}
    for mode in ("params", "state_dict"):
        teacher = EMATeacher(_net(), decay=0.75, mode=mode)  # teacher BN buffers: mean 0, var 1, count 0
        teacher.update(student)
        by_mode[mode] = teacher.module[1]
    bn = by_mode["params"]
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1) and bn.num_batches_tracked == 0
    bn = by_mode["state_dict"]
    torch.testing.assert_close(bn.running_mean, torch.full((4,), 0.25 * 4.0))
    torch.testing.assert_close(bn.running_var, torch.full((4,), 0.75 + 0.25 * 9.0))
    assert bn.num_batches_tracked.item() == 17  # integer buffer copied, not averaged


@pytest.mark.parametrize("train_mode", [False, True])
def test_train_mode_is_kept_whatever_the_parent_does(train_mode: bool) -> None:
    teacher = EMATeacher(_net(), train_mode=train_mode)
    parent = nn.ModuleDict({"teacher": teacher})
    for call in (parent.train, parent.eval, teacher.train, teacher.eval):
        call()
        assert all(m.training is train_mode for m in teacher.modules())
    x = torch.randn(8, 3)
    outputs = [teacher(x) for _ in range(2)]
    assert torch.equal(outputs[0], outputs[1]) is (not train_mode)  # dropout on only in train mode


def test_train_mode_buffers_drift_only_in_train_mode() -> None:
    x = torch.randn(8, 3) + 5
    for train_mode, drifts in ((True, True), (False, False)):
        teacher = EMATeacher(_net(), mode="params", train_mode=train_mode)
        teacher(x)
        assert bool(torch.any(teacher.module[1].running_mean != 0)) is drifts


def test_teacher_is_frozen_detached_copy() -> None:
    student = _net()
    student(torch.randn(4, 3)).sum().backward()
    teacher = EMATeacher(student)
    assert teacher.module is not student
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not teacher(torch.randn(4, 3)).requires_grad
    teacher.update(student)
    assert all(p.requires_grad for p in student.parameters())


def test_unwraps_data_parallel_student() -> None:
    student = _net()
    teacher = EMATeacher(nn.DataParallel(student), decay=0.0)
    assert set(teacher.state_dict()) == set(student.state_dict())  # no "module." prefix
    _fill(student, 3.0)
    teacher.update(nn.DataParallel(student))
    assert torch.all(teacher.module[0].weight == 3.0)


def test_state_dict_round_trip_alone_and_inside_a_parent() -> None:
    teacher = EMATeacher(_net())
    _fill(teacher.module, 0.5)
    other = EMATeacher(_net())
    other.load_state_dict(teacher.state_dict())
    assert torch.equal(other.module[0].weight, teacher.module[0].weight)
    parent_a, parent_b = nn.ModuleDict({"t": teacher}), nn.ModuleDict({"t": EMATeacher(_net())})
    assert "t.0.weight" in parent_a.state_dict()
    parent_b.load_state_dict(parent_a.state_dict())  # strict: keys must map back onto t.module.*
    assert torch.equal(parent_b["t"].module[4].bias, teacher.module[4].bias)


BAD_ARGUMENTS = [({"decay": 1.5}, "decay"), ({"decay": -0.1}, "decay"), ({"mode": "buffers"}, "unknown EMA mode")]


@pytest.mark.parametrize("kwargs, match", BAD_ARGUMENTS)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EMATeacher(_net(), **kwargs)


def test_update_with_another_architecture_raises() -> None:
    teacher = EMATeacher(_net())
    with pytest.raises(ValueError, match="different"):
        teacher.update(nn.Linear(3, 2))
