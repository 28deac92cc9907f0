# SPDX-License-Identifier: Apache-2.0
"""Plackett-Luce distillation (Bassam et al., "Plackett-Luce Distillation", arXiv 2506.12542, App. C): the
teacher's ranking of the classes, with the ground truth forced to the top, as a weighted list-wise loss.

For a row with student logits ``s``, teacher logits ``t`` and label ``y``, the teacher-optimal permutation ``pi*``
puts ``y`` first and then the other classes by descending teacher logit; with ``q = softmax(t / tau)``::

    pld = sum_k q[pi*_k] * (logsumexp_{j >= k} s[pi*_j] - s[pi*_k])

i.e. the negative log-likelihood of ``pi*`` under a Plackett-Luce model of the student, each choice step ``k``
weighted by the teacher's probability of the class chosen there. The first step alone is the cross-entropy, so
the loss replaces CE + KD (use it as the only term). It is convex in ``s`` and invariant to adding a constant to a
row of student logits; with equal weights it is ListMLE (times the weight). Defaults: ``tau=1`` (ImageNet 77.30
vs 76.80 for KD); ``tau=4`` on CIFAR. Dense logits ``(B, C, *spatial)`` are ranked per voxel (``O(C log C)`` each,
meant for <= 20 classes; the teacher resized to the student), averaged over voxels whose label is not
``ignore_index``.

Example:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> s, y = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([1])
    >>> t = torch.tensor([[0.0, 30.0, 0.0]])  # the teacher is sure of the label: PLD is the cross-entropy
    >>> out = PLDLoss()({"logits": s}, {"logits": t}, {"label": y})
    >>> round(float(out["pld"]), 4), round(float(F.cross_entropy(s, y)), 4)
    (1.4076, 1.4076)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, logit_rows, mean_or_zero
from medkd.distill.registry import register_loss

__all__ = ["PLDLoss", "plackett_luce_nll", "teacher_order"]


def teacher_order(teacher: Tensor, label: Tensor) -> Tensor:
    """The permutation ``pi*`` per row: the label first, then the other classes by descending teacher logit.

    Args:
        teacher: ``(N, C)`` logits. label: ``(N,)`` class indices.

    Returns:
        ``(N, C)`` long: ``order[n, k]`` is the class chosen at step ``k`` (ties keep class order).
    """
    key = teacher.detach().scatter(1, label[:, None], float("inf"))
    return key.argsort(dim=1, descending=True, stable=True)


def plackett_luce_nll(student: Tensor, order: Tensor, weights: Tensor) -> Tensor:
    """Per-row weighted Plackett-Luce negative log-likelihood of ``order`` under ``student`` scores.

    ``sum_k weights[:, k] * (logsumexp_{j >= k} student[order_j] - student[order_k])``, with the suffix
    log-sum-exps from one reverse ``logcumsumexp``. Unit weights give ListMLE.

    Args:
        student: ``(N, C)`` scores. order: ``(N, C)`` permutations. weights: ``(N, C)`` weight of each step.

    Returns:
        ``(N,)``.
    """
    s = student.gather(1, order)
    tail = torch.logcumsumexp(s.flip(1), dim=1).flip(1)
    return (weights * (tail - s)).sum(dim=1)


@register_loss("pld")
class PLDLoss(DistillLoss):
    """PLD: ``{"pld": mean_i sum_k q_t[pi*_k] * (logsumexp_{j >= k} s[pi*_j] - s[pi*_k])}``.

    Args:
        temperature: tau (> 0) of the teacher weights ``softmax(t / tau)``; 1 on ImageNet, 4 on CIFAR.
        ignore_index: label value of voxels left out (dense tasks).

    Raises:
        ValueError: ``temperature <= 0``.
    """

    requires = Requires(student=("logits",), teacher=("logits",), batch=("label",))

    def __init__(self, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        rows = logit_rows(student["logits"], teacher["logits"], batch["label"], self.ignore_index)
        t = rows.teacher.detach()
        order = teacher_order(t, rows.label)
        weights = torch.softmax(t / self.temperature, dim=1).gather(1, order)
        return {"pld": mean_or_zero(plackett_luce_nll(rows.student, order, weights), rows.student)}
