# SPDX-License-Identifier: Apache-2.0
"""The training loop shared by every method: iterations, logging, validation, checkpoints, resume, DDP.

A method describes one training stage as a :class:`~medkd.engine.task.TrainTask`; :class:`Engine` runs it:

1. per iteration (1-based): set the learning rates, zero gradients, ``compute_loss`` (under autocast with
   ``precision`` bf16/fp16; over ``grad_accum_steps`` batches), stop on a non-finite loss, backward, average
   gradients over ranks and clip them (every module of ``task.trainable_modules()``), ``optimizer.step()``,
   ``task.after_step`` (the teacher's update);
2. every ``log_interval``: one line in ``out_dir/metrics.jsonl`` (loss, lr, task scalars, iterations/s and where
   an iteration's time went: ``time/data``, ``time/forward_backward``, ``time/optimizer``, ``time/teacher``,
   ``time/other``, seconds per iteration); a tqdm bar on a terminal, one plain log line per interval otherwise
   (Slurm, CI and other batch logs);
3. every ``val_interval`` and at the end: rank 0 validates the student, saves ``best.pt`` when the score
   improved and ``last.pt`` always (one checkpoint format, :mod:`medkd.engine.checkpoint`);
4. ``run(resume=True)`` continues from ``last.pt`` with every trainable module, the teacher (when persistent),
   the task's extra state, optimiser, grad scaler, best score and RNG restored; Ctrl-C saves ``last.pt`` first,
   so nothing is lost.

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
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
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
from medkd.errors import DataError

__all__ = ["EngineConfig", "TrainResult", "Engine", "PRECISIONS", "TIME_PARTS", "cpu_has_bf16"]

logger = logging.getLogger(__name__)

#: ``EngineConfig.precision`` values: full precision, or autocast to bfloat16 / float16 (fp16 with a grad scaler)
PRECISIONS = ("fp32", "bf16", "fp16")
#: where an iteration's time goes (``time/<part>`` in metrics.jsonl, ``TrainResult.time_split``)
TIME_PARTS = ("data", "forward_backward", "optimizer", "teacher", "other")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """Schedule of a training run.

    Args:
        max_iterations: iterations to train (>= 1).
        val_interval: validate and checkpoint every this many iterations (0: only at the end).
        log_interval: write a metrics line every this many iterations (>= 1).
        checkpoint_interval: also save ``last.pt`` every this many iterations (0: only at validations,
            interruptions and the end).
        grad_clip: clip the gradient norm of the trainable modules' parameters to this value (None: no clipping).
        progress: show progress (rank 0 only): a tqdm bar on a terminal, else one log line per log interval.
        precision: ``fp32``, ``bf16`` (autocast on CPU or CUDA) or ``fp16`` (CUDA only, with a grad scaler).
        grad_accum_steps: batches whose gradients add up to one optimiser step (>= 1); the logged loss is their
            mean.
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
    precision: str = "fp32"
    grad_accum_steps: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"EngineConfig.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        for name, low in (("max_iterations", 1), ("val_interval", 0), ("log_interval", 1), ("checkpoint_interval", 0),
                          ("grad_accum_steps", 1)):
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
    validation score was ever finite. ``seconds`` and ``iterations_per_second`` cover this call only;
    ``time_split`` is the mean seconds per iteration of each part of :data:`TIME_PARTS` (validation and
    checkpoints excluded; they are ``validation_seconds``).
    """

    best_score: float
    best_iteration: int
    last_iteration: int
    best_path: Path
    last_path: Path
    seconds: float
    iterations_per_second: float
    time_split: dict[str, float] = field(default_factory=dict)
    validation_seconds: float = 0.0


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
        self._modules = dict(task.trainable_modules())
        if self._modules.get("student") is not task.student:
            raise ValueError("trainable_modules() must hold the task's student under the name 'student'")
        ddp = torch.nn.parallel.DistributedDataParallel
        self._ddp = {name: isinstance(module, ddp) for name, module in self._modules.items()}
        self._device = next((p.device for m in self._modules.values() for p in m.parameters()), torch.device("cpu"))
        self._autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        if config.precision == "fp16" and self._device.type != "cuda":
            raise ValueError("EngineConfig.precision='fp16' needs a CUDA device; use 'bf16' on CPU")
        if config.precision == "bf16" and self._device.type == "cpu" and not cpu_has_bf16():
            logger.warning("precision bf16 on a CPU without bf16 instructions: expect it to be slower than fp32")
        self._scaler = torch.amp.GradScaler("cuda") if config.precision == "fp16" else None
        self._metrics = MetricsLogger(self.out_dir / "metrics.jsonl", enabled=False)
        self._bar = tqdm(disable=True)
        self._plain_progress = False
        self._tick = (0.0, 0)  # (time, iteration) of the last metrics line, for iterations/s
        self._times = dict.fromkeys(TIME_PARTS, 0.0)  # seconds since the last metrics line
        self._run_times = dict.fromkeys(TIME_PARTS, 0.0)  # seconds over this call
        self._validation_seconds = 0.0

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
        terminal = show and sys.stderr.isatty()
        self._plain_progress = show and not terminal
        self._bar = tqdm(total=cfg.max_iterations, initial=start - 1, desc=self.out_dir.name, disable=not terminal)
        completed, rng_snapshot = start - 1, get_rng_state()
        self._set_train(True)
        batches = iter(task.batches(start))
        t0 = time.perf_counter()
        self._tick = (t0, completed)
        try:
            for it in range(start, cfg.max_iterations + 1):
                began = time.perf_counter()
                loss_value, logs, batch = self._forward_backward(it, batches)  # no state changes: safe to interrupt
                with _deferred_sigint():  # a Ctrl-C here takes effect once the iteration is applied and logged
                    self._update(it, logs)
                    self._account("other", time.perf_counter() - began - sum(self._iteration_parts))
                    self._log(it, loss_value, logs, batch)
                    completed, rng_snapshot = it, get_rng_state()
                checkpoint_start = time.perf_counter()
                if (cfg.val_interval and it % cfg.val_interval == 0) or it == cfg.max_iterations:
                    self._validate_and_save(it)
                    rng_snapshot = get_rng_state()
                elif cfg.checkpoint_interval and it % cfg.checkpoint_interval == 0:
                    self._save(it, best=False)
                self._validation_seconds += time.perf_counter() - checkpoint_start
                self._tick = (self._tick[0] + time.perf_counter() - checkpoint_start, self._tick[1])
        except KeyboardInterrupt:
            if self._main:
                self._save(completed, best=False, rng=rng_snapshot, collective=False)
                logger.warning("interrupted: saved %s at iteration %d; resume to continue", self.last_path, completed)
            raise
        finally:
            self._bar.close()
            self._metrics.close()
        return self._result(completed, time.perf_counter() - t0, completed - start + 1)

    # ------------------------------------------------------------------------------------------ one iteration

    def _set_train(self, mode: bool) -> None:
        for module in self._modules.values():
            module.train(mode)

    def _sync(self) -> None:
        """Wait for queued GPU work, so a time split is measured where the work happens."""
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def _account(self, part: str, seconds: float) -> None:
        self._times[part] += seconds
        self._run_times[part] += seconds

    def _set_learning_rates(self, it: int) -> None:
        lr = self.task.learning_rate(it)
        if lr is None:
            return
        groups = self.task.optimizer.param_groups
        if isinstance(lr, Sequence):
            if len(lr) != len(groups):
                raise ValueError(f"learning_rate() gave {len(lr)} rates for {len(groups)} parameter groups")
            for group, value in zip(groups, lr):
                group["lr"] = float(value)
            return
        for group in groups:
            group["lr"] = float(lr) * float(group.get("lr_scale", 1.0))

    def _forward_backward(self, it: int, batches: Iterator[Any]) -> tuple[float, dict[str, Any], Any]:
        """Loss and gradients of one iteration (``grad_accum_steps`` batches); returns the last batch too."""
        task, steps = self.task, self.config.grad_accum_steps
        self._set_learning_rates(it)
        task.optimizer.zero_grad(set_to_none=True)
        self._iteration_parts = [0.0, 0.0]
        total, logs, batch = 0.0, {}, None
        for _ in range(steps):
            began = time.perf_counter()
            batch = next(batches)
            fetched = time.perf_counter()
            autocast = (torch.autocast(self._device.type, dtype=self._autocast_dtype)
                        if self._autocast_dtype is not None else nullcontext())
            with autocast:
                loss, logs = task.compute_loss(batch, it)
            if loss.numel() != 1:
                raise ValueError(f"iteration {it}: compute_loss must return a scalar loss, got {tuple(loss.shape)}")
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"iteration {it}: the loss is {loss_value}; stopping (last.pt is unchanged)")
            scaled = loss / steps
            (self._scaler.scale(scaled) if self._scaler is not None else scaled).backward()
            total += loss_value
            self._sync()
            done = time.perf_counter()
            self._account("data", fetched - began)
            self._account("forward_backward", done - fetched)
            self._iteration_parts[0] += fetched - began
            self._iteration_parts[1] += done - fetched
        return total / steps, logs, batch

    @property
    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for module in self._modules.values() for p in module.parameters() if p.requires_grad]

    def _update(self, it: int, logs: dict[str, Any]) -> None:
        began = time.perf_counter()
        for name, module in self._modules.items():
            if not self._ddp[name]:
                average_gradients(module)
        if self._scaler is not None:
            self._scaler.unscale_(self.task.optimizer)
        if self.config.grad_clip is not None:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self._parameters, self.config.grad_clip))
        if self._scaler is not None:
            self._scaler.step(self.task.optimizer)
            self._scaler.update()
        else:
            self.task.optimizer.step()
        for name, module in self._modules.items():
            if not self._ddp[name]:
                broadcast_buffers(unwrap(module))  # rank 0's BN statistics everywhere, as DDP does
        self._sync()
        stepped = time.perf_counter()
        self.task.after_step(it)
        self._sync()
        done = time.perf_counter()
        self._account("optimizer", stepped - began)
        self._account("teacher", done - stepped)
        self._iteration_parts += [stepped - began, done - stepped]

    def _log(self, it: int, loss_value: float, logs: dict[str, Any], batch: Any) -> None:
        self._bar.update(1)
        if it % self.config.log_interval:
            return
        now = time.perf_counter()
        n = it - self._tick[1]
        speed = n / max(now - self._tick[0], 1e-9)
        self._tick = (now, it)
        split = {f"time/{part}": round(seconds / max(n, 1), 6) for part, seconds in self._times.items()}
        self._times = dict.fromkeys(TIME_PARTS, 0.0)
        lr = self.task.optimizer.param_groups[0]["lr"]
        task_logs = {k: v for k, v in logs.items() if k not in ("loss", "lr")}  # the engine's values win
        self._metrics.log(it, loss=loss_value, lr=lr, **task_logs, iter_per_s=speed, **split)
        self._bar.set_postfix(loss=f"{loss_value:.4g}", best=f"{self.best_score:.4g}")
        if self._plain_progress:
            best = f", best {self.best_score:.4g}" if math.isfinite(self.best_score) else ""
            logger.info("%s: iteration %d/%d, loss %.4g, lr %.3g, %.2f it/s%s", self.out_dir.name, it,
                        self.config.max_iterations, loss_value, lr, speed, best)
        if self._main:
            self.task.on_log(it, batch)

    # ------------------------------------------------------------------------------------------ validation, state

    def _validate_and_save(self, it: int) -> None:
        score = None
        if self._main:
            was_training = self.task.student.training
            self._set_train(False)
            try:
                with torch.inference_mode():
                    results = self.task.validate()
            finally:
                self._set_train(was_training)
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
            teacher = task.teacher if getattr(task.teacher, "persistent", True) else None
            others = {name: module for name, module in self._modules.items() if name != "student"}
            for path in (self.last_path, self.best_path) if best else (self.last_path,):
                save_checkpoint(
                    path,
                    student=task.student,
                    teacher=teacher,
                    optimizer=task.optimizer,
                    config=self._task_config,
                    iteration=it,
                    rng=rng or get_rng_state(),
                    modules=others,
                    extra_state=task.extra_state(),
                    scaler=self._scaler,
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
        for name, module in self._modules.items():
            if name == "student":
                continue
            if name not in ckpt["modules"]:
                raise DataError(self.last_path, f"no state for trainable module {name!r} (saved: "
                                                f"{sorted(ckpt['modules']) or 'none'})")
            unwrap(module).load_state_dict(ckpt["modules"][name])
        if task.teacher is not None and getattr(task.teacher, "persistent", True):
            if ckpt["teacher"] is None:
                raise ValueError(f"{self.last_path} has no teacher state, but the task has a teacher")
            task.teacher.load_state_dict(ckpt["teacher"])
        if ckpt["optimizer"] is not None:
            task.optimizer.load_state_dict(ckpt["optimizer"])
        if self._scaler is not None and ckpt["scaler"] is not None:
            self._scaler.load_state_dict(ckpt["scaler"])
        task.load_extra_state(ckpt["extra_state"])
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
            time_split={part: round(t / iterations, 6) for part, t in self._run_times.items()} if iterations else {},
            validation_seconds=round(self._validation_seconds, 3),
        )
