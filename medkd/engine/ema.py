# SPDX-License-Identifier: Apache-2.0
"""Exponential-moving-average (mean) teacher shared by every teacher-student method.

The teacher is a frozen deep copy of the student whose weights follow ``t = decay * t + (1 - decay) * s``
after every optimiser step (Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017).
Two update modes cover the reference implementations:

- ``state_dict`` (BCP ACDC): every floating-point entry of the state dict, parameters **and** batch-norm
  running statistics, is averaged; integer buffers (``num_batches_tracked``) are copied from the student.
- ``params`` (BCP LA): only parameters are averaged; buffers change only through the teacher's own
  forwards when it runs in train mode.

``train_mode=False`` (clean) keeps the teacher in ``eval()`` for good; ``train_mode=True`` (faithful BCP)
keeps it in ``train()``: dropout on, batch-statistics batch norm.

Example:
    >>> import torch
    >>> from torch import nn
    >>> student = nn.Linear(2, 1)
    >>> teacher = EMATeacher(student, decay=0.99)
    >>> teacher.update(student)
    >>> teacher(torch.zeros(4, 2)).shape
    torch.Size([4, 1])
"""

from __future__ import annotations

import copy
import logging
from enum import StrEnum
from typing import Any

import torch
from torch import nn

__all__ = ["EMAMode", "EMATeacher"]

logger = logging.getLogger(__name__)


class EMAMode(StrEnum):
    """Which tensors an :class:`EMATeacher` averages."""

    STATE_DICT = "state_dict"
    PARAMS = "params"


def _strip_wrappers(model: nn.Module) -> nn.Module:
    """Return the module inside ``DistributedDataParallel`` / ``DataParallel`` wrappers."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class EMATeacher(nn.Module):
    """A frozen copy of the student that tracks it by exponential moving average.

    Args:
        student: the network to copy; a ``DistributedDataParallel``/``DataParallel`` wrapper is unwrapped.
        decay: EMA decay ``d`` in [0, 1]; ``t <- d * t + (1 - d) * s``. 0 copies the student, 1 freezes.
        mode: ``"state_dict"`` (parameters and floating-point buffers) or ``"params"`` (parameters only);
            see the module docstring.
        train_mode: keep the teacher in ``train()`` (True, faithful BCP) or in ``eval()`` (False, clean);
            calls to ``.train()``/``.eval()`` on the teacher or a parent module do not change it.

    Raises:
        ValueError: ``decay`` outside [0, 1] or an unknown ``mode``.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> teacher = EMATeacher(net, decay=0.9, mode="params", train_mode=False)
        >>> teacher.training
        False
    """

    #: saved in checkpoints (the engine's teacher protocol, :class:`medkd.engine.teachers.Teacher`)
    persistent = True

    def __init__(
        self,
        student: nn.Module,
        *,
        decay: float = 0.99,
        mode: str | EMAMode = EMAMode.STATE_DICT,
        train_mode: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(decay) <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        try:
            self.mode = EMAMode(mode)
        except ValueError:
            options = ", ".join(repr(m.value) for m in EMAMode)
            raise ValueError(f"unknown EMA mode {mode!r}; expected one of {options}") from None
        self.decay = float(decay)
        self.train_mode = bool(train_mode)
        self.module = copy.deepcopy(_strip_wrappers(student))
        for param in self.module.parameters():
            param.grad = None
        self.module.requires_grad_(False)
        self.train(self.train_mode)
        self.register_load_state_dict_pre_hook(_add_module_prefix)

    def train(self, mode: bool = True) -> EMATeacher:
        """Ignore ``mode``: the teacher stays in the mode chosen by ``train_mode`` at construction."""
        return super().train(self.train_mode)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Move the teacher one EMA step towards ``student`` (call after ``optimizer.step()``).

        Args:
            student: the network being trained, with the same architecture (DDP wrappers are unwrapped).

        Raises:
            ValueError: the student's parameter or state-dict names differ from the teacher's.
        """
        student = _strip_wrappers(student)
        if self.mode is EMAMode.PARAMS:
            teacher_items = dict(self.module.named_parameters())
            student_items = dict(student.named_parameters())
        else:
            teacher_items = self.module.state_dict(keep_vars=True)
            student_items = student.state_dict(keep_vars=True)
        if teacher_items.keys() != student_items.keys():
            missing = sorted(set(teacher_items) ^ set(student_items))[:5]
            raise ValueError(f"student and teacher have different {self.mode.value} entries, e.g. {missing}")
        t_float, s_float, t_other, s_other = [], [], [], []
        for name, t in teacher_items.items():
            s = student_items[name].detach()
            if t.is_floating_point():
                t_float.append(t.detach())
                s_float.append(s)
            else:
                t_other.append(t)
                s_other.append(s)
        if t_float:
            # t + (1 - d) * (s - t) == d * t + (1 - d) * s, over all tensors in a few fused kernels
            torch._foreach_lerp_(t_float, s_float, 1.0 - self.decay)
        if t_other:
            torch._foreach_copy_(t_other, s_other)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the teacher network without building an autograd graph; returns the network's output."""
        with torch.no_grad():
            return self.module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The teacher network's state dict (keys without a ``module.`` prefix)."""
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict of the teacher network (as returned by :meth:`state_dict`)."""
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, mode={self.mode.value}, train_mode={self.train_mode}"


def _add_module_prefix(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """When a parent module loads its state dict, map ``<prefix>key`` (our ``state_dict`` keys) to
    ``<prefix>module.key`` (the attribute path), so the teacher round-trips inside any parent module."""
    inner = prefix + "module."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
