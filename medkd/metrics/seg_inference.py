# SPDX-License-Identifier: Apache-2.0
"""Deprecated: use medkd.inference (:mod:`medkd.inference.segmentation`); this old path re-exports it.

``predict_slices_2d`` (ACDC slice-wise), ``predict_sliding_3d`` (LA sliding window) and ``exact_overlaps`` moved to
:mod:`medkd.inference.segmentation`; ``largest_component`` lives in :mod:`medkd.metrics.components`.
"""

from __future__ import annotations

from medkd.inference.segmentation import exact_overlaps, predict_slices_2d, predict_sliding_3d
from medkd.metrics.components import largest_component

__all__ = ["predict_slices_2d", "predict_sliding_3d", "largest_component", "exact_overlaps"]
