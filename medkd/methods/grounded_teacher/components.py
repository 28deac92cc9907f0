# SPDX-License-Identifier: Apache-2.0
"""Components a Grounded Teacher bundle names in ``configs/inference.json``: the inferer and the detections writer.

:class:`GTDetectionInferer` runs the detector exactly as the run's own predictor does
(:func:`medkd.methods.grounded_teacher.predict.detect_images`: intensities windowed to [0, 1] at the 1st..99th
percentiles, the short side resized to ``image_size``, boxes mapped back to the original pixels), then keeps the
boxes scoring at least ``min_score`` (the run's ``decode.report_threshold``) and returns label values 1..K, the
``detection`` kind's output. :class:`SaveDetectionsJsond` writes them, one ``<image>_detections.json`` per input,
at the end of ``python -m monai.bundle run``. medkd's trust check allowlists this module because the GT bundle spec
lists it in ``component_modules``.

Example:
    >>> inferer = GTDetectionInferer(image_size=64, min_score=0.5)
    >>> inferer
    GTDetectionInferer(image_size=64, min_score=0.5)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

__all__ = ["GTDetectionInferer", "SaveDetectionsJsond", "detections_from_rows"]

logger = logging.getLogger(__name__)


class GTDetectionInferer(Inferer):
    """Detect lesions on each 2D image of a batch, as the run's predictor does.

    Args:
        image_size: short side of the network input (the run's ``image_size``).
        min_score: boxes scoring below it are dropped (the run's ``decode.report_threshold``).
        batch_size: images per forward.
    """

    def __init__(self, image_size: int, min_score: float = 0.0, batch_size: int = 8) -> None:
        super().__init__()
        from medkd.methods.grounded_teacher.config import GTConfig

        self.image_size, self.min_score, self.batch_size = int(image_size), float(min_score), int(batch_size)
        self._cfg = GTConfig(image_size=self.image_size)

    def detect(self, network: nn.Module, image: np.ndarray) -> dict[str, np.ndarray]:
        """The ``detection`` kind's output (boxes ``(N, 4)`` xyxy original pixels, x = column; scores; label values
        1..K) for a float32 image ``(y, x)``."""
        return self.detect_many(network, [image])[0]

    def detect_many(self, network: nn.Module, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """:meth:`detect` for several images ``(y, x)`` (any sizes)."""
        from medkd.methods.grounded_teacher.predict import detect_images, to_kind_output

        found = detect_images(network, list(images), self._cfg, batch_size=self.batch_size)
        return [to_kind_output(f, self.min_score) for f in found]

    def __call__(self, inputs: Any, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The detections of each image of ``(B, C, x, y)`` as ``LoadImaged`` gives them (channels averaged), as a
        float32 tensor ``(B, N, 6)`` of rows ``x_min, y_min, x_max, y_max, score, label value`` (pixels, x = the
        column), padded with rows of -1: a tensor, so that the evaluator's ``decollate_batch`` splits it by image
        (it would tear a list of dicts apart). :func:`detections_from_rows` turns a row block back into the dict."""
        items = inputs if isinstance(inputs, (list, tuple)) else list(inputs)
        images = []
        for item in items:
            plain = item.as_tensor() if isinstance(item, MetaTensor) else torch.as_tensor(item)
            array = plain.detach().to(device="cpu", dtype=torch.float32).numpy()
            array = array.mean(axis=0) if array.ndim == 3 else array
            if array.ndim != 2:
                raise ValueError(f"expected 2D images (C, x, y), got an item of shape {tuple(plain.shape)}")
            images.append(np.ascontiguousarray(array.T))
        found = self.detect_many(network, images)
        rows = np.full((len(found), max([len(f["scores"]) for f in found] + [0]), 6), -1.0, np.float32)
        for i, f in enumerate(found):
            n = len(f["scores"])
            rows[i, :n, :4], rows[i, :n, 4], rows[i, :n, 5] = f["boxes"], f["scores"], f["labels"]
        return torch.from_numpy(rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(image_size={self.image_size}, min_score={self.min_score})"


def detections_from_rows(rows: Any) -> dict[str, np.ndarray]:
    """``{"boxes" (N, 4), "scores" (N,), "labels" (N,)}`` from the inferer's rows ``(N, 6)`` of one image (padding
    rows, label -1, dropped).

    Example:
        >>> out = detections_from_rows(np.array([[1, 2, 5, 6, 0.9, 2], [-1, -1, -1, -1, -1, -1]], np.float32))
        >>> out["boxes"].tolist(), out["labels"].tolist()
        ([[1.0, 2.0, 5.0, 6.0]], [2])
    """
    array = rows.detach().cpu().numpy() if isinstance(rows, torch.Tensor) else np.asarray(rows)
    array = np.asarray(array, np.float32).reshape(-1, 6)
    array = array[array[:, 5] >= 0]
    return {"boxes": array[:, :4], "scores": array[:, 4], "labels": array[:, 5].astype(np.int64)}


def _stem(meta: Any, index: int) -> str:
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if not name:
        return f"image_{index}"
    base = Path(str(name)).name
    for ending in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".dcm"):
        if base.lower().endswith(ending):
            return base[: -len(ending)]
    return Path(base).stem


class SaveDetectionsJsond:
    """Write each item's ``pred`` (a detection dict) as ``<output_dir>/<image stem>_detections.json``.

    The JSON holds ``image``, ``boxes`` (``[x_min, y_min, x_max, y_max]`` pixels, x = column), ``scores``,
    ``labels`` (values) and ``names`` (from ``label_names``, by value). Used as the last ``postprocessing``
    transform of a GT bundle (MONAI Deploy strips it).

    Args:
        output_dir: folder for the files (created).
        label_names: class names by label value, background first.
        pred_key, image_key: the item's keys.
    """

    def __init__(self, output_dir: str, label_names: Sequence[str] = (), pred_key: str = "pred",
                 image_key: str = "image") -> None:
        self.output_dir, self.label_names = Path(output_dir), list(label_names)
        self.pred_key, self.image_key = pred_key, image_key
        self._count = 0

    def __call__(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        from medkd.io.atomic import write_text_atomic

        pred = data[self.pred_key]
        pred = pred if isinstance(pred, Mapping) else detections_from_rows(pred)
        image = data.get(self.image_key)
        stem = _stem(image.meta if isinstance(image, MetaTensor) else data.get(f"{self.image_key}_meta_dict"),
                     self._count)
        self._count += 1
        labels = [int(v) for v in np.asarray(pred["labels"]).reshape(-1)]
        record = {
            "image": stem,
            "boxes": np.asarray(pred["boxes"], np.float64).reshape(-1, 4).round(3).tolist(),
            "scores": [round(float(s), 5) for s in np.asarray(pred["scores"]).reshape(-1)],
            "labels": labels,
            "names": [self.label_names[v] if 0 <= v < len(self.label_names) else str(v) for v in labels],
        }
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.output_dir / f"{stem}_detections.json", json.dumps(record, indent=2))
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_dir={str(self.output_dir)!r})"
