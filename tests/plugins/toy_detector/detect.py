# SPDX-License-Identifier: Apache-2.0
"""Detection of an image or a volume with the toy network, in the ``detection`` kind's conventions.

The input is min-max normalised as a whole; a volume ``(z, y, x)`` is detected slice by slice and a box found in
consecutive slices (same label, in-plane IoU >= ``link_iou``) becomes one 3D box. Boxes come out as
``(x_min, y_min, x_max, y_max)`` (``x`` the column) for an image and ``(x_min, y_min, z_min, x_max, y_max, z_max)``
for a volume, labels as label values (``1..K``, 0 being background).

Example:
    >>> import numpy as np
    >>> from toy_detector.net import ToyCenterNet
    >>> out = detect(ToyCenterNet().eval(), np.zeros((3, 16, 12), np.float32), score_threshold=0.99)
    >>> out["boxes"].shape, out["labels"].dtype
    ((0, 6), dtype('int64'))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from toy_detector.net import decode, normalise

__all__ = ["box_iou", "detect", "link_slices"]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boxes given as (min..., max...) corners of the same dimension."""
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return float(inter / union) if union > 0 else 0.0


def link_slices(per_slice: list[dict[str, np.ndarray]], link_iou: float) -> dict[str, np.ndarray]:
    """3D boxes ``(row0, col0, z0, row1, col1, z1)`` from per-slice 2D boxes ``(row0, col0, row1, col1)``."""
    tracks: list[dict[str, Any]] = []
    for z, found in enumerate(per_slice):
        extended: set[int] = set()
        for j in np.argsort(-found["scores"], kind="stable"):
            box, label, score = found["boxes"][j], int(found["labels"][j]), float(found["scores"][j])
            open_ = [(i, box_iou(t["last"], box)) for i, t in enumerate(tracks)
                     if t["label"] == label and t["z1"] == z and i not in extended]
            best = max(open_, key=lambda item: item[1], default=(None, 0.0))
            if best[0] is not None and best[1] >= link_iou:
                t = tracks[best[0]]
                t["box"] = np.concatenate([np.minimum(t["box"][:2], box[:2]), np.maximum(t["box"][2:], box[2:])])
                t.update(last=box, z1=z + 1, score=max(t["score"], score))
                extended.add(best[0])
            else:
                tracks.append({"label": label, "box": box, "last": box, "z0": z, "z1": z + 1, "score": score})
                extended.add(len(tracks) - 1)
    boxes = [[t["box"][0], t["box"][1], t["z0"], t["box"][2], t["box"][3], t["z1"]] for t in tracks]
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 6),
            "scores": np.asarray([t["score"] for t in tracks], np.float32),
            "labels": np.asarray([t["label"] for t in tracks], np.int64)}


@torch.no_grad()
def detect(
    model: nn.Module, array: np.ndarray, *, score_threshold: float = 0.3, max_detections: int = 20,
    link_iou: float = 0.3, chunk: int = 32,
) -> dict[str, np.ndarray]:
    """The detection kind's output for a float32 image ``(y, x)`` or volume ``(z, y, x)`` (see the module docstring);
    runs without autograd.

    Raises:
        ValueError: an input that is neither 2D nor 3D.
    """
    if array.ndim not in (2, 3):
        raise ValueError(f"expected an image (y, x) or a volume (z, y, x), got shape {array.shape}")
    device = next(model.parameters()).device
    slices = normalise(torch.as_tensor(np.asarray(array, np.float32)).reshape(-1, *array.shape[-2:]))
    num_classes = int(model.num_classes)
    per_slice = []
    for start in range(0, slices.shape[0], chunk):
        dense = model(slices[start:start + chunk, None].to(device))
        for found in decode(dense, num_classes, score_threshold=score_threshold, max_detections=max_detections):
            per_slice.append({k: v.cpu().numpy() for k, v in found.items()})
    if array.ndim == 2:
        found = per_slice[0]
        boxes = found["boxes"][:, [1, 0, 3, 2]].astype(np.float32)  # (row, col) corners -> (x, y)
        return {"boxes": boxes.reshape(-1, 4), "scores": found["scores"].astype(np.float32),
                "labels": found["labels"].astype(np.int64) + 1}
    linked = link_slices(per_slice, link_iou)
    return {"boxes": linked["boxes"][:, [1, 0, 2, 4, 3, 5]], "scores": linked["scores"],
            "labels": linked["labels"] + 1}
