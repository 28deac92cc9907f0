# SPDX-License-Identifier: Apache-2.0
"""Deprecated: use medkd.inference. This old path re-exports :mod:`medkd.inference` and will be removed.

``Predictor``, ``load_predictor``, ``PREDICTOR_SOURCES``, ``PredictorSource``, ``resolve_device`` and ``file_sha256``
live in :mod:`medkd.inference`; ``SegmentationSpec`` in :mod:`medkd.inference.segmentation`. The engine itself
imports nothing from here (it sits below inference).
"""

from __future__ import annotations

from medkd.inference.devices import resolve_device
from medkd.inference.loading import PREDICTOR_SOURCES, PredictorSource, load_predictor
from medkd.inference.predictor import Predictor, file_sha256
from medkd.inference.segmentation import SegmentationSpec

__all__ = [
    "SegmentationSpec", "Predictor", "PredictorSource", "PREDICTOR_SOURCES", "load_predictor", "resolve_device",
    "file_sha256",
]
