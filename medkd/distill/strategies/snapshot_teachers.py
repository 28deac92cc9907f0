# SPDX-License-Identifier: Apache-2.0
"""Voting snapshot teachers: the student's own recent epochs vote a soft target (SD-DARTS, Zhu et al.,
"SD-DARTS: Self-Distillation Differentiable Neural Architecture Search", arXiv 2302.05629; settings [recon]).

A teacher-free regulariser. At the end of every epoch the student's weights are stored (a CPU ``state_dict``) in a
ring of the last ``k`` snapshots, the oldest dropped. Each step adds to the experiment's terms (``ce``)::

    weight * T^2 * KL(p_bar || p_s),   p_bar = (1/K) sum_k softmax(z_k / T)

where ``z_k`` are the logits of snapshot ``k`` on the same batch: the snapshots vote by averaging their
**probabilities** (not their logits). One shadow network (a copy of the student, eval mode, no gradients, without
the student's feature hooks) loads each snapshot in turn. Before the first snapshot there is no term. The term is
logged as ``snapshot_kl`` (``T^2 KL``, before the weight) with ``snapshots`` (how many voted).

An "epoch" is ``optim.iterations_per_epoch`` steps (0: one pass over the training split), so that setting sets how
often snapshots are taken. Dense (segmentation) logits are compared per voxel, voxels labelled ``ignore_index``
left out. Snapshots are not saved in checkpoints: a resumed run starts with an empty ring.

Paper settings: ``K = 2..3`` epoch snapshots, ``weight = 1``, ``T = 1``.

Example:
    >>> import torch
    >>> s = torch.tensor([[2.0, 0.0, -1.0]])
    >>> abs(float(snapshot_kl(s, [s, s]))) < 1e-6  # snapshots that agree with the student: no term
    True
    >>> round(float(snapshot_kl(s, [torch.zeros(1, 3)])), 4)  # KL(uniform || p_s)
    0.7379
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.dense import IGNORE_INDEX, logit_rows, mean_or_zero
from medkd.distill.registry import register_strategy
from medkd.distill.strategy import Strategy
from medkd.errors import ConfigError

if TYPE_CHECKING:
    from medkd.distill.task import DistillTask

__all__ = ["SnapshotTeachers", "snapshot_kl"]

logger = logging.getLogger(__name__)

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_forward_hooks_with_kwargs",
               "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


def snapshot_kl(student_logits: Tensor, snapshot_logits: Sequence[Tensor], temperature: float = 1.0,
                label: Tensor | None = None, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``T^2 * mean_rows KL(p_bar || p_s)`` with ``p_bar`` the mean of the snapshots' ``softmax(z_k / T)``.

    Args:
        student_logits: ``(N, C)`` or ``(B, C, *spatial)``. snapshot_logits: one or more tensors of the same layout
            (detached here; dense ones resized to the student). temperature: T (> 0).
        label: class indices ``(N,)`` or ``(B, *spatial)``: rows labelled ``ignore_index`` are left out.

    Raises:
        ValueError: no snapshot logits, or ``temperature <= 0``.
    """
    if not snapshot_logits:
        raise ValueError("snapshot_kl needs the logits of at least one snapshot")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs, student = [], None
    for z in snapshot_logits:
        rows = logit_rows(student_logits, z.detach(), label, ignore_index)
        student = rows.student
        probs.append(F.softmax(rows.teacher.float() / temperature, dim=1))
    assert student is not None
    p_bar = torch.stack(probs).mean(0)
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    kl = (torch.xlogy(p_bar, p_bar) - p_bar * log_s).sum(1)
    return temperature**2 * mean_or_zero(kl, student)


def _shadow_of(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (eval mode, no gradients) without its forward/backward hooks (feature taps)."""
    shadow = copy.deepcopy(student)
    for module in shadow.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks is not None:
                hooks.clear()
    shadow.eval()
    shadow.requires_grad_(False)
    return shadow


@register_strategy("snapshot_teachers")
class SnapshotTeachers(Strategy):
    """Voting snapshot teachers: KL to the mean probability of the last k epoch snapshots (SD-DARTS, 2302.05629).

    Args:
        k: snapshots in the ring (>= 1; paper 2-3).
        weight: lambda, the term's weight (>= 0; paper 1).
        temperature: T (> 0; paper 1).
        ignore_index: label value of voxels left out (dense tasks).

    Raises:
        ConfigError: a bad value.

    Example:
        >>> strategy = SnapshotTeachers(k=2)
        >>> strategy.k, strategy.weight, strategy.temperature
        (2, 1.0, 1.0)
    """

    def __init__(self, k: int = 3, weight: float = 1.0, temperature: float = 1.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"snapshot_teachers k must be an integer >= 1, got {k!r}")
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ConfigError(f"snapshot_teachers weight must be a number >= 0, got {weight!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"snapshot_teachers temperature must be > 0, got {temperature!r}")
        self.k, self.weight, self.temperature = k, float(weight), float(temperature)
        self.ignore_index = ignore_index
        self.ring: deque[dict[str, Tensor]] = deque(maxlen=k)
        self.shadow: nn.Module | None = None
        self.taken = 0
        self._kl_sum, self._kl_steps, self._kl_last = 0.0, 0, None

    # ------------------------------------------------------------------------------------------ loop hooks

    def setup(self, task: DistillTask) -> None:
        """Start with an empty ring and a shadow copy of the student."""
        self.ring.clear()
        self.shadow = _shadow_of(task.student)
        self.taken = 0
        self._kl_sum, self._kl_steps, self._kl_last = 0.0, 0, None

    def post_epoch(self, task: DistillTask, epoch: int) -> None:
        """Store the student's weights (CPU copies) as the newest snapshot; the ring drops the oldest."""
        self.ring.append({k: v.detach().to("cpu", copy=True) for k, v in task.student.state_dict().items()})
        self.taken += 1

    def snapshot_logits(self, images: Tensor) -> list[Tensor]:
        """The logits of every snapshot in the ring on ``images`` (the shadow loads each in turn; no grad)."""
        assert self.shadow is not None, "setup() first"
        out = []
        with torch.no_grad():
            for state in self.ring:
                self.shadow.load_state_dict(state)
                out.append(self.shadow(images).detach())
        return out

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """The experiment's terms plus ``weight * snapshot_kl`` once a snapshot exists."""
        loss, logs = task.step_loss(batch, iteration)
        if not self.ring:
            return loss, logs
        assert task.last is not None
        inputs = task.last.batch
        term = snapshot_kl(task.last.student["logits"], self.snapshot_logits(inputs["image"]), self.temperature,
                           inputs.get("label"), self.ignore_index)
        value = float(term.detach())
        self._kl_sum, self._kl_steps, self._kl_last = self._kl_sum + value, self._kl_steps + 1, value
        return loss + self.weight * term, {**logs, "snapshot_kl": value, "snapshots": float(len(self.ring))}

    def teardown(self, task: DistillTask) -> None:
        """Release the shadow network (the ring stays for inspection)."""
        self.shadow = None

    def summary(self) -> dict[str, Any]:
        """Snapshots taken, steps with the term, its mean and last value."""
        return {"snapshots_taken": self.taken, "steps_with_term": self._kl_steps,
                "snapshot_kl_mean": self._kl_sum / self._kl_steps if self._kl_steps else None,
                "snapshot_kl_last": self._kl_last}
