# SPDX-License-Identifier: Apache-2.0
"""DICOM batch pipelines: a folder tree of studies in, per series the files of the model kind's writer out.

- :mod:`~medkd.pipeline.config`: :class:`PipelineConfig` (the pipeline YAML) with its typed ``outputs:`` blocks,
  :func:`load_pipeline`, :func:`resolve_model`.
- :mod:`~medkd.pipeline.runner`: :func:`run_pipeline` (scan, select, decode, infer, write, report); a job is a
  series (``unit: series``, volumes) or one image (``unit: instance``: MG/DX/CR, :mod:`~medkd.pipeline.instances`).
- :mod:`~medkd.pipeline.writers`: :data:`OUTPUT_WRITERS`, writers by model kind (segmentation: DICOM SEG + NIfTI;
  detection: DICOM SR + ``detections.json``/``.csv``).
- :mod:`~medkd.pipeline.decode`: series decoding in worker processes; :mod:`~medkd.pipeline.report`: report rows;
  :mod:`~medkd.pipeline.sharding`: ``--shard k/n``.

Example:
    >>> from medkd.pipeline import OUTPUT_WRITERS, PipelineConfig
    >>> PipelineConfig(name="ct").outputs.seg.enabled, "detection" in OUTPUT_WRITERS
    (True, True)
"""

from __future__ import annotations

from medkd.pipeline.config import (
    LEGACY_OUTPUT_KEYS,
    NiftiOutput,
    OutputsConfig,
    PipelineConfig,
    SegOutput,
    SrOutput,
    check_device,
    load_pipeline,
    resolve_model,
)
from medkd.pipeline.report import PipelineSummary, ReportRow
from medkd.pipeline.runner import run_pipeline, writer_settings
from medkd.pipeline.sharding import in_shard, parse_shard
from medkd.pipeline.writers import OUTPUT_WRITERS, WriteContext, register_writer, writer_blocks

__all__ = [
    "LEGACY_OUTPUT_KEYS",
    "OUTPUT_WRITERS",
    "NiftiOutput",
    "OutputsConfig",
    "PipelineConfig",
    "PipelineSummary",
    "ReportRow",
    "SegOutput",
    "SrOutput",
    "WriteContext",
    "check_device",
    "in_shard",
    "load_pipeline",
    "parse_shard",
    "register_writer",
    "resolve_model",
    "run_pipeline",
    "writer_blocks",
    "writer_settings",
]
