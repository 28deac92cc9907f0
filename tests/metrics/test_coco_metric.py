# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.detection: COCO AP through MONAI on hand-made cases (normals, IoU range, K = 2, absent
classes), torch inputs, bad input, and the eval summary of detection_metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medkd.errors import ConfigError
from medkd.metrics.detection import coco_ap, detection_metrics


def _gt(boxes, labels=None) -> dict:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.zeros(len(boxes), np.int64) if labels is None else np.asarray(labels, np.int64)
    return {"boxes": boxes, "labels": labels}


def _det(boxes, scores, labels=None) -> dict:
    out = _gt(boxes, labels)
    out["scores"] = np.asarray(scores, np.float32)
    return out


NORMAL = _gt([])
NOTHING = _det([], [])
LESION = [10.0, 10.0, 30.0, 30.0]


def test_perfect_detector_scores_one_with_normals_included() -> None:
    truths = [_gt([LESION]), NORMAL, _gt([[40, 40, 60, 70], [5, 50, 15, 60]]), NORMAL]
    dets = [_det([LESION], [0.9]), NOTHING, _det([[40, 40, 60, 70], [5, 50, 15, 60]], [0.8, 0.3]), NOTHING]
    result = coco_ap(dets, truths, ["mass"])
    assert result["AP50"] == pytest.approx(1.0)
    assert result["AP10"] == pytest.approx(1.0)
    assert result["AP"] == pytest.approx(1.0)


def test_detection_on_a_normal_image_is_a_false_positive() -> None:
    truths = [_gt([LESION]), NORMAL]
    # above the true positive: precision 1/2 at every recall -> AP50 = 0.5 (COCO 101-point interpolation)
    high = coco_ap([_det([LESION], [0.6]), _det([[50, 50, 60, 60]], [0.9])], truths, ["mass"])
    assert high["AP50"] == pytest.approx(0.5)
    # below it: the precision envelope is 1 up to recall 1, so AP is untouched (standard COCO behaviour)
    low = coco_ap([_det([LESION], [0.6]), _det([[50, 50, 60, 60]], [0.3])], truths, ["mass"])
    assert low["AP50"] == pytest.approx(1.0)
    # without the normal image at all, the same detections score 1
    alone = coco_ap([_det([LESION], [0.6])], [_gt([LESION])], ["mass"])
    assert alone["AP50"] == pytest.approx(1.0)


def test_hand_computed_precision_envelope() -> None:
    # TP (0.9), FP (0.8), TP (0.7) over 2 lesions: precision 1 up to recall 0.5 (51 of 101 recall points), then 2/3
    truths = [_gt([LESION, [50, 50, 70, 70]])]
    dets = [_det([LESION, [90, 90, 99, 99], [50, 50, 70, 70]], [0.9, 0.8, 0.7])]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert coco_ap(dets, truths, ["mass"])["AP50"] == pytest.approx(expected)


def test_iou_range_is_coco_not_monai_default() -> None:
    truths = [_gt([[0, 0, 10, 10]])]
    # IoU 0.3: found at 0.1, missed at 0.5 and above -> mAP@0.5:0.95 = 0 (MONAI's default range 0.1..0.5 gives > 0)
    loose = coco_ap([_det([[0, 0, 10, 3]], [0.9])], truths, ["mass"])
    assert loose["AP10"] == pytest.approx(1.0)
    assert loose["AP50"] == pytest.approx(0.0)
    assert loose["AP"] == pytest.approx(0.0)
    assert "mAP_IoU_0.50_0.95_0.05_MaxDet_100" in loose["raw"]
    # IoU 0.72: matched at 0.50, 0.55, 0.60, 0.65, 0.70 (5 of the 10 thresholds)
    tight = coco_ap([_det([[0, 0, 10, 7.2]], [0.9])], truths, ["mass"])
    assert tight["AP50"] == pytest.approx(1.0)
    assert tight["AP"] == pytest.approx(0.5)


def test_per_class_at_two_classes() -> None:
    truths = [_gt([LESION], [0]), _gt([[40, 40, 60, 60]], [1]), NORMAL]
    # class 0 found; the class-1 lesion is detected with the wrong class (a class-0 FP, a class-1 miss)
    dets = [_det([LESION], [0.9], [0]), _det([[40, 40, 60, 60]], [0.8], [0]), NOTHING]
    result = coco_ap(dets, truths, ["mass", "spiculated"])
    assert result["per_class"]["spiculated"]["AP50"] == pytest.approx(0.0)
    assert result["per_class"]["mass"]["AP50"] == pytest.approx(1.0)  # the FP scores below the TP
    assert result["AP50"] == pytest.approx(0.5)
    # the correct class fixes it
    dets[1] = _det([[40, 40, 60, 60]], [0.8], [1])
    assert coco_ap(dets, truths, ["mass", "spiculated"])["AP50"] == pytest.approx(1.0)


def test_class_without_ground_truth_is_left_out_of_the_mean() -> None:
    truths = [_gt([LESION], [0]), NORMAL]
    dets = [_det([LESION], [0.9], [0]), NOTHING]
    result = coco_ap(dets, truths, ["mass", "spiculated"])
    # MONAI's own overall mean averages in the absent class's -1 placeholder
    assert result["raw"]["AP_IoU_0.50_MaxDet_100"] < 0.5
    assert result["AP50"] == pytest.approx(1.0)
    assert result["per_class"]["spiculated"] == {"AP": None, "AP10": None, "AP50": None}
    assert result["classes_without_truth"] == ["spiculated"]


def test_no_lesions_anywhere_gives_undefined_ap() -> None:
    result = coco_ap([_det([[1, 1, 5, 5]], [0.5])], [NORMAL], ["mass"])
    assert result["AP"] is None and result["AP50"] is None


def test_torch_inputs_and_monai_score_key() -> None:
    truths = [_gt([LESION]), NORMAL]
    dets = [_det([LESION, [60, 60, 70, 70]], [0.5, 0.9]), _det([[50, 50, 60, 60]], [0.7])]
    expected = coco_ap(dets, truths, ["mass"])
    as_torch = [{k: torch.as_tensor(v) for k, v in d.items()} for d in dets]
    assert coco_ap(as_torch, truths, ["mass"])["AP50"] == pytest.approx(expected["AP50"])
    renamed = [{"boxes": d["boxes"], "labels_scores": d["scores"], "labels": d["labels"]} for d in dets]
    assert coco_ap(renamed, truths, ["mass"])["AP"] == pytest.approx(expected["AP"])


@pytest.mark.parametrize(
    ("dets", "truths", "names", "kwargs", "error"),
    [
        ([NOTHING], [NORMAL, NORMAL], ["mass"], {}, ValueError),
        ([_det([LESION], [0.5], [1])], [_gt([LESION])], ["mass"], {}, ValueError),
        ([{"boxes": np.ones((1, 3)), "scores": np.ones(1), "labels": np.zeros(1, int)}], [NORMAL], ["mass"], {},
         ValueError),
        ([_det([LESION], [0.5, 0.4])], [NORMAL], ["mass"], {}, ValueError),
        ([NOTHING], [NORMAL], [], {}, ConfigError),
        ([NOTHING], [NORMAL], ["mass", "mass"], {}, ConfigError),
        ([NOTHING], [NORMAL], ["mass"], {"iou_range": (0.5, 0.95)}, ConfigError),
        ([NOTHING], [NORMAL], ["mass"], {"iou_list": (0.0,)}, ConfigError),
    ],
)
def test_bad_input(dets, truths, names, kwargs, error) -> None:
    with pytest.raises(error):
        coco_ap(dets, truths, names, **kwargs)


@settings(max_examples=10, deadline=None)
@given(
    lesions=st.lists(st.integers(0, 3), min_size=1, max_size=6),
    normals=st.integers(0, 3),
    seed=st.integers(0, 10_000),
)
def test_property_ap_is_one_until_a_normal_box_outscores_a_lesion(lesions, normals, seed) -> None:
    rng = np.random.default_rng(seed)
    truths, dets = [], []
    for n in lesions:
        corners = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(5, 20, (n, 2))], axis=1)
        truths.append(_gt(boxes))
        dets.append(_det(boxes, rng.uniform(0.5, 1.0, n)))
    truths += [NORMAL] * normals
    dets += [NOTHING] * normals
    if sum(lesions) == 0:
        return
    assert coco_ap(dets, truths, ["mass"])["AP"] == pytest.approx(1.0)
    # an FP on a normal image below every true positive leaves AP at 1; above them, the best precision at any
    # recall is n / (n + 1) for n lesions
    truths.append(NORMAL)
    total = sum(lesions)
    assert coco_ap(dets + [_det([[1, 1, 9, 9]], [0.1])], truths, ["mass"])["AP"] == pytest.approx(1.0)
    above = coco_ap(dets + [_det([[1, 1, 9, 9]], [1.5])], truths, ["mass"])
    assert above["AP50"] == pytest.approx(total / (total + 1))


def test_detection_metrics_summary_is_json_and_consistent() -> None:
    truths = [_gt([LESION], [0]), _gt([[40, 40, 60, 60]], [1]), NORMAL, NORMAL]
    dets = [
        _det([LESION, [70, 70, 80, 80]], [0.9, 0.4], [0, 0]),
        _det([[41, 41, 61, 61]], [0.8], [1]),
        _det([[5, 5, 15, 15]], [0.6], [1]),
        NOTHING,
    ]
    names = ["mass", "spiculated"]
    out = detection_metrics(dets, truths, names)
    text = json.dumps(out, allow_nan=False)
    assert json.loads(text) == out
    for key in ("AP", "AP50", "AP10", "R@0.3", "CPM", "sensitivity@1", "per_class", "froc",
                "gt_compat_image_level_froc"):
        assert key in out
    ap = coco_ap(dets, truths, names)
    assert out["AP50"] == pytest.approx(ap["AP50"]) and out["AP"] == pytest.approx(ap["AP"])
    # both lesions found before any FP; 2 FPs over 4 images -> FP/image 0.5 at the end
    assert out["froc"]["points"]["0.025"] == pytest.approx(1.0)
    assert out["froc"]["curve"]["fpi"][-1] == pytest.approx(0.5)
    assert out["R@0.3"] == pytest.approx(1.0)
    assert set(out["per_class"]) == set(names)
    assert out["per_class"]["spiculated"]["num_lesions"] == 1
    assert out["gt_compat_image_level_froc"]["label"] == "gt_compat_image_level_froc"
