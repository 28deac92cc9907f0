# SPDX-License-Identifier: Apache-2.0
"""Deprecated: use :mod:`medkd.pipeline`. This old path re-exports it and will be removed.

The DICOM batch runner moved out of the training engine: :func:`~medkd.pipeline.run_pipeline`,
:class:`~medkd.pipeline.PipelineConfig` (with typed ``outputs:`` blocks), :data:`~medkd.pipeline.OUTPUT_WRITERS`
and the rest live in :mod:`medkd.pipeline`. The engine itself imports nothing from here (it sits below pipeline).
"""

from __future__ import annotations

from medkd.pipeline.config import PipelineConfig, check_device, load_pipeline, resolve_model
from medkd.pipeline.report import PipelineSummary, ReportRow
from medkd.pipeline.runner import run_pipeline
from medkd.pipeline.sharding import in_shard, parse_shard
from medkd.pipeline.writers.registry import OUTPUT_WRITERS, WriteContext
from medkd.pipeline.writers.segmentation import write_segmentation_outputs

__all__ = [
    "OUTPUT_WRITERS",
    "PipelineConfig",
    "PipelineSummary",
    "ReportRow",
    "WriteContext",
    "check_device",
    "in_shard",
    "load_pipeline",
    "parse_shard",
    "resolve_model",
    "run_pipeline",
    "write_segmentation_outputs",
]
