# SPDX-License-Identifier: Apache-2.0
"""The capacity-gap teacher choice (spec §4): a fixed candidate list gives the expected pick."""

from __future__ import annotations

import logging

import pytest

from medkd.distill import get_plugin, list_plugins
from medkd.distill.utilities.capacity_gap import CapacityGap, choose_teacher


@pytest.mark.parametrize(("student", "candidates", "ratio", "expected"), [
    (100, {"a": 150, "b": 260, "c": 1000}, 2.5, "b"),
    (100, {"a": 150, "c": 1000}, 2.5, "a"),            # log(1.5) is nearer log(2.5) than log(10)
    (100, {"a": 150, "c": 400}, 2.5, "c"),             # |log 4 - log 2.5| < |log 1.5 - log 2.5|
    (100, {"a": 1000, "b": 1_000_000}, 2.5, "a"),
    (100, {"a": 200, "b": 800}, 4.0, "a"),             # a tie in log-ratio: the smaller teacher
])
def test_choice_is_the_nearest_log_ratio(student: int, candidates: dict, ratio: float, expected: str) -> None:
    assert choose_teacher(student, candidates, ratio=ratio).name == expected


def test_choice_logs_every_ratio(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="medkd.distill.utilities.capacity_gap")
    choice = choose_teacher(294_357, {"kd_cnn_wide": 2_638_709, "monai_resnet10": 4_902_981, "w32": 1_173_925})
    assert choice.name == "w32" and choice.ratios["kd_cnn_wide"] == pytest.approx(2_638_709 / 294_357)
    assert "(chosen)" in caplog.text and caplog.text.count("x the student") == 3


@pytest.mark.parametrize(("student", "candidates", "match"), [
    (0, {"a": 1}, "must be > 0"), (10, {}, "at least one"), (10, {"a": 0}, "no parameters"),
])
def test_bad_input(student: int, candidates: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        choose_teacher(student, candidates)


def test_registered_as_a_utility() -> None:
    assert get_plugin("capacity_gap", kind="utility") is CapacityGap
    assert "capacity_gap" in [p.key for p in list_plugins(kind="utility")]
