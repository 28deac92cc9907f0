# SPDX-License-Identifier: Apache-2.0
"""Segmentation metrics of the BCP papers: Dice, Jaccard, HD95 and ASD, with an explicit empty-mask policy.

The definitions follow ``medpy.metric.binary`` (the reference's metric library), reimplemented so that medpy is
only a test dependency:

* **Dice** ``2|P∩G| / (|P|+|G|)`` and **Jaccard** ``|P∩G| / |P∪G|``, standard fractions in ``[0, 1]``.
* **Surfaces** are the voxels removed by one binary erosion with connectivity 1 (voxels on the image border count
  as surface); distances come from ``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``.
* **HD95** (medpy ``hd95``) is the 95th percentile of the *pooled* surface distances ``P→G ∪ G→P``. This is not
  MONAI's ``HausdorffDistanceMetric(percentile=95)``, which takes the max of the two directed percentiles.
* **ASD** (medpy ``asd``) is the mean *directed* distance ``P→G``, not the symmetric ASSD.

Distances are in voxels when ``spacing`` is ``None`` (the papers' protocol), else in the units of ``spacing``.

**Empty masks** (medpy raises on them, the reference zeroes everything) are resolved by :class:`EmptyPolicy`:

=================  =====================  =======================  ==============
policy             empty P, non-empty G   empty G, non-empty P     both empty
=================  =====================  =======================  ==============
``bcp_zero``       0, 0, 0, 0             0, 0, 0, 0 (*)           0, 0, 0, 0
``worst``          0, 0, diag, diag       0, 0, diag, diag         1, 1, 0, 0
``nan_excluded``   NaN, NaN, NaN, NaN     0, 0, NaN, NaN           1, 1, 0, 0
=================  =====================  =======================  ==============

Values are (Dice, Jaccard, HD95, ASD); ``diag`` is the diagonal of the image extent, ``sqrt(sum((n_i*s_i)^2))``,
larger than any surface distance the image can hold. (*) the reference calls medpy there and crashes; ``bcp_zero``
gives zeros, following its "uncomputable means 0" rule, and logs a warning.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from collections.abc import Sequence
from enum import StrEnum
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

__all__ = [
    "EmptyPolicy",
    "METRIC_KEYS",
    "binary_metrics",
    "case_metrics",
    "summarize_cases",
    "format_table",
    "write_cases_csv",
]

logger = logging.getLogger(__name__)

METRIC_KEYS: tuple[str, ...] = ("dice", "jaccard", "hd95", "asd")


class EmptyPolicy(StrEnum):
    """What a class scores when its prediction or ground truth is empty (see the module table)."""

    BCP_ZERO = "bcp_zero"
    WORST = "worst"
    NAN_EXCLUDED = "nan_excluded"


def _policy(value: EmptyPolicy | str) -> EmptyPolicy:
    try:
        return EmptyPolicy(value)
    except ValueError:
        options = ", ".join(p.value for p in EmptyPolicy)
        raise ValueError(f"unknown empty_policy {value!r}; choose one of {options}") from None


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = tuple(float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=np.float64)))
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive numbers, got {spacing!r}")
    return values


def _diagonal(shape: Sequence[int], spacing: tuple[float, ...] | None) -> float:
    steps = spacing if spacing is not None else (1.0,) * len(shape)
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, steps))))


def _crop_to_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop both masks to the bounding box of ``pred | gt`` plus one voxel; surfaces and distances are unchanged."""
    union = pred | gt
    box = []
    for axis in range(union.ndim):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(union.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return pred[tuple(box)], gt[tuple(box)]


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=generate_binary_structure(mask.ndim, 1), iterations=1)


def _surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances ``pred→gt`` and ``gt→pred`` of two non-empty boolean masks."""
    pred, gt = _crop_to_union(pred, gt)
    pred_border, gt_border = _surface(pred), _surface(gt)
    to_gt = distance_transform_edt(~gt_border, sampling=spacing)[pred_border]
    to_pred = distance_transform_edt(~pred_border, sampling=spacing)[gt_border]
    return to_gt, to_pred


def _empty_case(policy: EmptyPolicy, pred_empty: bool, gt_empty: bool, diagonal: float) -> dict[str, float]:
    if policy is EmptyPolicy.BCP_ZERO:
        if not pred_empty:
            logger.warning("empty ground truth with a non-empty prediction: bcp_zero scores it 0 (medpy would raise)")
        return dict.fromkeys(METRIC_KEYS, 0.0)
    if pred_empty and gt_empty:
        return {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}
    if policy is EmptyPolicy.WORST:
        return {"dice": 0.0, "jaccard": 0.0, "hd95": diagonal, "asd": diagonal}
    if pred_empty:
        return dict.fromkeys(METRIC_KEYS, math.nan)
    return {"dice": 0.0, "jaccard": 0.0, "hd95": math.nan, "asd": math.nan}


def binary_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    empty_policy: EmptyPolicy | str = "worst",
) -> dict[str, float]:
    """Dice, Jaccard, HD95 and ASD of one binary prediction against its ground truth (medpy definitions).

    Args:
        pred: binary mask of any dimension, e.g. ``(H, W)`` or ``(W, H, D)``; nonzero is foreground.
        gt: ground-truth mask of the same shape.
        spacing: voxel size per axis (or one number for all); ``None`` measures distances in voxels.
        empty_policy: ``"bcp_zero"``, ``"worst"`` or ``"nan_excluded"``; see the module docstring.

    Returns:
        ``{"dice", "jaccard", "hd95", "asd"}`` as floats, plus ``"empty_pred"`` (bool): the prediction is empty.

    Raises:
        ValueError: shapes differ, bad spacing, or an unknown policy.

    Example:
        >>> gt = np.zeros((8, 8), bool); gt[2:6, 2:6] = True
        >>> m = binary_metrics(np.roll(gt, 1, axis=0), gt)
        >>> round(m["dice"], 3), m["hd95"]
        (0.75, 1.0)
    """
    policy = _policy(empty_policy)
    pred, gt = np.atleast_1d(np.asarray(pred).astype(bool)), np.atleast_1d(np.asarray(gt).astype(bool))
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    steps = _spacing(spacing, pred.ndim)
    pred_count, gt_count = int(np.count_nonzero(pred)), int(np.count_nonzero(gt))
    if pred_count == 0 or gt_count == 0:
        result = _empty_case(policy, pred_count == 0, gt_count == 0, _diagonal(pred.shape, steps))
        return {**result, "empty_pred": pred_count == 0}
    inter = int(np.count_nonzero(pred & gt))
    to_gt, to_pred = _surface_distances(pred, gt, steps)
    return {
        "dice": 2.0 * inter / float(pred_count + gt_count),
        "jaccard": inter / float(pred_count + gt_count - inter),
        "hd95": float(np.percentile(np.hstack((to_gt, to_pred)), 95)),
        "asd": float(to_gt.mean()),
        "empty_pred": False,
    }


def _label_map(array: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name} must hold integer labels, got non-integral {array.dtype} values")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be an integer label map, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{name} labels must lie in [0, {num_classes - 1}], got [{array.min()}, {array.max()}]")
    return array


def case_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    *,
    spacing: Sequence[float] | None = None,
    empty_policy: EmptyPolicy | str = "worst",
) -> dict[int, dict[str, float]]:
    """Per-class metrics of one case for the foreground classes ``1 .. num_classes - 1``.

    Args:
        pred: predicted label map ``(H, W)``, ``(S, H, W)`` or ``(W, H, D)``, integers in ``[0, num_classes)``.
        gt: ground-truth label map of the same shape.
        num_classes: number of classes including background (ACDC 4, LA 2).
        spacing: voxel size per axis; ``None`` for voxels.
        empty_policy: see :class:`EmptyPolicy`.

    Returns:
        ``{class_index: binary_metrics(...)}`` for every foreground class.

    Raises:
        ValueError: shapes differ (both are named), labels are out of range or not integers, ``num_classes < 2``.

    Example:
        >>> gt = np.zeros((6, 6), np.uint8); gt[1:3, 1:3] = 1; gt[3:5, 3:5] = 2
        >>> sorted(case_metrics(gt, gt, 3))
        [1, 2]
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"prediction shape {np.shape(pred)} differs from ground-truth shape {np.shape(gt)}")
    pred, gt = _label_map(pred, "prediction", num_classes), _label_map(gt, "ground truth", num_classes)
    return {
        c: binary_metrics(pred == c, gt == c, spacing=spacing, empty_policy=empty_policy)
        for c in range(1, num_classes)
    }


def _nanmean(values: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(np.asarray(values, dtype=np.float64)))


def _nanstd(values: Sequence[float]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanstd(np.asarray(values, dtype=np.float64)))


def _class_names(classes: list[int], class_names: Sequence[str]) -> dict[int, str]:
    names = list(class_names)
    if len(names) == len(classes) + 1:  # background name given first: skip it
        names = names[1:]
    if len(names) != len(classes):
        raise ValueError(f"{len(class_names)} class names for the {len(classes)} foreground classes {classes}")
    return dict(zip(classes, names))


def _case_entry(metrics: dict[str, float]) -> dict[str, Any]:
    return {k: float(metrics[k]) for k in METRIC_KEYS} | {"empty_pred": bool(metrics.get("empty_pred", False))}


def summarize_cases(
    cases: Sequence[tuple[str, dict[int, dict[str, float]]]], class_names: Sequence[str]
) -> dict[str, Any]:
    """Average per-case metrics the reference way: over cases per class, then over classes.

    Args:
        cases: ``(case_id, case_metrics(...))`` pairs; every case must hold the same classes.
        class_names: names of the foreground classes in class-index order (``["RV", "Myo", "LV"]``); a list with
            a background name first (one longer) is accepted and its first entry skipped.

    Returns:
        A JSON-serialisable dict ``{"mean": {metric: v}, "per_class": {name: {metric: v, "std_dice": v}},
        "cases": [{"case", "per_class": {name: {metric: v, "empty_pred"}}, "mean": {metric: v}}],
        "empty_predictions": int}``. Means ignore NaN (only ``nan_excluded`` produces NaN); ``std_dice`` is the
        population std over cases; ``empty_predictions`` counts (case, class) pairs with an empty prediction.

    Raises:
        ValueError: no cases, classes differing between cases, or a class-name count that does not fit.

    Example:
        >>> gt = np.zeros((6, 6), np.uint8); gt[1:4, 1:4] = 1
        >>> s = summarize_cases([("a", case_metrics(gt, gt, 2))], ["LA"])
        >>> s["mean"]["dice"], s["empty_predictions"]
        (1.0, 0)
    """
    if not cases:
        raise ValueError("summarize_cases needs at least one case")
    classes = sorted(cases[0][1])
    for case_id, per_class in cases:
        if sorted(per_class) != classes:
            raise ValueError(f"case {case_id!r} has classes {sorted(per_class)}, expected {classes}")
    names = _class_names(classes, class_names)
    rows = []
    for case_id, per_class in cases:
        named = {names[c]: _case_entry(per_class[c]) for c in classes}
        mean = {k: _nanmean([named[n][k] for n in named]) for k in METRIC_KEYS}
        rows.append({"case": str(case_id), "per_class": named, "mean": mean})
    per_class_summary = {}
    for name in names.values():
        values = {k: [row["per_class"][name][k] for row in rows] for k in METRIC_KEYS}
        per_class_summary[name] = {k: _nanmean(v) for k, v in values.items()} | {"std_dice": _nanstd(values["dice"])}
    return {
        "mean": {k: _nanmean([per_class_summary[n][k] for n in per_class_summary]) for k in METRIC_KEYS},
        "per_class": per_class_summary,
        "cases": rows,
        "empty_predictions": sum(row["per_class"][n]["empty_pred"] for row in rows for n in row["per_class"]),
    }


def format_table(summary: dict[str, Any]) -> str:
    """Render a summary as a fixed-width table: one row per class plus the mean; Dice and Jaccard in percent.

    Args:
        summary: the output of :func:`summarize_cases`.

    Returns:
        The table as a multi-line string (no trailing newline), ending with the case and empty-prediction counts.

    Example:
        >>> gt = np.zeros((6, 6), np.uint8); gt[1:4, 1:4] = 1
        >>> print(format_table(summarize_cases([("a", case_metrics(gt, gt, 2))], ["LA"])).splitlines()[0])
        class         Dice %  Jaccard %      HD95       ASD
    """
    header = f"{'class':<12}{'Dice %':>8}{'Jaccard %':>11}{'HD95':>10}{'ASD':>10}"
    lines = [header, "-" * len(header)]
    rows = list(summary["per_class"].items()) + [("mean", summary["mean"])]
    for i, (name, m) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(header))
        lines.append(
            f"{name[:12]:<12}{100 * m['dice']:>8.2f}{100 * m['jaccard']:>11.2f}{m['hd95']:>10.2f}{m['asd']:>10.2f}"
        )
    lines.append(f"{len(summary['cases'])} cases, {summary['empty_predictions']} empty predictions")
    return "\n".join(lines)


def write_cases_csv(summary: dict[str, Any], path: str | PathLike[str]) -> Path:
    """Write ``metrics_per_case.csv``: one row per (case, class) with columns case,class,dice,jaccard,hd95,asd.

    Args:
        summary: the output of :func:`summarize_cases`.
        path: the CSV file, or an existing folder to write ``metrics_per_case.csv`` into; parents are created.

    Returns:
        The path written.

    Example:
        >>> import tempfile
        >>> gt = np.zeros((6, 6), np.uint8); gt[1:4, 1:4] = 1
        >>> s = summarize_cases([("a", case_metrics(gt, gt, 2))], ["LA"])
        >>> write_cases_csv(s, tempfile.mkdtemp()).name
        'metrics_per_case.csv'
    """
    out = Path(path)
    if out.is_dir():
        out = out / "metrics_per_case.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "class", *METRIC_KEYS])
        for row in summary["cases"]:
            for name, m in row["per_class"].items():
                writer.writerow([row["case"], name, *(repr(float(m[k])) for k in METRIC_KEYS)])
    logger.info("wrote %s", out)
    return out
