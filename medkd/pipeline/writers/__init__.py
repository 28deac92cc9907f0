# SPDX-License-Identifier: Apache-2.0
"""Pipeline output writers by model kind (:data:`OUTPUT_WRITERS`); importing this package registers the built-in ones.

- ``segmentation`` (:mod:`~medkd.pipeline.writers.segmentation`): DICOM SEG, NIfTI mask, label volumes.
- ``detection`` (:mod:`~medkd.pipeline.writers.detection`): DICOM SR (TID 1500), ``detections.json``/``.csv``;
  per series (3D boxes) or per image (``unit: instance``: 2D boxes, :mod:`medkd.io.dicom_sr2d`).

Example:
    >>> from medkd.pipeline.writers import OUTPUT_WRITERS, writer_blocks
    >>> writer_blocks("segmentation")
    ('seg', 'nifti')
"""

from __future__ import annotations

from medkd.pipeline.writers import detection, segmentation  # noqa: F401 - registers the built-in writers
from medkd.pipeline.writers.registry import (
    OUTPUT_WRITERS,
    WriteContext,
    Writer,
    register_writer,
    writer_blocks,
    writes_images,
)

__all__ = ["OUTPUT_WRITERS", "WriteContext", "Writer", "register_writer", "writer_blocks", "writes_images"]
