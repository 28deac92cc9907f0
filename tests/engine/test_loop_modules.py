# SPDX-License-Identifier: Apache-2.0
"""The engine beyond one network: several trainable modules, extra state, frozen teachers, per-group learning
rates, gradient accumulation, mixed precision, the time split and plain progress lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.loop import TIME_PARTS, Engine, EngineConfig
from medkd.engine.metrics_log import read_metrics
from medkd.engine.task import TrainTask
from medkd.engine.teachers import FrozenTeacher, Teacher


class TwoNetTask(TrainTask):
    """A student and a projector trained together, a frozen teacher, and a counter kept as extra state."""

    def __init__(self, *, seed: int = 0, lr: Any = None, scale_projector: float = 1.0) -> None:
        torch.manual_seed(seed)
        self.student = nn.Linear(4, 3)
        self.projector = nn.Linear(3, 2)
        self.teacher = FrozenTeacher(nn.Linear(4, 2))
        self.optimizer = torch.optim.SGD([
            {"params": self.student.parameters()},
            {"params": self.projector.parameters(), "lr_scale": scale_projector},
        ], lr=0.05)
        self.seen = 0
        self._lr = lr

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"student": self.student, "projector": self.projector}

    def extra_state(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.seen = int(state.get("seen", 0))

    def batches(self, start_iteration: int) -> Iterator[Any]:
        it = start_iteration
        while True:
            g = torch.Generator().manual_seed(it)
            yield torch.randn(8, 4, generator=g)
            it += 1

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        return (self.projector(self.student(batch)) - self.teacher(batch)).float().pow(2).mean()

    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        self.seen += len(batch)
        return self._loss(batch), {}

    def learning_rate(self, iteration: int) -> Any:
        return self._lr(iteration) if callable(self._lr) else self._lr

    def validate(self) -> dict[str, float]:
        return {"score": -float(self._loss(torch.ones(2, 4)))}


def _cfg(**kwargs: Any) -> EngineConfig:
    return EngineConfig(**{"max_iterations": 6, "val_interval": 3, "log_interval": 2, "progress": False, **kwargs})


def test_every_trainable_module_learns_and_is_checkpointed_with_extra_state(tmp_path):
    task = TwoNetTask()
    before = task.projector.weight.detach().clone()
    Engine(task, tmp_path, _cfg()).run()
    assert not torch.equal(before, task.projector.weight)
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert set(ckpt["modules"]) == {"projector"} and ckpt["extra_state"] == {"seen": 48}
    assert ckpt["teacher"] is None  # a frozen teacher is an input, not run state


def test_resume_restores_modules_and_extra_state_exactly(tmp_path):
    full = TwoNetTask()
    Engine(full, tmp_path / "full", _cfg()).run()
    part = TwoNetTask()
    Engine(part, tmp_path / "part", _cfg(max_iterations=3)).run()
    resumed = TwoNetTask(seed=5)  # different initial weights: everything must come from the checkpoint
    resumed.teacher = part.teacher
    Engine(resumed, tmp_path / "part", _cfg()).run(resume=True)
    assert torch.allclose(resumed.projector.weight, full.projector.weight)
    assert torch.allclose(resumed.student.weight, full.student.weight) and resumed.seen == full.seen


def test_frozen_teacher_follows_the_protocol_and_never_changes(tmp_path):
    task = TwoNetTask()
    weights = task.teacher.module.weight.detach().clone()
    assert isinstance(task.teacher, Teacher)
    Engine(task, tmp_path, _cfg()).run()
    assert torch.equal(weights, task.teacher.module.weight) and not task.teacher.training


def test_one_rate_is_scaled_per_group_and_a_list_sets_each_group(tmp_path):
    task = TwoNetTask(lr=0.1, scale_projector=0.5)
    Engine(task, tmp_path / "a", _cfg(max_iterations=1)).run()
    assert [g["lr"] for g in task.optimizer.param_groups] == [0.1, 0.05]
    task = TwoNetTask(lr=lambda it: [0.01 * it, 0.2])
    Engine(task, tmp_path / "b", _cfg(max_iterations=2)).run()
    assert [g["lr"] for g in task.optimizer.param_groups] == [0.02, 0.2]
    with pytest.raises(ValueError, match="3 rates for 2 parameter groups"):
        Engine(TwoNetTask(lr=[0.1, 0.1, 0.1]), tmp_path / "c", _cfg(max_iterations=1)).run()


def test_trainable_modules_must_hold_the_student(tmp_path):
    task = TwoNetTask()
    task.trainable_modules = lambda: {"projector": task.projector}
    with pytest.raises(ValueError, match="'student'"):
        Engine(task, tmp_path, _cfg())


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    class Accumulate(TwoNetTask):
        def batches(self, start_iteration):  # halves of the big batch below, in order
            while True:
                g = torch.Generator().manual_seed(0)
                big = torch.randn(8, 4, generator=g)
                yield big[:4]
                yield big[4:]

    class Big(TwoNetTask):
        def batches(self, start_iteration):
            while True:
                yield torch.randn(8, 4, generator=torch.Generator().manual_seed(0))

    accumulated, big = Accumulate(), Big()
    Engine(accumulated, tmp_path / "acc", _cfg(max_iterations=3, grad_accum_steps=2)).run()
    Engine(big, tmp_path / "big", _cfg(max_iterations=3)).run()
    assert torch.allclose(accumulated.student.weight, big.student.weight, atol=1e-6)
    assert accumulated.seen == big.seen  # the same samples, in two batches per step


def test_bf16_autocast_trains_on_cpu(tmp_path):
    task = TwoNetTask()
    seen: list[torch.dtype] = []
    forward = task.student.forward
    task.student.forward = lambda x: (out := forward(x), seen.append(out.dtype))[0]
    result = Engine(task, tmp_path, _cfg(precision="bf16")).run()
    assert seen.count(torch.bfloat16) == 6 and result.last_iteration == 6  # validation stays in fp32
    assert task.student.weight.dtype == torch.float32  # master weights stay fp32


@pytest.mark.parametrize("kwargs, match", [({"precision": "fp8"}, "precision"),
                                           ({"grad_accum_steps": 0}, "grad_accum")])
def test_bad_engine_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kwargs)


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(ValueError, match="CUDA"):
        Engine(TwoNetTask(), tmp_path, _cfg(precision="fp16"))


def test_time_split_is_logged_and_summarised(tmp_path):
    result = Engine(TwoNetTask(), tmp_path, _cfg()).run()
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert rows and all(all(f"time/{part}" in r and r[f"time/{part}"] >= 0 for part in TIME_PARTS) for r in rows)
    assert set(result.time_split) == set(TIME_PARTS) and all(v >= 0 for v in result.time_split.values())
    assert sum(result.time_split.values()) * 6 <= result.seconds + 1e-3
    assert result.time_split["forward_backward"] > 0 and result.validation_seconds > 0


def test_progress_without_a_terminal_is_one_line_per_log_interval(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="medkd.engine.loop"):
        Engine(TwoNetTask(), tmp_path / "stage", _cfg(progress=True)).run()
    lines = [r.getMessage() for r in caplog.records if "it/s" in r.getMessage()]
    assert len(lines) == 3 and lines[0].startswith("stage: iteration 2/6, loss ")
