# SPDX-License-Identifier: Apache-2.0
"""Free-response ROC (FROC) for 2D lesion detection: the lesion-level curve (the headline metric) and the Grounded
Teacher reference's image-level variant, kept only for comparison with its published numbers.

Inputs are one dict per image, in the same order for detections and ground truth (numpy arrays or torch tensors):
detections ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,) 0..K-1}`` (``"labels_scores"``, MONAI's
``RetinaNetDetector`` key, is read when ``"scores"`` is absent) and truths ``{"boxes": (N, 4), "labels": (N,)}``.
Boxes are ``(x_min, y_min, x_max, y_max)`` in pixels, ``x`` the column, ``x_max = x + w``. Images without lesions
("normals") must be included: their detections are false positives.

**Lesion-level FROC** (:func:`lesion_froc`). All detections of all images are taken in descending score (ties in
image order, then in the detections' order). A detection is a true positive when it *hits* a lesion of its class
(any class when class-agnostic, the default at K = 1) that no earlier detection found; among several such lesions it
takes the one with the highest IoU. A hit is ``IoU >= iou`` (``criterion="iou"``, default 0.1) or the detection's
centre inside the lesion box (``criterion="centre"``, ``x_min <= cx < x_max``). A detection that hits only lesions
already found is a repeat: neither TP nor FP. Every other detection is a false positive. The curve has one operating
point per distinct score threshold (tied scores enter together), preceded by ``(0, 0)``: FP/image is cumulative
FPs over **all** images, sensitivity cumulative TPs over all lesions.

**Image-level compatibility** (:func:`image_level_froc`, reported as ``gt_compat_image_level_froc``): the reference's
``froc.py``. Each image with a detection scoring ``>= 0.001`` keeps only its top-scoring detection; it is a TP when
the image has any lesion, **wherever the box is**; FP/image divides by the images with a detection and TPR by the
lesions of those images; values at FPI 0.025 .. 1 are read off by linear interpolation. It rewards a box on the wrong
side of a breast with a lesion, so it is not a localisation metric.

Example:
    >>> import numpy as np
    >>> truths = [{"boxes": np.array([[10, 10, 20, 20]]), "labels": np.array([0])},
    ...           {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    >>> dets = [{"boxes": np.array([[11, 11, 21, 21], [60, 60, 70, 70]]), "scores": np.array([0.9, 0.8]),
    ...          "labels": np.array([0, 0])},
    ...         {"boxes": np.array([[5, 5, 15, 15]]), "scores": np.array([0.7]), "labels": np.array([0])}]
    >>> froc = lesion_froc(dets, truths)
    >>> froc.fpi.tolist(), froc.sensitivity.tolist()
    ([0.0, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0])
    >>> froc.sensitivity_at(0.25), froc.r_at_0_3
    (1.0, 1.0)
    >>> image_level_froc(dets, truths).fpi.tolist()  # top-1 per image: a TP (image 0), then an FP (image 1)
    [0.0, 0.5]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from medkd.errors import ConfigError

__all__ = [
    "FPI_POINTS",
    "CPM_POINTS",
    "IMAGE_LEVEL_FPI_POINTS",
    "HitCriterion",
    "FrocResult",
    "DetectionSet",
    "prepare_detections",
    "pairwise_iou",
    "lesion_froc",
    "image_level_froc",
]

logger = logging.getLogger(__name__)

FPI_POINTS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 4.0)
"""False positives per image at which the lesion-level sensitivity is reported (spec section 4)."""

CPM_POINTS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The competition performance metric averages the sensitivity at these FP/image (LUNA16 / CPM convention)."""

IMAGE_LEVEL_FPI_POINTS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)
"""The reference ``froc.py``'s ``fpi_levels``."""


class HitCriterion(StrEnum):
    """When a detection hits a lesion: ``iou`` (IoU at or above the threshold) or ``centre`` (centre in the box)."""

    IOU = "iou"
    CENTRE = "centre"


@dataclass(frozen=True, eq=False)
class DetectionSet:
    """Detections and ground truth of one image as numpy arrays (see :func:`prepare_detections`).

    Attributes:
        boxes: ``(n, 4)`` float64 detected boxes, xyxy.
        scores: ``(n,)`` float64.
        labels: ``(n,)`` int64 class indices 0..K-1.
        true_boxes: ``(N, 4)`` float64 lesion boxes, xyxy.
        true_labels: ``(N,)`` int64.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    true_boxes: np.ndarray
    true_labels: np.ndarray


def _array(value: Any, dtype: type) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _boxes(value: Any, what: str) -> np.ndarray:
    boxes = _array(value, np.float64)
    if boxes.size == 0:
        return np.zeros((0, 4), np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape (n, 4) xyxy, got {boxes.shape}")
    return boxes


def _vector(value: Any, n: int, dtype: type, what: str) -> np.ndarray:
    out = _array(value, dtype).reshape(-1)
    if out.shape[0] != n:
        raise ValueError(f"{what}: {out.shape[0]} values for {n} boxes")
    return out


def prepare_detections(
    detections: Sequence[Mapping[str, Any]], truths: Sequence[Mapping[str, Any]]
) -> list[DetectionSet]:
    """Check and convert per-image detections and ground truth (numpy or torch) to :class:`DetectionSet` s.

    Args:
        detections: one dict per image with ``boxes`` ``(n, 4)``, ``scores`` (or ``labels_scores``) ``(n,)`` and
            ``labels`` ``(n,)`` (missing labels mean class 0).
        truths: one dict per image, same order, with ``boxes`` ``(N, 4)`` and ``labels`` ``(N,)`` (missing: 0).

    Returns:
        One :class:`DetectionSet` per image.

    Raises:
        ValueError: different numbers of images, wrong shapes, missing scores or negative labels.
    """
    if len(detections) != len(truths):
        raise ValueError(f"{len(detections)} detection dicts for {len(truths)} ground-truth dicts (one per image)")
    out = []
    for i, (det, gt) in enumerate(zip(detections, truths)):
        boxes = _boxes(det["boxes"], f"detections[{i}]")
        score_key = "scores" if "scores" in det else "labels_scores"
        if score_key not in det:
            raise ValueError(f"detections[{i}] has no 'scores'")
        scores = _vector(det[score_key], len(boxes), np.float64, f"detections[{i}] scores")
        labels = _vector(det.get("labels", np.zeros(len(boxes))), len(boxes), np.int64, f"detections[{i}] labels")
        true_boxes = _boxes(gt["boxes"], f"truths[{i}]")
        true_labels = _vector(gt.get("labels", np.zeros(len(true_boxes))), len(true_boxes), np.int64,
                              f"truths[{i}] labels")
        if (labels < 0).any() or (true_labels < 0).any():
            raise ValueError(f"image {i}: class labels must be 0..K-1, got a negative label")
        out.append(DetectionSet(boxes, scores, labels, true_boxes, true_labels))
    return out


def _num_classes(sets: Sequence[DetectionSet]) -> int:
    top = [int(s.labels.max()) for s in sets if s.labels.size] + [int(s.true_labels.max()) for s in sets if
                                                                    s.true_labels.size]
    return 1 + max(top, default=0)


@dataclass(frozen=True, eq=False)
class FrocResult:
    """A FROC curve and its summary numbers.

    Attributes:
        fpi: ``(P,)`` false positives per image at each operating point, non-decreasing.
        sensitivity: ``(P,)`` the matching sensitivity (TPR), non-decreasing; NaN when there are no lesions.
        thresholds: ``(P,)`` the score threshold of each point (``inf`` for the lesion curve's ``(0, 0)`` start).
        num_images: images counted in FP/image.
        num_lesions: lesions counted in the sensitivity.
        fpi_points: FP/image at which :attr:`points` reports the sensitivity.
        interpolation: how :meth:`sensitivity_at` reads the curve, ``"step"`` (lesion level) or ``"linear"``
            (the reference's image-level variant).
    """

    fpi: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray
    num_images: int
    num_lesions: int
    fpi_points: tuple[float, ...] = FPI_POINTS
    interpolation: str = "step"
    info: dict[str, Any] = field(default_factory=dict)

    def sensitivity_at(self, fpi: float | Sequence[float]) -> float | np.ndarray:
        """Sensitivity at the given FP/image.

        ``"step"`` (lesion level): the **maximum sensitivity over the operating points whose FP/image is at most**
        ``fpi``, with no interpolation between points: the sensitivity of the last point with ``FPI <= fpi`` (the
        curve is monotone). Beyond the curve's last point it stays at the final sensitivity; at ``fpi = 0`` it is
        the sensitivity reached before the first false positive.

        ``"linear"`` (image level, the reference): linear interpolation of the curve with linear extrapolation past
        its ends (SciPy ``interp1d(fpi, tpr, fill_value="extrapolate")``, the curve not de-duplicated); where that
        divides by zero (equal FP/image at the curve's ends) the value of the nearer end is used instead of NaN.

        Args:
            fpi: one FP/image value or a sequence of them.

        Returns:
            A float for a scalar ``fpi``, else a float64 array.
        """
        query = np.asarray(fpi, dtype=np.float64)
        if self.interpolation == "step" and self.num_lesions == 0:
            values = np.full(query.shape, math.nan)
        elif self.fpi.size == 0:
            values = np.zeros(query.shape)
        elif self.interpolation == "linear":
            values = _interp_extrapolate(query, self.fpi, self.sensitivity)
        else:
            index = np.searchsorted(self.fpi, query, side="right") - 1
            values = np.where(index >= 0, self.sensitivity[np.clip(index, 0, None)], 0.0)
        return float(values) if values.ndim == 0 else values

    @property
    def points(self) -> dict[float, float]:
        """``{fpi: sensitivity}`` at :attr:`fpi_points`."""
        return {float(p): float(s) for p, s in zip(self.fpi_points, self.sensitivity_at(self.fpi_points))}

    @property
    def r_at_0_3(self) -> float:
        """R@0.3: the sensitivity at 0.3 false positives per image."""
        return float(self.sensitivity_at(0.3))

    @property
    def cpm(self) -> float:
        """CPM: the mean sensitivity at 0.125, 0.25, 0.5, 1, 2, 4 and 8 false positives per image."""
        return float(np.mean(self.sensitivity_at(CPM_POINTS)))

    def to_dict(self, *, curve: bool = True) -> dict[str, Any]:
        """JSON-ready summary: ``points`` (keys ``"0.025"`` ...), ``R@0.3``, ``CPM``, ``sensitivity@1``, counts and
        (with ``curve``) the curve as lists; NaN and infinite values become ``None``."""
        out: dict[str, Any] = {
            "points": {f"{p:g}": _json_float(s) for p, s in self.points.items()},
            "R@0.3": _json_float(self.r_at_0_3),
            "CPM": _json_float(self.cpm),
            "sensitivity@1": _json_float(self.sensitivity_at(1.0)),
            "num_images": int(self.num_images),
            "num_lesions": int(self.num_lesions),
            "interpolation": self.interpolation,
            **{k: v for k, v in self.info.items()},
        }
        if curve:
            out["curve"] = {
                "fpi": [_json_float(v) for v in self.fpi],
                "sensitivity": [_json_float(v) for v in self.sensitivity],
                "thresholds": [_json_float(v) for v in self.thresholds],
            }
        return out


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _interp_extrapolate(query: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SciPy ``interp1d(x, y, fill_value="extrapolate")`` for non-decreasing ``x`` (stable order kept), with the
    nearer end's ``y`` where its slope is 0/0 or y/0."""
    if x.size == 1:
        return np.full(query.shape, float(y[0]))
    hi = np.clip(np.searchsorted(x, query, side="left"), 1, x.size - 1)
    lo = hi - 1
    dx, dy = x[hi] - x[lo], y[hi] - y[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = y[lo] + dy / dx * (query - x[lo])
    nearer = np.where(query <= x[lo], y[lo], y[hi])
    return np.where(dx > 0, values, nearer)


def pairwise_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``(n, m)`` IoU of xyxy boxes in float64 (MONAI's ``box_iou`` convention, ``w = x_max - x_min``, computed in
    float64 so that a threshold such as 0.1 is compared exactly; degenerate boxes have IoU 0)."""
    a, b = np.asarray(boxes, np.float64), np.asarray(others, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _hits(det: DetectionSet, criterion: HitCriterion, iou: float, class_agnostic: bool) -> tuple[np.ndarray, ...]:
    """``(n, N)`` hit matrix and IoU matrix of one image (vectorised)."""
    n, m = len(det.boxes), len(det.true_boxes)
    if n == 0 or m == 0:
        return np.zeros((n, m), bool), np.zeros((n, m))
    overlap = pairwise_iou(det.boxes, det.true_boxes)
    if criterion is HitCriterion.IOU:
        hit = overlap >= iou
    else:
        cx = 0.5 * (det.boxes[:, 0:1] + det.boxes[:, 2:3])
        cy = 0.5 * (det.boxes[:, 1:2] + det.boxes[:, 3:4])
        tb = det.true_boxes
        hit = (cx >= tb[:, 0]) & (cx < tb[:, 2]) & (cy >= tb[:, 1]) & (cy < tb[:, 3])
    if not class_agnostic:
        hit &= det.labels[:, None] == det.true_labels[None, :]
    return hit, overlap


def _criterion(value: HitCriterion | str) -> HitCriterion:
    try:
        return HitCriterion(value)
    except ValueError:
        raise ConfigError(f"unknown FROC criterion {value!r}; choose one of iou, centre") from None


def lesion_froc(
    detections: Sequence[Mapping[str, Any]] | Sequence[DetectionSet],
    truths: Sequence[Mapping[str, Any]] | None = None,
    *,
    iou: float = 0.1,
    criterion: HitCriterion | str = "iou",
    class_agnostic: bool | None = None,
    num_classes: int | None = None,
    fpi_points: Sequence[float] = FPI_POINTS,
) -> FrocResult:
    """Lesion-level FROC (spec section 4; rules in the module docstring).

    Args:
        detections: one dict per image (``boxes``, ``scores``, ``labels``), or prepared :class:`DetectionSet` s
            (then ``truths`` is ``None``).
        truths: one dict per image (``boxes``, ``labels``), same order; images without lesions included.
        iou: the IoU a hit needs (``criterion="iou"``), in ``(0, 1]``.
        criterion: ``"iou"`` or ``"centre"`` (the detection's centre inside the lesion box).
        class_agnostic: match regardless of class; ``None``: only when there is one class.
        num_classes: K for the ``class_agnostic=None`` rule; ``None``: 1 + the largest label seen.
        fpi_points: FP/image at which :attr:`FrocResult.points` reports the sensitivity.

    Returns:
        A :class:`FrocResult` with ``interpolation="step"``.

    Raises:
        ValueError: no images, inconsistent inputs.
        ConfigError: an unknown criterion or an IoU outside ``(0, 1]``.
    """
    sets = list(detections) if truths is None else prepare_detections(detections, truths)  # type: ignore[arg-type]
    rule = _criterion(criterion)
    if not 0.0 < float(iou) <= 1.0:
        raise ConfigError(f"FROC iou must be in (0, 1], got {iou}")
    if not sets:
        raise ValueError("lesion FROC needs at least one image")
    if class_agnostic is None:
        class_agnostic = (num_classes if num_classes is not None else _num_classes(sets)) == 1
    matrices = [_hits(s, rule, float(iou), class_agnostic) for s in sets]
    scores = np.concatenate([s.scores for s in sets]) if sets else np.zeros(0)
    image = np.concatenate([np.full(len(s.scores), i, np.int64) for i, s in enumerate(sets)])
    row = np.concatenate([np.arange(len(s.scores)) for s in sets])
    order = np.argsort(-scores, kind="stable")
    found = [np.zeros(len(s.true_boxes), bool) for s in sets]
    tp = np.zeros(order.size, np.int64)
    fp = np.zeros(order.size, np.int64)
    for k, j in enumerate(order):  # one greedy pass in descending score
        hit, overlap = matrices[image[j]][0][row[j]], matrices[image[j]][1][row[j]]
        fresh = hit & ~found[image[j]]
        if fresh.any():
            found[image[j]][int(np.argmax(np.where(fresh, overlap, -np.inf)))] = True
            tp[k] = 1
        elif not hit.any():
            fp[k] = 1
    num_lesions = int(sum(len(s.true_boxes) for s in sets))
    sorted_scores = scores[order]
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True] if order.size else np.zeros(0, bool)
    cum_tp, cum_fp = np.cumsum(tp)[last_of_tie], np.cumsum(fp)[last_of_tie]
    if num_lesions == 0:
        logger.warning("lesion FROC: the ground truth has no lesions; sensitivity is undefined (NaN)")
    sens = cum_tp / num_lesions if num_lesions else np.full(cum_tp.shape, np.nan)
    return FrocResult(
        fpi=np.r_[0.0, cum_fp / len(sets)],
        sensitivity=np.r_[0.0 if num_lesions else np.nan, sens],
        thresholds=np.r_[np.inf, sorted_scores[last_of_tie]],
        num_images=len(sets),
        num_lesions=num_lesions,
        fpi_points=tuple(float(p) for p in fpi_points),
        interpolation="step",
        info={"iou": float(iou), "criterion": rule.value, "class_agnostic": bool(class_agnostic)},
    )


def image_level_froc(
    detections: Sequence[Mapping[str, Any]] | Sequence[DetectionSet],
    truths: Sequence[Mapping[str, Any]] | None = None,
    *,
    score_threshold: float = 0.001,
    fpi_points: Sequence[float] = IMAGE_LEVEL_FPI_POINTS,
) -> FrocResult:
    """The reference's image-level FROC (``froc.py``: ``full_prediction_unique`` + ``calculate_froc``), reported
    as ``gt_compat_image_level_froc``; **not** a localisation metric (see the module docstring).

    Differences from the reference, none of which changes a value on untied scores: ties are ordered stably (image
    order) instead of by an unstable sort; a top detection of class 0 is an ordinary detection (the reference, run
    with a forced background class, drops class-0 boxes); the 0/0 slopes its extrapolation can produce are replaced
    by the nearer end of the curve (see :meth:`FrocResult.sensitivity_at`).

    Args:
        detections: one dict per image, or prepared :class:`DetectionSet` s (then ``truths`` is ``None``).
        truths: one dict per image, same order.
        score_threshold: detections below it are ignored (the reference's 0.001).
        fpi_points: the reference's ``fpi_levels``.

    Returns:
        A :class:`FrocResult` with ``interpolation="linear"``, one point per image with a detection (no ``(0, 0)``
        start); ``num_images`` counts those images and ``num_lesions`` their lesions.
    """
    sets = list(detections) if truths is None else prepare_detections(detections, truths)  # type: ignore[arg-type]
    top_scores, is_tp, lesions = [], [], 0
    for s in sets:
        keep = s.scores >= score_threshold
        if not keep.any():
            continue
        top_scores.append(float(s.scores[keep].max()))
        is_tp.append(len(s.true_boxes) > 0)
        lesions += len(s.true_boxes)
    scores = np.asarray(top_scores, np.float64)
    order = np.argsort(-scores, kind="stable")
    tp_sorted = np.asarray(is_tp, np.int64)[order]
    cum_tp, cum_fp = np.cumsum(tp_sorted), np.cumsum(1 - tp_sorted)
    n = len(top_scores)
    fpi = cum_fp / n if n else np.zeros(0)
    tpr = cum_tp / lesions if lesions else np.zeros(cum_tp.shape)
    return FrocResult(
        fpi=fpi.astype(np.float64),
        sensitivity=tpr.astype(np.float64),
        thresholds=scores[order],
        num_images=n,
        num_lesions=lesions,
        fpi_points=tuple(float(p) for p in fpi_points),
        interpolation="linear",
        info={"label": "gt_compat_image_level_froc", "localisation": False},
    )
