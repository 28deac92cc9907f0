# SPDX-License-Identifier: Apache-2.0
"""The toy detector's data: 2D images with bright boxes on a noisy background, in a COCO-style layout.

``DATA_ROOT/annotations.json`` is a COCO-style index (``images``: ``id``, ``file_name``, ``height``, ``width``,
``split``; ``annotations``: ``image_id``, ``bbox`` ``[x, y, w, h]`` in pixels with ``x`` the column,
``category_id``; ``categories``: ``id``, ``name``, 1-based); ``DATA_ROOT/images/<id>.npy`` holds each float32
image ``(H, W)``.

Example:
    >>> import tempfile
    >>> root = write_toy_dataset(tempfile.mkdtemp(), n_train=2, n_val=1, size=(24, 24))
    >>> images, targets = read_toy_dataset(root, "train")
    >>> images.shape, targets[0]["boxes"].shape[1]
    ((2, 24, 24), 4)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkd.errors import DataError

__all__ = ["ANNOTATIONS", "draw_boxes", "read_toy_dataset", "write_toy_dataset"]

ANNOTATIONS = "annotations.json"


def draw_boxes(
    rng: np.random.Generator, size: Sequence[int], n_boxes: int, box_size: Sequence[int] = (6, 14)
) -> tuple[np.ndarray, np.ndarray]:
    """An image ``(H, W)`` (background ~0.2, boxes 0.7-1.0, Gaussian noise) and its boxes ``(N, 4)`` as
    ``(row_min, col_min, row_max, col_max)``."""
    h, w = size
    image = 0.2 + rng.normal(0.0, 0.05, (h, w))
    boxes = []
    for _ in range(n_boxes):
        bh, bw = rng.integers(box_size[0], box_size[1] + 1, 2)
        r0, c0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        image[r0:r0 + bh, c0:c0 + bw] = rng.uniform(0.7, 1.0) + rng.normal(0.0, 0.05, (bh, bw))
        boxes.append([r0, c0, r0 + bh, c0 + bw])
    return image.astype(np.float32), np.asarray(boxes, np.float32).reshape(-1, 4)


def write_toy_dataset(
    root: str | Path, *, n_train: int = 64, n_val: int = 16, size: Sequence[int] = (40, 40), seed: int = 0,
    max_boxes: int = 2, category: str = "box",
) -> Path:
    """Write ``n_train + n_val`` images with 1..``max_boxes`` boxes each (overlaps allowed, later boxes on top)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n_train + n_val):
        image, boxes = draw_boxes(rng, size, int(rng.integers(1, max_boxes + 1)))
        np.save(root / "images" / f"{i}.npy", image)
        images.append({"id": i, "file_name": f"images/{i}.npy", "height": int(size[0]), "width": int(size[1]),
                       "split": "train" if i < n_train else "val"})
        for r0, c0, r1, c1 in boxes.tolist():
            annotations.append({"id": len(annotations), "image_id": i, "bbox": [c0, r0, c1 - c0, r1 - r0],
                                "category_id": 1})
    index = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": category}]}
    (root / ANNOTATIONS).write_text(json.dumps(index, indent=1), encoding="utf-8")
    return root


def read_toy_dataset(root: str | Path, split: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Images ``(N, H, W)`` of a split and one target per image: ``boxes`` ``(n, 4)`` row/col corners, ``labels``
    ``(n,)`` 0-based.

    Raises:
        DataError: no index, a malformed one, an image of another size, or an empty split (naming the file).
    """
    index_file = Path(root) / ANNOTATIONS
    if not index_file.is_file():
        raise DataError(index_file, "missing: not a toy detection dataset (write one with write_toy_dataset)")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        chosen = [entry for entry in index["images"] if entry["split"] == split]
        by_image: dict[int, list[dict[str, Any]]] = {entry["id"]: [] for entry in chosen}
        for ann in index["annotations"]:
            if ann["image_id"] in by_image:
                by_image[ann["image_id"]].append(ann)
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(index_file, f"not a COCO-style index: {type(err).__name__}: {err}") from None
    if not chosen:
        raise DataError(index_file, f"no images in split {split!r}")
    images, targets = [], []
    for entry in chosen:
        image = np.load(Path(root) / entry["file_name"]).astype(np.float32)
        if image.shape != (entry["height"], entry["width"]) or (images and image.shape != images[0].shape):
            raise DataError(Path(root) / entry["file_name"], f"shape {image.shape} differs from the index or the "
                                                             "other images")
        images.append(image)
        anns = by_image[entry["id"]]
        boxes = [[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in anns)]
        targets.append({"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                        "labels": np.asarray([a["category_id"] - 1 for a in anns], np.int64)})
    return np.stack(images), targets
