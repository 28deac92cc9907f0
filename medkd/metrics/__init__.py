# SPDX-License-Identifier: Apache-2.0
"""Evaluation metrics and the papers' evaluation inference.

``seg``: Dice, Jaccard, HD95 and ASD with medpy's definitions and an explicit empty-mask policy, plus per-case
summaries, tables and CSV. ``seg_inference``: the BCP evaluation protocols (ACDC slice-wise, LA sliding window).
``detection``: COCO AP via MONAI and ``medkd gt eval``'s summary; ``froc``: lesion-level and image-level FROC.
SurgFUTR's SFPBench: ``surgical_labels`` (label generators, copy-current and the phase prior), ``anticipation``
(RSD MAE, in/out-of-horizon MAE family), ``triplet_map`` (video-wise mAP/AUROC, dense and change-conditioned).
"""

from __future__ import annotations

from medkd.metrics.seg import (
    METRIC_KEYS,
    EmptyPolicy,
    binary_metrics,
    case_metrics,
    format_table,
    summarize_cases,
    write_cases_csv,
)
from medkd.metrics.anticipation import AnticipationResult, anticipation_mae, rsd_mae
from medkd.metrics.components import largest_component, largest_component_per_sample
from medkd.metrics.seg_inference import exact_overlaps, predict_slices_2d, predict_sliding_3d
from medkd.metrics.surgical_labels import PhasePrior, copy_current, sfpbench_labels
from medkd.metrics.triplet_map import ClassScores, mean_auroc, mean_average_precision

__all__ = [
    "METRIC_KEYS",
    "EmptyPolicy",
    "binary_metrics",
    "case_metrics",
    "summarize_cases",
    "format_table",
    "write_cases_csv",
    "predict_slices_2d",
    "predict_sliding_3d",
    "largest_component",
    "largest_component_per_sample",
    "exact_overlaps",
    "AnticipationResult",
    "anticipation_mae",
    "rsd_mae",
    "PhasePrior",
    "copy_current",
    "sfpbench_labels",
    "ClassScores",
    "mean_auroc",
    "mean_average_precision",
]
