# SPDX-License-Identifier: Apache-2.0
"""Detection metrics for 2D lesion detectors: COCO AP through MONAI's ``COCOMetric`` and every number that
``medkd gt eval`` reports (:func:`detection_metrics`).

Inputs are one dict per image, in the same order for detections and ground truth (numpy or torch):
detections ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,) 0..K-1}``, truths ``{"boxes": (N, 4), "labels":
(N,)}``; images without lesions are included (see :mod:`medkd.metrics.froc`).

**COCO AP** (:func:`coco_ap`) is ``COCOMetric(classes, iou_list, iou_range, max_detection)`` over
``matching_batch(box_iou, ...)`` (``monai.apps.detection.metrics``), with ``iou_range`` set to COCO's
``(0.5, 0.95, 0.05)`` (MONAI's default is ``(0.1, 0.5, 0.05)``). What MONAI does with the edge cases, checked by hand:

* an image without lesions and without detections adds nothing (no TP, no FP, no lesion): correct for AP;
* detections on an image without lesions are unmatched, i.e. false positives, and lower AP when they outscore a
  true positive;
* a class without ground truth keeps MONAI's placeholder precision ``-1``, which MONAI's overall mean **includes**
  (pycocotools excludes it). medkd therefore averages the per-class values over the classes that have ground truth
  and reports ``None`` for the others (their ``raw`` entries stay MONAI's ``-1``).

Example:
    >>> import numpy as np
    >>> truths = [{"boxes": np.array([[10, 10, 20, 20]]), "labels": np.array([0])},
    ...           {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    >>> dets = [{"boxes": np.array([[10, 10, 20, 20]]), "scores": np.array([0.6]), "labels": np.array([0])},
    ...         {"boxes": np.array([[5, 5, 15, 15]]), "scores": np.array([0.9]), "labels": np.array([0])}]
    >>> result = coco_ap(dets, truths, ["mass"])
    >>> result["AP50"], result["per_class"]["mass"]["AP50"]  # the normal image's box outscores the true positive
    (0.5, 0.5)
    >>> sorted(detection_metrics(dets, truths, ["mass"]))[:5]
    ['AP', 'AP10', 'AP50', 'CPM', 'R@0.3']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

from medkd.errors import ConfigError
from medkd.metrics.froc import (
    FPI_POINTS,
    DetectionSet,
    HitCriterion,
    image_level_froc,
    lesion_froc,
    prepare_detections,
)

__all__ = ["coco_ap", "detection_metrics"]

logger = logging.getLogger(__name__)


def _ap_key(iou: float) -> str:
    return f"AP{int(round(iou * 100)):d}"


def _check_labels(sets: Sequence[DetectionSet], num_classes: int) -> None:
    for i, s in enumerate(sets):
        for what, labels in (("detection", s.labels), ("ground-truth", s.true_labels)):
            if labels.size and int(labels.max()) >= num_classes:
                raise ValueError(
                    f"image {i}: {what} label {int(labels.max())} outside 0..{num_classes - 1} ({num_classes} classes)"
                )


class _DropMonaiNotices(logging.Filter):
    """Drops ``COCOMetric``'s root-logger warnings about classes without results; medkd logs its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("WARNING, no results found", "WARNING, no gt found"))


def _mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def coco_ap(
    detections: Sequence[Mapping[str, Any]],
    truths: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    iou_range: tuple[float, float, float] = (0.5, 0.95, 0.05),
    iou_list: Sequence[float] = (0.1, 0.5),
    max_detection: int = 100,
) -> dict[str, Any]:
    """COCO average precision with MONAI's ``COCOMetric`` and ``matching_batch`` (see the module docstring).

    Args:
        detections: one dict per image: ``boxes`` ``(n, 4)`` xyxy, ``scores`` ``(n,)``, ``labels`` ``(n,)`` 0..K-1.
        truths: one dict per image, same order: ``boxes`` ``(N, 4)``, ``labels`` ``(N,)``; normals included.
        class_names: the K class names, index = label.
        iou_range: ``(start, stop, step)`` of the IoU thresholds averaged into ``AP``.
        iou_list: IoU thresholds reported alone, as ``AP10``, ``AP50``, ... (``AP{round(100 * iou)}``).
        max_detection: detections per image and class that count (top scores).

    Returns:
        ``{"AP": mAP over iou_range, "AP10": ..., "AP50": ..., "per_class": {name: {"AP", "AP10", "AP50"}},
        "classes_without_truth": [...], "raw": MONAI's result dict}``, plain floats; ``None`` where undefined (a
        class without ground truth; every summary when no image has a lesion).

    Raises:
        ConfigError: no class names, a bad ``iou_range`` / ``iou_list``.
        ValueError: inconsistent inputs or labels outside ``0..K-1``.
    """
    names = [str(n) for n in class_names]
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"coco_ap needs distinct class names, got {names}")
    if len(iou_range) != 3 or not 0 < iou_range[0] <= iou_range[1] <= 1 or iou_range[2] <= 0:
        raise ConfigError(f"iou_range must be (start, stop, step) within (0, 1], got {tuple(iou_range)}")
    if not iou_list or any(not 0 < float(t) <= 1 for t in iou_list):
        raise ConfigError(f"iou_list must hold IoU values in (0, 1], got {tuple(iou_list)}")
    sets = prepare_detections(detections, truths)
    _check_labels(sets, len(names))
    metric = COCOMetric(
        classes=names,
        iou_list=tuple(float(t) for t in iou_list),
        iou_range=tuple(float(t) for t in iou_range),
        max_detection=(int(max_detection),),
        per_class=True,
        verbose=False,
    )
    matches = matching_batch(
        iou_fn=box_iou,
        iou_thresholds=metric.iou_thresholds,
        pred_boxes=[s.boxes for s in sets],
        pred_classes=[s.labels for s in sets],
        pred_scores=[s.scores for s in sets],
        gt_boxes=[s.true_boxes for s in sets],
        gt_classes=[s.true_labels for s in sets],
        max_detections=int(max_detection),
    )
    quiet = _DropMonaiNotices()
    logging.getLogger().addFilter(quiet)  # MONAI warns on the root logger for classes without ground truth
    try:
        raw = {k: float(v) for k, v in metric(matches)[0].items()}
    finally:
        logging.getLogger().removeFilter(quiet)
    start, stop, step = metric.iou_range
    range_key = f"mAP_IoU_{start:.2f}_{stop:.2f}_{step:.2f}_MaxDet_{max_detection}"
    list_ious = metric.iou_thresholds[metric.iou_list_idx]
    list_keys = {_ap_key(t): f"AP_IoU_{t:.2f}_MaxDet_{max_detection}" for t in list_ious}
    with_truth = sorted({int(c) for s in sets for c in s.true_labels})
    without = [names[c] for c in range(len(names)) if c not in with_truth]
    if without:
        logger.info("coco_ap: no ground truth for class(es) %s; their AP is undefined and left out of the mean",
                    ", ".join(without))
    per_class: dict[str, dict[str, float | None]] = {}
    for c, name in enumerate(names):
        has = c in with_truth
        entry: dict[str, float | None] = {"AP": raw[f"{name}_{range_key}"] if has else None}
        entry.update({short: raw[f"{name}_{key}"] if has else None for short, key in list_keys.items()})
        per_class[name] = entry
    summary: dict[str, Any] = {
        short: _mean_or_none([per_class[names[c]][short] for c in with_truth])  # type: ignore[misc]
        for short in ("AP", *list_keys)
    }
    summary.update({"per_class": per_class, "classes_without_truth": without, "raw": raw})
    return summary


def _only_class(sets: Sequence[DetectionSet], c: int) -> list[DetectionSet]:
    return [
        DetectionSet(s.boxes[s.labels == c], s.scores[s.labels == c], s.labels[s.labels == c],
                     s.true_boxes[s.true_labels == c], s.true_labels[s.true_labels == c])
        for s in sets
    ]


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def detection_metrics(
    detections: Sequence[Mapping[str, Any]],
    truths: Sequence[Mapping[str, Any]],
    class_names: Sequence[str],
    *,
    iou: float = 0.1,
    criterion: HitCriterion | str = "iou",
    fpi_points: Sequence[float] = FPI_POINTS,
    max_detection: int = 100,
    curve: bool = True,
) -> dict[str, Any]:
    """Every detection number of ``medkd gt eval``'s ``metrics.json``, JSON-serialisable.

    Args:
        detections: one dict per image (``boxes``, ``scores``, ``labels`` 0..K-1), numpy or torch.
        truths: one dict per image, same order (``boxes``, ``labels``); images without lesions included.
        class_names: the K class names.
        iou: the lesion FROC's hit IoU.
        criterion: the lesion FROC's hit rule, ``"iou"`` or ``"centre"``.
        fpi_points: FP/image reported under ``froc.points``.
        max_detection: COCO AP's detections per image.
        curve: include the FROC curves as lists.

    Returns:
        ``{"AP", "AP50", "AP10", "R@0.3", "CPM", "sensitivity@1", "per_class": {name: {"AP", "AP50", "AP10",
        "R@0.3", "CPM", "sensitivity@1", "num_lesions"}}, "froc": lesion FROC (points, curve, ...),
        "gt_compat_image_level_froc": the reference's image-level FROC, "num_images", "num_lesions", "coco_raw"}``.
        The lesion FROC matches classes at K >= 2 (class-agnostic at K = 1); per-class FROCs keep FP/image over all
        images. ``None`` marks undefined values.
    """
    names = [str(n) for n in class_names]
    sets = prepare_detections(detections, truths)
    _check_labels(sets, len(names))
    as_dicts = [{"boxes": s.boxes, "scores": s.scores, "labels": s.labels} for s in sets]
    gt_dicts = [{"boxes": s.true_boxes, "labels": s.true_labels} for s in sets]
    ap = coco_ap(as_dicts, gt_dicts, names, max_detection=max_detection)
    froc_kwargs: dict[str, Any] = {"iou": iou, "criterion": criterion, "fpi_points": fpi_points}
    lesion = lesion_froc(sets, num_classes=len(names), **froc_kwargs)
    per_class: dict[str, dict[str, Any]] = {}
    for c, name in enumerate(names):
        one = lesion_froc(_only_class(sets, c), class_agnostic=True, **froc_kwargs) if len(names) > 1 else lesion
        per_class[name] = {
            **ap["per_class"][name],
            "R@0.3": _clean(one.r_at_0_3),
            "CPM": _clean(one.cpm),
            "sensitivity@1": _clean(float(one.sensitivity_at(1.0))),
            "num_lesions": one.num_lesions,
        }
    return {
        "AP": ap["AP"],
        "AP50": ap.get("AP50"),
        "AP10": ap.get("AP10"),
        "R@0.3": _clean(lesion.r_at_0_3),
        "CPM": _clean(lesion.cpm),
        "sensitivity@1": _clean(float(lesion.sensitivity_at(1.0))),
        "per_class": per_class,
        "froc": lesion.to_dict(curve=curve),
        "gt_compat_image_level_froc": image_level_froc(sets).to_dict(curve=curve),
        "num_images": len(sets),
        "num_lesions": lesion.num_lesions,
        "coco_raw": ap["raw"],
    }
