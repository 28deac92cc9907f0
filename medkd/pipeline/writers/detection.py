# SPDX-License-Identifier: Apache-2.0
"""The ``detection`` writer: ``detections.json``/``.csv`` sidecars (always) and a DICOM SR (``outputs.sr``).

A detection predictor returns ``{"boxes": (N, 6), "scores": (N,), "labels": (N,)}`` for a volume ``(z, y, x)``
(:mod:`medkd.inference.kinds`): boxes ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in voxels, ``x`` the column and
``z`` the slice of the sorted series, voxel ``i`` spanning ``[i, i + 1)``. :func:`detections_from_output` turns them
into :class:`~medkd.io.dicom_sr.Detection` boxes ``(z0, y0, x0, z1, y1, x1)`` (the same space, reordered). A label
is the ``value`` of one of the predictor's :class:`~medkd.io.labels.LabelInfo` (its name and code name the finding;
a label without one is ``class <n>`` of type SNOMED CT "Finding"). Boxes with no extent along some axis cannot be
written as a finding; they are dropped and counted in ``result.json``.

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

__all__ = ["detections_from_output", "write_detection_outputs"]

logger = logging.getLogger(__name__)

_XYZ_TO_ZYX = [2, 1, 0, 5, 4, 3]


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

    if not isinstance(output, Mapping) or not {"boxes", "scores", "labels"} <= set(output):
        raise ValueError("a detection model must return a dict with 'boxes', 'scores' and 'labels'")
    boxes = np.asarray(output["boxes"], dtype=np.float64)
    boxes = boxes.reshape(0, 6) if boxes.size == 0 else boxes
    scores, classes = np.asarray(output["scores"]).reshape(-1), np.asarray(output["labels"]).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 6 or len(scores) != len(boxes) or len(classes) != len(boxes):
        raise ValueError(f"a detection model must return boxes (N, 6) with scores and labels (N,), got boxes "
                         f"{boxes.shape}, scores {scores.shape}, labels {classes.shape}")
    by_value = {int(info.value): info for info in labels}
    found, dropped = [], 0
    for box, score, value in zip(boxes[:, _XYZ_TO_ZYX], scores, classes):
        if not (box[3:] > box[:3]).all():
            dropped += 1
            continue
        info = by_value.get(int(value))
        name = info.name if info is not None else f"class {int(value)}"
        code = info.code if info is not None and info.code != TISSUE else None
        found.append(Detection(label=name, score=float(score), box=tuple(float(v) for v in box), code=code))
    return found, dropped


@register_writer("detection", blocks=("sr",))
def write_detection_outputs(
    volume: Any, output: Mapping[str, Any], ctx: WriteContext
) -> tuple[list[Path], dict[str, Any]]:
    """``detections.json``/``.csv`` (always), then a Comprehensive 3D SR ``sr.dcm`` when ``outputs.sr.enabled`` and
    there is at least one finding.

    Args:
        volume: the :class:`~medkd.io.dicom_volume.DicomVolume` (its sorted ``datasets`` give geometry and UIDs).
        output: the model's ``{"boxes", "scores", "labels"}``.
        ctx: where to write and the pipeline's ``outputs.sr`` settings.

    Returns:
        The files written and ``{"detections": {"count", "by_label", "dropped_empty_boxes", "sr"}}``.

    Raises:
        ValueError: the output is not a detection output, or the SR cannot be built (patient values redacted).
    """
    from medkd.io.dicom_sr import write_detection_sidecars, write_detection_sr

    predictor = ctx.predictor
    found, dropped = detections_from_output(output, predictor.labels)
    if dropped:
        logger.warning("%d detection box(es) with no extent on some axis dropped", dropped)
    model = {"model_name": predictor.name, "model_version": predictor.version}
    files = list(write_detection_sidecars(found, ctx.work_dir, datasets=volume.datasets, **model))
    if not ctx.config.outputs.sr.enabled:
        sr = "disabled (outputs.sr.enabled is false)"
    elif not found:
        sr = "not written: no detections (a TID 1500 report needs a finding)"
    else:
        files.append(write_detection_sr(volume.datasets, found, ctx.work_dir / "sr.dcm",
                                        uid_entropy=ctx.uid_entropy, **model))
        sr = "sr.dcm"
    by_label = dict(sorted(Counter(d.label for d in found).items()))
    return files, {"detections": {"count": len(found), "by_label": by_label, "dropped_empty_boxes": dropped,
                                  "sr": sr}}
