# SPDX-License-Identifier: Apache-2.0
"""Display windows (level/width presets) and windowing of intensities to 8-bit grey.

A preset is either a fixed CT window ``(level, width)`` in Hounsfield units, or ``None`` for a window taken from the
volume's own percentiles. :func:`window_limits` turns a preset into ``(lo, hi)`` with ``hi > lo`` always (a constant
volume gets a one-unit window around its value), and :func:`apply_window` maps ``[lo, hi]`` to ``0..255``.

Example:
    >>> vol = np.linspace(-1000, 1000, 8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    >>> window_limits(vol, "CT soft tissue")
    (-160.0, 240.0)
    >>> apply_window(np.array([-200.0, 40.0, 300.0]), -160.0, 240.0).tolist()
    [0, 128, 255]
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import numpy as np

__all__ = ["WINDOW_PRESETS", "window_limits", "default_preset", "apply_window"]

AUTO = "Auto (1-99 percentile)"
MR_AUTO = "MR auto"

#: preset name -> (level/centre, width) in the volume's units (HU for CT); None = from the volume's percentiles
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    AUTO: None,
    "CT soft tissue": (40.0, 400.0),
    "CT lung": (-600.0, 1500.0),
    "CT bone": (400.0, 1800.0),
    MR_AUTO: None,
}

_MODALITY_PRESET = {"CT": "CT soft tissue", "MR": MR_AUTO}

#: percentiles are taken on at most this many voxels (an even stride through the volume), so that a 512x512x600 CT
#: takes milliseconds rather than seconds; the 1st/99th percentiles of a strided sample are stable to well under a HU
_MAX_SAMPLE = 1 << 21


def _sample(volume: np.ndarray) -> np.ndarray:
    flat = np.asarray(volume).reshape(-1)
    if flat.size > _MAX_SAMPLE:
        flat = flat[:: -(-flat.size // _MAX_SAMPLE)]
    flat = flat.astype(np.float32, copy=False)
    return flat[np.isfinite(flat)]


def _auto(volume: np.ndarray) -> tuple[float, float]:
    values = _sample(volume)
    return _percentiles(values, 1.0, 99.0)


def _mr_auto(volume: np.ndarray) -> tuple[float, float]:
    values = _sample(volume)
    nonzero = values[values != 0]
    return _percentiles(nonzero if nonzero.size else values, 1.0, 99.5)


def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    if values.size == 0:  # empty or all-NaN volume: any valid window will do
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    return float(lo), float(hi)


_AUTOMATIC: dict[str, Callable[[np.ndarray], tuple[float, float]]] = {AUTO: _auto, MR_AUTO: _mr_auto}


def window_limits(volume: np.ndarray, preset: str) -> tuple[float, float]:
    """The display window ``(lo, hi)`` of a preset for this volume.

    Args:
        volume: intensities of any shape (a whole volume, so the window does not change from slice to slice).
        preset: a key of :data:`WINDOW_PRESETS`. Fixed presets give ``(level - width / 2, level + width / 2)``;
            ``"Auto (1-99 percentile)"`` the 1st and 99th percentiles of all finite voxels; ``"MR auto"`` the 1st
            and 99.5th percentiles of the non-zero voxels (all voxels when every voxel is zero).

    Returns:
        ``(lo, hi)`` as floats with ``hi > lo``; a constant volume of value ``v`` gives ``(v - 0.5, v + 0.5)``.

    Raises:
        ValueError: ``preset`` is not a known preset; the message lists the valid ones.
    """
    if preset not in WINDOW_PRESETS:
        close = difflib.get_close_matches(str(preset), list(WINDOW_PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown window preset {preset!r}{hint}; valid presets: {', '.join(WINDOW_PRESETS)}")
    fixed = WINDOW_PRESETS[preset]
    if fixed is not None:
        level, width = fixed
        return float(level - width / 2), float(level + width / 2)
    lo, hi = _AUTOMATIC[preset](volume)
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def default_preset(modality: str) -> str:
    """The preset to start with for a DICOM modality: ``CT`` -> CT soft tissue, ``MR`` -> MR auto, else automatic."""
    return _MODALITY_PRESET.get(str(modality or "").strip().upper(), AUTO)


def apply_window(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map intensities to 8-bit grey: ``lo`` and below -> 0, ``hi`` and above -> 255, linear in between.

    Args:
        image: intensities of any shape; NaN maps to 0.
        lo: lower window limit.
        hi: upper window limit, ``> lo``.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: ``hi <= lo``.
    """
    return np.rint(_unit(image, lo, hi) * 255.0).astype(np.uint8)


def _unit(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Intensities scaled by the window to float32 in ``[0, 1]`` (the grey before quantisation)."""
    if not float(hi) > float(lo):
        raise ValueError(f"window needs hi > lo, got lo={lo}, hi={hi}")
    scaled = (np.asarray(image, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (float(hi) - float(lo)))
    return np.nan_to_num(np.clip(scaled, 0.0, 1.0, out=scaled), nan=0.0, copy=False)
