# SPDX-License-Identifier: Apache-2.0
"""Masks to boxes, with the edge conventions spelled out.

medkd boxes are xyxy with exclusive far edges (pixel ``i`` spans ``[i, i + 1)``, COCO ``x2 = x + w``).
segment-anything's automatic generator reports ``bbox`` as XYWH with **inclusive** edges (``w = x_max - x_min`` over
pixel indices), so its far edge is ``x + w + 1``.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((6, 8), bool); mask[1:3, 2:5] = True
    >>> mask_to_box(mask).tolist()
    [2.0, 1.0, 5.0, 3.0]
    >>> sam_bbox_to_xyxy([2, 1, 2, 1]).tolist()
    [2.0, 1.0, 5.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["mask_to_box", "sam_bbox_to_xyxy", "largest_component", "box_iou_one"]


def mask_to_box(mask: np.ndarray) -> np.ndarray | None:
    """The tight xyxy box (float32 ``(4,)``, exclusive far edges) of a 2D boolean mask; ``None`` if it is empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def sam_bbox_to_xyxy(bbox: Sequence[float] | np.ndarray) -> np.ndarray:
    """SAM's automatic-mask ``bbox`` (XYWH, inclusive edges) as xyxy with exclusive far edges: ``x2 = x + w + 1``.

    Works on one box ``(4,)`` or many ``(N, 4)``.
    """
    b = np.asarray(bbox, dtype=np.float32)
    out = b.copy()
    out[..., 2] = b[..., 0] + b[..., 2] + 1.0
    out[..., 3] = b[..., 1] + b[..., 3] + 1.0
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D boolean mask (an empty mask is returned as is)."""
    mask = np.asarray(mask, dtype=bool)
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    return labelled == int(sizes.argmax())


def box_iou_one(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """IoU of two xyxy boxes.

    Example:
        >>> box_iou_one([0, 0, 4, 4], [2, 0, 6, 4])
        0.3333333333333333
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0
