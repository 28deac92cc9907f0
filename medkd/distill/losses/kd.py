# SPDX-License-Identifier: Apache-2.0
"""Vanilla knowledge distillation: ``T^2 * KL(p_t || p_s)`` (Hinton et al., "Distilling the Knowledge in a Neural
Network", 2015; mdistiller ``KD.py``, torchdistill ``KDLoss``).

Cross-entropy is not part of this term: compose it with the ``ce`` term in the experiment YAML (CIFAR defaults
``ce`` 0.1 / ``kd`` 0.9 at ``T=4``; ImageNet 0.5 / 0.5 at ``T=1``). Dense logits ``(B, C, *spatial)`` are
distilled per voxel (the teacher resized to the student), averaged over the voxels whose label is not
``ignore_index`` (all voxels when the batch has no label).

Example:
    >>> import torch
    >>> s, t = torch.zeros(4, 3), torch.tensor([[2.0, 0.0, 0.0]]).repeat(4, 1)
    >>> round(float(KDLoss(temperature=1.0)({"logits": s}, {"logits": t}, {})["kd"]), 4)
    0.433
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, logit_rows, mean_or_zero, tempered_kl
from medkd.distill.registry import register_loss

__all__ = ["KDLoss"]


@register_loss("kd")
class KDLoss(DistillLoss):
    """Hinton KD: ``{"kd": T^2 * mean_i KL(softmax(t_i/T) || softmax(s_i/T))}``.

    Args:
        temperature: T (> 0); 4 on CIFAR, 1 on ImageNet.
        ignore_index: label value of voxels left out (dense tasks with a label in the batch).
    """

    requires = Requires(student=("logits",), teacher=("logits",))

    def __init__(self, temperature: float = 4.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        rows = logit_rows(student["logits"], teacher["logits"], batch.get("label"), self.ignore_index)
        kl = tempered_kl(rows.student, rows.teacher.detach(), self.temperature)
        return {"kd": self.temperature**2 * mean_or_zero(kl, rows.student)}
