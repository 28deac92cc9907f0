# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.surgical_labels: SFPBench label generators on hand-made sequences (values worked out by
hand), their edge cases (no change within the horizon, the last frame, revisits, clamping), the skipping of tasks
without labels, and the copy-current and statistical-prior baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medkd.metrics.surgical_labels import (
    PhasePrior,
    change_mask,
    copy_current,
    elapsed,
    event_labels,
    future_presence,
    next_change,
    rsd,
    sfpbench_labels,
    time_in_phase,
    tta,
)

PHASES = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
PER_MIN = 1 / 60  # fps at which one frame is one minute: hand values read in frames


def test_rsd_and_elapsed() -> None:
    np.testing.assert_allclose(rsd(10, fps=PER_MIN), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    np.testing.assert_allclose(rsd(3), [2 / 60, 1 / 60, 0])  # 1 fps: minutes
    np.testing.assert_allclose(elapsed(3, fps=PER_MIN), [0, 1, 2])
    np.testing.assert_allclose(rsd(5) + elapsed(5), 4 / 60)  # elapsed + remaining = the duration
    assert rsd(1).tolist() == [0.0]


@pytest.mark.parametrize(
    "horizon, expected",
    [
        (2, [2, 2, 1, 2, 1, 2, 2, 2, 2, 2]),
        (3, [3, 2, 1, 2, 1, 3, 3, 3, 3, 3]),
        (10, [3, 2, 1, 2, 1, 10, 10, 10, 10, 10]),  # the last segment: no change, h
        (0.5, [0.5] * 10),
    ],
)
def test_next_change(horizon: float, expected: list[float]) -> None:
    np.testing.assert_allclose(next_change(PHASES, horizon, fps=PER_MIN), expected)


def test_next_change_edge_cases() -> None:
    assert next_change([4, 4, 4], 2, fps=PER_MIN).tolist() == [2.0, 2.0, 2.0]  # one phase: never changes
    assert next_change([1], 2).tolist() == [2.0]  # a one-frame video
    np.testing.assert_allclose(next_change([0, 1, 0], 5, fps=PER_MIN), [1, 1, 5])  # a revisit is a change
    np.testing.assert_allclose(next_change([0, 0, 1], 5), [2 / 60, 1 / 60, 5])  # 1 fps: minutes
    np.testing.assert_allclose(next_change(torch.tensor(PHASES), 2, fps=PER_MIN), next_change(PHASES, 2, PER_MIN))


def test_time_in_phase() -> None:
    np.testing.assert_allclose(time_in_phase(PHASES, fps=PER_MIN), [0, 1, 2, 0, 1, 0, 1, 2, 3, 4])
    # remaining time in the phase plus the time spent in it is the segment duration
    nc = next_change(PHASES, 100, fps=PER_MIN)[:5]
    np.testing.assert_allclose(nc + time_in_phase(PHASES, fps=PER_MIN)[:5], [3, 3, 3, 2, 2])


def test_tta_hand_values() -> None:
    expected = np.array([
        # phase 0, phase 1, phase 2
        [0, 3, 3],
        [0, 2, 3],
        [0, 1, 3],
        [3, 0, 2],  # phase 0 never recurs: h
        [3, 0, 1],
        [3, 3, 0],
        [3, 3, 0],
        [3, 3, 0],
        [3, 3, 0],
        [3, 3, 0],
    ], float)
    np.testing.assert_allclose(tta(PHASES, 3, fps=PER_MIN), expected)


def test_tta_revisit_unseen_phase_and_cap() -> None:
    out = tta([0, 1, 1, 0], 5, fps=PER_MIN, num_classes=3)
    np.testing.assert_allclose(out[:, 0], [0, 2, 1, 0])  # phase 0 comes back
    np.testing.assert_allclose(out[:, 1], [1, 0, 0, 5])
    np.testing.assert_allclose(out[:, 2], [5, 5, 5, 5])  # never seen: h everywhere
    np.testing.assert_allclose(tta(PHASES, 1.5, fps=PER_MIN)[:, 2], [1.5, 1.5, 1.5, 1.5, 1, 0, 0, 0, 0, 0])
    # next_change is the smallest tta over the other phases when every change enters a new phase
    full = tta(PHASES, 3, fps=PER_MIN)
    others = np.where(np.eye(3, dtype=bool)[PHASES], np.inf, full).min(axis=1)
    np.testing.assert_allclose(others, next_change(PHASES, 3, fps=PER_MIN))


def test_future_presence_point_and_union() -> None:
    y = np.array([[0], [1], [0], [0], [1], [0]])
    assert future_presence(y, 2)[:, 0].tolist() == [0, 0, 1, 0, 0, 0]  # labels[min(t+2, 5)]
    assert future_presence(y, 2, mode="union")[:, 0].tolist() == [1, 0, 1, 1, 0, 0]
    assert future_presence(y, 10)[:, 0].tolist() == [0] * 6  # clamped to the last frame
    assert future_presence(y, 10, mode="union")[:, 0].tolist() == [1, 1, 1, 1, 0, 0]
    # the last frame: the point rule and the union both read the last label
    z = np.array([[0], [1]])
    assert future_presence(z, 1)[:, 0].tolist() == [1, 1]
    assert future_presence(z, 3, mode="union")[:, 0].tolist() == [1, 1]
    # seconds at 2 fps: 1 s = 2 frames; phase ids work with the point rule
    assert future_presence(np.array([0, 0, 1, 1, 2]), 1, fps=2).tolist() == [1, 1, 2, 2, 2]
    assert future_presence(y.astype(bool), 1).dtype == bool


def test_event_labels() -> None:
    bleed = np.array([[0], [0], [0], [1], [1], [0], [1]])  # onsets at frames 3 and 6
    assert event_labels(bleed, 2)[:, 0].tolist() == [0, 1, 1, 0, 1, 1, 0]
    assert event_labels(bleed, 1)[:, 0].tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert event_labels(bleed, 60)[:, 0].tolist() == [1, 1, 1, 1, 1, 1, 0]  # the last frame is always 0
    # an event present from frame 0 has no onset that any frame can see
    assert event_labels(np.array([[1], [1], [0]]), 5)[:, 0].tolist() == [0, 0, 0]
    onsets = np.array([[0, 0], [0, 1], [1, 1], [0, 0]])
    assert event_labels(onsets, 1, onsets=True).tolist() == [[0, 1], [1, 1], [0, 0], [0, 0]]
    assert event_labels(onsets, 1).tolist() == [[0, 1], [1, 0], [0, 0], [0, 0]]


def test_change_mask() -> None:
    y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert change_mask(y, future_presence(y, 1)).tolist() == [False, True, False, False]
    assert change_mask(np.array(PHASES), future_presence(np.array(PHASES), 1)).tolist() == [
        False, False, True, False, True, False, False, False, False, False]
    assert not change_mask(y, y).any()


def test_sfpbench_labels_skips_missing_tasks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        only_phases = sfpbench_labels(10, phases=PHASES, fps=PER_MIN, transition_horizons_min=(2, 3))
    assert sorted(only_phases) == ["elapsed", "phase_next@2min", "phase_next@3min", "phase_tta@2min",
                                   "phase_tta@3min", "rsd"]
    assert "steps, triplets, events" in caplog.text
    np.testing.assert_allclose(only_phases["phase_next@2min"], [2, 2, 1, 2, 1, 2, 2, 2, 2, 2])
    assert sorted(sfpbench_labels(3)) == ["elapsed", "rsd"]


def test_sfpbench_labels_all_tasks() -> None:
    rng = np.random.default_rng(0)
    trip = (rng.random((10, 4)) < 0.3).astype(np.int64)
    ev = (rng.random((10, 2)) < 0.3).astype(np.int64)
    out = sfpbench_labels(10, phases=PHASES, steps=np.repeat([0, 1, 2, 3, 4], 2), triplets=trip, events=ev,
                          triplet_deltas_s=(1, 2.5), event_horizons_s=(5,), transition_horizons_min=(0.5,),
                          fps=2.0, num_phases=4)
    assert {"triplets@1s", "triplets@2.5s", "triplets_change@1s", "events@5s", "phase_next@0.5min",
            "phase_tta@0.5min", "step_next@0.5min", "step_tta@0.5min"} <= set(out)
    np.testing.assert_array_equal(out["triplets@2.5s"], future_presence(trip, 2.5, fps=2.0))
    np.testing.assert_array_equal(out["triplets_change@1s"], change_mask(trip, future_presence(trip, 1, fps=2.0)))
    assert out["phase_tta@0.5min"].shape == (10, 4) and out["step_tta@0.5min"].shape == (10, 5)


def test_sfpbench_labels_length_mismatch() -> None:
    with pytest.raises(ValueError, match="triplets has 9 frames, expected num_frames=10"):
        sfpbench_labels(10, triplets=np.zeros((9, 3)))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: next_change(np.zeros((3, 2), int), 2), r"\(N,\) sequence of phase ids"),
        (lambda: next_change([], 2), r"non-empty"),
        (lambda: next_change([0, -1, 1], 2), r">= 0 \(mask unlabelled"),
        (lambda: next_change([0, 0.5], 2), r"whole-number phase ids"),
        (lambda: next_change([0, 1], 0), r"horizon must be a positive number"),
        (lambda: next_change([0, 1], 2, fps=-1), r"fps must be a positive number"),
        (lambda: tta([0, 3], 2, num_classes=2), r"holds id 3 but num_classes=2"),
        (lambda: future_presence(np.zeros((4, 2)), 0.5), r"not a whole number of frames"),
        (lambda: future_presence(np.zeros(4), 1, mode="union"), r"\(N, C\) multi-hot"),
        (lambda: future_presence(np.zeros((4, 2)), 1, mode="window"), r"choose one of point, union"),
        (lambda: future_presence(np.full((4, 2), 2), 1, mode="union"), r"only 0 and 1"),
        (lambda: event_labels(np.zeros(4), 1), r"\(N, C\) multi-hot"),
        (lambda: change_mask(np.zeros((3, 2)), np.zeros((3, 3))), r"same \(N, ...\) shape"),
        (lambda: rsd(0), r"positive integer"),
        (lambda: elapsed(2.5), r"positive integer"),
    ],
)
def test_bad_inputs_raise(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --- baselines -------------------------------------------------------------------------------------------------


def test_copy_current() -> None:
    y = np.array([[1, 0], [0, 1]])
    out = copy_current(y)
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    np.testing.assert_allclose(copy_current(PHASES, "next_change", horizon=2), np.full(10, 2.0))
    out = copy_current(PHASES, "tta", horizon=3, num_classes=4)
    assert out.shape == (10, 4)
    np.testing.assert_allclose(out[0], [0, 3, 3, 3])
    np.testing.assert_allclose(out[4], [3, 0, 3, 3])
    # copy-current is exact wherever nothing changes within the horizon
    truth = next_change(PHASES, 2, fps=PER_MIN)
    pred = copy_current(PHASES, "next_change", horizon=2)
    assert np.all((pred == truth) == (truth == 2))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(target="rsd"), r"no RSD prediction"),
        (dict(target="next_change"), r"needs the horizon"),
        (dict(target="tta"), r"needs the horizon"),
        (dict(target="future"), r"choose one of presence, next_change, tta, rsd"),
    ],
)
def test_copy_current_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        copy_current(PHASES, **kwargs)


TRAIN = [[0, 0, 0, 1, 1, 2, 2, 2, 2, 2], [0, 1, 1, 1, 2, 2]]
# segments (minutes at one frame per minute): phase 0: 3, 1; phase 1: 2, 3; phase 2: 5, 2


def test_phase_prior_fit() -> None:
    prior = PhasePrior.fit(TRAIN, fps=PER_MIN)
    assert prior.num_classes == 3
    assert [d.tolist() for d in prior.durations] == [[1.0, 3.0], [2.0, 3.0], [2.0, 5.0]]
    assert prior.mean_duration == pytest.approx(7.0)  # (9 + 5) / 2
    np.testing.assert_allclose(prior.expected_time, [2.0, 2.5, 3.5])  # per-video minutes in each phase
    assert prior.order.tolist() == [0, 1, 2]


def test_phase_prior_order_follows_training_not_ids() -> None:
    prior = PhasePrior.fit([[2, 2, 0, 0, 1], [2, 0, 1, 1]], fps=PER_MIN, num_classes=4)
    assert prior.order.tolist() == [1, 2, 0, 3]  # phase 2 first, phase 3 never seen: last
    assert prior.durations[3].size == 0


def test_phase_prior_remaining_and_next_change() -> None:
    prior = PhasePrior.fit(TRAIN, fps=PER_MIN)
    test = [0, 1, 1, 1, 1]
    # phase 0, tau 0: median(1, 3) = 2; phase 1, tau 0: median(2, 3) = 2.5; tau 1: 2.5 - 1; tau 2: only 3 is
    # longer: 1; tau 3: no training segment is longer: 0
    np.testing.assert_allclose(prior.remaining_in_phase(test), [2, 2.5, 1.5, 1, 0])
    np.testing.assert_allclose(prior.predict_next_change(test, horizon=2), [2, 2, 1.5, 1, 0])


def test_phase_prior_median_vs_mean() -> None:
    seqs = [[0, 1], [0, 0, 1], [0] * 6 + [1]]  # phase 0 lasts 1, 2 and 6 minutes
    median = PhasePrior.fit(seqs, fps=PER_MIN)
    mean = PhasePrior.fit(seqs, fps=PER_MIN, statistic="mean")
    test = [0] * 7
    np.testing.assert_allclose(median.remaining_in_phase(test), [2, 3, 4, 3, 2, 1, 0])
    np.testing.assert_allclose(mean.remaining_in_phase(test), [3, 3, 4, 3, 2, 1, 0])


def test_phase_prior_tta_and_rsd() -> None:
    prior = PhasePrior.fit(TRAIN, fps=PER_MIN)
    test = [0, 1, 1, 1]
    expected = np.array([
        [0, 2, 4.5],  # 2 left in phase 0, then phase 1 (expected 2.5 min) before phase 2
        [5, 0, 2.5],  # phase 0 comes before phase 1: not expected again, h
        [5, 0, 1.5],
        [5, 0, 1.0],
    ])
    np.testing.assert_allclose(prior.predict_tta(test, horizon=5), expected)
    np.testing.assert_allclose(prior.predict_tta(test, horizon=2), np.minimum(expected, 2))
    np.testing.assert_allclose(prior.predict_rsd(test), [7, 6, 5, 4])  # elapsed mode: 7 - t
    np.testing.assert_allclose(prior.predict_rsd([0] * 9), [7, 6, 5, 4, 3, 2, 1, 0, 0])  # never below 0
    # phase mode: remaining in phase + expected time of the later phases (6 after phase 0, 3.5 after phase 1)
    np.testing.assert_allclose(prior.predict_rsd(test, mode="phase"), [8, 6, 5, 4.5])


def test_phase_prior_unseen_phase_and_errors() -> None:
    prior = PhasePrior.fit(TRAIN, fps=PER_MIN, num_classes=4)
    np.testing.assert_allclose(prior.remaining_in_phase([3, 3]), [0, 0])  # no training data: 0
    with pytest.raises(ValueError, match="fit on 4 phases"):
        prior.remaining_in_phase([0, 4])
    with pytest.raises(ValueError, match="non-empty list"):
        PhasePrior.fit([])
    with pytest.raises(ValueError, match=r"sequences\[1\]"):
        PhasePrior.fit([[0, 1], [[0, 1]]])
    with pytest.raises(ValueError, match="choose one of median, mean"):
        PhasePrior.fit(TRAIN, statistic="mode")
    with pytest.raises(ValueError, match="choose one of elapsed, phase"):
        prior.predict_rsd([0], mode="oracle")
    with pytest.raises(ValueError, match="holds id 2 but num_classes=2"):
        PhasePrior.fit(TRAIN, num_classes=2)


def test_phase_prior_is_causal() -> None:
    prior = PhasePrior.fit(TRAIN, fps=PER_MIN)
    full = np.array([0, 0, 1, 1, 1, 2, 2])
    for t in range(1, full.size):  # predictions at t do not change when the future changes
        changed = full.copy()
        changed[t:] = (changed[t:] + 1) % 3
        np.testing.assert_allclose(prior.predict_tta(changed, 5)[:t], prior.predict_tta(full, 5)[:t])
        np.testing.assert_allclose(prior.predict_rsd(changed, "phase")[:t], prior.predict_rsd(full, "phase")[:t])
