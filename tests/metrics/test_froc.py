# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.froc: the lesion-level FROC on hand-made cases (a known curve, repeats, normals, classes,
ties, the centre rule), the reading convention, and the reference's image-level variant."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import interp1d

from medkd.errors import ConfigError
from medkd.metrics.froc import CPM_POINTS, FPI_POINTS, image_level_froc, lesion_froc


def _gt(boxes, labels=None) -> dict:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels, np.int64)
    return {"boxes": boxes, "labels": labels}


def _det(boxes, scores, labels=None) -> dict:
    out = _gt(boxes, labels)
    out["scores"] = np.asarray(scores, np.float64)
    return out


L1, L2, L3 = [10, 10, 30, 30], [50, 50, 70, 70], [0, 0, 20, 20]
NEAR_L1 = [12, 12, 31, 31]
FAR = [80, 80, 95, 95]


def _known_case() -> tuple[list[dict], list[dict]]:
    """4 images (2 normals), 3 lesions; in score order: TP, FP (normal), repeat, TP, FP (normal), TP, FP."""
    truths = [_gt([L1, L2]), _gt([L3]), _gt([]), _gt([])]
    dets = [
        _det([L1, NEAR_L1, L2], [0.95, 0.85, 0.60]),
        _det([L3, FAR], [0.80, 0.50]),
        _det([FAR], [0.90]),
        _det([FAR], [0.70]),
    ]
    return dets, truths


def test_known_curve() -> None:
    froc = lesion_froc(*_known_case())
    assert froc.num_images == 4 and froc.num_lesions == 3
    np.testing.assert_allclose(froc.fpi, [0, 0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(froc.sensitivity, [0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(froc.thresholds[1:], [0.95, 0.90, 0.85, 0.80, 0.70, 0.60, 0.50])
    assert froc.sensitivity_at(0.025) == pytest.approx(1 / 3)
    assert froc.sensitivity_at(0.2) == pytest.approx(1 / 3)
    assert froc.r_at_0_3 == pytest.approx(2 / 3)
    assert froc.sensitivity_at(0.5) == pytest.approx(1.0)
    assert froc.sensitivity_at(4.0) == pytest.approx(1.0)  # past the curve's end: its final sensitivity
    # CPM at 0.125, 0.25, 0.5, 1, 2, 4, 8: 1/3, 2/3, then five 1s
    assert froc.cpm == pytest.approx((1 / 3 + 2 / 3 + 5) / 7)
    assert list(froc.points) == list(FPI_POINTS)


def test_step_convention_is_max_sensitivity_at_or_below() -> None:
    froc = lesion_froc(*_known_case())
    query = np.linspace(0, 5, 501)
    brute = [max(s for f, s in zip(froc.fpi, froc.sensitivity) if f <= q) for q in query]
    np.testing.assert_allclose(froc.sensitivity_at(query), brute)
    assert froc.cpm == pytest.approx(np.mean(froc.sensitivity_at(CPM_POINTS)))


def test_duplicates_of_one_lesion_are_not_false_positives() -> None:
    truths = [_gt([L1])]
    dup = lesion_froc([_det([L1, NEAR_L1, [11, 11, 29, 29]], [0.9, 0.8, 0.7])], truths)
    assert dup.fpi[-1] == 0.0 and dup.sensitivity[-1] == 1.0
    # the same extra boxes away from the lesion are false positives
    away = lesion_froc([_det([L1, FAR, [60, 0, 79, 19]], [0.9, 0.8, 0.7])], truths)
    assert away.fpi[-1] == pytest.approx(2.0)


def test_normals_count_in_false_positives_per_image() -> None:
    dets, truths = [_det([L1, FAR], [0.9, 0.8])], [_gt([L1])]
    assert lesion_froc(dets, truths).fpi[-1] == pytest.approx(1.0)
    # three normal images without detections: FP/image over 4 images
    padded = lesion_froc(dets + [_det([], [])] * 3, truths + [_gt([])] * 3)
    assert padded.fpi[-1] == pytest.approx(0.25)
    # a detection on a normal image is a false positive
    with_fp = lesion_froc(dets + [_det([L1], [0.95])], truths + [_gt([])])
    assert with_fp.fpi[-1] == pytest.approx(1.0)  # 2 FPs over 2 images
    assert with_fp.sensitivity_at(0.0) == 0.0  # the normal image's box came first


def test_image_level_differs_from_lesion_level_for_a_wrong_location_box() -> None:
    dets, truths = [_det([FAR], [0.9])], [_gt([L1])]
    lesion = lesion_froc(dets, truths)
    image = image_level_froc(dets, truths)
    assert lesion.sensitivity[-1] == 0.0 and lesion.fpi[-1] == 1.0
    assert image.sensitivity[-1] == 1.0 and image.fpi[-1] == 0.0
    assert image.r_at_0_3 == 1.0 and lesion.r_at_0_3 == 0.0
    assert image.info["label"] == "gt_compat_image_level_froc"


def test_image_level_counts_only_images_with_a_detection_and_only_their_top_box() -> None:
    truths = [_gt([L1, L2]), _gt([L3]), _gt([]), _gt([])]
    dets = [
        _det([FAR, L1, L2], [0.9, 0.3, 0.2]),  # top box elsewhere: still a TP; the other two ignored
        _det([], []),  # no detection: this image and its lesion are left out
        _det([FAR], [0.8]),  # a normal: FP
        _det([FAR], [0.0005]),  # below 0.001: left out
    ]
    image = image_level_froc(dets, truths)
    assert image.num_images == 2 and image.num_lesions == 2
    np.testing.assert_allclose(image.fpi, [0.0, 0.5])
    np.testing.assert_allclose(image.sensitivity, [0.5, 0.5])  # 1 TP over the 2 lesions of the counted images


@settings(max_examples=25, deadline=None)
@given(flags=st.lists(st.tuples(st.booleans(), st.integers(1, 3)), min_size=3, max_size=12), seed=st.integers(0, 999))
def test_image_level_matches_the_reference_interpolation(flags, seed) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.permutation(len(flags)) / len(flags) + 0.01  # distinct
    truths = [_gt([L1] * n if has else []) for has, n in flags]
    dets = [_det([FAR], [s]) for s in scores]
    image = image_level_froc(dets, truths)
    # the reference's calculate_froc, transcribed
    is_tp = np.array([has for has, _ in flags], np.int64)[np.argsort(-scores)]
    fpi = np.cumsum(1 - is_tp) / len(flags)
    total = sum(n for has, n in flags if has)
    tpr = np.cumsum(is_tp) / total if total else np.zeros(len(flags))
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = interp1d(fpi, tpr, bounds_error=False, fill_value="extrapolate")(image.fpi_points)
    ours = image.sensitivity_at(image.fpi_points)
    finite = np.isfinite(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], atol=1e-12)
    assert np.all((ours >= 0) & (ours <= 1))


def test_classes_must_match_at_two_classes() -> None:
    truths = [_gt([L1], [0]), _gt([L2], [1])]
    dets = [_det([L1], [0.9], [1]), _det([L2], [0.8], [1])]  # the first has the wrong class
    aware = lesion_froc(dets, truths)
    assert not aware.info["class_agnostic"]
    assert aware.sensitivity[-1] == pytest.approx(0.5) and aware.fpi[-1] == pytest.approx(0.5)
    agnostic = lesion_froc(dets, truths, class_agnostic=True)
    assert agnostic.sensitivity[-1] == pytest.approx(1.0) and agnostic.fpi[-1] == 0.0
    # K = 1 is class-agnostic by default; so is any single-class data
    assert lesion_froc([_det([L1], [0.9])], [_gt([L1])]).info["class_agnostic"]
    assert not lesion_froc([_det([L1], [0.9])], [_gt([L1])], num_classes=2).info["class_agnostic"]


def test_greedy_takes_the_best_iou_unfound_lesion() -> None:
    a, b = [0, 0, 20, 20], [10, 0, 30, 20]
    # the first box overlaps b more than a: it takes b, the second (only on a) then finds a
    dets, truths = [_det([[8, 0, 28, 20], [0, 0, 12, 20]], [0.9, 0.8])], [_gt([a, b])]
    froc = lesion_froc(dets, truths)
    assert froc.sensitivity[-1] == pytest.approx(1.0) and froc.fpi[-1] == 0.0


def test_tied_scores_enter_together() -> None:
    dets, truths = [_det([L1, FAR], [0.5, 0.5])], [_gt([L1])]
    froc = lesion_froc(dets, truths)
    np.testing.assert_allclose(froc.fpi, [0.0, 1.0])
    assert froc.sensitivity_at(0.5) == 0.0  # no threshold gives the TP without the FP
    untied = lesion_froc([_det([L1, FAR], [0.6, 0.5])], truths)
    assert untied.sensitivity_at(0.5) == 1.0


def test_iou_threshold_and_centre_rule() -> None:
    truths = [_gt([[0, 0, 20, 20]])]
    big = [_det([[5, 5, 65, 65]], [0.9])]  # IoU 225 / 3775 < 0.1, centre (35, 35) outside
    small_centre = [_det([[8, 8, 12, 12]], [0.9])]  # IoU 16 / 400 = 0.04, centre (10, 10) inside
    assert lesion_froc(small_centre, truths).sensitivity[-1] == 0.0
    assert lesion_froc(small_centre, truths, criterion="centre").sensitivity[-1] == 1.0
    assert lesion_froc(big, truths, criterion="centre").sensitivity[-1] == 0.0
    assert lesion_froc(small_centre, truths, iou=0.04).sensitivity[-1] == 1.0
    assert lesion_froc([_det([[0, 0, 20, 9]], [0.9])], truths, iou=0.5).sensitivity[-1] == 0.0  # IoU 0.45


def test_torch_inputs_match_numpy() -> None:
    dets, truths = _known_case()
    as_torch = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
    np.testing.assert_allclose(lesion_froc(as_torch, truths).sensitivity, lesion_froc(dets, truths).sensitivity)


def test_empty_cases() -> None:
    nothing = lesion_froc([_det([], [])] * 2, [_gt([L1]), _gt([])])
    assert nothing.r_at_0_3 == 0.0 and nothing.cpm == 0.0
    no_lesions = lesion_froc([_det([FAR], [0.5])], [_gt([])])
    assert math.isnan(no_lesions.r_at_0_3)
    assert no_lesions.to_dict()["R@0.3"] is None
    assert image_level_froc([_det([], [])], [_gt([L1])]).r_at_0_3 == 0.0


@pytest.mark.parametrize("kwargs", [{"criterion": "centroid"}, {"iou": 0.0}, {"iou": 1.5}])
def test_bad_options(kwargs) -> None:
    with pytest.raises(ConfigError):
        lesion_froc(*_known_case(), **kwargs)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        lesion_froc([], [])
    with pytest.raises(ValueError):
        lesion_froc([_det([L1], [0.9])], [_gt([L1]), _gt([])])
    with pytest.raises(ValueError):
        lesion_froc([{"boxes": np.zeros((1, 4))}], [_gt([])])  # no scores


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n_images=st.integers(1, 6))
def test_property_curve_is_monotone_and_order_free(seed, n_images) -> None:
    rng = np.random.default_rng(seed)
    truths, dets = [], []
    for _ in range(n_images):
        k = int(rng.integers(0, 3))
        corners = rng.uniform(0, 60, (k, 2))
        truths.append(_gt(np.concatenate([corners, corners + 15], axis=1)))
        m = int(rng.integers(0, 5))
        corners = rng.uniform(0, 60, (m, 2))
        dets.append(_det(np.concatenate([corners, corners + 15], axis=1), rng.uniform(0, 1, m)))
    froc = lesion_froc(dets, truths)
    assert np.all(np.diff(froc.fpi) >= 0)
    if froc.num_lesions:
        assert np.all(np.diff(froc.sensitivity) >= 0) and froc.sensitivity[-1] <= 1.0
    # FPs never exceed the detections; each TP is a distinct lesion
    assert froc.fpi[-1] * n_images <= sum(len(d["scores"]) for d in dets) + 1e-9
    order = rng.permutation(n_images)
    shuffled = lesion_froc([dets[i] for i in order], [truths[i] for i in order])
    np.testing.assert_allclose(shuffled.fpi, froc.fpi)
    np.testing.assert_allclose(shuffled.sensitivity, froc.sensitivity)


def test_iou_is_exact_at_the_threshold_and_matches_monai() -> None:
    from monai.data.box_utils import box_iou

    from medkd.metrics.froc import pairwise_iou

    truths = [_gt([[0, 0, 10, 10]])]
    assert lesion_froc([_det([[0, 0, 10, 1]], [0.9])], truths).sensitivity[-1] == 1.0  # IoU exactly 0.1 hits
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 50, (12, 2)), rng.uniform(0, 50, (9, 2))
    a, b = np.c_[a, a + rng.uniform(0, 20, (12, 2))], np.c_[b, b + rng.uniform(0, 20, (9, 2))]
    np.testing.assert_allclose(pairwise_iou(a, b), box_iou(a, b), atol=1e-6)
