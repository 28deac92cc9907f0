# SPDX-License-Identifier: Apache-2.0
"""Class policies for class-agnostic expert boxes (spec section 7, "Expert interface").

* ``teacher_match``: the class of the teacher detection with the highest IoU (IoU >= 0.3, score >= 0.05); boxes
  without one are dropped.
* ``fixed:<id>``: every box gets class ``<id>`` (the default at K = 1 is ``fixed:0``).
* ``prompt_map``: the class of the box's text prompt (CSV experts), from a ``{prompt: class}`` map; boxes with an
  unmapped prompt are dropped.

Boxes that already carry a class (``label >= 0``, e.g. SAM ``refine`` inherits the prompt's) keep it.

Example:
    >>> from medkd.methods.grounded_teacher.experts.base import ExpertBoxes
    >>> eb = ExpertBoxes([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.9], [-1, -1])
    >>> teacher = {"boxes": [[1, 1, 10, 10]], "scores": [0.6], "labels": [1]}
    >>> assign_classes(eb, teacher, "teacher_match", 2).labels.tolist()
    [1]
    >>> assign_classes(eb, None, "fixed:0", 1).labels.tolist()
    [0, 0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from monai.data.box_utils import box_iou

from medkd.errors import ConfigError
from medkd.methods.grounded_teacher.experts.base import ExpertBoxes

__all__ = ["assign_classes", "CLASS_POLICIES"]

logger = logging.getLogger(__name__)

CLASS_POLICIES = ("teacher_match", "fixed:<id>", "prompt_map")


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _teacher_match(
    boxes: ExpertBoxes, teacher: Mapping[str, Any] | None, iou_threshold: float, min_score: float
) -> np.ndarray:
    labels = boxes.labels.copy()
    todo = labels < 0
    if teacher is None or not todo.any():
        return labels
    t_boxes = _numpy(teacher["boxes"], np.float32).reshape(-1, 4)
    t_scores = _numpy(teacher["scores"], np.float32).reshape(-1)
    t_labels = _numpy(teacher["labels"], np.int64).reshape(-1)
    ok = t_scores >= min_score
    t_boxes, t_labels = t_boxes[ok], t_labels[ok]
    if len(t_boxes) == 0:
        return labels
    iou = np.asarray(box_iou(boxes.boxes[todo], t_boxes)).reshape(int(todo.sum()), len(t_boxes))
    best = iou.argmax(axis=1)
    matched = iou[np.arange(len(best)), best] >= iou_threshold
    labels[np.flatnonzero(todo)[matched]] = t_labels[best[matched]]
    return labels


def assign_classes(
    expert_boxes: ExpertBoxes,
    teacher_detections: Mapping[str, Any] | None,
    policy: str,
    num_classes: int,
    *,
    prompt_map: Mapping[str, int] | None = None,
    iou_threshold: float = 0.3,
    min_score: float = 0.05,
) -> ExpertBoxes:
    """Give class-agnostic expert boxes a class; boxes left without one are dropped.

    Args:
        expert_boxes: one image's expert boxes.
        teacher_detections: the teacher's detections on the same image in the same (original) coordinates,
            ``{"boxes", "scores", "labels"}`` (numpy or torch), or ``None``.
        policy: ``teacher_match``, ``fixed:<id>`` or ``prompt_map``.
        num_classes: ``K``; classes must lie in ``0..K-1``.
        prompt_map: ``{prompt: class}`` for ``prompt_map``.
        iou_threshold: smallest IoU of a teacher match.
        min_score: smallest teacher score of a match.

    Raises:
        ConfigError: unknown policy, a fixed class outside ``0..K-1``, ``prompt_map`` without a map or with a class
            outside ``0..K-1``.
    """
    policy = str(policy)
    if policy == "teacher_match":
        labels = _teacher_match(expert_boxes, teacher_detections, iou_threshold, min_score)
    elif policy.startswith("fixed:"):
        try:
            cls = int(policy.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"class policy {policy!r}: the class after 'fixed:' must be an integer") from None
        if not 0 <= cls < num_classes:
            raise ConfigError(f"class policy {policy!r}: class {cls} is outside 0..{num_classes - 1}")
        labels = np.where(expert_boxes.labels < 0, cls, expert_boxes.labels)
    elif policy == "prompt_map":
        if not prompt_map:
            raise ConfigError("class policy 'prompt_map' needs a map from expert prompts to classes")
        bad = {p: c for p, c in prompt_map.items() if not 0 <= int(c) < num_classes}
        if bad:
            raise ConfigError(f"prompt_map classes outside 0..{num_classes - 1}: {bad}")
        prompts = expert_boxes.prompts or ("",) * len(expert_boxes)
        mapped = np.array([int(prompt_map.get(p, -1)) for p in prompts], dtype=np.int64)
        labels = np.where(expert_boxes.labels < 0, mapped, expert_boxes.labels)
        unmapped = sorted({p for p, m in zip(prompts, mapped) if m < 0})
        if unmapped:
            logger.debug("expert prompts without a class dropped: %s", unmapped)
    else:
        raise ConfigError(f"unknown expert class policy {policy!r}; options: {', '.join(CLASS_POLICIES)}")
    labels = np.asarray(labels, np.int64)
    keep = (labels >= 0) & (labels < num_classes)
    return expert_boxes.with_labels(labels).select(keep)
