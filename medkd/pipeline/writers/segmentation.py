# SPDX-License-Identifier: Apache-2.0
"""The ``segmentation`` writer: a DICOM SEG (``outputs.seg``), a NIfTI mask (``outputs.nifti``) and per-label
volumes in mL for ``result.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medkd.pipeline.writers.registry import WriteContext, register_writer

__all__ = ["write_segmentation_outputs"]


@register_writer("segmentation", blocks=("seg", "nifti"))
def write_segmentation_outputs(volume: Any, mask: np.ndarray, ctx: WriteContext) -> tuple[list[Path], dict[str, Any]]:
    """DICOM SEG (highdicom), NIfTI mask on the series geometry, and per-label volumes in mL.

    Args:
        volume: the :class:`~medkd.io.dicom_volume.DicomVolume` (``array`` ``(slices, rows, cols)``).
        mask: the label map, the volume's shape.
        ctx: where to write and the pipeline's ``outputs.seg`` / ``outputs.nifti`` settings.

    Returns:
        The files written and ``{"labels": {name: {value, voxels, volume_ml}}}``.

    Raises:
        ValueError: the mask's shape is not the volume's, or the SEG cannot be built (patient values redacted).
    """
    from medkd.io.dicom_seg import write_seg
    from medkd.io.volume_io import write_mask_like
    from medkd.viz.measure import label_volumes

    predictor, outputs, files = ctx.predictor, ctx.config.outputs, []
    if mask.shape != volume.array.shape:
        raise ValueError(f"model returned shape {mask.shape} for a volume of shape {volume.array.shape}")
    if outputs.seg.enabled:
        files.append(write_seg(
            volume.datasets, mask, predictor.labels, ctx.work_dir / "seg.dcm", model_name=predictor.name,
            model_version=predictor.version, uid_entropy=ctx.uid_entropy, seg_type=outputs.seg.type,
        ))
    if outputs.nifti.enabled:
        files.append(write_mask_like(mask, volume.reference_image(), ctx.work_dir / "mask.nii.gz"))
    rows = label_volumes(mask, predictor.labels, volume.spacing, ndigits=4)
    return files, {"labels": {r["label"]: {k: r[k] for k in ("value", "voxels", "volume_ml")} for r in rows}}
