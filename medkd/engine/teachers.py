# SPDX-License-Identifier: Apache-2.0
"""What the engine asks of a teacher, and the frozen teacher of distillation.

Every teacher follows :class:`Teacher`: :meth:`~Teacher.update` after each optimiser step (an EMA teacher moves
towards the student; a frozen one does nothing), ``state_dict``/``load_state_dict``, and :attr:`~Teacher.persistent`,
whether the engine saves it in checkpoints (an EMA teacher is part of the run's state; a frozen pretrained teacher
is an input, loaded from its own file, so it is not copied into every checkpoint).

- :class:`~medkd.engine.ema.EMATeacher`: mean teacher (BCP, Grounded Teacher), updated and saved.
- :class:`FrozenTeacher`: a fixed network (knowledge distillation, SurgFUTR's future-seeing teacher after its own
  stage): ``eval()`` always, no gradients, never updated, not saved.

Example:
    >>> import torch
    >>> from torch import nn
    >>> teacher = FrozenTeacher(nn.Linear(2, 2))
    >>> teacher.train().training, teacher.persistent, teacher(torch.ones(1, 2)).requires_grad
    (False, False, False)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Teacher", "FrozenTeacher"]


@runtime_checkable
class Teacher(Protocol):
    """The teacher protocol of :class:`~medkd.engine.task.TrainTask` (``task.teacher``)."""

    persistent: bool

    def update(self, student: nn.Module) -> None:
        """Called by ``TrainTask.after_step`` after each optimiser step."""

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The teacher's state (saved when :attr:`persistent`)."""

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Restore :meth:`state_dict` on resume."""


class FrozenTeacher(nn.Module):
    """A fixed teacher: the wrapped network in ``eval()`` mode with ``requires_grad=False``, run without autograd.

    Args:
        module: the teacher network (already trained and on its device).

    Example:
        >>> FrozenTeacher(nn.Linear(1, 1)).update(nn.Linear(1, 1))  # nothing to do
    """

    persistent = False

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.module.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Ignore ``mode``: a frozen teacher always runs in ``eval()`` mode."""
        return super().train(False)

    def update(self, student: nn.Module) -> None:
        """A frozen teacher does not follow the student."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The teacher network's output, without building an autograd graph."""
        with torch.no_grad():
            return self.module(*args, **kwargs)
