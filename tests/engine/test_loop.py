# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.loop: training, logging, validation schedule, checkpoints, exact resume."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medkd.engine import loop as loop_mod
from medkd.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from medkd.engine.ema import EMATeacher
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.metrics_log import read_metrics
from medkd.engine.task import TrainTask

TRUE_W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


class SigintSGD(torch.optim.SGD):
    """SGD that delivers a real SIGINT to this process in the middle of the step of one iteration."""

    def __init__(self, params, at_step: int, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.at_step, self.steps = at_step, 0

    def step(self, closure=None):
        self.steps += 1
        if self.steps == self.at_step:
            signal.raise_signal(signal.SIGINT)  # synchronous, in this thread (os.kill may land on a torch thread)
        return super().step(closure)


class ToyTask(TrainTask):
    """Noisy linear regression through a BN layer; batches derive from the iteration index."""

    def __init__(
        self,
        *,
        teacher: bool = True,
        init_seed: int = 0,
        interrupt_at: int | None = None,
        sigint_in_step: int | None = None,
        nan_at: int | None = None,
        scores: list[float] | None = None,
        lr_schedule: bool = False,
    ) -> None:
        torch.manual_seed(init_seed)
        self.student = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
        self.teacher = EMATeacher(self.student, decay=0.9, train_mode=True) if teacher else None
        params = self.student.parameters()
        if sigint_in_step is not None:
            self.optimizer = SigintSGD(params, sigint_in_step, lr=0.02, momentum=0.5)
        else:
            self.optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.5)
        self.interrupt_at, self.nan_at, self.scores, self.lr_schedule = interrupt_at, nan_at, scores, lr_schedule
        self.calls: list[int] = []
        self.validations: list[bool] = []  # student.training during validate()
        self.logged: list[int] = []
        self.losses: list[float] = []

    def batches(self, start_iteration: int) -> Iterator[Any]:
        it = start_iteration
        while True:
            g = torch.Generator().manual_seed(it)
            x = torch.randn(64, 4, generator=g)
            yield it, x, x @ TRUE_W
            it += 1

    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        it, x, y = batch
        assert it == iteration
        self.calls.append(iteration)
        noise = 0.01 * torch.randn_like(y)  # global RNG: resume must restore it
        if iteration == self.interrupt_at:
            raise KeyboardInterrupt
        loss = nn.functional.mse_loss(self.student(x), y + noise)
        if self.teacher is not None:
            loss = loss + 0.1 * nn.functional.mse_loss(self.student(x), self.teacher(x))
        if iteration == self.nan_at:
            loss = loss * float("nan")
        self.losses.append(float(loss.detach()))
        return loss, {"aux": float(noise.abs().mean()), "loss": -1.0, "lr": -1.0}  # engine's loss/lr win

    def learning_rate(self, iteration: int) -> float | None:
        return 0.02 * 0.5 ** (iteration // 4) if self.lr_schedule else None

    def validate(self) -> dict[str, float]:
        self.validations.append(self.student.training)
        torch.rand(1)  # validation consuming RNG must not break resume
        if self.scores is not None:
            return {"score": self.scores[len(self.validations) - 1]}
        g = torch.Generator().manual_seed(10_000)
        x = torch.randn(64, 4, generator=g)
        mse = float(nn.functional.mse_loss(self.student(x), x @ TRUE_W))
        return {"score": -mse, "mse": mse}

    def config_dict(self) -> dict[str, Any]:
        return {"lr": 0.02, "root": Path("/data")}

    def on_log(self, iteration: int, batch: Any) -> None:
        self.logged.append(iteration)


def _cfg(**kwargs: Any) -> EngineConfig:
    return EngineConfig(**{"max_iterations": 10, "val_interval": 5, "log_interval": 1, "progress": False, **kwargs})


def _train_lines(path: Path) -> list[dict]:
    return [r for r in read_metrics(path) if "loss" in r]


def test_trains_logs_and_writes_one_checkpoint_format(tmp_path: Path) -> None:
    task = ToyTask()
    result = Engine(task, tmp_path, _cfg(max_iterations=60, val_interval=20, log_interval=10)).run()
    lines = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in lines if "loss" in r]
    assert [r["iteration"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert all({"time", "lr", "aux", "iter_per_s"} <= set(r) for r in train)
    assert [r["loss"] for r in train] == [task.losses[i - 1] for i in range(10, 61, 10)]
    assert sum(task.losses[-10:]) < 0.1 * sum(task.losses[:10])
    val_mse = [r["val/mse"] for r in lines if "val/mse" in r]
    assert val_mse[-1] < val_mse[0]
    assert [r["iteration"] for r in lines if "val/score" in r] == [20, 40, 60]
    assert task.logged == [10, 20, 30, 40, 50, 60]
    assert result.last_iteration == 60 and result.iterations_per_second > 0
    assert result.best_path == tmp_path / "best.pt" and result.last_path == tmp_path / "last.pt"
    for name in ("best.pt", "last.pt"):
        raw = torch.load(tmp_path / name, weights_only=True)
        assert raw["format"] == CHECKPOINT_FORMAT
        assert {"student", "teacher", "optimizer", "config", "iteration", "rng", "best_score"} <= set(raw)
        assert raw["config"] == {"lr": 0.02, "root": "/data"}
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 60
    state = json.loads((tmp_path / "engine_state.json").read_text())
    assert state["finished"] and state["iteration"] == 60 and state["best_iteration"] == result.best_iteration


@pytest.mark.parametrize(
    "max_iterations, val_interval, checkpoint_interval, scores, expected_saves",
    [
        # (file, iteration) pairs saved, in order; best only when the score improves
        (12, 5, 0, [0.5, 0.3, 0.7], [("last", 5), ("best", 5), ("last", 10), ("last", 12), ("best", 12)]),
        (7, 0, 3, [0.1], [("last", 3), ("last", 6), ("last", 7), ("best", 7)]),
        (4, 2, 0, [0.2, 0.2], [("last", 2), ("best", 2), ("last", 4)]),  # ties do not replace best
    ],
)
def test_validation_and_checkpoint_schedule(
    tmp_path: Path, monkeypatch, max_iterations, val_interval, checkpoint_interval, scores, expected_saves
) -> None:
    saves: list[tuple[str, int]] = []
    real_save = loop_mod.save_checkpoint

    def record(path, **kwargs):
        saves.append((Path(path).stem, kwargs["iteration"]))
        return real_save(path, **kwargs)

    monkeypatch.setattr(loop_mod, "save_checkpoint", record)
    task = ToyTask(scores=scores)
    cfg = _cfg(max_iterations=max_iterations, val_interval=val_interval, checkpoint_interval=checkpoint_interval)
    result = Engine(task, tmp_path, cfg).run()
    assert saves == expected_saves
    assert task.validations == [False] * len(scores)  # student in eval() during validate
    assert task.student.training
    assert result.best_score == max(scores)
    assert load_checkpoint(tmp_path / "best.pt")["best_score"] == max(scores)


def _final_state(task: ToyTask) -> list[torch.Tensor]:
    tensors = list(task.student.state_dict().values()) + list(task.teacher.state_dict().values())
    return tensors + [s["momentum_buffer"] for s in task.optimizer.state.values()]


@pytest.fixture
def python_sigint_handler() -> Iterator[None]:
    """Python's own Ctrl-C handler, whatever this process inherited (a shell's background job starts with SIGINT
    ignored, and Python then keeps it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    "interruption, saved_iteration",
    [({"interrupt_at": 6}, 5), ({"interrupt_at": 8}, 7), ({"sigint_in_step": 7}, 7), ({"interrupt_at": 1}, 0)],
)
def test_interrupted_run_resumes_exactly(
    tmp_path: Path, interruption: dict, saved_iteration: int, python_sigint_handler: None
) -> None:
    cfg = _cfg()
    reference = ToyTask(lr_schedule=True)
    torch.manual_seed(123)
    Engine(reference, tmp_path / "ref", cfg).run()

    interrupted = ToyTask(lr_schedule=True, **interruption)
    torch.manual_seed(123)
    with pytest.raises(KeyboardInterrupt):
        Engine(interrupted, tmp_path / "run", cfg).run()
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == saved_iteration

    resumed = ToyTask(lr_schedule=True, init_seed=99)  # other weights: must be overwritten by last.pt
    torch.manual_seed(7)  # other RNG state: must be overwritten too
    result = Engine(resumed, tmp_path / "run", cfg).run(resume=True)
    assert resumed.calls[0] == saved_iteration + 1 and result.last_iteration == 10
    for a, b in zip(_final_state(reference), _final_state(resumed), strict=True):
        assert torch.equal(a, b)
    ref_lines = [(r["iteration"], r["loss"], r["lr"]) for r in _train_lines(tmp_path / "ref" / "metrics.jsonl")]
    run_lines = [(r["iteration"], r["loss"], r["lr"]) for r in _train_lines(tmp_path / "run" / "metrics.jsonl")]
    assert run_lines == ref_lines  # no duplicated or missing iterations, identical losses
    assert result.best_score == load_checkpoint(tmp_path / "ref" / "best.pt")["best_score"]


def test_resume_of_a_finished_run_returns_at_once(tmp_path: Path) -> None:
    first = Engine(ToyTask(), tmp_path, _cfg()).run()
    task = ToyTask()
    again = Engine(task, tmp_path, _cfg()).run(resume=True)
    assert task.calls == [] and again.last_iteration == 10
    assert (again.best_score, again.best_iteration) == (first.best_score, first.best_iteration)
    longer = ToyTask()
    Engine(longer, tmp_path, _cfg(max_iterations=12)).run(resume=True)  # a longer schedule continues
    assert longer.calls == [11, 12]


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    task = ToyTask()
    Engine(task, tmp_path / "new", _cfg(max_iterations=3)).run(resume=True)
    assert task.calls == [1, 2, 3]


@pytest.mark.parametrize("nan_at", [1, 4])
def test_non_finite_loss_raises_naming_the_iteration(tmp_path: Path, nan_at: int) -> None:
    with pytest.raises(FloatingPointError, match=f"iteration {nan_at}"):
        Engine(ToyTask(nan_at=nan_at), tmp_path, _cfg()).run()


def test_learning_rate_schedule_and_grad_clip_are_applied(tmp_path: Path) -> None:
    task = ToyTask(lr_schedule=True)
    Engine(task, tmp_path, _cfg(max_iterations=8, grad_clip=1e-3)).run()
    lines = _train_lines(tmp_path / "metrics.jsonl")
    assert [r["lr"] for r in lines] == [0.02 * 0.5 ** (i // 4) for i in range(1, 9)]
    assert all("grad_norm" in r for r in lines)


def test_teacher_free_task_and_missing_score(tmp_path: Path) -> None:
    task = ToyTask(teacher=False)
    Engine(task, tmp_path / "a", _cfg(max_iterations=2)).run()
    assert load_checkpoint(tmp_path / "a" / "last.pt")["teacher"] is None
    with pytest.raises(ValueError, match="without 'dice'"):
        Engine(ToyTask(), tmp_path / "b", _cfg(max_iterations=2, select_on="dice")).run()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_iterations": 0},
        {"max_iterations": 10, "val_interval": -1},
        {"max_iterations": 10, "log_interval": 0},
        {"max_iterations": 10, "checkpoint_interval": 2.5},
        {"max_iterations": 10, "grad_clip": 0.0},
        {"max_iterations": 10, "select_on": ""},
        {"max_iterations": True},
    ],
)
def test_engine_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EngineConfig(**kwargs)
