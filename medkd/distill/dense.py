# SPDX-License-Identifier: Apache-2.0
"""Shapes shared by the loss plugins: dense logits as rows, teacher resizing, ignored voxels, tempered KL.

Classification logits are ``(N, C)``; dense (segmentation) logits ``(B, C, *spatial)`` become ``(B*prod(spatial),
C)`` rows, the label ``(B, *spatial)`` becomes ``(B*prod(spatial),)``; rows whose label is ``ignore_index`` drop out.

Example:
    >>> import torch
    >>> s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    >>> label = torch.zeros(2, 4, 4, dtype=torch.long); label[0, 0, 0] = -100
    >>> rows = logit_rows(s, t, label)
    >>> rows.student.shape, rows.teacher.shape, rows.label.shape
    (torch.Size([31, 3]), torch.Size([31, 3]), torch.Size([31]))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IGNORE_INDEX", "Rows", "as_rows", "dense_example_inputs", "logit_rows", "match_spatial", "mean_or_zero",
    "tempered_kl",
]

#: label value of voxels that no loss reads (as ``torch.nn.CrossEntropyLoss``)
IGNORE_INDEX = -100


class Rows(NamedTuple):
    """Student and teacher logits as ``(N, C)`` rows and the matching labels ``(N,)`` (``None`` without labels)."""

    student: Tensor
    teacher: Tensor
    label: Tensor | None


def as_rows(logits: Tensor) -> Tensor:
    """``(N, C)`` unchanged; ``(B, C, *spatial)`` -> ``(B * prod(spatial), C)``."""
    if logits.ndim == 2:
        return logits
    if logits.ndim < 2:
        raise ValueError(f"logits must be (N, C) or (B, C, *spatial), got shape {tuple(logits.shape)}")
    return logits.movedim(1, -1).reshape(-1, logits.shape[1])


def match_spatial(teacher: Tensor, student: Tensor) -> Tensor:
    """The teacher's dense logits resized (bi/trilinear) to the student's spatial size; unchanged if equal.

    Raises:
        ValueError: different class counts or dimensionality.
    """
    if teacher.shape[:2] != student.shape[:2] or teacher.ndim != student.ndim:
        raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match student logits {tuple(student.shape)} "
                         "(batch and class dimensions must agree)")
    if teacher.shape == student.shape or teacher.ndim == 2:
        return teacher
    mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[teacher.ndim]
    return F.interpolate(teacher, size=student.shape[2:], mode=mode, align_corners=False)


def logit_rows(student: Tensor, teacher: Tensor, label: Tensor | None = None,
               ignore_index: int = IGNORE_INDEX) -> Rows:
    """Rows of student and teacher logits (teacher resized to the student) without the ignored voxels.

    Args:
        student: ``(N, C)`` or ``(B, C, *spatial)``. teacher: the same, any spatial size.
        label: class indices ``(N,)`` or ``(B, *spatial)``; ``ignore_index`` rows are dropped. None: keep all.
    """
    teacher = match_spatial(teacher, student)
    s, t = as_rows(student), as_rows(teacher)
    if label is None:
        return Rows(s, t, None)
    y = label.reshape(-1).long()
    if y.numel() != s.shape[0]:
        raise ValueError(f"label {tuple(label.shape)} does not match logits {tuple(student.shape)}")
    keep = y != ignore_index
    if bool(keep.all()):
        return Rows(s, t, y)
    return Rows(s[keep], t[keep], y[keep])


def tempered_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-row ``KL(p_t || p_s)`` with ``p = softmax(z / T)``: ``(N, C) -> (N,)`` (the teacher is the target)."""
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1)


def mean_or_zero(values: Tensor, like: Tensor) -> Tensor:
    """``values.mean()``, or a zero that keeps ``like``'s graph when nothing is left (every voxel ignored)."""
    return values.mean() if values.numel() else like.sum() * 0.0


def dense_example_inputs(
    seed: int = 0,
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
    """Seeded dense ``(student, teacher, batch, ctx)`` for the stored-value tests of segmentation plugins: logits
    ``(2, 3, 12, 12)`` and a label map with two overlapping square structures."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(2, 12, 12, dtype=torch.long)
    label[:, 2:7, 2:7], label[:, 6:11, 7:11] = 1, 2
    student = {"logits": torch.randn(2, 3, 12, 12, generator=g)}
    teacher = {"logits": 2.0 * torch.randn(2, 3, 12, 12, generator=g)}
    return student, teacher, {"label": label}, {"epoch": 30.0, "step": 100}
