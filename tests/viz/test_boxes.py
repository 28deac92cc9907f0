# SPDX-License-Identifier: Apache-2.0
"""Boxes drawn on a 2D image (issue 10, item 6: the PNG of ``gt predict`` and the app's detection view): outlines on
the pixels a box covers with x the column, label colours, the score threshold, tags and the PNG file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medkd.io.labels import labels_from_names
from medkd.viz.boxes import box_pixels, draw_boxes, save_png

RED, GREEN = [230, 25, 75], [60, 180, 75]


def _draw(boxes, scores, labels, names=None, **kwargs):
    image = np.zeros((50, 80), np.float32)  # rows != columns: an x/y mix-up draws elsewhere
    return draw_boxes(image, np.asarray(boxes, float), np.asarray(scores, float), np.asarray(labels),
                      names if names is not None else {1: "mass", 2: "spiculated"}, window=(0.0, 1.0), **kwargs)


def test_outline_sits_on_the_box_pixels_x_being_the_column():
    rgb = _draw([[40, 20, 60, 35]], [0.9], [1], show_text=False)  # columns 40..59, rows 20..34
    for row, col in [(20, 40), (20, 59), (34, 40), (34, 59), (27, 40), (27, 59), (20, 50), (34, 50)]:
        assert rgb[row, col].tolist() == RED, (row, col)
    for row, col in [(19, 40), (20, 39), (35, 50), (27, 60), (27, 50), (40, 20)]:  # outside or inside: grey
        assert rgb[row, col].tolist() == [0, 0, 0], (row, col)
    assert rgb[40:, 40:60].max() == 0 and rgb[20:35, :39].max() == 0  # not transposed


def test_label_colours_names_from_label_infos_and_overrides():
    labels = labels_from_names(["background", "mass", "spiculated"])
    rgb = _draw([[5, 20, 15, 30], [50, 20, 70, 30]], [0.8, 0.7], [1, 2], labels, show_text=False)
    assert rgb[20, 5].tolist() == list(labels[0].colour) == RED and rgb[20, 50].tolist() == GREEN
    rgb = _draw([[5, 20, 15, 30]], [0.8], [1], labels, colours={1: (1, 2, 3)}, show_text=False)
    assert rgb[20, 5].tolist() == [1, 2, 3]


def test_min_score_hides_boxes_below_it():
    kept = _draw([[5, 20, 15, 30], [50, 20, 70, 30]], [0.8, 0.4], [1, 2], min_score=0.5, show_text=False)
    assert kept[20, 5].tolist() == RED and kept[20, 50].tolist() == [0, 0, 0]
    nothing = _draw([[5, 20, 15, 30]], [0.49], [1], min_score=0.5)
    assert nothing.max() == 0


def test_tags_are_drawn_near_the_box_and_only_with_text():
    with_text = _draw([[30, 30, 50, 45]], [0.87], [2])
    without = _draw([[30, 30, 50, 45]], [0.87], [2], show_text=False)
    differs = np.argwhere((with_text != without).any(axis=2))
    assert len(differs) > 20  # the filled tag and its text
    assert differs[:, 0].max() < 30  # above the box (its top row is 30)
    assert differs[:, 1].min() <= 30 <= differs[:, 1].max()  # over its left edge (shifted left to fit the image)


def test_window_scale_and_grey_base():
    image = np.tile(np.linspace(0, 100, 16, dtype=np.float32), (10, 1))
    rgb = draw_boxes(image, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), {})
    assert rgb.shape == (10, 16, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255  # 1st..99th percentile window
    big = draw_boxes(image, np.array([[2, 2, 4, 4]]), np.array([0.9]), np.array([1]), {1: "x"}, scale=3,
                     show_text=False)
    assert big.shape == (30, 48, 3) and big[6, 6].tolist() == RED and big[11, 11].tolist() == RED
    assert big[12, 12].tolist() != RED


@pytest.mark.parametrize(("boxes", "scores", "labels", "match"), [
    (np.zeros((2, 6)), np.zeros(2), np.zeros(2), r"\(N, 4\)"),
    (np.zeros((2, 4)), np.zeros(3), np.zeros(2), "scores and labels"),
])
def test_bad_shapes_are_value_errors(boxes, scores, labels, match):
    with pytest.raises(ValueError, match=match):
        draw_boxes(np.zeros((8, 8)), boxes, scores, labels, {})
    with pytest.raises(ValueError, match="2D image"):
        draw_boxes(np.zeros((2, 8, 8)), np.zeros((0, 4)), np.zeros(0), np.zeros(0), {})


def test_boxes_outside_the_image_are_skipped_and_partial_ones_clipped():
    corners, visible = box_pixels(np.array([[-10, -10, -2, -2], [70, 40, 200, 90], [1.2, 2.5, 1.4, 2.6]]), 50, 80)
    assert visible.tolist() == [False, True, True]
    assert corners[1].tolist() == [70, 40, 79, 49] and corners[2].tolist() == [1, 2, 1, 2]
    rgb = _draw([[-10, -10, -2, -2]], [0.9], [1])
    assert rgb.max() == 0


def test_save_png_round_trips(tmp_path):
    rgb = _draw([[40, 20, 60, 35]], [0.9], [1])
    path = save_png(tmp_path / "sub" / "boxes.png", rgb)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb)
    assert not list((tmp_path / "sub").glob(".*partial*"))
