# SPDX-License-Identifier: Apache-2.0
"""Overlays (medkd.viz.overlay): colours, shapes, PNG panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkd.io.labels import LABEL_COLOURS
from medkd.viz.overlay import overlay_rgb, save_overlay_png


def test_overlay_colours_labels_and_leaves_background_grey() -> None:
    image = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (32, 1))
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 2
    rgb = overlay_rgb(image, mask, opacity=1.0, window=(0.0, 1.0))
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[8, 8], LABEL_COLOURS[2])  # full opacity: the label's own colour
    grey = rgb[20:, :]
    assert np.all(grey[..., 0] == grey[..., 1]) and np.all(grey[..., 1] == grey[..., 2])


def test_overlay_refuses_a_mask_of_another_shape() -> None:
    with pytest.raises(ValueError, match="does not match"):
        overlay_rgb(np.zeros((8, 8)), np.zeros((8, 9), np.uint8))


def test_save_overlay_png_writes_a_png(tmp_path: Path) -> None:
    image = np.random.default_rng(0).random((16, 16))
    mask = (image > 0.5).astype(np.uint8)
    path = save_overlay_png(image, {"truth": mask, "none": None}, tmp_path / "sub" / "fig.png", class_names=["bg", "x"])
    assert path == tmp_path / "sub" / "fig.png" and path.read_bytes()[:4] == b"\x89PNG"
