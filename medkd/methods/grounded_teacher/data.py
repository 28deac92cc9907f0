# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher's data: the domains' COCO splits as resized views, batches, and COCO results files.

A :class:`ViewStore` holds every image of a split windowed to [0, 1] and resized (short side ``image_size``), with
its boxes in view pixels and the :class:`~medkd.data.box_views.ViewGeometry` that maps them back. A batch draws
images by a seeded generator (batch ``i`` depends only on the seed and ``i``, so resumed runs see the same data) and
flips each with probability 0.5; the geometry of every view travels with it, so boxes given in original pixels
(source pseudo-labels, expert boxes) follow the image.

Pseudo-labels and expert boxes are kept as COCO *results* files (``[{"image_id", "category_id", "bbox": [x, y, w, h],
"score"}]`` in original pixels); :func:`write_results` / :func:`read_results` convert to and from per-image arrays.

Example:
    >>> import numpy as np
    >>> found = {7: {"boxes": np.array([[1.0, 2.0, 5.0, 8.0]], np.float32), "scores": np.array([0.9], np.float32),
    ...              "labels": np.array([0])}}
    >>> rows = results_rows(found, category_ids=(3,))
    >>> rows[0]["bbox"], rows[0]["category_id"]
    ([1.0, 2.0, 4.0, 6.0], 3)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkd.data.box_views import ViewGeometry, normalise_intensity, weak_view
from medkd.data.coco import DetectionDataset, read_coco_split, read_image
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic

__all__ = [
    "Batch",
    "ViewStore",
    "load_domain",
    "read_results",
    "results_rows",
    "write_results",
]

logger = logging.getLogger(__name__)


def load_domain(data_root: Path, dataset: str, split: str, class_names: Sequence[str] | None = None
                ) -> DetectionDataset:
    """``<data_root>/<dataset>`` split ``split`` (:func:`medkd.data.coco.read_coco_split`).

    Raises:
        DataError: the folder is missing, or the split has no images.
    """
    folder = Path(data_root) / dataset
    if not folder.is_dir():
        raise DataError(folder, f"dataset folder {dataset!r} not found under the data root")
    found = read_coco_split(folder, split, class_names=class_names)
    if len(found.records) == 0:
        raise DataError(folder / "annotations" / f"instances_{split}.json", "the split lists no images")
    return found


@dataclass
class Batch:
    """Views of a batch: images ``(B, 1, h, w)`` (same size in a batch of equal-sized images, else a list),
    targets in view pixels, geometries, and the dataset indices drawn."""

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    geometries: list[ViewGeometry]
    indices: np.ndarray


class ViewStore:
    """Every image of a split, windowed and resized once (float16 in memory), with its boxes in view pixels.

    Args:
        dataset: the split.
        size: short side of the views.
        boxes: per-record ``(boxes, labels)`` in original pixels replacing the dataset's (pseudo-labels); ``None``:
            the dataset's own annotations.
    """

    def __init__(self, dataset: DetectionDataset, size: int,
                 boxes: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.dataset, self.size = dataset, size
        self.images: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.geometries: list[ViewGeometry] = []
        for i, record in enumerate(dataset.records):
            own = (record.boxes, record.labels) if boxes is None else boxes[i]
            image = read_image(record.file)
            if image.shape != (record.height, record.width):
                raise DataError(record.file, f"image is {image.shape[1]}x{image.shape[0]} pixels but the annotation "
                                             f"says {record.width}x{record.height}")
            view, view_boxes, geometry = weak_view(normalise_intensity(image), np.asarray(own[0], np.float32),
                                                   size=size, flip=False)
            self.images.append(view.astype(np.float16))
            self.boxes.append(np.asarray(view_boxes, np.float32).reshape(-1, 4))
            self.labels.append(np.asarray(own[1], np.int64).reshape(-1))
            self.geometries.append(geometry)

    def __len__(self) -> int:
        return len(self.images)

    def original(self, index: int) -> np.ndarray:
        """The original image of record ``index`` (read again from disk)."""
        return read_image(self.dataset.records[index].file)

    def view(self, index: int, flip: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], ViewGeometry]:
        """Image ``(1, h, w)``, targets in view pixels and the view's geometry (resize, then optional flip)."""
        image = torch.from_numpy(self.images[index].astype(np.float32))
        boxes = torch.from_numpy(self.boxes[index].copy())
        geometry = self.geometries[index]
        if flip:
            w = image.shape[-1]
            image = image.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
            geometry = ViewGeometry(src_hw=geometry.src_hw, out_hw=geometry.out_hw, flip=True)
        return image[None], {"boxes": boxes, "labels": torch.from_numpy(self.labels[index])}, geometry

    def batches(self, batch_size: int, seed: int, start_iteration: int, *, pool: np.ndarray | None = None,
                stream: int = 0) -> Iterator[Batch]:
        """Endless batches; batch ``i`` depends only on ``(seed, stream, i)``.

        Args:
            batch_size: images per batch.
            seed, stream: the generator's seed (``stream`` separates several stores of one run).
            start_iteration: the first batch's iteration.
            pool: record indices to draw from (default: all).
        """
        pool = np.arange(len(self)) if pool is None else np.asarray(pool)
        if len(pool) == 0:
            raise DataError(self.dataset.root, "no images to draw training batches from")
        it = start_iteration
        while True:
            rng = np.random.default_rng([seed, stream, it])
            chosen = rng.choice(pool, size=batch_size, replace=len(pool) < batch_size)
            flips = rng.random(batch_size) < 0.5
            images, targets, geometries = [], [], []
            for index, flip in zip(chosen, flips):
                image, target, geometry = self.view(int(index), bool(flip))
                images.append(image)
                targets.append(target)
                geometries.append(geometry)
            yield Batch(images=images, targets=targets, geometries=geometries, indices=chosen)
            it += 1


def results_rows(found: Mapping[int, Mapping[str, np.ndarray]], category_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results rows from ``{image_id: {"boxes" xyxy, "scores", "labels"}}``; label ``-1`` (class-agnostic)
    is written as category ``-1``, others as their COCO category id."""
    rows = []
    for image_id, det in found.items():
        for box, score, label in zip(np.asarray(det["boxes"]).reshape(-1, 4), np.asarray(det["scores"]).reshape(-1),
                                     np.asarray(det["labels"]).reshape(-1)):
            x0, y0, x1, y1 = (float(v) for v in box)
            rows.append({"image_id": int(image_id), "category_id": -1 if label < 0 else int(category_ids[int(label)]),
                         "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                         "score": round(float(score), 5)})
    return rows


def write_results(path: Path, found: Mapping[int, Mapping[str, np.ndarray]], category_ids: Sequence[int]) -> Path:
    """Write :func:`results_rows` as a COCO results JSON (atomically)."""
    return write_text_atomic(path, json.dumps(results_rows(found, category_ids)))


def read_results(path: Path, category_ids: Sequence[int], image_ids: Sequence[int]
                 ) -> dict[int, dict[str, np.ndarray]]:
    """Per-image ``{"boxes" xyxy, "scores", "labels"}`` (labels 0..K-1, ``-1`` class-agnostic) from a COCO results
    file; every id of ``image_ids`` gets an entry (empty if it has no row).

    Raises:
        DataError: not a list of results rows, unknown image or category ids.
    """
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(path, f"cannot read COCO results ({err})") from None
    if not isinstance(rows, list):
        raise DataError(path, "COCO results must be a JSON list of {image_id, category_id, bbox, score}")
    index = {int(c): i for i, c in enumerate(category_ids)}
    known = set(int(i) for i in image_ids)
    per: dict[int, list[tuple[list[float], float, int]]] = {i: [] for i in known}
    for n, row in enumerate(rows):
        try:
            image_id, category, (x, y, w, h), score = (int(row["image_id"]), int(row["category_id"]),
                                                       row["bbox"], float(row["score"]))
        except (KeyError, TypeError, ValueError):
            raise DataError(path, f"row {n}: needs image_id, category_id, bbox [x, y, w, h] and score") from None
        if image_id not in known:
            raise DataError(path, f"row {n}: image_id {image_id} is not in the dataset")
        if category != -1 and category not in index:
            raise DataError(path, f"row {n}: unknown category_id {category}")
        per[image_id].append(([x, y, x + w, y + h], score, -1 if category == -1 else index[category]))
    out = {}
    for image_id, items in per.items():
        out[image_id] = {"boxes": np.asarray([b for b, _, _ in items], np.float32).reshape(-1, 4),
                         "scores": np.asarray([s for _, s, _ in items], np.float32),
                         "labels": np.asarray([c for _, _, c in items], np.int64)}
    return out
