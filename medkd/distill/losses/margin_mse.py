# SPDX-License-Identifier: Apache-2.0
"""Margin-MSE (Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
Distillation", arXiv 2010.02666): the student matches the teacher's score *margin* between a positive and a
negative, not the scores themselves, so the two models may score on different scales and offsets::

    margin_mse = mean((s_pos - s_neg) - (t_pos - t_neg))^2

No hyperparameters. Two input forms:

- **scores** (retrieval, pairwise ranking): ``student["score_pos"]`` and ``student["score_neg"]``, and the teacher's
  (e.g. cached offline) likewise. Positive and negative broadcast against each other, so ``(B,)`` with ``(B,)``
  (one pair per query) or ``(B, 1)`` with ``(B, K)`` (``K`` negatives per query) both work; the student's and the
  teacher's margins must have the same shape. A ``score_pos`` with one dimension fewer than ``score_neg`` gets a
  trailing axis (``(B,)`` with ``(B, K)``). Used whenever the student dict has either score key.
- **logits** (otherwise; what :attr:`MarginMSELoss.requires` declares): ``"logits"`` ``(N, C)`` or dense
  ``(B, C, *spatial)`` and ``batch["label"]``; the positive is the label's logit and every other class is a negative,
  the margin compared per negative (mean over the ``N * (C - 1)`` margins; ``ignore_index`` rows dropped).

Both forms are invariant to adding a per-query (per-row) constant to the student's scores.

Example:
    >>> import torch
    >>> s = {"score_pos": torch.tensor([2.0]), "score_neg": torch.tensor([1.0])}
    >>> t = {"score_pos": torch.tensor([3.0]), "score_neg": torch.tensor([0.0])}
    >>> float(MarginMSELoss()(s, t, {})["margin_mse"])  # ((2 - 1) - (3 - 0))^2
    4.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, logit_rows
from medkd.distill.registry import register_loss

__all__ = ["MarginMSELoss", "score_margin"]

_SCORE_KEYS = ("score_pos", "score_neg")


def score_margin(out: Mapping[str, Any], side: str) -> Tensor:
    """``out["score_pos"] - out["score_neg"]`` (broadcast; ``(B,)`` positives against ``(B, K)`` negatives too).

    Raises:
        ValueError: a score key is missing or the two shapes do not broadcast.
    """
    missing = [k for k in _SCORE_KEYS if k not in out]
    if missing:
        raise ValueError(f"margin_mse (score form) needs the {side}'s 'score_pos' and 'score_neg'; "
                         f"missing {missing}")
    pos, neg = out["score_pos"], out["score_neg"]
    if pos.ndim == neg.ndim - 1:
        pos = pos.unsqueeze(-1)  # (B,) positives against (B, K) negatives
    try:
        return pos - neg
    except RuntimeError:
        raise ValueError(f"{side} score_pos {tuple(pos.shape)} and score_neg {tuple(neg.shape)} do not broadcast "
                         "(use (B,) with (B,) or (B, 1) with (B, K))") from None


@register_loss("margin_mse")
class MarginMSELoss(DistillLoss):
    """Margin-MSE: ``{"margin_mse": mean(((s_pos - s_neg) - (t_pos - t_neg))^2)}``.

    Args:
        ignore_index: label value of rows/voxels left out (logits form).
    """

    requires = Requires(student=("logits",), teacher=("logits",), batch=("label",))

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        if any(k in student for k in _SCORE_KEYS):
            s_margin = score_margin(student, "student")
            t_margin = score_margin(teacher, "teacher").detach()
            if s_margin.shape != t_margin.shape:
                raise ValueError(f"student margins {tuple(s_margin.shape)} and teacher margins "
                                 f"{tuple(t_margin.shape)} differ in shape")
            return {"margin_mse": ((s_margin - t_margin) ** 2).mean()}
        rows = logit_rows(student["logits"], teacher["logits"], batch["label"], self.ignore_index)
        n, c = rows.student.shape
        if c < 2:
            raise ValueError(f"margin_mse (logits form) needs at least 2 classes, got {c}")
        y = rows.label[:, None]
        # margins to every class; the label's own column is exactly 0 for both models, so it adds nothing
        s_margin = rows.student.gather(1, y) - rows.student
        t_detached = rows.teacher.detach()
        t_margin = t_detached.gather(1, y) - t_detached
        return {"margin_mse": ((s_margin - t_margin) ** 2).sum() / max(n * (c - 1), 1)}
