# SPDX-License-Identifier: Apache-2.0
"""What a method hands the training engine: one :class:`TrainTask` per training stage.

A task owns the networks, the optimiser and the data; the :class:`~medkd.engine.loop.Engine` owns the loop,
logging, validation schedule, checkpoints, resume and distributed gradient averaging. A method stage
(e.g. BCP pre-training, BCP self-training) is therefore a few short methods.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Regression(TrainTask):
    ...     def __init__(self):
    ...         self.student = nn.Linear(2, 1)
    ...         self.optimizer = torch.optim.SGD(self.student.parameters(), lr=0.1)
    ...     def batches(self, start_iteration):
    ...         while True:
    ...             x = torch.randn(8, 2)
    ...             yield x, x.sum(1, keepdim=True)
    ...     def compute_loss(self, batch, iteration):
    ...         x, y = batch
    ...         loss = nn.functional.mse_loss(self.student(x), y)
    ...         return loss, {"mse": loss.item()}
    ...     def validate(self):
    ...         return {"score": -1.0}
    >>> Regression().learning_rate(1) is None
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from medkd.engine.teachers import Teacher

__all__ = ["TrainTask", "LearningRate"]

#: what :meth:`TrainTask.learning_rate` returns: one rate (every parameter group gets it times the group's
#: ``lr_scale``, default 1), one rate per parameter group, or None (leave the optimiser alone)
LearningRate = float | Sequence[float] | None


class TrainTask(ABC):
    """One training stage of a method (e.g. BCP pre-training, BCP self-training).

    Subclasses set :attr:`student`, :attr:`teacher` and :attr:`optimizer` (usually in ``__init__``) and
    implement :meth:`batches`, :meth:`compute_loss` and :meth:`validate`. A stage that trains more than the
    student (projectors, context modules, prototypes) lists them in :meth:`trainable_modules`; other state
    (queues, banks) goes through :meth:`extra_state` / :meth:`load_extra_state`.

    Attributes:
        student: the trained network (what gets evaluated and deployed).
        teacher: a :class:`~medkd.engine.teachers.Teacher` (an :class:`~medkd.engine.ema.EMATeacher`, a
            :class:`~medkd.engine.teachers.FrozenTeacher`, ...), or None when the stage has no teacher.
        optimizer: the optimiser over the trainable modules' parameters (parameter groups may carry an
            ``lr_scale``).
    """

    student: nn.Module
    teacher: Teacher | None = None
    optimizer: torch.optim.Optimizer

    def trainable_modules(self) -> dict[str, nn.Module]:
        """The networks this stage trains, by name; ``"student"`` first. They drive gradient averaging across
        ranks, gradient clipping, ``train()``/``eval()`` switches and the checkpoint's entries.

        The default is the student alone.
        """
        return {"student": self.student}

    def extra_state(self) -> dict[str, Any]:
        """State other than networks and optimiser to keep in checkpoints (tensors and plain types)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state` when resuming (``{}`` for checkpoints written without it)."""

    @abstractmethod
    def batches(self, start_iteration: int) -> Iterator[Any]:
        """An infinite iterator of batches; the first one is used for iteration ``start_iteration``.

        Args:
            start_iteration: 1 for a fresh run, ``last checkpoint iteration + 1`` when resuming. A task that
                derives its data from the iteration index resumes exactly.
        """

    @abstractmethod
    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward pass(es) for one iteration.

        Args:
            batch: the next item of :meth:`batches`.
            iteration: the 1-based iteration being computed.

        Returns:
            The scalar loss to backpropagate (0-d tensor) and scalars to log (e.g. loss terms).
        """

    def after_step(self, iteration: int) -> None:
        """Called after ``optimizer.step()``; the default updates the teacher, if any (a frozen one ignores it).

        Args:
            iteration: the iteration just completed.
        """
        if self.teacher is not None:
            self.teacher.update(self.student)

    def learning_rate(self, iteration: int) -> LearningRate:
        """The learning rate for ``iteration``: one value (each parameter group gets it times its ``lr_scale``),
        one value per parameter group, or None to leave the optimiser's learning rates alone."""
        return None

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Evaluate the student; called on rank 0 only, under ``torch.inference_mode()`` with the student in
        ``eval()``.

        Returns:
            Metrics including ``"score"`` (higher is better), which selects the best checkpoint.
        """

    def config_dict(self) -> dict[str, Any]:
        """The stage's configuration, stored in every checkpoint (plain types)."""
        return {}

    def on_log(self, iteration: int, batch: Any) -> None:
        """Optional hook at every log interval on rank 0 (e.g. save snapshot images).

        Args:
            iteration: the iteration just logged.
            batch: that iteration's batch.
        """
