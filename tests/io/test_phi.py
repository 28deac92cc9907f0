# SPDX-License-Identifier: Apache-2.0
"""medkd.io.phi: patient values are found however they are stored and redacted however a message quotes them;
short values are not over-redacted; guard_phi keeps values out of exceptions, tracebacks, warnings and logs."""

from __future__ import annotations

import json
import logging
import traceback
import warnings

import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from medkd.io.phi import (
    REDACTED,
    guard_phi,
    phi_index,
    phi_values,
    redact,
    redacting_logs,
    safe_error,
)


def raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Store ``value`` as pydicom leaves an element it has read but not converted yet."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def patient() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane^^Dr"
    ds.PatientID = "ID-4711"
    ds.PatientBirthDate = "19450317"
    ds.PatientSex = "F"
    ds.StudyID = "1"
    ds.PatientAge = "079Y"
    return ds


def test_values_by_keyword_with_name_components():
    index = phi_index([patient()])
    assert index["PatientName"] == {"Doe^Jane^^Dr", "Doe", "Jane"}  # "Dr" is too short to search for
    assert index["PatientID"] == {"ID-4711"} and index["PatientAge"] == {"079Y"}
    assert "PatientSex" not in index and "StudyID" not in index  # "F", "1": codes, not searched for


@pytest.mark.parametrize(
    "message, expected",
    [
        ("Invalid value for VR LO: 'ID-4711'.", f"Invalid value for VR LO: '{REDACTED}'."),
        ("name 'Doe^Jane^^Dr' / family Doe / given Jane", f"name '{REDACTED}' / family {REDACTED} / given {REDACTED}"),
        ("DA 19450317 in ID-4711,19450317", f"DA {REDACTED} in {REDACTED},{REDACTED}"),
        # short values only as whole words; the one-letter sex and one-digit study ID never
        ("age 079Y; Doer; Janet; 1079Yx; F; study 1", f"age {REDACTED}; Doer; Janet; 1079Yx; F; study 1"),
    ],
)
def test_redact(message, expected):
    assert redact(message, phi_values([patient()])) == expected


@pytest.mark.parametrize(
    "value",
    ["Zoë-Ünïcødé^名前", "ID\x01\x07ctl-42", "O'Brien\"quoted\"^Ann", "tab\tnew\nline-9", "back\\slash-77"],
)
def test_escaped_forms_are_redacted(value):
    """Messages quote values with repr (pydicom), ascii, JSON (reports) or as bytes (b'...')."""
    forms = [value, repr(value), ascii(value), json.dumps(value), json.dumps(value, ensure_ascii=False),
             repr(value.encode("utf-8"))]  # fmt: skip
    message = " | ".join(forms)
    redacted = redact(message, {value})
    for form in forms:
        inner = form.strip("'\"b")
        assert inner not in redacted or len(inner) < 3, (form, redacted)
    assert redacted.count(REDACTED) >= len(forms)


def test_raw_bytes_and_values_pydicom_cannot_convert():
    """A value read but never converted, one that does not decode, one pydicom refuses: all found, ``ds`` unchanged."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    raw(ds, 0x00100010, "PN", "Müller^Zoë".encode())  # PatientName, UTF-8
    raw(ds, 0x00100020, "LO", b"\xff\xfeMRN-0042")  # PatientID: not UTF-8
    raw(ds, 0x00101030, "DS", b"weight-77kg ")  # PatientWeight: not a number
    raw(ds, 0x001021C0, "US", b"Zq-ab")  # PregnancyStatus: 5 bytes for 2-byte values: pydicom raises
    values = phi_values([ds])
    assert {"Müller^Zoë", "Müller", "Zoë", "MRN-0042", "weight-77kg", "Zq-ab"} <= values
    assert all(isinstance(ds.get_item(tag), RawDataElement) for tag in (0x00100010, 0x00100020, 0x001021C0))
    with pytest.raises(Exception) as info:
        ds.PregnancyStatus  # noqa: B018 - pydicom's own error quotes the bytes
    assert "Zq-ab" in str(info.value) and "Zq-ab" not in safe_error(info.value, [ds])
    stored = b"\xff\xfeMRN-0042"
    message = f"got {stored!r} and {'Müller'!r} / {'Müller'.encode()!r}"
    assert "MRN" not in redact(message, values) and "ller" not in redact(message, values)


def test_sequences_and_multi_values():
    ds = Dataset()
    item = Dataset()
    item.PatientID, item.IssuerOfPatientID = "OTHER-555", "Hospital-X"
    ds.OtherPatientIDsSequence = [item]
    ds.OtherPatientNames = ["Roe^Richard", "Poe^Edgar"]
    values = phi_values([ds])
    assert {"OTHER-555", "Hospital-X", "Roe^Richard", "Poe^Edgar", "Roe^Richard\\Poe^Edgar"} <= values


def test_safe_error():
    err = ValueError("Unable to convert '1945-03-17' to 'DA' object (Doe^Jane)")
    ds = Dataset()
    ds.PatientBirthDate, ds.PatientName = "1945-03-17", "Doe^Jane"
    assert safe_error(err, [ds]) == f"ValueError: Unable to convert '{REDACTED}' to 'DA' object ({REDACTED})"
    assert safe_error(err) == "ValueError: Unable to convert '1945-03-17' to 'DA' object (Doe^Jane)"  # no datasets


# ------------------------------------------------------------------------------------------- guard_phi


def test_guard_redacts_exceptions_and_drops_the_chain():
    ds = patient()

    def fail():
        try:
            raise KeyError("lookup of ID-4711")
        except KeyError:
            raise ValueError("Unable to convert 'Doe^Jane^^Dr'") from None

    with pytest.raises(ValueError) as info, guard_phi([ds], "cannot write the DICOM SEG"):
        fail()
    text = "".join(traceback.format_exception(info.value))
    assert str(info.value).startswith(f"cannot write the DICOM SEG: ValueError: Unable to convert '{REDACTED}'")
    assert "[redacted: values of PatientName]" in str(info.value)
    assert "Doe" not in text and "ID-4711" not in text and info.value.__suppress_context__


def test_guard_keeps_clean_exceptions_and_redacts_a_dirty_chain():
    with pytest.raises(OSError, match="disk full"), guard_phi([patient()], "cannot write"):
        raise OSError("disk full")
    # the message is clean, the exception it was raised from is not
    with pytest.raises(ValueError) as info, guard_phi([patient()], "cannot write"):
        try:
            raise ValueError("bad ID-4711")
        except ValueError as inner:
            raise RuntimeError("highdicom failed") from inner
    assert "ID-4711" not in "".join(traceback.format_exception(info.value))
    assert "RuntimeError: highdicom failed" in str(info.value) and "PatientID" in str(info.value)


def test_guard_redacts_third_party_logs_and_hides_warnings(caplog, recwarn):
    pytest.importorskip("highdicom")  # its loggers exist once it is imported, as they do when a writer runs
    caplog.set_level(logging.DEBUG)
    with guard_phi([patient()], "cannot write"):
        logging.getLogger("highdicom.base").warning('value of argument "patient_name" is invalid: "%s"', "Doe^Jane^^Dr")
        logging.getLogger("pydicom").warning("Invalid value for VR LO: 'ID-4711'")
        logging.getLogger("medkd.something").info("keyword PatientID")
        warnings.warn("Invalid value for VR DA: '19450317'", UserWarning, stacklevel=1)
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "Doe" not in text and "ID-4711" not in text and "19450317" not in text
    assert text.count(REDACTED) >= 3 and "keyword PatientID" in text
    assert not [w for w in recwarn if "19450317" in str(w.message)]
    logging.getLogger("pydicom").warning("after: ID-4711")  # outside a guard: untouched
    assert caplog.records[-1].getMessage() == "after: ID-4711"


def test_redacting_logs_nest():
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    log = logging.getLogger("pydicom.fuzz_child")
    handler = Keep()
    log.addHandler(handler)
    try:
        with redacting_logs({"Alpha-1"}), redacting_logs({"Beta-22"}):
            log.warning("Alpha-1 Beta-22")
        with redacting_logs({"Alpha-1"}):
            log.warning("Alpha-1 Beta-22")
    finally:
        log.removeHandler(handler)
    assert records == [f"{REDACTED} {REDACTED}", f"{REDACTED} Beta-22"]
