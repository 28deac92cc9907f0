# SPDX-License-Identifier: Apache-2.0
"""The training loop shared by every method: iterations, logging, validation, checkpoints, resume, DDP.

A method describes one training stage as a :class:`~medkd.engine.task.TrainTask`; :class:`Engine` runs it:

1. per iteration (1-based): set the learning rate, zero gradients, ``compute_loss``, stop on a non-finite
   loss, backward, average gradients over ranks, clip, ``optimizer.step()``, ``task.after_step`` (EMA);
2. every ``log_interval``: one line in ``out_dir/metrics.jsonl`` (loss, lr, task scalars, iterations/s);
3. every ``val_interval`` and at the end: rank 0 validates the student, saves ``best.pt`` when the score
   improved and ``last.pt`` always (one checkpoint format, :mod:`medkd.engine.checkpoint`);
4. ``run(resume=True)`` continues from ``last.pt`` with models, optimiser, best score and RNG restored;
   Ctrl-C saves ``last.pt`` first, so nothing is lost.

Example:
    >>> import tempfile
    >>> from medkd.engine.task import TrainTask
    >>> class Fit(TrainTask):
    ...     def __init__(self):
    ...         self.student = torch.nn.Linear(1, 1)
    ...         self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.1)
    ...     def batches(self, start_iteration):
    ...         while True:
    ...             yield torch.ones(4, 1)
    ...     def compute_loss(self, batch, iteration):
    ...         return (self.student(batch) - 2).pow(2).mean(), {}
    ...     def validate(self):
    ...         return {"score": -float((self.student(torch.ones(1, 1)) - 2).abs())}
    >>> cfg = EngineConfig(max_iterations=20, val_interval=10, progress=False)
    >>> Engine(Fit(), Path(tempfile.mkdtemp()), cfg).run().last_iteration
    20
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from medkd.engine.checkpoint import load_checkpoint, save_checkpoint, to_plain, unwrap
from medkd.engine.distributed import (
    DistInfo,
    all_gather_object,
    average_gradients,
    barrier,
    broadcast_buffers,
    broadcast_object,
    get_dist_info,
)
from medkd.engine.metrics_log import MetricsLogger
from medkd.engine.seeding import get_rng_state, set_rng_state
from medkd.engine.task import TrainTask

__all__ = ["EngineConfig", "TrainResult", "Engine"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Schedule of a training run.

    Args:
        max_iterations: iterations to train (>= 1).
        val_interval: validate and checkpoint every this many iterations (0: only at the end).
        log_interval: write a metrics line every this many iterations (>= 1).
        checkpoint_interval: also save ``last.pt`` every this many iterations (0: only at validations,
            interruptions and the end).
        grad_clip: clip the student's gradient norm to this value (None: no clipping).
        progress: show a tqdm progress bar (rank 0 only).
        tensorboard: also log to ``out_dir/tensorboard`` (needs ``tensorboard``).
        select_on: the ``validate()`` entry that selects the best checkpoint (higher is better).

    Raises:
        ValueError: a value out of range.
    """

    max_iterations: int
    val_interval: int = 200
    log_interval: int = 10
    checkpoint_interval: int = 0
    grad_clip: float | None = None
    progress: bool = True
    tensorboard: bool = False
    select_on: str = "score"

    def __post_init__(self) -> None:
        for name, low in (("max_iterations", 1), ("val_interval", 0), ("log_interval", 1), ("checkpoint_interval", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"EngineConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.grad_clip is not None and not (isinstance(self.grad_clip, (int, float)) and self.grad_clip > 0):
            raise ValueError(f"EngineConfig.grad_clip must be None or > 0, got {self.grad_clip!r}")
        if not isinstance(self.select_on, str) or not self.select_on:
            raise ValueError(f"EngineConfig.select_on must be a non-empty string, got {self.select_on!r}")


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :meth:`Engine.run`.

    ``best_path``/``last_path`` are where rank 0 writes ``best.pt``/``last.pt``; ``best.pt`` is missing if no
    validation score was ever finite. ``seconds`` and ``iterations_per_second`` cover this call only.
    """

    best_score: float
    best_iteration: int
    last_iteration: int
    best_path: Path
    last_path: Path
    seconds: float
    iterations_per_second: float


@contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Hold Ctrl-C back until the block ends, so a parameter update is never half applied."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


class Engine:
    """Run a :class:`TrainTask` with logging, validation, checkpoints, resume and data parallelism.

    Args:
        task: the training stage.
        out_dir: where ``best.pt``, ``last.pt``, ``metrics.jsonl`` and ``engine_state.json`` go (rank 0).
        config: the schedule.
        dist: this process's place in a torchrun job (default: from the process group, or single process).

    Raises:
        TypeError: ``task.config_dict()`` holds values that cannot go into a checkpoint.

    Example:
        >>> EngineConfig(max_iterations=100, val_interval=50).log_interval
        10
    """

    def __init__(
        self, task: TrainTask, out_dir: str | PathLike[str], config: EngineConfig, *, dist: DistInfo | None = None
    ) -> None:
        self.task = task
        self.out_dir = Path(out_dir)
        self.config = config
        self.dist = dist if dist is not None else get_dist_info()
        self.best_path = self.out_dir / "best.pt"
        self.last_path = self.out_dir / "last.pt"
        self.best_score = -math.inf
        self.best_iteration = 0
        self._task_config = to_plain(task.config_dict())  # fail now rather than at the first checkpoint
        self._ddp = isinstance(task.student, torch.nn.parallel.DistributedDataParallel)
        self._metrics = MetricsLogger(self.out_dir / "metrics.jsonl", enabled=False)
        self._bar = tqdm(disable=True)
        self._tick = (0.0, 0)  # (time, iteration) of the last metrics line, for iterations/s

    @property
    def _main(self) -> bool:
        return self.dist.rank == 0

    def run(self, resume: bool = False) -> TrainResult:
        """Train to ``config.max_iterations`` (continuing from ``last.pt`` if ``resume``).

        Args:
            resume: continue from ``out_dir/last.pt`` if it exists (else start fresh).

        Returns:
            The :class:`TrainResult`; immediately, if ``last.pt`` shows the run already finished.

        Raises:
            FloatingPointError: the loss became NaN or infinite (names the iteration).
            KeyboardInterrupt: after ``last.pt`` was saved with the last completed iteration.
            DataError: ``last.pt`` is unreadable.
        """
        cfg, task = self.config, self.task
        start = 1
        if resume:
            start = self._resume()
            if start > cfg.max_iterations:
                logger.info("%s: training already finished at iteration %d", self.last_path, start - 1)
                return self._result(start - 1, 0.0, 0)
        elif self._main and self.last_path.exists():
            logger.warning("%s exists; starting afresh and overwriting it (use resume to continue)", self.last_path)
        if self._main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if start == 1:
                (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        tb_dir = self.out_dir / "tensorboard" if cfg.tensorboard else None
        self._metrics = MetricsLogger(self.out_dir / "metrics.jsonl", tensorboard_dir=tb_dir, enabled=self._main)
        self._metrics.drop_after(start - 1)
        show = self._main and cfg.progress
        self._bar = tqdm(total=cfg.max_iterations, initial=start - 1, desc=self.out_dir.name, disable=not show)
        completed, rng_snapshot = start - 1, get_rng_state()
        task.student.train()
        batches = iter(task.batches(start))
        t0 = time.perf_counter()
        self._tick = (t0, completed)
        try:
            for it in range(start, cfg.max_iterations + 1):
                batch = next(batches)
                loss_value, logs = self._forward_backward(it, batch)  # no state changes yet: safe to interrupt
                with _deferred_sigint():  # a Ctrl-C here takes effect once the iteration is applied and logged
                    self._update(it)
                    self._log(it, loss_value, logs, batch)
                    completed, rng_snapshot = it, get_rng_state()
                if (cfg.val_interval and it % cfg.val_interval == 0) or it == cfg.max_iterations:
                    self._validate_and_save(it)
                    rng_snapshot = get_rng_state()
                elif cfg.checkpoint_interval and it % cfg.checkpoint_interval == 0:
                    self._save(it, best=False)
        except KeyboardInterrupt:
            if self._main:
                self._save(completed, best=False, rng=rng_snapshot, collective=False)
                logger.warning("interrupted: saved %s at iteration %d; resume to continue", self.last_path, completed)
            raise
        finally:
            self._bar.close()
            self._metrics.close()
        return self._result(completed, time.perf_counter() - t0, completed - start + 1)

    def _forward_backward(self, it: int, batch: Any) -> tuple[float, dict[str, Any]]:
        task = self.task
        lr = task.learning_rate(it)
        if lr is not None:
            for group in task.optimizer.param_groups:
                group["lr"] = lr
        task.optimizer.zero_grad(set_to_none=True)
        loss, logs = task.compute_loss(batch, it)
        if loss.numel() != 1:
            raise ValueError(f"iteration {it}: compute_loss must return a scalar loss, got shape {tuple(loss.shape)}")
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"iteration {it}: the loss is {loss_value}; stopping (last.pt is unchanged)")
        loss.backward()
        if not self._ddp:
            average_gradients(task.student)
        if self.config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(task.student.parameters(), self.config.grad_clip)
            logs = {**logs, "grad_norm": float(norm)}
        return loss_value, logs

    def _log(self, it: int, loss_value: float, logs: dict[str, Any], batch: Any) -> None:
        self._bar.update(1)
        if it % self.config.log_interval:
            return
        now = time.perf_counter()
        speed = (it - self._tick[1]) / max(now - self._tick[0], 1e-9)
        self._tick = (now, it)
        lr = self.task.optimizer.param_groups[0]["lr"]
        task_logs = {k: v for k, v in logs.items() if k not in ("loss", "lr")}  # the engine's values win
        self._metrics.log(it, loss=loss_value, lr=lr, **task_logs, iter_per_s=speed)
        self._bar.set_postfix(loss=f"{loss_value:.4g}", best=f"{self.best_score:.4g}")
        if self._main:
            self.task.on_log(it, batch)

    def _update(self, it: int) -> None:
        self.task.optimizer.step()
        if not self._ddp:
            broadcast_buffers(unwrap(self.task.student))  # rank 0's BN statistics everywhere, as DDP does
        self.task.after_step(it)

    def _validate_and_save(self, it: int) -> None:
        score = None
        if self._main:
            student = self.task.student
            was_training = student.training
            student.eval()
            try:
                with torch.inference_mode():
                    results = self.task.validate()
            finally:
                student.train(was_training)
            if self.config.select_on not in results:
                raise ValueError(f"validate() returned {sorted(results)}, without {self.config.select_on!r}")
            score = float(results[self.config.select_on])
            self._metrics.log(it, **{f"val/{k}": v for k, v in results.items()})
            logger.info("iteration %d: validation %s", it, results)
        score = broadcast_object(score)
        improved = score > self.best_score  # False for NaN
        if improved:
            self.best_score, self.best_iteration = score, it
        self._save(it, best=improved)

    def _save(self, it: int, *, best: bool, rng: dict[str, Any] | None = None, collective: bool = True) -> None:
        """Save ``last.pt`` (and ``best.pt``) on rank 0; with ``collective`` every rank must call it."""
        rank_states = all_gather_object(get_rng_state()) if collective and self.dist.world_size > 1 else None
        if self._main:
            task = self.task
            extra: dict[str, Any] = {"best_score": self.best_score, "best_iteration": self.best_iteration}
            if rank_states is not None:
                extra["rng_ranks"] = rank_states
            for path in (self.last_path, self.best_path) if best else (self.last_path,):
                save_checkpoint(
                    path,
                    student=task.student,
                    teacher=task.teacher,
                    optimizer=task.optimizer,
                    config=self._task_config,
                    iteration=it,
                    rng=rng or get_rng_state(),
                    **extra,
                )
            self._write_state(it)
        if collective:
            barrier()

    def _write_state(self, it: int) -> None:
        state = {
            "iteration": it,
            "max_iterations": self.config.max_iterations,
            "best_score": self.best_score if math.isfinite(self.best_score) else None,
            "best_iteration": self.best_iteration,
            "finished": it >= self.config.max_iterations,
        }
        tmp = self.out_dir / ".engine_state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.out_dir / "engine_state.json")

    def _resume(self) -> int:
        """Load ``last.pt`` into the task if it exists; return the first iteration to run."""
        exists = all_gather_object(self.last_path.is_file())
        if len(set(exists)) > 1:
            raise RuntimeError(f"{self.last_path} is visible on some ranks only; out_dir must be shared to resume")
        if not exists[0]:
            logger.info("no %s: starting a fresh run", self.last_path)
            return 1
        ckpt = load_checkpoint(self.last_path)
        it = int(ckpt["iteration"])
        self.best_score = float(ckpt.get("best_score", -math.inf))
        self.best_iteration = int(ckpt.get("best_iteration", 0))
        if it >= self.config.max_iterations:
            return it + 1
        task = self.task
        unwrap(task.student).load_state_dict(ckpt["student"])
        if task.teacher is not None:
            if ckpt["teacher"] is None:
                raise ValueError(f"{self.last_path} has no teacher state, but the task has a teacher")
            task.teacher.load_state_dict(ckpt["teacher"])
        if ckpt["optimizer"] is not None:
            task.optimizer.load_state_dict(ckpt["optimizer"])
        rank_states = ckpt.get("rng_ranks")
        if rank_states is not None and len(rank_states) == self.dist.world_size:
            set_rng_state(rank_states[self.dist.rank])
        elif self._main:
            set_rng_state(ckpt["rng"])
        old, new = ckpt["config"], self._task_config
        changed = sorted(k for k in set(old) | set(new) if repr(old.get(k)) != repr(new.get(k)))
        if changed:
            logger.warning("resuming with a changed config: %s", changed)
        logger.info("resuming from %s at iteration %d (best score %s)", self.last_path, it, self.best_score)
        return it + 1

    def _result(self, last_iteration: int, seconds: float, iterations: int) -> TrainResult:
        return TrainResult(
            best_score=self.best_score,
            best_iteration=self.best_iteration,
            last_iteration=last_iteration,
            best_path=self.best_path,
            last_path=self.last_path,
            seconds=seconds,
            iterations_per_second=iterations / seconds if seconds > 0 else 0.0,
        )
