# SPDX-License-Identifier: Apache-2.0
"""Cross-entropy with the ground truth, as its own term (composed with ``kd``, ``dkd``, ... in the YAML).

Example:
    >>> import torch
    >>> s = {"logits": torch.tensor([[10.0, -10.0]])}
    >>> float(CELoss()(s, {}, {"label": torch.tensor([0])})["ce"]) < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, as_rows, mean_or_zero
from medkd.distill.registry import register_loss

__all__ = ["CELoss"]


@register_loss("ce")
class CELoss(DistillLoss):
    """``{"ce": CE(s, y)}`` averaged over the non-ignored samples or voxels.

    Args:
        ignore_index: label value left out. label_smoothing: as ``torch.nn.functional.cross_entropy``.
    """

    requires = Requires(student=("logits",), teacher=(), batch=("label",))

    def __init__(self, ignore_index: int = IGNORE_INDEX, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        logits, label = as_rows(student["logits"]), batch["label"].reshape(-1).long()
        keep = label != self.ignore_index
        per_row = F.cross_entropy(logits[keep], label[keep], reduction="none", label_smoothing=self.label_smoothing)
        return {"ce": mean_or_zero(per_row, logits)}
