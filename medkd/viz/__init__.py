# SPDX-License-Identifier: Apache-2.0
"""Rendering for the clinician-facing app and reports, in numpy only (no streamlit): display windows, slices in three
orientations with label overlays, panels, legends, PNG bytes, and per-label volumes with a CSV export.

Example:
    >>> import numpy as np
    >>> from medkd.io.labels import labels_from_names
    >>> vol = np.zeros((6, 16, 16), np.float32); mask = (vol == 0).astype(np.uint8)
    >>> lo, hi = window_limits(vol, default_preset("CT"))
    >>> rgb = render_slice(vol, mask, labels_from_names(["bg", "LV"]), "axial", 3, (2.0, 1.0, 1.0), lo=lo, hi=hi)
    >>> rgb.shape, to_png(rgb)[:4]
    ((256, 256, 3), b'\\x89PNG')
"""

from __future__ import annotations

from medkd.viz.measure import DISCLAIMER, VOLUME_COLUMNS, label_counts, label_volumes, volumes_csv
from medkd.viz.views import (
    MIN_DISPLAY_SIDE,
    ORIENTATIONS,
    default_index,
    extract_slice,
    legend_entries,
    pixel_aspect,
    render_slice,
    render_view,
    side_by_side,
    slice_count,
    to_png,
)
from medkd.viz.window import WINDOW_PRESETS, apply_window, default_preset, window_limits

__all__ = [
    "WINDOW_PRESETS",
    "window_limits",
    "default_preset",
    "apply_window",
    "ORIENTATIONS",
    "MIN_DISPLAY_SIDE",
    "slice_count",
    "default_index",
    "extract_slice",
    "pixel_aspect",
    "render_view",
    "render_slice",
    "side_by_side",
    "legend_entries",
    "to_png",
    "DISCLAIMER",
    "VOLUME_COLUMNS",
    "label_counts",
    "label_volumes",
    "volumes_csv",
]
