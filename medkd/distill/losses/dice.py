# SPDX-License-Identifier: Apache-2.0
"""Soft Dice with the ground truth (MONAI ``DiceLoss``: softmax, one-hot labels), for segmentation students.

Composed with ``ce`` it is the Dice + CE supervision of BCP's supervised baseline; voxels labelled
``ignore_index`` are masked out (MONAI ``MaskedDiceLoss``).

Example:
    >>> import torch
    >>> label = torch.zeros(1, 8, 8, dtype=torch.long); label[:, 2:6, 2:6] = 1
    >>> perfect = {"logits": torch.stack([1 - label, label], 1).float() * 20}
    >>> float(DiceLoss()(perfect, {}, {"label": label})["dice"]) < 1e-3
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, dense_example_inputs
from medkd.distill.registry import register_loss

__all__ = ["DiceLoss"]


@register_loss("dice")
class DiceLoss(DistillLoss):
    """``{"dice": 1 - soft Dice}`` over the classes (background included unless ``include_background=False``).

    Args:
        include_background: count class 0. ignore_index: label value masked out.
    """

    requires = Requires(student=("logits",), teacher=(), batch=("label",))

    def __init__(self, include_background: bool = True, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        self.loss = MaskedDiceLoss(include_background=include_background, to_onehot_y=True, softmax=True)
        self.ignore_index = ignore_index

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Seeded dense inputs: logits ``(2, 3, 12, 12)`` and a label map with two square structures."""
        return dense_example_inputs(seed)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        logits, label = student["logits"], batch["label"]
        if logits.ndim < 3:
            raise ValueError(f"dice needs dense logits (B, C, *spatial), got {tuple(logits.shape)}")
        keep = (label != self.ignore_index).unsqueeze(1)
        target = label.masked_fill(~keep.squeeze(1), 0).unsqueeze(1)
        return {"dice": self.loss(logits, target, mask=keep.to(logits.dtype))}
