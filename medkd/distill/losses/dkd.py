# SPDX-License-Identifier: Apache-2.0
"""Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022; mdistiller
``DKD.py``): KD split into a target-class part (TCKD) and a non-target part (NCKD), reweighted.

``dkd = min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)`` with, at temperature ``T``,
``TCKD = T^2 * KL([p_t,y, 1 - p_t,y] || [p_s,y, 1 - p_s,y])`` and ``NCKD = T^2 * KL`` of the softmaxes over the
non-target classes, averaged over samples (voxels for dense logits, ignored voxels dropped). mdistiller's DKD adds
a cross-entropy term of weight 1: compose it as the ``ce`` term (or set ``ce_weight``). With ``alpha=1`` and
``beta=1 - p_t,y`` per sample, TCKD + NCKD is exactly ``T^2 * KL(p_t || p_s)`` (the paper's Eq. 4).

Example:
    >>> import torch
    >>> s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    >>> out = DKDLoss(warmup=20)({"logits": s}, {"logits": t}, {"label": y}, {"epoch": 0})
    >>> float(out["dkd"])
    0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, logit_rows, mean_or_zero
from medkd.distill.registry import register_loss

__all__ = ["DKDLoss", "dkd_parts"]


def dkd_parts(student: Tensor, teacher: Tensor, label: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-row TCKD and NCKD ``(N,)`` (each times ``T^2``), as mdistiller computes them (the target logit masked
    out of the non-target softmax by subtracting 1000)."""
    gt = F.one_hot(label, student.shape[1]).to(student.dtype)
    p_s = F.softmax(student / temperature, dim=1)
    p_t = F.softmax(teacher / temperature, dim=1)
    bin_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    bin_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = (bin_t * (torch.log(bin_t) - torch.log(bin_s))).sum(1)
    log_s2 = F.log_softmax(student / temperature - 1000.0 * gt, dim=1)
    log_t2 = F.log_softmax(teacher / temperature - 1000.0 * gt, dim=1)
    nckd = (log_t2.exp() * (log_t2 - log_s2)).sum(1)
    return tckd * temperature**2, nckd * temperature**2


@register_loss("dkd")
class DKDLoss(DistillLoss):
    """DKD with mdistiller's warm-up ramp.

    Args:
        alpha: TCKD weight (1). beta: NCKD weight (8; 2 for res56->res20, 6 for VGG/WRN pairs, 0.5 on ImageNet).
        temperature: T (4; 1 on ImageNet). warmup: epochs of the linear ramp ``min(epoch / warmup, 1)`` (20).
        ce_weight: weight of a cross-entropy term ``ce`` returned alongside (0: compose ``ce`` separately).
        ignore_index: label value of voxels left out.
    """

    requires = Requires(student=("logits",), teacher=("logits",), batch=("label",))

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: float = 20,
                 ce_weight: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 epochs, got {warmup}")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.warmup, self.ce_weight, self.ignore_index = warmup, float(ce_weight), ignore_index

    def ramp(self, epoch: float) -> float:
        """``min(epoch / warmup, 1)`` (1 when ``warmup`` is 0)."""
        return 1.0 if self.warmup == 0 else min(float(epoch) / self.warmup, 1.0)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        rows = logit_rows(student["logits"], teacher["logits"], batch["label"], self.ignore_index)
        tckd, nckd = dkd_parts(rows.student, rows.teacher.detach(), rows.label, self.temperature)
        epoch = (ctx or {}).get("epoch", float("inf"))
        out = {"dkd": self.ramp(epoch) * mean_or_zero(self.alpha * tckd + self.beta * nckd, rows.student)}
        if self.ce_weight:
            out["ce"] = self.ce_weight * mean_or_zero(F.cross_entropy(rows.student, rows.label, reduction="none"),
                                                      rows.student)
        return out
