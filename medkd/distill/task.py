# SPDX-License-Identifier: Apache-2.0
"""One distillation training stage on the shared engine: :class:`DistillTask`.

Per iteration: the student's forward (with its feature taps), the frozen teacher's (taps detached; read from the
teacher-output cache when one is given), the weighted terms (:class:`~medkd.distill.terms.WeightedTerms`) with
``ctx = {"epoch": (iteration - 1) / iterations_per_epoch, "step": iteration}``. Auxiliary modules of the plugins
train with the student (the engine's trainable module ``distill``, saved in checkpoints, never exported). Plugins
with a bilevel ``meta_step`` (TGeo-KD) get one after each optimiser step, on a validation batch.

A strategy plugin (``hooks``, :class:`~medkd.distill.strategy.Strategy`) gets its loop hooks: ``setup`` before the
optimiser is built, ``pre_epoch``/``post_epoch`` at epoch boundaries, ``train_step`` for every step's loss (the
default is :meth:`DistillTask.step_loss`), ``teardown`` at the end; its ``modules()`` train with the student (the
engine's trainable module ``strategy``).

With no teacher (``teacher=None``) the same task trains a network from scratch on its supervised terms (``ce``,
``dice``): the scratch baseline and a teacher trained first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medkd.distill.cache import TeacherCache
from medkd.distill.config import OptimConfig, Optimizer, Schedule
from medkd.distill.data import ClassificationData, TaskData, example_batch
from medkd.distill.hooks import FeatureTap
from medkd.distill.loop_hooks import LoopHooks
from medkd.distill.terms import WeightedTerms
from medkd.engine.task import TrainTask
from medkd.engine.teachers import FrozenTeacher

__all__ = ["DistillTask", "StepOutputs", "build_optimizer", "schedule_lr"]

logger = logging.getLogger(__name__)


def schedule_lr(optim: OptimConfig, iteration: int) -> float:
    """The learning rate at ``iteration`` (1-based) of ``optim.schedule``.

    Example:
        >>> cfg = OptimConfig(lr=0.1, iterations=100, schedule="cosine")
        >>> schedule_lr(cfg, 1), round(schedule_lr(cfg, 51), 4), schedule_lr(cfg, 101)
        (0.1, 0.05, 0.0)
    """
    progress = min(max(iteration - 1, 0) / optim.iterations, 1.0)
    if optim.schedule == Schedule.CONST:
        return optim.lr
    if optim.schedule == Schedule.COSINE:
        return 0.5 * optim.lr * (1.0 + math.cos(math.pi * progress))
    return optim.lr * (1.0 - progress) ** 0.9


def build_optimizer(optim: OptimConfig, modules: list[nn.Module]) -> torch.optim.Optimizer:
    """The optimiser over the trainable parameters of ``modules`` (student first, then auxiliary modules)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if optim.name == Optimizer.SGD:
        return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    cls = torch.optim.Adam if optim.name == Optimizer.ADAM else torch.optim.AdamW
    return cls(params, lr=optim.lr, weight_decay=optim.weight_decay)


@dataclass
class StepOutputs:
    """The last step's student outputs, teacher outputs (empty without a teacher), batch and ctx."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor]
    batch: dict[str, Any]
    ctx: dict[str, Any]


class DistillTask(TrainTask):
    """Train ``student`` on ``terms`` with an optional frozen ``teacher``.

    Args:
        student: the network to train. teacher: the teacher network (wrapped in a FrozenTeacher) or None.
        terms: the weighted loss terms. data: the experiment's :class:`~medkd.distill.data.TaskData`.
        optim: optimiser settings. device: where to train. seed: batch-order seed.
        student_taps / teacher_taps: modules to tap. cache: the teacher-output cache (classification, no
            augmentation) or None. iterations_per_epoch: for ``ctx["epoch"]`` (0: one pass over the data).
        hooks: a strategy whose loop hooks run, or None.
    """

    def __init__(self, *, student: nn.Module, teacher: nn.Module | None, terms: WeightedTerms, data: TaskData,
                 optim: OptimConfig, device: torch.device, seed: int = 0, student_taps: tuple[str, ...] = (),
                 teacher_taps: tuple[str, ...] = (), cache: TeacherCache | None = None,
                 iterations_per_epoch: int = 0, hooks: LoopHooks | None = None) -> None:
        self.student = student.to(device)
        self.frozen = FrozenTeacher(teacher.to(device)) if teacher is not None else None
        self.teacher = self.frozen
        self.terms = terms.to(device)
        self.data, self.optim, self.device, self.seed = data, optim, device, seed
        self.student_tap = FeatureTap(self.student, student_taps, what="student")
        self.teacher_tap = (FeatureTap(self.frozen.module, teacher_taps, detach=True, what="teacher")
                            if self.frozen is not None else None)
        self.cache = cache
        self.iterations_per_epoch = iterations_per_epoch or max(1, data.train_size // _batch_size(data))
        self._meta = [loss for loss in terms.losses.values() if hasattr(loss, "meta_step")]
        self._val_batches: Iterator[dict[str, Any]] | None = None
        self.last: StepOutputs | None = None
        self.hooks = hooks if hooks is not None else LoopHooks()
        self._epoch: int | None = None
        self._dry_run()
        self.hooks.setup(self)
        self.strategy_modules = self.hooks.modules()
        if self.strategy_modules is not None:
            self.strategy_modules.to(device)
        self.optimizer = build_optimizer(optim, [self.student, self.terms, *self._strategy_list()])

    # ---------------------------------------------------------------------------------------------- forward

    def _dry_run(self) -> None:
        """One forward without gradients: builds the plugins' lazy modules before the optimiser sees them."""
        batch = example_batch(self.data)
        with torch.no_grad():
            self.step_loss(batch, 1)
        self.last = None

    def _strategy_list(self) -> list[nn.Module]:
        return [self.strategy_modules] if self.strategy_modules is not None else []

    def teacher_outputs(self, images: torch.Tensor, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The teacher's logits and taps (from the cache when every case of the batch is in it)."""
        assert self.frozen is not None and self.teacher_tap is not None
        cases = batch.get("case")
        if self.cache is not None and cases is not None:
            hits = [self.cache.get(c, 0) for c in cases]
            wanted = {"logits", *(f"feat:{name}" for name in self.teacher_tap.names)}
            if all(h is not None and wanted <= set(h) for h in hits):
                return {k: torch.stack([h[k] for h in hits]).to(self.device).float() for k in hits[0]}
        logits = self.frozen(images)
        out = {"logits": logits.float(), **self.teacher_tap.pop()}
        if self.cache is not None and cases is not None:
            for i, case in enumerate(cases):
                self.cache.put(case, 0, {k: v[i] for k, v in out.items()})
        return out

    def epoch_of(self, iteration: int) -> int:
        """The 0-based epoch of a 1-based iteration."""
        return (iteration - 1) // self.iterations_per_epoch

    def step_loss(self, batch: dict[str, Any], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The experiment's weighted terms on one batch (student forward, teacher forward or cache); the outputs
        are kept in :attr:`last` for strategies adding their own terms."""
        images = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        student = {"logits": self.student(images), **self.student_tap.pop()}
        teacher = self.teacher_outputs(images, batch) if self.frozen is not None else {}
        inputs = {**batch, "image": images, "label": label}
        ctx = {"epoch": (iteration - 1) / self.iterations_per_epoch, "step": iteration}
        self.last = StepOutputs(student, teacher, inputs, ctx)
        return self.terms(student, teacher, inputs, ctx)

    # ---------------------------------------------------------------------------------------------- engine hooks

    def trainable_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"student": self.student}
        if self.terms.state_dict():  # branches, projectors, prototypes, a bilevel MLP: saved and restored on resume
            modules["distill"] = self.terms
        if self.strategy_modules is not None and self.strategy_modules.state_dict():
            modules["strategy"] = self.strategy_modules
        return modules

    def batches(self, start_iteration: int) -> Iterator[Any]:
        return self.data.batches(self.seed + start_iteration)

    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        epoch = self.epoch_of(iteration)
        if epoch != self._epoch:
            if self._epoch is not None:
                self.hooks.post_epoch(self, self._epoch)
            self.hooks.pre_epoch(self, epoch)
            self._epoch = epoch
        return self.hooks.train_step(self, batch, iteration)

    def learning_rate(self, iteration: int) -> float:
        return schedule_lr(self.optim, iteration)

    def after_step(self, iteration: int) -> None:
        if not self._meta or self.last is None or not isinstance(self.data, ClassificationData):
            return
        if self._val_batches is None:
            self._val_batches = _val_batches(self.data, self.seed)
        val = next(self._val_batches)
        val = {"image": val["image"].to(self.device), "label": val["label"].to(self.device)}
        inputs, teacher_logits = self.last.batch, self.last.teacher.get("logits")
        for loss in self._meta:
            loss.meta_step(self.student, inputs, teacher_logits, val, schedule_lr(self.optim, iteration))

    def validate(self) -> dict[str, float]:
        return self.data.validate(self.student, self.device)

    def close(self) -> None:
        """End the strategy's last epoch and remove the feature hooks."""
        try:
            if self._epoch is not None:
                self.hooks.post_epoch(self, self._epoch)
                self._epoch = None
        finally:
            self.hooks.teardown(self)
        self.student_tap.remove()
        if self.teacher_tap is not None:
            self.teacher_tap.remove()


def _batch_size(data: TaskData) -> int:
    cfg = getattr(data, "cfg", None)
    return int(cfg.data.batch_size) if cfg is not None else 1


def _val_batches(data: ClassificationData, seed: int) -> Iterator[dict[str, Any]]:
    images, labels, _ = data.tensors(data.cfg.data.val_split)
    g = torch.Generator().manual_seed(seed + 1)
    bs = min(data.cfg.data.batch_size, len(labels))
    while True:
        idx = torch.randint(0, len(labels), (bs,), generator=g)
        yield {"image": images[idx], "label": labels[idx]}
