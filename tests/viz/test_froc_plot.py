# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.viz.froc: the FROC plot is a PNG written without a display, for lesion and image-level curves."""

from __future__ import annotations

import numpy as np
import pytest

from medkd.metrics.froc import image_level_froc, lesion_froc
from medkd.viz.froc import plot_froc


def _case() -> tuple[list[dict], list[dict]]:
    lesion = np.array([[10.0, 10.0, 30.0, 30.0]])
    truths = [{"boxes": lesion, "labels": np.array([0])}, {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)}]
    dets = [
        {"boxes": np.array([[10.0, 10.0, 30.0, 30.0], [50, 50, 60, 60]]), "scores": np.array([0.9, 0.4]),
         "labels": np.array([0, 0])},
        {"boxes": np.array([[5.0, 5.0, 15.0, 15.0]]), "scores": np.array([0.7]), "labels": np.array([0])},
    ]
    return dets, truths


def test_plot_writes_a_png(tmp_path) -> None:
    import matplotlib
    import matplotlib.image

    dets, truths = _case()
    curves = {
        "lesion": lesion_froc(dets, truths),
        "image-level (gt_compat)": image_level_froc(dets, truths),
        "no lesions": lesion_froc(dets[1:], truths[1:]),  # NaN sensitivities must not break the plot
    }
    out = plot_froc(curves, tmp_path / "sub" / "froc.png", title="synthetic")
    assert out == tmp_path / "sub" / "froc.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(out)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0  # something is drawn
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_needs_a_curve(tmp_path) -> None:
    with pytest.raises(ValueError):
        plot_froc({}, tmp_path / "froc.png")
