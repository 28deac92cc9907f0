# SPDX-License-Identifier: Apache-2.0
"""Display windows: presets to (lo, hi), automatic percentiles, constant volumes, modality defaults, 8-bit windowing."""

from __future__ import annotations

import numpy as np
import pytest

from medkd.viz.window import WINDOW_PRESETS, apply_window, default_preset, window_limits


@pytest.mark.parametrize(
    "preset, expected",
    [("CT soft tissue", (-160.0, 240.0)), ("CT lung", (-1350.0, 150.0)), ("CT bone", (-500.0, 1300.0))],
)
def test_fixed_presets_are_level_plus_minus_half_width(preset, expected):
    level, width = WINDOW_PRESETS[preset]
    volume = np.random.default_rng(0).normal(size=(4, 8, 8))  # the volume does not matter for fixed presets
    assert window_limits(volume, preset) == pytest.approx(expected)
    assert window_limits(volume, preset) == pytest.approx((level - width / 2, level + width / 2))


def test_auto_is_1_99_percentile_of_all_voxels():
    volume = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    lo, hi = window_limits(volume, "Auto (1-99 percentile)")
    assert (lo, hi) == pytest.approx((np.percentile(volume, 1), np.percentile(volume, 99)))


def test_mr_auto_ignores_zero_background():
    volume = np.zeros((10, 10, 10), np.float32)
    volume[:, 2:8, 2:8] = np.linspace(100, 200, 360).reshape(10, 6, 6)
    lo, hi = window_limits(volume, "MR auto")
    inside = volume[volume != 0]
    assert (lo, hi) == pytest.approx((np.percentile(inside, 1), np.percentile(inside, 99.5)))
    assert lo > 100 - 1e-3  # the zero background (64 % of voxels) would pull the plain auto window to 0
    assert window_limits(volume, "Auto (1-99 percentile)")[0] == 0


def test_large_volume_is_sampled_but_window_stays_close():
    volume = np.random.default_rng(1).normal(50, 10, size=(40, 256, 256)).astype(np.float32)  # 2.6M > sample size
    lo, hi = window_limits(volume, "Auto (1-99 percentile)")
    assert lo == pytest.approx(np.percentile(volume, 1), abs=0.2)
    assert hi == pytest.approx(np.percentile(volume, 99), abs=0.2)


@pytest.mark.parametrize("preset", ["Auto (1-99 percentile)", "MR auto"])
@pytest.mark.parametrize("value", [0.0, 7.5, -1000.0])
def test_constant_volume_gets_a_valid_window(preset, value):
    volume = np.full((3, 5, 5), value, np.float32)
    lo, hi = window_limits(volume, preset)
    assert hi > lo and lo <= value <= hi
    assert apply_window(volume, lo, hi).min() == apply_window(volume, lo, hi).max()  # one grey, no crash


def test_nan_voxels_are_ignored():
    volume = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    volume[0, 0, :5] = np.nan
    lo, hi = window_limits(volume, "Auto (1-99 percentile)")
    assert np.isfinite([lo, hi]).all() and hi > lo


def test_unknown_preset_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        window_limits(np.zeros((2, 2, 2)), "CT brain")
    for name in WINDOW_PRESETS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "modality, expected",
    [("CT", "CT soft tissue"), ("ct", "CT soft tissue"), ("MR", "MR auto"), ("US", "Auto (1-99 percentile)"),
     ("", "Auto (1-99 percentile)")],
)
def test_default_preset(modality, expected):
    assert default_preset(modality) == expected
    assert expected in WINDOW_PRESETS


def test_apply_window_endpoints_clipping_and_linearity():
    image = np.array([[-500.0, -160.0, 40.0], [240.0, 1000.0, np.nan]], np.float32)
    out = apply_window(image, -160.0, 240.0)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out.tolist() == [[0, 0, 128], [255, 255, 0]]
    ramp = apply_window(np.linspace(0, 1, 256), 0.0, 1.0)
    assert ramp[0] == 0 and ramp[-1] == 255 and (np.diff(ramp.astype(int)) >= 0).all()


def test_apply_window_rejects_empty_window():
    with pytest.raises(ValueError, match="hi > lo"):
        apply_window(np.zeros(3), 5.0, 5.0)
