# SPDX-License-Identifier: Apache-2.0
"""Detect lesions with a Grounded Teacher model: arrays, run predictors, and ``medkd gt predict`` on files.

Every path (evaluation, ``gt predict``, the run and bundle predictors, the DICOM pipeline, the app) goes through
:func:`detect_images`: intensities windowed to [0, 1] (1st..99th percentile), the short side resized to
``cfg.image_size``, the detector in ``eval()``, boxes mapped back to the original pixels.

Example:
    >>> import numpy as np
    >>> from medkd.nets import create_net
    >>> from medkd.methods.grounded_teacher.config import GTConfig
    >>> cfg = GTConfig(classes=("mass",), image_size=64)
    >>> net = create_net("retinanet2d", **cfg.net_kwargs()).eval()
    >>> out = detect_image(net, np.random.default_rng(0).random((80, 64), dtype=np.float32), cfg)
    >>> sorted(out), out["boxes"].shape[1]
    (['boxes', 'labels', 'scores'], 4)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medkd.data.box_views import ViewGeometry, normalise_intensity, weak_view
from medkd.inference import Predictor, file_sha256, resolve_device
from medkd.io.labels import labels_from_names
from medkd.methods.grounded_teacher.config import GTConfig
from medkd.methods.grounded_teacher.runs import KIND, METHOD, final_stage, load_detector, load_run_config
from medkd.methods.grounded_teacher.runs import stage_checkpoint

__all__ = [
    "detect_image", "detect_images", "detect_views", "load_run_predictor", "predict_paths", "to_kind_output", "to_original",
]

logger = logging.getLogger(__name__)

_EMPTY = np.zeros((0, 4), np.float32)


@torch.no_grad()
def detect_views(model: nn.Module, views: Sequence[np.ndarray], *, batch_size: int = 8
                 ) -> list[dict[str, np.ndarray]]:
    """Detections in the pixels of already windowed and resized views ``(h, w)`` (``boxes`` xyxy, ``scores``,
    ``labels`` 0..K-1), ``batch_size`` views per forward."""
    device = next(model.parameters()).device
    results: list[dict[str, np.ndarray]] = []
    for start in range(0, len(views), batch_size):
        chunk = [torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))[None].to(device)
                 for v in views[start:start + batch_size]]
        for out in model(chunk):
            results.append({"boxes": out["boxes"].detach().cpu().numpy().astype(np.float32).reshape(-1, 4),
                            "scores": out["scores"].detach().cpu().numpy().astype(np.float32),
                            "labels": out["labels"].detach().cpu().numpy().astype(np.int64)})
    return results


def to_original(found: dict[str, np.ndarray], geometry: ViewGeometry) -> dict[str, np.ndarray]:
    """Detections of a view mapped back to the original image's pixels (clipped to it)."""
    h, w = geometry.src_hw
    boxes = np.clip(geometry.invert(found["boxes"]), 0, [w, h, w, h]).astype(np.float32)
    return {**found, "boxes": boxes.reshape(-1, 4)}


def detect_images(model: nn.Module, images: Sequence[np.ndarray], cfg: GTConfig, *, batch_size: int = 8
                  ) -> list[dict[str, np.ndarray]]:
    """Detections per image in original pixels: ``boxes (n, 4)`` xyxy (x = column), ``scores``, ``labels`` 0..K-1.

    Args:
        model: a detector of the ``detection`` net contract in ``eval()`` mode.
        images: float32 ``(H, W)`` arrays, any intensity range.
        cfg: the run's config (``image_size``).
        batch_size: images per forward.

    Raises:
        ValueError: an image that is not 2D.
    """
    views, geometries = [], []
    for image in images:
        array = np.asarray(image, np.float32)
        if array.ndim != 2:
            raise ValueError(f"expected a 2D image (y, x), got shape {array.shape}")
        view, _, geometry = weak_view(normalise_intensity(array), _EMPTY, size=cfg.image_size, flip=False)
        views.append(view)
        geometries.append(geometry)
    found = detect_views(model, views, batch_size=batch_size)
    return [to_original(det, geometry) for det, geometry in zip(found, geometries)]


def detect_image(model: nn.Module, image: np.ndarray, cfg: GTConfig) -> dict[str, np.ndarray]:
    """:func:`detect_images` for one image."""
    return detect_images(model, [image], cfg)[0]


def to_kind_output(found: dict[str, np.ndarray], min_score: float = 0.0) -> dict[str, np.ndarray]:
    """The ``detection`` kind's output: boxes above ``min_score``, labels as label values (class index + 1)."""
    keep = found["scores"] >= min_score
    return {"boxes": found["boxes"][keep], "scores": found["scores"][keep], "labels": found["labels"][keep] + 1}


def load_run_predictor(run: str | Path, device: Any = None, *, trust: bool = False,
                       stage: str | None = None) -> Predictor:
    """The ``Method.load_predictor`` of ``gt``: the run's final model (the adapted EMA teacher) as a ``detection``
    predictor of 2D images, reporting boxes above ``decode.report_threshold``."""
    del trust  # a run folder holds no code
    cfg = load_run_config(run)
    stage = stage or final_stage(cfg)
    model = load_detector(run, stage, resolve_device(device if device is not None else cfg.device))
    path, _ = stage_checkpoint(run, "source" if stage == "adapt" and final_stage(cfg) == "source" else stage)
    return Predictor(
        kind=KIND, name=Path(run).resolve().name, version=f"run:{path.parent.name}/{path.stem}",
        weights_sha256=file_sha256(path), labels=labels_from_names(cfg.label_names()),
        run=lambda array: to_kind_output(detect_image(model, array, cfg), cfg.decode.report_threshold),
        source=Path(run), metadata={"method": METHOD, "net": cfg.net.name, "stage": stage,
                                    "report_threshold": cfg.decode.report_threshold},
    )


#: image files ``medkd gt predict`` reads from a folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")
_CSV_FIELDS = ("image", "label", "class", "score", "x_min", "y_min", "x_max", "y_max")


def _inputs(path: Path) -> list[Path]:
    from medkd.errors import DataError

    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "input not found (an image file or a folder of images)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def predict_paths(run: str | Path, input: str | Path, output: str | Path, *, stage: str | None = None,
                  min_score: float | None = None, device: Any = None) -> dict[str, Any]:
    """Detect lesions in an image file or every image of a folder (PNG, JPEG, TIFF, DICOM).

    Writes, per image, ``OUT/<name>.json`` (boxes in original pixels, scores, classes) and ``OUT/<name>.png`` (the
    image with its boxes drawn), plus ``OUT/detections.csv`` over all images and ``OUT/report.json``. Files that
    cannot be read are skipped and listed in the report; the others are still written.

    Args:
        run: a GT run folder. stage: ``adapt`` (default, the run's final model) or ``source``.
        min_score: boxes below it are left out (default: the run's ``decode.report_threshold``).

    Returns:
        ``{"images": n, "detections": n, "skipped": [{"file", "reason"}], "output": OUT}``.
    """
    import csv
    import io
    import json

    from medkd.data.coco import read_image
    from medkd.errors import DataError
    from medkd.io.atomic import write_text_atomic
    from medkd.viz.boxes import draw_boxes, save_png

    cfg = load_run_config(run)
    threshold = cfg.decode.report_threshold if min_score is None else float(min_score)
    model = load_detector(run, stage, resolve_device(device if device is not None else cfg.device))
    files, out = _inputs(Path(input)), Path(output)
    out.mkdir(parents=True, exist_ok=True)
    names = cfg.label_names()
    rows, skipped, done = [], [], 0
    for file in files:
        try:
            image = read_image(file)
        except DataError as err:
            logger.warning("skipped %s: %s", file, err.problem if hasattr(err, "problem") else err)
            skipped.append({"file": str(file), "reason": str(err)})
            continue
        found = to_kind_output(detect_image(model, image, cfg), threshold)
        stem = file.stem if len(files) == 1 or file.parent == Path(input) else \
            "_".join(file.relative_to(input).with_suffix("").parts)
        records = [{"label": int(label), "class": names[int(label)], "score": round(float(score), 4),
                    "box_xyxy": [round(float(v), 2) for v in box]}
                   for box, score, label in zip(found["boxes"], found["scores"], found["labels"])]
        write_text_atomic(out / f"{stem}.json", json.dumps({"image": str(file), "height": image.shape[0],
                                                             "width": image.shape[1], "min_score": threshold,
                                                             "detections": records}, indent=2))
        save_png(out / f"{stem}.png", draw_boxes(image, found["boxes"], found["scores"], found["labels"],
                                                 dict(enumerate(names))))
        rows.extend({"image": str(file), "label": r["label"], "class": r["class"], "score": r["score"],
                     **dict(zip(_CSV_FIELDS[4:], r["box_xyxy"]))} for r in records)
        done += 1
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_CSV_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "detections.csv", buffer.getvalue())
    report = {"images": done, "detections": len(rows), "skipped": skipped, "output": str(out),
              "min_score": threshold}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2))
    return report
