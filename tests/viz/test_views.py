# SPDX-License-Identifier: Apache-2.0
"""Slice display: orientations and flips, pixel aspect, overlay colours and outlines, panels, legend, PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medkd.io.labels import LABEL_COLOURS, LabelInfo, labels_from_names
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
from medkd.viz.window import apply_window

SHAPE = (3, 4, 5)  # (z, y, x)
Z, Y, X = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
CODED = 100 * Z + 10 * Y + X  # each voxel's value spells its (z, y, x)
CUSTOM = [LabelInfo(1, "A", colour=(250, 10, 10)), LabelInfo(2, "B", colour=(10, 200, 30))]


# --------------------------------------------------------------------------------------------- slicing


def test_axial_shows_y_rows_x_columns():
    image = extract_slice(CODED, "axial", 1)
    assert image.shape == (4, 5)
    np.testing.assert_array_equal(image, 100 + 10 * np.arange(4)[:, None] + np.arange(5)[None, :])


def test_coronal_shows_z_rows_flipped_and_x_columns():
    image = extract_slice(CODED, "coronal", 2)
    assert image.shape == (3, 5)
    np.testing.assert_array_equal(image, 100 * np.arange(2, -1, -1)[:, None] + 20 + np.arange(5)[None, :])
    assert image[0, 0] // 100 == SHAPE[0] - 1  # the last slice is at the top


def test_sagittal_shows_z_rows_flipped_and_y_columns():
    image = extract_slice(CODED, "sagittal", 4)
    assert image.shape == (3, 4)
    np.testing.assert_array_equal(image, 100 * np.arange(2, -1, -1)[:, None] + 10 * np.arange(4)[None, :] + 4)


@pytest.mark.parametrize("orientation, count", [("axial", 3), ("coronal", 4), ("sagittal", 5)])
def test_slice_counts_and_index_errors(orientation, count):
    assert slice_count(SHAPE, orientation) == count
    extract_slice(CODED, orientation, count - 1)
    for bad in (count, -1):
        with pytest.raises(IndexError, match=f"0 .. {count - 1}"):
            extract_slice(CODED, orientation, bad)


def test_unknown_orientation_and_non_3d_input():
    with pytest.raises(ValueError, match="axial, coronal, sagittal"):
        extract_slice(CODED, "oblique", 0)
    with pytest.raises(ValueError, match="axial"):
        slice_count(SHAPE, "transverse")
    with pytest.raises(ValueError):
        extract_slice(CODED[0], "axial", 0)
    assert ORIENTATIONS == ("axial", "coronal", "sagittal")


def test_default_index_middle_or_most_foreground():
    assert [default_index((9, 20, 31), o) for o in ORIENTATIONS] == [4, 10, 15]
    mask = np.zeros((9, 20, 31), np.uint8)
    mask[2, 3:9, 20:25] = 1  # 30 voxels on z=2
    mask[7, 0, 0] = 2
    assert default_index(mask, "axial") == 2
    assert default_index(mask, "coronal") in range(3, 9)
    assert default_index(mask, "sagittal") in range(20, 25)
    assert default_index(np.zeros((9, 20, 31), np.uint8), "sagittal") == 15


def test_pixel_aspect():
    spacing = (10.0, 1.5, 1.5)
    assert pixel_aspect(spacing, "axial") == pytest.approx(1.0)
    assert pixel_aspect(spacing, "coronal") == pytest.approx(10 / 1.5)
    assert pixel_aspect((10.0, 2.0, 1.0), "sagittal") == pytest.approx(5.0)
    assert pixel_aspect((1.0, 2.0, 1.0), "axial") == pytest.approx(2.0)
    with pytest.raises(ValueError):
        pixel_aspect((1.0, 0.0, 1.0), "axial")


# --------------------------------------------------------------------------------------------- render_view


def _flat(value: float = 100.0, shape: tuple[int, int] = (8, 8)) -> np.ndarray:
    return np.full(shape, value, np.float32)


def test_labelled_pixel_is_blend_of_grey_and_label_colour():
    mask = np.zeros((8, 8), np.uint8)
    mask[2, 3] = 2
    out = render_view(_flat(100.0), mask, CUSTOM, lo=0, hi=255, opacity=0.3, scale=1)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    expected = np.rint(0.7 * 100 + 0.3 * np.array(CUSTOM[1].colour)).astype(int)
    np.testing.assert_array_equal(out[2, 3], expected)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # unlabelled pixels stay grey


def test_opacity_zero_and_no_mask_give_grey_only():
    image = np.random.default_rng(0).normal(size=(12, 10)).astype(np.float32)
    mask = np.ones((12, 10), np.uint8)
    grey = apply_window(image, -1.0, 1.0)
    for out in (render_view(image, mask, CUSTOM, lo=-1, hi=1, opacity=0.0, scale=1),
                render_view(image, None, CUSTOM, lo=-1, hi=1, scale=1)):
        for channel in range(3):
            np.testing.assert_array_equal(out[..., channel], grey)


def test_full_opacity_shows_label_colours_and_unlisted_values_get_palette():
    mask = np.array([[0, 1], [2, 5]], np.uint8)
    out = render_view(_flat(0.0, (2, 2)), mask, CUSTOM, lo=0, hi=1, opacity=1.0, scale=1)
    np.testing.assert_array_equal(out[0, 1], CUSTOM[0].colour)
    np.testing.assert_array_equal(out[1, 0], CUSTOM[1].colour)
    np.testing.assert_array_equal(out[1, 1], LABEL_COLOURS[5])  # value 5 is in no label: default colour, not hidden
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])


def test_small_images_upscale_to_min_side_mask_nearest_image_linear():
    image = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (16, 1))
    mask = np.zeros((16, 16), np.uint8)
    mask[4, 4] = 1
    out = render_view(image, mask, CUSTOM, lo=0, hi=1, opacity=1.0)
    assert out.shape == (MIN_DISPLAY_SIDE, MIN_DISPLAY_SIDE, 3)
    factor = MIN_DISPLAY_SIDE // 16
    coloured = np.all(out == CUSTOM[0].colour, axis=-1)
    assert coloured.sum() == factor**2 and coloured[4 * factor : 5 * factor, 4 * factor : 5 * factor].all()
    row = out[0, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 16  # linear: more grey levels than input pixels
    assert render_view(image, None, CUSTOM, lo=0, hi=1, scale=2).shape == (32, 32, 3)


def test_large_image_is_not_upscaled():
    assert render_view(_flat(0.0, (300, 400)), None, [], lo=0, hi=1).shape == (300, 400, 3)


@pytest.mark.parametrize("scale", [1, None])
def test_aspect_stretches_height_for_coronal_spacing(scale):
    aspect = pixel_aspect((10.0, 1.5, 1.5), "coronal")
    out = render_view(_flat(0.0, (10, 32)), np.ones((10, 32), np.uint8), CUSTOM, lo=0, hi=1, aspect=aspect, scale=scale)
    height, width = out.shape[:2]
    assert height / width == pytest.approx(10 * aspect / 32, rel=0.01)
    assert width == (32 if scale == 1 else MIN_DISPLAY_SIDE)


def test_aspect_below_one_stretches_width():
    out = render_view(_flat(0.0, (20, 20)), None, [], lo=0, hi=1, aspect=0.5, scale=1)
    assert out.shape == (20, 40, 3)


def test_outline_draws_only_borders():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    out = render_view(_flat(0.0, (20, 20)), mask, CUSTOM, lo=0, hi=1, opacity=1.0, scale=1, outline=True)
    coloured = np.any(out != 0, axis=-1)
    ring = np.zeros_like(coloured)
    ring[5:15, 5:15] = True
    ring[6:14, 6:14] = False
    np.testing.assert_array_equal(coloured, ring)
    filled = render_view(_flat(0.0, (20, 20)), mask, CUSTOM, lo=0, hi=1, opacity=1.0, scale=1)
    assert np.any(filled != 0, axis=-1).sum() == 100 > ring.sum()


def test_outline_separates_touching_labels_and_closes_at_the_image_edge():
    mask = np.zeros((6, 6), np.uint8)
    mask[:, :3] = 1
    mask[:, 3:] = 2
    out = render_view(_flat(0.0, (6, 6)), mask, CUSTOM, lo=0, hi=1, opacity=1.0, scale=1, outline=True)
    assert np.all(out[:, 2] == CUSTOM[0].colour) and np.all(out[:, 3] == CUSTOM[1].colour)  # shared boundary
    assert np.all(out[0, :] != 0)  # the image edge closes both contours
    assert np.all(out[2:4, 1] == 0)  # interior of label 1 is not drawn


def test_outline_width_grows_with_output_size_or_is_given():
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 1

    def ring_width(**kwargs) -> int:  # coloured pixels along the middle row, left edge of the square
        out = render_view(_flat(0.0, (64, 64)), mask, CUSTOM, lo=0, hi=1, opacity=1.0, outline=True, **kwargs)
        row = np.any(out[out.shape[0] // 2] != 0, axis=-1)
        return int(np.argmin(row[np.argmax(row):]))

    assert ring_width(scale=4) == 1  # 256 px
    assert ring_width(scale=8) == 2  # 512 px
    assert ring_width(scale=4, outline_width=3) == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"mask2d": np.zeros((3, 3), np.uint8)}, {"opacity": 1.5}, {"hi": 0.0}, {"aspect": 0.0}, {"scale": 0},
     {"outline_width": 0}],
)
def test_render_view_rejects_bad_arguments(kwargs):
    args = {"image2d": _flat(), "mask2d": None, "labels": CUSTOM, "lo": 0.0, "hi": 1.0} | kwargs
    with pytest.raises(ValueError):
        render_view(**args)


def test_render_slice_matches_manual_pipeline():
    volume = np.random.default_rng(2).normal(size=(6, 10, 12)).astype(np.float32)
    mask = (volume > 1).astype(np.uint8)
    spacing = (4.0, 1.0, 2.0)
    out = render_slice(volume, mask, CUSTOM, "sagittal", 5, spacing, lo=-2, hi=2, opacity=0.4)
    manual = render_view(extract_slice(volume, "sagittal", 5), extract_slice(mask, "sagittal", 5), CUSTOM, lo=-2,
                         hi=2, opacity=0.4, aspect=4.0)
    np.testing.assert_array_equal(out, manual)


# --------------------------------------------------------------------------------------------- panels, legend, PNG


def test_side_by_side_width_is_sum_plus_gaps():
    a, b = np.full((10, 20, 3), 50, np.uint8), np.full((14, 30, 3), 200, np.uint8)
    out = side_by_side([a, b, a], gap=5)
    assert out.shape == (14, 20 + 30 + 20 + 2 * 5, 3)
    np.testing.assert_array_equal(out[:10, :20], a)
    np.testing.assert_array_equal(out[:14, 25:55], b)
    assert np.all(out[:, 20:25] == 255) and np.all(out[10:, :20] == 255)  # gap and padding: background


def test_side_by_side_titles_add_a_strip_with_text():
    panels = [np.zeros((40, 60, 3), np.uint8), np.zeros((40, 6), np.uint8)]
    out = side_by_side(panels, titles=["Ground truth", "A very long model name that cannot fit"], gap=4)
    assert out.shape[1] == 70 and out.shape[0] > 40
    strip = out[: out.shape[0] - 40]
    assert np.any(strip[:, :60] < 128)  # dark text drawn on the white strip
    np.testing.assert_array_equal(out[-40:, :60], panels[0])
    with pytest.raises(ValueError):
        side_by_side(panels, titles=["only one"])
    with pytest.raises(ValueError):
        side_by_side([])


def test_legend_entries():
    labels = labels_from_names(["background", "RV", "Myo", "LV"])
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[0, 0, 0], mask[1, 1, 1] = 1, 3
    entries = legend_entries(labels, mask)
    assert [e["name"] for e in entries] == ["RV", "Myo", "LV"]
    assert [e["present"] for e in entries] == [True, False, True]
    assert entries[0]["colour"] == "#{:02x}{:02x}{:02x}".format(*labels[0].colour)
    assert entries[2]["description"] == "Left ventricle" and entries[2]["value"] == 3
    assert legend_entries(CUSTOM)[1]["colour"] == "#0ac81e"
    assert all(e["present"] for e in legend_entries(labels))


def test_to_png_round_trip():
    rgb = np.random.default_rng(3).integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    data = to_png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), rgb)
