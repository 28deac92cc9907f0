# SPDX-License-Identifier: Apache-2.0
"""The loop hooks a training stage (:class:`~medkd.distill.task.DistillTask`) calls; strategies override them.

:class:`LoopHooks` does nothing beyond the experiment's own step loss, so a task without a strategy uses it as is.
It lives apart from :mod:`medkd.distill.strategy` so that the task does not import the strategy layer.

Example:
    >>> hooks = LoopHooks()
    >>> hooks.modules() is None
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

class LoopHooks:
    """The hooks of one training: setup, pre_epoch, train_step, post_epoch, teardown, and trained modules.

    ``task`` is the :class:`~medkd.distill.task.DistillTask` calling them (typed ``Any``: the task imports this
    module, not the other way round).
    """

    def modules(self) -> nn.Module | None:
        """Auxiliary modules trained with the student (gates, stitches); saved in checkpoints, never exported."""
        return None

    def setup(self, task: Any) -> None:
        """Called once the task is built, before the optimiser is (create lazy modules here)."""

    def pre_epoch(self, task: Any, epoch: int) -> None:
        """Called before the first step of each epoch (0-based)."""

    def train_step(self, task: Any, batch: dict[str, Any], iteration: int,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step; the default is the experiment's terms (:meth:`DistillTask.step_loss`)."""
        return task.step_loss(batch, iteration)

    def post_epoch(self, task: Any, epoch: int) -> None:
        """Called after the last step of each epoch (also of the last, possibly partial, one)."""

    def teardown(self, task: Any) -> None:
        """Called when the training ends (also on errors)."""
