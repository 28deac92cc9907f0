# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.triplet_map: per-class AP and AUROC against brute-force definitions (and scikit-learn
when installed), hand-made video-wise vs global cases, classes without positives left out, the change-conditioned
variant, triplet components, and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from medkd.metrics.surgical_labels import copy_current, future_presence
from medkd.metrics.triplet_map import (
    average_precision,
    mean_auroc,
    mean_average_precision,
    roc_auc,
    triplet_components,
)


def _brute_ap(y: np.ndarray, s: np.ndarray) -> float:
    """sum over distinct thresholds (descending) of (R_n - R_{n-1}) P_n, written with loops."""
    positives = y.sum()
    if positives == 0:
        return float("nan")
    ap, last_recall = 0.0, 0.0
    for threshold in sorted(set(s.tolist()), reverse=True):
        chosen = s >= threshold
        tp = float((y & chosen).sum())
        recall, precision = tp / positives, tp / chosen.sum()
        ap += (recall - last_recall) * precision
        last_recall = recall
    return ap


def _brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (pos.size * neg.size))


@pytest.mark.parametrize("seed", range(6))
def test_ap_and_auc_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 40)), 5
    y = rng.random((n, c)) < rng.random(c)
    s = np.round(rng.random((n, c)), 1)  # coarse scores: many ties
    s[:, 0] = 0.5  # one class with every score tied
    ap, auc = average_precision(y, s), roc_auc(y, s)
    np.testing.assert_allclose(ap, [_brute_ap(y[:, k], s[:, k]) for k in range(c)])
    np.testing.assert_allclose(auc, [_brute_auc(y[:, k], s[:, k]) for k in range(c)])


def test_ap_matches_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.random((200, 4)) < 0.2
    s = np.round(rng.random((200, 4)), 2)
    for k in range(4):
        expected = metrics.average_precision_score(y[:, k], s[:, k])
        assert average_precision(y[:, k], s[:, k])[0] == pytest.approx(expected)
        assert roc_auc(y[:, k], s[:, k])[0] == pytest.approx(metrics.roc_auc_score(y[:, k], s[:, k]))


def test_ap_hand_values() -> None:
    y = np.array([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0]])
    s = np.array([[0.9, 0.1, 0.5, 0.1], [0.8, 0.2, 0.5, 0.9], [0.3, 0.3, 0.5, 0.2], [0.1, 0.4, 0.5, 0.3]])
    ap = average_precision(y, s)
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)  # hits at ranks 1 and 3
    assert np.isnan(ap[1])  # no positives
    assert ap[2] == pytest.approx(1.0)  # all positive
    assert ap[3] == pytest.approx(1.0)  # the positive ranks first
    assert average_precision([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.1]).tolist() == [pytest.approx(2 / 3)]  # a tie
    assert np.isnan(average_precision(np.zeros((0, 3)), np.zeros((0, 3)))).all()


def test_auc_hand_values() -> None:
    y = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 1]])
    s = np.array([[0.9, 0.1, 0.1], [0.5, 0.2, 0.2], [0.5, 0.3, 0.3], [0.1, 0.4, 0.4]])
    auc = roc_auc(y, s)
    assert auc[0] == pytest.approx(0.875)  # 3.5 of 4 pairs (one tie)
    assert np.isnan(auc[1])  # no negatives
    assert auc[2] == pytest.approx(1.0)


def test_video_wise_vs_global_hand_values() -> None:
    video_a = (np.array([[1], [0]]), np.array([[0.9], [0.1]]))  # AP 1
    video_b = (np.array([[1], [0]]), np.array([[0.2], [0.8]]))  # AP 0.5
    labels, scores = [video_a[0], video_b[0]], [video_a[1], video_b[1]]
    wise = mean_average_precision(labels, scores)
    assert wise.mean == pytest.approx(0.75)
    np.testing.assert_allclose(wise.per_video, [[1.0], [0.5]])
    pooled = mean_average_precision(labels, scores, reduction="global")
    assert pooled.mean == pytest.approx((1 + 2 / 3) / 2)  # 0.9 (hit), 0.8, 0.2 (hit), 0.1
    assert pooled.per_video is None and pooled.reduction == "global"


def test_class_without_positives_is_excluded() -> None:
    # class 1 has positives only in video 2: its AP comes from that video; class 2 never has any
    y1 = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 0]])
    s1 = np.array([[0.9, 0.5, 0.1], [0.1, 0.5, 0.1], [0.8, 0.5, 0.1]])
    y2 = np.array([[0, 1, 0], [1, 0, 0]])
    s2 = np.array([[0.2, 0.6, 0.3], [0.7, 0.4, 0.3]])
    res = mean_average_precision([y1, y2], [s1, s2])
    np.testing.assert_allclose(res.per_video, [[1.0, np.nan, np.nan], [1.0, 1.0, np.nan]])
    np.testing.assert_allclose(res.per_class, [1.0, 1.0, np.nan])
    assert res.mean == pytest.approx(1.0) and res.num_classes_scored == 2
    np.testing.assert_allclose(res.per_video_mean, [1.0, 1.0])
    d = res.to_dict()
    json.dumps(d)
    assert d["per_class"] == [1.0, 1.0, None]


def test_all_nan_is_silent() -> None:
    y, s = np.zeros((4, 3), int), np.random.default_rng(0).random((4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("video", "global"):
            res = mean_average_precision(y, s, reduction=reduction)
            assert np.isnan(res.mean) and res.num_classes_scored == 0
        assert np.isnan(mean_auroc(np.ones((4, 2)), s[:, :2]).mean)
        assert res.to_dict()["mean"] is None


def test_change_conditioned_copy_current() -> None:
    now = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [1, 0]])
    future = future_presence(now, 1)  # [[1,0],[0,1],[0,1],[1,0],[1,0],[1,0]]
    scores = copy_current(now)
    dense = mean_average_precision(future, scores)
    changed = mean_average_precision(future, scores, current=now)
    assert changed.num_frames == 2 and dense.num_frames == 6
    assert changed.mean == pytest.approx(0.5)  # on frames 1 and 3 the copied label is always wrong
    assert dense.mean == pytest.approx(((0.75 * 0.75 + 0.25 * 4 / 6) + (0.5 * 0.5 + 0.5 * 2 / 6)) / 2)
    assert changed.to_dict()["change_conditioned"] is True
    # a perfect forecaster is perfect on the changes too
    assert mean_average_precision(future, future.astype(float), current=now).mean == pytest.approx(1.0)
    # an explicit mask does the same
    masked = mean_average_precision(future, scores, mask=np.array([0, 1, 0, 1, 0, 0], bool))
    assert masked.mean == pytest.approx(changed.mean)


def test_change_conditioned_no_change_anywhere_is_nan() -> None:
    y = np.array([[1, 0], [1, 0]])
    res = mean_average_precision(y, y.astype(float), current=y)
    assert res.num_frames == 0 and np.isnan(res.mean)


def test_mean_auroc_events() -> None:
    y = [np.array([[1], [0], [0], [1]]), np.array([[0], [1], [0]])]
    s = [np.array([[0.8], [0.2], [0.4], [0.3]]), np.array([[0.1], [0.9], [0.5]])]
    wise = mean_auroc(y, s)
    np.testing.assert_allclose(wise.per_video, [[0.75], [1.0]])
    assert wise.mean == pytest.approx(0.875) and wise.metric == "AUROC"
    pooled = mean_auroc(y, s, reduction="global")
    assert pooled.mean == pytest.approx(_brute_auc(np.r_[y[0], y[1]][:, 0].astype(bool), np.r_[s[0], s[1]][:, 0]))


def test_tensors_and_single_array() -> None:
    y = torch.tensor([[1, 0], [0, 1], [1, 1]])
    s = torch.tensor([[0.9, 0.2], [0.4, 0.6], [0.7, 0.1]])
    res = mean_average_precision(y, s)
    assert res.per_video.shape == (1, 2)
    np.testing.assert_allclose(res.per_class, average_precision(y.numpy(), s.numpy()))


def test_triplet_components() -> None:
    scores = np.array([[0.2, 0.9, 0.4, 0.1], [0.6, 0.1, 0.3, 0.2]])
    instrument_of = [0, 1, 0, 3]  # component 2 has no triplet
    np.testing.assert_allclose(triplet_components(scores, instrument_of), [[0.4, 0.9, 0, 0.1], [0.6, 0.1, 0, 0.2]])
    labels = np.array([[0, 1, 1, 0], [0, 0, 0, 0]])
    assert triplet_components(labels, instrument_of, 5).tolist() == [[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]
    ap_i = mean_average_precision(triplet_components(labels, instrument_of), triplet_components(scores, instrument_of))
    np.testing.assert_allclose(ap_i.per_class, [0.5, 1.0, np.nan, np.nan])  # instrument 0: 0.6 (miss), 0.4 (hit)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: average_precision(np.zeros((3, 2)), np.zeros((3, 3))), r"must have the same shape"),
        (lambda: average_precision(np.full((3, 2), 2), np.zeros((3, 2))), r"labels must be 0 or 1"),
        (lambda: average_precision(np.zeros((3, 2)), np.full((3, 2), np.nan)), r"NaN or infinite"),
        (lambda: roc_auc(np.zeros((3, 2, 2)), np.zeros((3, 2, 2))), r"expected \(N, C\)"),
        (lambda: mean_average_precision([np.zeros((2, 2))] * 2, [np.zeros((2, 2))]), r"2 label arrays for 1"),
        (lambda: mean_average_precision([np.zeros((2, 2)), np.zeros((2, 3))], [np.zeros((2, 2)), np.zeros((2, 3))]),
         r"different numbers of classes"),
        (lambda: mean_average_precision([np.zeros((2, 2)), np.zeros((2, 2))], [np.zeros((2, 2)), np.zeros((3, 2))]),
         r"video 1: labels \(2, 2\) and scores \(3, 2\)"),
        (lambda: mean_average_precision(np.zeros((2, 2)), np.zeros((2, 2)), mask=np.ones(3, bool)),
         r"video 0: mask must have shape \(2,\)"),
        (lambda: mean_average_precision(np.zeros((2, 2)), np.zeros((2, 2)), current=np.zeros((2, 3))),
         r"video 0: current"),
        (lambda: mean_average_precision(np.zeros((2, 2)), np.zeros((2, 2)), reduction="frame"),
         r"choose one of video, global"),
        (lambda: triplet_components(np.zeros((2, 3)), [0, 1]), r"T = 2 triplets"),
        (lambda: triplet_components(np.zeros((2, 2)), [0, 4], 3), r"component ids must lie in \[0, 3\)"),
    ],
)
def test_bad_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
