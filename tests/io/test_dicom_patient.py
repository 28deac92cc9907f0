# SPDX-License-Identifier: Apache-2.0
"""Defensive copies of the patient/study attributes a SEG or SR copies: invalid values (by pydicom's validation,
value multiplicity, characters, enumerations) are written empty in the copy, the caller's dataset stays as it was,
and the log names the keyword and a count, never the value."""

from __future__ import annotations

import logging

import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.io.dicom_patient import (
    COPIED_KEYWORDS,
    COPIED_MODULES,
    KEPT_KEYWORDS,
    defensive_copies,
    defensive_copy,
    element_problem,
)
from medkd.io.phi import PHI_KEYWORDS


def test_table_matches_what_highdicom_copies():
    """highdicom copies the root attributes of the Patient and Study modules (and, for a SEG, Specimen)."""
    utils = pytest.importorskip("highdicom._standard_utils")
    modules, attributes = utils.get_iod_module_map(), utils.get_module_attribute_map()
    for sop_class in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.7"):
        iod = utils.get_sop_class_iod_map()[sop_class]
        keys = [m["key"] for m in modules[iod] if m["ie"] in ("Patient", "Study")] + ["specimen"]
        for key in keys:
            assert COPIED_MODULES[key] == tuple(a["keyword"] for a in attributes[key] if not a["path"]), key
    assert set(COPIED_KEYWORDS) - KEPT_KEYWORDS <= set(PHI_KEYWORDS)  # every copied value is redacted in messages


@pytest.mark.parametrize(
    "keyword, stored, problem",
    [
        ("PatientBirthDate", b"19450317", None),
        ("PatientBirthDate", b"1945-03-17", "is not a valid DA date"),
        ("PatientBirthDate", b"19450231", "is not a valid DA date"),  # passes pydicom's regex, not the calendar
        ("StudyDate", b"20200101-20200202", "is not a valid DA date"),  # a query range, not a date
        ("StudyTime", b"123000.25", None),
        ("StudyTime", b"12:30:00", "is not a valid TM time"),
        ("PatientSex", b"F", None),
        ("PatientSex", b"Female", "is not one of F, M, O"),
        ("PatientSex", b"U", "is not one of F, M, O"),
        ("PatientAge", b"079Y", None),
        ("PatientAge", b"79 years", "is not a valid AS value"),
        ("PatientWeight", b"70.5", None),
        ("PatientWeight", b"70 kg", "is not a valid DS value"),
        ("PatientID", "ID-4711 Ünïcødé".encode(), None),
        ("PatientID", b"X" * 65, "is longer than LO allows"),
        ("PatientID", b"ID\x01-4711", "holds control characters"),
        ("PatientID", b"ID-1\\ID-2", "has 2 values where VM 1 allows"),
        ("PatientID", b"\xff\xfeID-4711", "cannot be decoded in the character set"),
        ("AccessionNumber", b"A" * 17, "is longer than SH allows"),
        ("PatientName", b"Doe^Jane^^Dr^III", None),
        ("PatientName", b"Doe^Jane^a^b^c^d", "has more than 5 name components"),
        ("PatientName", b"Doe=Jane=X=Y", "has more than 3 name groups"),
        ("PatientName", b"Doe\xffJane", "cannot be decoded in the character set"),
        ("OtherPatientNames", b"Roe^Richard\\Poe^Edgar", None),  # VM 1-n
        ("AdditionalPatientHistory", b"line one\r\nline two", None),  # LT allows CR/LF
        ("PatientComments", b"a\x00b", "holds control characters"),
        ("PregnancyStatus", b"\x04\x00", None),
        ("PregnancyStatus", b"\x07\x00", "is not one of 1, 2, 3, 4"),
        ("PregnancyStatus", b"\x07", "cannot be decoded"),  # one byte of a 2-byte value: pydicom raises
        ("PatientName", b"", None),
    ],
)
def test_problems_of_stored_values(keyword, stored, problem):
    """Values as a file stores them (UTF-8 series), checked in a copy."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    tag = tag_for_keyword(keyword)
    raw(ds, tag, dictionary_VR(tag), stored)
    copy, problems = defensive_copy(ds)
    assert problems.get(keyword) == problem
    assert ds.get_item(tag).value == stored  # the caller's element is still the raw bytes
    if problem:
        assert copy[keyword].value in ("", None)


def test_wrong_vr_is_invalid():
    assert element_problem(DataElement(0x00100030, "LO", "19450317")) == "has VR LO, not DA"


def raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


@pytest.fixture
def source(tmp_path):
    """A real slice as read from disk (raw, unconverted elements), with invalid and valid patient values."""
    series = write_dicom_series(tmp_path, n_slices=1, rows=4, cols=4)
    ds = pydicom.dcmread(series.paths[0])
    raw(ds, 0x00100030, "DA", b"1945-03-17")  # PatientBirthDate
    raw(ds, 0x00100040, "CS", b"Female")  # PatientSex
    raw(ds, 0x00101030, "DS", b"70 kg ")  # PatientWeight
    raw(ds, 0x001021C0, "US", b"abc ")  # PregnancyStatus: two values for VM 1
    raw(ds, 0x00101020, "DS", b"1.75")  # PatientSize: valid
    item = Dataset()
    item.PatientID, item.TypeOfPatientID = "OTHER-" + "9" * 70, "TEXT"
    ds.OtherPatientIDsSequence = [item]
    ds.StudyInstanceUID = "not a UID"  # a reference: never blanked here (the pipeline refuses it earlier)
    return ds


def test_defensive_copy_blanks_invalid_values_only(source):
    before = {tag: source.get_item(tag) for tag in source.keys()}  # noqa: SIM118
    item_before = {tag: source.OtherPatientIDsSequence[0].get_item(tag)
                   for tag in source.OtherPatientIDsSequence[0].keys()}  # noqa: SIM118
    copy, problems = defensive_copy(source)
    assert problems == {
        "PatientBirthDate": "is not a valid DA date",
        "PatientSex": "is not one of F, M, O",
        "PatientWeight": "is not a valid DS value",
        "PregnancyStatus": "has 2 values where VM 1 allows",
        "OtherPatientIDsSequence": "holds an invalid PatientID",
    }
    assert copy.PatientBirthDate == "" and copy.PatientSex == "" and copy.PatientWeight is None
    assert copy.PregnancyStatus is None and len(copy.OtherPatientIDsSequence) == 0
    assert float(copy.PatientSize) == 1.75 and copy.PatientName == "Synthetic^Phantom"
    assert copy.StudyInstanceUID == "not a UID"
    assert copy.get_item("PixelData") is source.get_item("PixelData")  # shared, not copied
    # the caller's dataset: same elements (raw ones still raw), same sequence items, same values
    assert {tag: source.get_item(tag) for tag in source.keys()} == before  # noqa: SIM118
    assert all(source.get_item(tag) is elem for tag, elem in before.items())
    item = source.OtherPatientIDsSequence[0]
    assert all(item.get_item(tag) is elem for tag, elem in item_before.items())
    assert isinstance(source.get_item(0x00100030), RawDataElement) and source.PatientSex == "Female"


def test_defensive_copies_log_keyword_and_count_not_value(source, caplog):
    good = pydicom.dcmread(source.filename)  # the same slice as written: valid values
    caplog.set_level(logging.DEBUG)
    copies = defensive_copies([source, good, source], what="DICOM SEG")
    assert [c.PatientSex for c in copies] == ["", "O", ""]
    messages = [r.getMessage() for r in caplog.records if r.name == "medkd.io.dicom_patient"]
    assert "DICOM SEG: source PatientSex is not one of F, M, O in 2 of 3 images: written empty" in messages
    assert len(messages) == 5
    text = caplog.text
    assert "Female" not in text and "1945-03-17" not in text and "70 kg" not in text and "OTHER-9" not in text
