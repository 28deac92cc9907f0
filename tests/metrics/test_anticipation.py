# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.anticipation: the in/out-of-horizon MAE family on hand-made cases (values worked out by
hand), NaN handling for classes without frames of a kind, per-video input, the RSD MAE and its last-minutes
windows, and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from medkd.metrics.anticipation import ANTICIPATION_METRICS, anticipation_mae, rsd_mae
from medkd.metrics.surgical_labels import PhasePrior, copy_current, next_change, rsd, tta

PHASES = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
PER_MIN = 1 / 60  # one frame per minute
TARGET = next_change(PHASES, 2, fps=PER_MIN)  # [2, 2, 1, 2, 1, 2, 2, 2, 2, 2]
PRED = np.array([1.5, 2, 0.5, 2, 1, 2, 2, 1, 2, 2])
# errors:       [0.5, 0, 0.5, 0, 0, 0, 0, 1, 0, 0]


def test_hand_values_one_class() -> None:
    res = anticipation_mae(PRED, TARGET, horizon=2)
    assert res["MAE"] == pytest.approx(0.2)  # 2 / 10
    assert res["outMAE"] == pytest.approx(1.5 / 8)  # frames 0, 1, 3, 5-9
    assert res["inMAE"] == pytest.approx(0.25)  # frames 2 and 4
    assert res["wMAE"] == pytest.approx((0.25 + 1.5 / 8) / 2)
    assert res["pMAE"] == pytest.approx(0.5)  # predictions in (0.2, 1.8): frames 0, 2, 4, 7
    assert np.isnan(res["eMAE"])  # no target in (0, 0.2)
    assert res.counts["outMAE"].tolist() == [8] and res.counts["inMAE"].tolist() == [2]
    assert res.counts["wMAE"].tolist() == [10] and res.counts["eMAE"].tolist() == [0]
    assert list(res.scores) == list(ANTICIPATION_METRICS)


def test_copy_current_baseline() -> None:
    res = anticipation_mae(copy_current(PHASES, "next_change", horizon=2), TARGET, horizon=2)
    assert res["outMAE"] == 0.0  # "no change" is right whenever nothing changes within h
    assert res["inMAE"] == pytest.approx(1.0)  # and h - target otherwise
    assert res["wMAE"] == pytest.approx(0.5)


def test_emae_imminent_frames() -> None:
    target = np.array([0.1, 0.5, 1.0, 0.15])
    pred = np.array([0.3, 0.5, 1.0, 0.15])
    res = anticipation_mae(pred, target, horizon=2)  # 0.1 h = 0.2: frames 0 and 3
    assert res["eMAE"] == pytest.approx(0.1)
    assert np.isnan(res["outMAE"]) and np.isnan(res["wMAE"])  # no out-of-horizon frames: wMAE undefined


def test_per_class_tta_and_nan_classes() -> None:
    target = tta(PHASES, 3, fps=PER_MIN)
    pred = copy_current(PHASES, "tta", horizon=3)
    res = anticipation_mae(pred, target, horizon=3, class_names=["prep", "dissect", "pack"])
    # phase 0 never lies within (0, h): its inMAE and wMAE are NaN and left out of the mean
    np.testing.assert_allclose(res.per_class["inMAE"], [np.nan, 1.5, 1.5])
    np.testing.assert_allclose(res.per_class["outMAE"], [0, 0, 0])
    np.testing.assert_allclose(res.per_class["wMAE"], [np.nan, 0.75, 0.75])
    assert res["inMAE"] == pytest.approx(1.5) and res["wMAE"] == pytest.approx(0.75)
    np.testing.assert_allclose(res.per_class["MAE"], [0, 0.3, 0.3])
    assert res.counts["inMAE"].tolist() == [0, 2, 2]
    d = res.to_dict()
    json.dumps(d)
    assert d["per_class"]["inMAE"] == {"prep": None, "dissect": 1.5, "pack": 1.5}
    assert d["scores"]["eMAE"] is None


def test_all_nan_is_silent() -> None:
    target = np.full(5, 2.0)  # no change within the horizon anywhere
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = anticipation_mae(np.full(5, 1.0), target, horizon=2)
        assert np.isnan(res["inMAE"]) and np.isnan(res["wMAE"]) and np.isnan(res["eMAE"])
        assert res["outMAE"] == pytest.approx(1.0)
        assert res.scores["wMAE"] != res.scores["wMAE"]


def test_videos_are_pooled_and_tensors_accepted() -> None:
    a, b = TARGET[:4], TARGET[4:]
    per_video = anticipation_mae([torch.tensor(PRED[:4]), torch.tensor(PRED[4:])], [a, b], horizon=2)
    pooled = anticipation_mae(PRED, TARGET, horizon=2)
    for key in ANTICIPATION_METRICS:
        np.testing.assert_allclose(per_video.per_class[key], pooled.per_class[key])
    # (N,) and (N, 1) are the same single class
    np.testing.assert_allclose(anticipation_mae(PRED[:, None], TARGET[:, None], 2).per_class["wMAE"],
                               pooled.per_class["wMAE"])


def test_float_slack_at_the_horizon() -> None:
    res = anticipation_mae(np.array([2.0]), np.array([2.0 - 1e-9]), horizon=2)
    assert res.counts["outMAE"].tolist() == [1]


@pytest.mark.parametrize(
    "pred, target, horizon, kwargs, message",
    [
        (np.zeros(3), np.zeros(4), 2, {}, r"does not match"),
        (np.zeros(3), np.array([0.0, 1.0, 2.5]), 2, {}, r"must lie in \[0, h=2\]"),
        (np.zeros(3), np.array([0.0, -1.0, 1.0]), 2, {}, r"must lie in"),
        (np.array([0.0, np.nan, 1.0]), np.zeros(3), 2, {}, r"pred\[0\] holds NaN"),
        (np.zeros(3), np.zeros(3), 0, {}, r"horizon must be a positive"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), 2, {}, r"\(N,\) or \(N, C\)"),
        (np.zeros(0), np.zeros(0), 2, {}, r"at least one frame"),
        (np.zeros((3, 2)), np.zeros((3, 2)), 2, dict(class_names=["a"]), r"1 class names for 2 classes"),
        ([np.zeros(2), np.zeros(2)], [np.zeros(2)], 2, {}, r"2 prediction arrays for 1 target arrays"),
        ([np.zeros((2, 2)), np.zeros((2, 3))], [np.zeros((2, 2)), np.zeros((2, 3))], 2, {}, r"numbers of classes"),
    ],
)
def test_anticipation_bad_inputs(pred, target, horizon, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        anticipation_mae(pred, target, horizon, **kwargs)


def test_unknown_metric_key() -> None:
    with pytest.raises(KeyError, match="choose one of MAE, wMAE"):
        anticipation_mae(PRED, TARGET, 2)["dMAE"]


# --- RSD -------------------------------------------------------------------------------------------------------


def _rsd_case() -> tuple[list[np.ndarray], list[np.ndarray]]:
    targets = [rsd(4, fps=PER_MIN), rsd(2, fps=PER_MIN)]  # [3, 2, 1, 0] and [1, 0]
    preds = [np.full(4, 2.0), np.array([1.0, 1.0])]  # errors [1, 0, 1, 2] and [0, 1]
    return preds, targets


def test_rsd_mae_video_wise() -> None:
    out = rsd_mae(*_rsd_case(), windows=(10, 2))
    assert list(out) == ["MAE-ALL", "MAE-10", "MAE-2"]
    assert out["MAE-ALL"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["MAE-10"] == pytest.approx(out["MAE-ALL"])  # both videos shorter than 10 min
    assert out["MAE-2"] == pytest.approx((1.5 + 0.5) / 2)  # video 1: the frames with target 1 and 0


def test_rsd_mae_global() -> None:
    out = rsd_mae(*_rsd_case(), windows=(2,), reduction="global")
    assert out["MAE-ALL"] == pytest.approx(5 / 6)
    assert out["MAE-2"] == pytest.approx(1.0)  # errors 1, 2, 0, 1


def test_rsd_default_windows_and_single_video() -> None:
    target = rsd(20 * 60)  # 20 min at 1 fps
    out = rsd_mae(target + 1.0, target)
    assert out == {"MAE-ALL": 1.0, "MAE-10": 1.0, "MAE-5": 1.0, "MAE-2": 1.0}
    pred = np.where(target < 5, target, target + 2.0)  # exact in the last 5 minutes only
    out = rsd_mae(pred, target)
    assert out["MAE-5"] == 0.0 and out["MAE-2"] == 0.0
    assert out["MAE-10"] == pytest.approx(1.0)  # 300 of the last 600 frames are off by 2
    assert out["MAE-ALL"] == pytest.approx(2.0 * 900 / 1200)


def test_rsd_window_without_frames_is_nan() -> None:
    out = rsd_mae(np.array([3.0, 2.0]), np.array([3.0, 2.5]), windows=(1,))
    assert np.isnan(out["MAE-1"]) and out["MAE-ALL"] == pytest.approx(0.25)


def test_rsd_prior_baseline() -> None:
    train = [[0] * 5 + [1] * 5, [0] * 3 + [1] * 3]  # 9 and 5 minutes: mean duration 7
    prior = PhasePrior.fit(train, fps=PER_MIN)
    test = [0] * 4 + [1] * 4
    out = rsd_mae(prior.predict_rsd(test), rsd(len(test), fps=PER_MIN), windows=())
    assert out["MAE-ALL"] == pytest.approx(0.0)  # a 7-minute test video: the prior is exact


@pytest.mark.parametrize(
    "pred, target, kwargs, message",
    [
        (np.zeros(3), np.zeros(2), {}, r"must be the same non-empty \(N,\)"),
        (np.zeros((2, 2)), np.zeros((2, 2)), {}, r"must be the same non-empty \(N,\)"),
        (np.zeros(0), np.zeros(0), {}, r"non-empty"),
        (np.zeros(2), np.array([1.0, -1.0]), {}, r"RSD targets must be >= 0"),
        (np.zeros(2), np.array([1.0, np.inf]), {}, r"target\[0\] holds NaN or infinite"),
        (np.zeros(2), np.zeros(2), dict(windows=(0,)), r"windows must be positive"),
        (np.zeros(2), np.zeros(2), dict(reduction="frame"), r"choose one of video, global"),
    ],
)
def test_rsd_bad_inputs(pred, target, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        rsd_mae(pred, target, **kwargs)
