# SPDX-License-Identifier: Apache-2.0
"""Concordance correlation loss for continuous targets: ``1 - CCC`` (Lin, "A concordance correlation coefficient to
evaluate reproducibility", Biometrics 1989), the loss of Wav2Small's teacher-as-annotator students (Wavs2Small,
arXiv 2408.13920; teacher valence CCC 0.676 on MSP-Podcast)::

    CCC(x, y) = 2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))^2)

with population (biased) moments over the batch. CCC is Pearson's correlation shrunk by any difference of scale or
location: 1 for ``y = x``, -1 for ``y = -x`` when ``x`` has mean 0, lower for a bias. Two-dimensional inputs
``(N, K)`` give one CCC per column (per regression target, or per class for logits); the loss averages ``1 - CCC``
over the columns. Dense outputs ``(B, K, *spatial)`` are read as rows ``(B * prod(spatial), K)`` (a dense teacher
resized to the student first).

As a ``distill.terms`` entry the student's outputs are matched to the teacher's (``teacher["logits"]``: the
annotations, for a regression student; the logits of a classification teacher, class by class across the batch).

Example:
    >>> import torch
    >>> x = torch.tensor([-0.3, 0.1, -0.2, 0.4])
    >>> float(ccc(x, x)), float(ccc(x, -x)), round(float(ccc(x, x + 0.5)), 3)
    (1.0, -1.0, 0.375)
    >>> round(float(CCCLoss()({"logits": x[:, None]}, {"logits": x[:, None] + 0.5}, {})["ccc"]), 3)
    0.625
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import logit_rows
from medkd.distill.registry import register_loss

__all__ = ["CCCLoss", "ccc"]


def ccc(x: Tensor, y: Tensor, eps: float = 1e-12) -> Tensor:
    """Lin's concordance correlation coefficient over dimension 0.

    Args:
        x, y: ``(N,)`` (one CCC) or ``(N, K)`` (one per column), the same shape, N >= 1.
        eps: floor of the denominator (two constant, equal inputs give 0, not NaN).

    Returns:
        A scalar for 1-D inputs, ``(K,)`` for 2-D inputs; values in [-1, 1].

    Raises:
        ValueError: different shapes, or inputs that are not 1-D or 2-D.

    Example:
        >>> import torch
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 5.0]])
        >>> ccc(x, x).tolist()
        [1.0, 1.0]
    """
    if x.shape != y.shape or x.ndim not in (1, 2):
        raise ValueError(f"ccc needs two (N,) or (N, K) tensors of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    mx, my = x.mean(dim=0), y.mean(dim=0)
    dx, dy = x - mx, y - my
    cov = (dx * dy).mean(dim=0)
    denom = dx.square().mean(dim=0) + dy.square().mean(dim=0) + (mx - my).square()
    return 2.0 * cov / denom.clamp_min(eps)


@register_loss("ccc")
class CCCLoss(DistillLoss):
    """``{"ccc": mean_k (1 - CCC(s_k, t_k))}``: the student's outputs concordant with the teacher's, per column.

    Use it for continuous targets (a 1-output regression student on a teacher's annotations,
    :mod:`medkd.distill.utilities.annotator`); on classification logits it matches each class's logit to the
    teacher's across the batch, scale and offset included (CCC penalises both, unlike Pearson's correlation).

    Args:
        eps: floor of CCC's denominator.
    """

    requires = Requires(student=("logits",), teacher=("logits",))

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        rows = logit_rows(student["logits"], teacher["logits"])  # dense teachers resized to the student
        return {"ccc": (1.0 - ccc(rows.student.float(), rows.teacher.detach().float(), self.eps)).mean()}
