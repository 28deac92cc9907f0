# SPDX-License-Identifier: Apache-2.0
"""Dictionary keys shared by readers, transforms, methods and writers (MONAI naming)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Keys"]


class Keys(StrEnum):
    """Keys of the data dictionaries that flow reader -> transforms -> batch -> method step."""

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    BOXES = "boxes"
    LABELS = "labels"
    SCORES = "scores"
    TEACHER_PRED = "teacher_pred"
    CASE = "case"
    GEOMETRY = "geometry"
