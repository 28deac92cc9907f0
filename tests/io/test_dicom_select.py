# SPDX-License-Identifier: Apache-2.0
"""DICOM series selection (batch stage 2): regex and range rules, first match wins, min_slices, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset  # noqa: E402

from medkd.errors import ConfigError  # noqa: E402
from medkd.io.dicom_scan import Reason, SeriesInfo  # noqa: E402
from medkd.io.dicom_select import SelectionRule, check_condition, parse_rules, select_series  # noqa: E402


def _series(n_files: int = 10, **tags) -> SeriesInfo:
    header = Dataset()
    header.Modality = "CT"
    header.SeriesDescription = "Chest 2.5mm STD"
    header.SliceThickness = "2.5"
    header.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    header.PixelSpacing = ["0.7", "0.7"]
    header.PatientName = "Doe^Jane"
    header.PatientID = "SECRET123"
    for key, value in tags.items():
        if value is None:
            delattr(header, key)
        else:
            setattr(header, key, value)
    files = [Path(f"/in/s/{i:03d}.dcm") for i in range(n_files)]
    return SeriesInfo("1.2.3.4", "1.2.3", str(header.get("Modality", "")), "", files=files, header=header)


@pytest.mark.parametrize(
    "conditions, tags, selected",
    [
        ({"Modality": "(?i)ct"}, {}, True),
        ({"Modality": "^MR$"}, {}, False),
        ({"SeriesDescription": "(?i)chest"}, {}, True),
        ({"SeriesDescription": "^2.5"}, {}, False),  # re.search, anchored at the start: no
        ({"ImageType": r"ORIGINAL\\PRIMARY"}, {}, True),  # multi-valued: joined with backslash
        ({"ImageType": "LOCALIZER"}, {}, False),
        ({"SliceThickness": [0.5, 5.0]}, {}, True),
        ({"SliceThickness": [0.5, 2.0]}, {}, False),
        ({"SliceThickness": [2.5, 2.5]}, {}, True),  # closed range
        ({"SliceThickness": [None, 3]}, {}, True),  # open-ended
        ({"SliceThickness": 2.5}, {}, True),  # a number is an exact match
        ({"PixelSpacing": [0.5, 0.8]}, {}, True),  # every value must lie in the range
        ({"PixelSpacing": [0.5, 0.8]}, {"PixelSpacing": ["0.7", "0.9"]}, False),
        ({"SliceThickness": [0.5, 5.0]}, {"SliceThickness": None}, False),  # missing tag never matches
        ({"BodyPartExamined": ".*"}, {}, False),
        ({"SeriesDescription": "x"}, {"SeriesDescription": "axial"}, True),
        ({"Modality": "CT", "SliceThickness": [3, 10]}, {}, False),  # all conditions must hold
        ({}, {}, True),  # no condition: matches everything
    ],
)
def test_conditions(conditions, tags, selected):
    rules = parse_rules([{"name": "r", "conditions": conditions}])
    selection = select_series(_series(**tags), rules)
    assert (selection.rule is not None) == selected
    assert selection.reason == (None if selected else Reason.NOT_SELECTED)


def test_first_match_wins():
    rules = parse_rules(
        [
            {"name": "mr", "conditions": {"Modality": "MR"}},
            {"name": "ct_thin", "conditions": {"Modality": "CT", "SliceThickness": [0, 2]}},
            {"name": "ct_any", "conditions": {"Modality": "CT"}},
            {"name": "ct_also", "conditions": {"Modality": "CT"}},
        ]
    )
    assert select_series(_series(), rules).rule.name == "ct_any"
    assert select_series(_series(SliceThickness="1.0"), rules).rule.name == "ct_thin"


def test_min_slices():
    rules = parse_rules([{"name": "ct", "conditions": {"Modality": "CT"}, "min_slices": 5}, {"name": "any"}])
    assert select_series(_series(n_files=5), rules).rule.name == "ct"
    short = select_series(_series(n_files=4), rules)
    assert short.rule is None and short.reason == Reason.TOO_FEW_SLICES
    assert "ct" in short.message and "4" in short.message and "5" in short.message
    other = select_series(_series(n_files=1, Modality="MR"), rules)  # the matching rule 'any' has min_slices 1
    assert other.rule.name == "any"


def test_empty_rules_select_all():
    selection = select_series(_series(n_files=1, Modality="XA"), [])
    assert selection.rule is not None and selection.rule.name == "all" and selection.reason is None


def test_not_selected_message_names_each_rule():
    rules = parse_rules(
        [
            {"name": "mr", "conditions": {"Modality": "MR"}},
            {"name": "ct_thin", "conditions": {"Modality": "CT", "SliceThickness": [0.5, 1.5]}},
            {"name": "pet", "conditions": {"Modality": "PT", "PatientName": "Doe"}},
            {"name": "who", "conditions": {"PatientID": "^X"}},
        ]
    )
    selection = select_series(_series(), rules)
    assert selection.rule is None and selection.reason == Reason.NOT_SELECTED
    msg = selection.message
    assert "mr: Modality='CT'" in msg
    assert "ct_thin: SliceThickness=2.5 not in [0.5, 1.5]" in msg
    assert "pet: Modality" in msg
    assert "who: PatientID=<value hidden>" in msg
    assert "SECRET123" not in msg and "Doe^Jane" not in msg


def test_check_condition_reports_missing_and_non_numeric():
    header = _series(SeriesDescription="abc").header
    assert check_condition(header, "SeriesDescription", [0, 1]).endswith("is not a number")
    assert "missing" in check_condition(header, "BodyPartExamined", "x")
    assert check_condition(header, "Modality", "CT") is None


@pytest.mark.parametrize(
    "raw, match",
    [
        ([{"name": "a", "min_slice": 3}], r"selection\[0\]: unknown key 'min_slice'; valid keys: name"),
        ([{"name": "a"}, {"name": "b", "conditions": {"Modalty": "CT"}}], r"selection\[1\].*Modalty.*Modality"),
        ([{"conditions": {"SeriesDescription": "(unclosed"}}], "invalid regular expression"),
        ([{"conditions": {"SliceThickness": [5, 1]}}], "min <= max"),
        ([{"conditions": {"SliceThickness": [1, 2, 3]}}], r"\[min, max\]"),
        ([{"conditions": {"SliceThickness": ["a", 2]}}], r"\[min, max\]"),
        ([{"conditions": {"SliceThickness": True}}], "regular expression"),
        ([{"conditions": ["Modality"]}], "conditions: expected a mapping"),
        ([{"min_slices": 0}], "min_slices"),
        ([{"min_slices": "3"}], "min_slices"),
        ([{"name": ""}], "name"),
        (["Modality: CT"], "expected a mapping"),
        ({"name": "a"}, "expected a list"),
    ],
)
def test_parse_rules_errors(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_rules(raw, source="selection")


def test_parse_rules_source_and_defaults():
    with pytest.raises(ConfigError, match=r"^pipes/ct\.yaml: selection\[0\]"):
        parse_rules([{"nme": "x"}], source="pipes/ct.yaml: selection")
    rules = parse_rules([{"conditions": {"Modality": "CT", "SliceThickness": [1, None]}}, {"name": "b"}])
    assert rules[0] == SelectionRule(name="rule0", conditions={"Modality": "CT", "SliceThickness": [1.0, float("inf")]})
    assert rules[1].conditions == {} and rules[1].min_slices == 1


@pytest.mark.parametrize(
    "study, series_uid, keyword",
    [("/etc", "1.2.3.4", "StudyInstanceUID"), ("1.2.3", "..", "SeriesInstanceUID"), ("", "1.2", "StudyInstanceUID"),
     ("1.2.3", "1.2/../../x", "SeriesInstanceUID"), ("1.2.3", "9" * 65, "SeriesInstanceUID")],
)
def test_invalid_uids_are_skipped_before_any_rule(study, series_uid, keyword):
    series = _series()
    series.study_uid, series.series_uid = study, series_uid
    selection = select_series(series, [])  # no rule: every valid series would be selected
    assert selection.rule is None and selection.reason == Reason.INVALID_UID
    bad = series_uid if keyword == "SeriesInstanceUID" else study
    assert keyword in selection.message
    assert not bad or bad not in selection.message.replace(keyword, "")  # the value is never echoed


def test_truncated_files_skip_the_series_naming_them():
    series = _series(n_files=4)
    series.truncated = [Path("/in/s/004.dcm"), Path("/in/s/sub/005.dcm")]
    selection = select_series(series, [SelectionRule(name="any")], root=Path("/in"))
    assert selection.rule is None and selection.reason == Reason.TRUNCATED
    assert "s/004.dcm" in selection.message and "s/sub/005.dcm" in selection.message and "/in/" not in selection.message
    assert "004.dcm" in select_series(series, []).message  # without a root: file names
