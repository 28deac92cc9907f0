# SPDX-License-Identifier: Apache-2.0
"""Kind-neutral inference: :class:`Predictor`, the kinds it comes in, model loading and segmentation recipes.

- :mod:`~medkd.inference.kinds`: :data:`KINDS`, what ``segmentation``, ``detection`` and ``forecasting`` models take
  and return, with :func:`check_output`.
- :mod:`~medkd.inference.predictor`: :class:`Predictor`, a loaded model called with its kind's input.
- :mod:`~medkd.inference.loading`: :func:`load_predictor` from a bundle or run folder; :data:`PREDICTOR_SOURCES`.
- :mod:`~medkd.inference.segmentation`: :class:`SegmentationSpec` and the slice-wise / sliding-window protocols.
- :mod:`~medkd.inference.devices`: :func:`resolve_device`.

Importing this package does not import torch; the segmentation names load it on first use.

Example:
    >>> from medkd.inference import KINDS, get_kind
    >>> get_kind("segmentation").output
    "uint8 label map of the volume's shape ((1, y, x) for an image)"
    >>> "detection" in KINDS
    True
"""

from __future__ import annotations

import importlib
from typing import Any

from medkd.inference.devices import resolve_device
from medkd.inference.kinds import KINDS, Kind, check_output, get_kind, list_kinds, register_kind
from medkd.inference.loading import BUILTIN_SOURCE_MODULES, PREDICTOR_SOURCES, PredictorSource, load_predictor
from medkd.inference.predictor import Predictor, file_sha256

__all__ = [
    "Predictor", "file_sha256", "Kind", "KINDS", "register_kind", "get_kind", "list_kinds", "check_output",
    "PredictorSource", "PREDICTOR_SOURCES", "BUILTIN_SOURCE_MODULES", "load_predictor", "resolve_device",
    "SegmentationSpec", "predict_slices_2d", "predict_sliding_3d", "exact_overlaps",
]

#: names served from :mod:`medkd.inference.segmentation` (torch, MONAI) on first access
_SEGMENTATION = ("SegmentationSpec", "predict_slices_2d", "predict_sliding_3d", "exact_overlaps")


def __getattr__(name: str) -> Any:
    if name in _SEGMENTATION:
        return getattr(importlib.import_module("medkd.inference.segmentation"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
