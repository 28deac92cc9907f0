# SPDX-License-Identifier: Apache-2.0
"""The ``detection`` writer: ``detections.json``/``.csv`` sidecars (always) and a DICOM SR (``outputs.sr``).

A detection predictor returns ``{"boxes": (N, 6), "scores": (N,), "labels": (N,)}`` for a volume ``(z, y, x)``
(:mod:`medkd.inference.kinds`): boxes ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in voxels, ``x`` the column and
``z`` the slice of the sorted series, voxel ``i`` spanning ``[i, i + 1)``. :func:`detections_from_output` turns them
into :class:`~medkd.io.dicom_sr.Detection` boxes ``(z0, y0, x0, z1, y1, x1)`` (the same space, reordered). A label
is the ``value`` of one of the predictor's :class:`~medkd.io.labels.LabelInfo` (its name and code name the finding;
a label without one is ``class <n>`` of type SNOMED CT "Finding"). Boxes with no extent along some axis cannot be
written as a finding; they are dropped and counted in ``result.json``.

For one 2D image (a ``unit: instance`` pipeline: the writer gets a :class:`~medkd.pipeline.instances.DicomImage`)
the predictor returns boxes ``(N, 4)`` as ``(x_min, y_min, x_max, y_max)`` pixels (``x`` the column);
:func:`detections_from_output_2d` turns them into :class:`~medkd.io.dicom_sr2d.Detection2D` s unchanged, and the
writer writes a 2D SR (``SCOORD`` rectangles on the image, :func:`~medkd.io.dicom_sr2d.write_detection_sr_2d`)
and the 2D sidecars. The 3D path is the same as before.

Example:
    >>> import numpy as np
    >>> from medkd.io.labels import labels_from_names
    >>> out = {"boxes": np.array([[1.0, 2.0, 0.0, 5.0, 6.0, 3.0]]), "scores": np.array([0.9]), "labels": np.array([1])}
    >>> found, dropped = detections_from_output(out, labels_from_names(["background", "nodule"]))
    >>> found[0].label, found[0].box, dropped
    ('nodule', (0.0, 2.0, 1.0, 3.0, 6.0, 5.0), 0)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkd.io.labels import TISSUE, LabelInfo
from medkd.pipeline.writers.registry import WriteContext, register_writer

__all__ = ["detections_from_output", "detections_from_output_2d", "write_detection_outputs"]

logger = logging.getLogger(__name__)

_XYZ_TO_ZYX = [2, 1, 0, 5, 4, 3]


def _finding(value: Any, by_value: Mapping[int, LabelInfo]) -> tuple[str, Any]:
    """``(name, code or None)`` of a detection label value (``class <n>`` and no code when unknown)."""
    info = by_value.get(int(value))
    name = info.name if info is not None else f"class {int(value)}"
    code = info.code if info is not None and info.code != TISSUE else None
    return name, code


def _arrays(output: Mapping[str, Any], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N, width), scores (N,), labels (N,))`` of a detection output, or a ``ValueError``."""
    if not isinstance(output, Mapping) or not {"boxes", "scores", "labels"} <= set(output):
        raise ValueError("a detection model must return a dict with 'boxes', 'scores' and 'labels'")
    boxes = np.asarray(output["boxes"], dtype=np.float64)
    boxes = boxes.reshape(0, width) if boxes.size == 0 else boxes
    scores, classes = np.asarray(output["scores"]).reshape(-1), np.asarray(output["labels"]).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != width or len(scores) != len(boxes) or len(classes) != len(boxes):
        raise ValueError(f"a detection model must return boxes (N, {width}) with scores and labels (N,), got boxes "
                         f"{boxes.shape}, scores {scores.shape}, labels {classes.shape}")
    return boxes, scores, classes


def detections_from_output_2d(output: Mapping[str, Any], labels: Sequence[LabelInfo]) -> tuple[list[Any], int]:
    """A detection model's output for one 2D image as :class:`~medkd.io.dicom_sr2d.Detection2D` s, and how many
    boxes were dropped (no area).

    Args:
        output: ``{"boxes": (N, 4) (x_min, y_min, x_max, y_max) pixels, "scores": (N,), "labels": (N,)}``.
        labels: the predictor's labels; a detection label is a :attr:`LabelInfo.value` (1..K).

    Returns:
        ``(detections, dropped)``, in the model's order.

    Raises:
        ValueError: missing keys, or boxes that are not ``(N, 4)`` with ``(N,)`` scores and labels.

    Example:
        >>> from medkd.io.labels import labels_from_names
        >>> out = {"boxes": np.array([[1.0, 2.0, 5.0, 6.0], [3.0, 3.0, 3.0, 9.0]]), "scores": np.array([0.9, 0.5]),
        ...        "labels": np.array([1, 1])}
        >>> found, dropped = detections_from_output_2d(out, labels_from_names(["background", "mass"]))
        >>> found[0].label, found[0].box, dropped
        ('mass', (1.0, 2.0, 5.0, 6.0), 1)
    """
    from medkd.io.dicom_sr2d import Detection2D

    boxes, scores, classes = _arrays(output, 4)
    by_value = {int(info.value): info for info in labels}
    found, dropped = [], 0
    for box, score, value in zip(boxes, scores, classes):
        if not (box[2] > box[0] and box[3] > box[1]):
            dropped += 1
            continue
        name, code = _finding(value, by_value)
        found.append(Detection2D(label=name, score=float(score), box=tuple(float(v) for v in box), code=code))
    return found, dropped


def detections_from_output(output: Mapping[str, Any], labels: Sequence[LabelInfo]) -> tuple[list[Any], int]:
    """A detection model's volume output as :class:`~medkd.io.dicom_sr.Detection` s, and how many were dropped.

    Args:
        output: ``{"boxes": (N, 6) xyzxyz, "scores": (N,), "labels": (N,)}``.
        labels: the predictor's labels; a detection label is a :attr:`LabelInfo.value`.

    Returns:
        ``(detections, dropped)``: one :class:`Detection` per box with a positive extent on every axis, in the
        model's order, and the number of boxes without.

    Raises:
        ValueError: missing keys, or boxes that are not ``(N, 6)`` with ``(N,)`` scores and labels.
    """
    from medkd.io.dicom_sr import Detection

    boxes, scores, classes = _arrays(output, 6)
    by_value = {int(info.value): info for info in labels}
    found, dropped = [], 0
    for box, score, value in zip(boxes[:, _XYZ_TO_ZYX], scores, classes):
        if not (box[3:] > box[:3]).all():
            dropped += 1
            continue
        name, code = _finding(value, by_value)
        found.append(Detection(label=name, score=float(score), box=tuple(float(v) for v in box), code=code))
    return found, dropped


@register_writer("detection", blocks=("sr",), images=True)
def write_detection_outputs(
    volume: Any, output: Mapping[str, Any], ctx: WriteContext
) -> tuple[list[Path], dict[str, Any]]:
    """``detections.json``/``.csv`` (always), then a Comprehensive 3D SR ``sr.dcm`` when ``outputs.sr.enabled`` and
    there is at least one finding.

    Args:
        volume: the :class:`~medkd.io.dicom_volume.DicomVolume` (its sorted ``datasets`` give geometry and UIDs), or
            one 2D image, a :class:`~medkd.pipeline.instances.DicomImage` (``unit: instance``): then the boxes are
            2D and so are the SR's regions (:mod:`medkd.io.dicom_sr2d`).
        output: the model's ``{"boxes", "scores", "labels"}``.
        ctx: where to write and the pipeline's ``outputs.sr`` settings.

    Returns:
        The files written and ``{"detections": {"count", "by_label", "dropped_empty_boxes", "sr"}}``.

    Raises:
        ValueError: the output is not a detection output, or the SR cannot be built (patient values redacted).
    """
    from medkd.io.dicom_sr import write_detection_sidecars, write_detection_sr
    from medkd.io.dicom_sr2d import write_detection_sidecars_2d, write_detection_sr_2d

    predictor = ctx.predictor
    image = np.ndim(volume.array) == 2
    found, dropped = (detections_from_output_2d if image else detections_from_output)(output, predictor.labels)
    if dropped:
        logger.warning("%d detection box(es) with no extent on some axis dropped", dropped)
    model = {"model_name": predictor.name, "model_version": predictor.version}
    if image:
        files = list(write_detection_sidecars_2d(found, ctx.work_dir, dataset=volume.dataset, **model))
    else:
        files = list(write_detection_sidecars(found, ctx.work_dir, datasets=volume.datasets, **model))
    if not ctx.config.outputs.sr.enabled:
        sr = "disabled (outputs.sr.enabled is false)"
    elif not found:
        sr = "not written: no detections (a TID 1500 report needs a finding)"
    else:
        path = ctx.work_dir / "sr.dcm"
        if image:
            files.append(write_detection_sr_2d(volume.dataset, found, path, uid_entropy=ctx.uid_entropy, **model))
        else:
            files.append(write_detection_sr(volume.datasets, found, path, uid_entropy=ctx.uid_entropy, **model))
        sr = "sr.dcm"
    by_label = dict(sorted(Counter(d.label for d in found).items()))
    return files, {"detections": {"count": len(found), "by_label": by_label, "dropped_empty_boxes": dropped,
                                  "sr": sr}}
