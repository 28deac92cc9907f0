# SPDX-License-Identifier: Apache-2.0
"""Fuzzing the patient and study attributes of a source series with invalid values (issue 8, case 2).

Every generated value carries a distinctive marker (``Zq<k>x<6 digits>``) inside a value that is invalid for its
attribute: a date written with dashes, a sex ``Female``-like code, over-long IDs and names, control characters,
bytes that do not decode, too many values or name components, numbers that are text. Then:

* the SEG and SR writers, called directly, never fail, write files highdicom reads back with the attribute empty,
  and neither those files, the SR's JSON/CSV sidecars nor any log record (DEBUG included) holds a marker; the
  caller's datasets are not changed;
* the whole pipeline processes the series (invalid type 2 values are written empty, not a failure), and no output
  file (report CSV/JSON, ``medkd.log``, ``result.json``, the SEG, the NIfTI mask), stdout, stderr or log record holds
  a marker.
"""

from __future__ import annotations

import gzip
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.batch import PipelineConfig, run_pipeline
from medkd.engine.predictor import Predictor
from medkd.io.dicom_seg import write_seg
from medkd.io.dicom_sr import Detection, write_detection_sidecars, write_detection_sr
from medkd.io.labels import labels_from_names

# ------------------------------------------------------------------------------------------- hostile values

#: attributes highdicom copies, by how a value is made invalid for them
FORMATTED = (  # DA, TM, CS, AS, DS: a lower-case letter alone makes the value invalid
    "PatientBirthDate", "StudyDate", "LastMenstrualDate", "StudyTime", "PatientBirthTime", "PatientSex",
    "PatientSexNeutered", "SmokingStatus", "PatientAge", "PatientWeight", "PatientSize",
)  # fmt: skip
SINGLE_TEXT = (  # LO, SH, PN with VM 1
    "PatientID", "IssuerOfPatientID", "StudyDescription", "ClinicalTrialSponsorName", "ContainerIdentifier",
    "AccessionNumber", "StudyID", "PatientName", "ReferringPhysicianName", "ResponsiblePerson",
)  # fmt: skip
MULTI_TEXT = (  # LO, PN with VM 1-n
    "OtherPatientNames", "ConsultingPhysicianName", "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription", "MedicalAlerts",
)  # fmt: skip
LONG_TEXT = ("AdditionalPatientHistory", "PatientComments")  # LT: only controls and bytes are invalid
BINARY = ("PregnancyStatus", "LongitudinalTemporalOffsetFromEvent")  # US, FD with VM 1: text bytes in them
SEQUENCE = ("OtherPatientIDsSequence",)  # an item whose PatientID is invalid
FUZZED = FORMATTED + SINGLE_TEXT + MULTI_TEXT + LONG_TEXT + BINARY + SEQUENCE

Mutator = Callable[[str, str], bytes]
MUTATORS: dict[str, Mutator] = {
    "as_is": lambda tok, tail: f"{tok}{tail}".encode(),
    "dashes": lambda tok, tail: f"{tok}-03-17{tail}".encode(),
    "unicode": lambda tok, tail: f"{tok}-Ünïcødé-名前{tail}".encode(),
    "spaces": lambda tok, tail: f" {tok} x y{tail}".encode(),
    "quotes": lambda tok, tail: f"{tok}'\"{tail}".encode(),
    "long": lambda tok, tail: f"{tok}-{'L' * 70}{tail}".encode(),
    "control": lambda tok, tail: f"{tok}\x01\x07{tail}".encode(),
    "undecodable": lambda tok, tail: b"\xff\xfe" + f"{tok}{tail}".encode(),
    "backslash": lambda tok, tail: f"{tok}\\{tok}-2{tail}".encode(),
    "components": lambda tok, tail: f"{tok}^a^b^c^d^e^f{tail}".encode(),
    "groups": lambda tok, tail: f"{tok}=a=b=c{tail}".encode(),
}
_ALWAYS = ("long", "control", "undecodable")


def mutators_for(keyword: str) -> list[str]:
    """The mutations that make any value of ``keyword`` invalid, whatever tail follows the marker."""
    if keyword in FORMATTED:
        return list(MUTATORS)
    if keyword in LONG_TEXT:
        return ["control", "undecodable"]
    if keyword in BINARY:
        return ["as_is", "undecodable"]
    pn = keyword in SINGLE_TEXT + MULTI_TEXT and dictionary_VR(tag_for_keyword(keyword)) == "PN"
    single = keyword in SINGLE_TEXT or keyword in SEQUENCE
    return [*_ALWAYS, *(["backslash"] if single else []), *(["components"] if pn else []),
            *(["groups"] if pn and single else [])]  # fmt: skip


tails = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)


@st.composite
def hostile_headers(draw: Any, max_size: int = 4) -> dict[str, tuple[str, bytes]]:
    """``{keyword: (marker, stored bytes)}`` for 1 to ``max_size`` attributes, each value invalid."""
    keywords = draw(st.lists(st.sampled_from(FUZZED), min_size=1, max_size=max_size, unique=True))
    found = {}
    for k, keyword in enumerate(keywords):
        marker = f"Zq{k}x{draw(st.integers(0, 999_999)):06d}"
        mutator = draw(st.sampled_from(mutators_for(keyword)))
        found[keyword] = (marker, MUTATORS[mutator](marker, draw(tails)))
    return found


def _raw(keyword: str, value: bytes) -> RawDataElement:
    tag = tag_for_keyword(keyword)
    vr = dictionary_VR(tag)
    if len(value) % 2:
        value += b"\x00" if vr in ("US", "FD") else b" "
    return RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True)


def write_hostile_series(folder: Path, hostile: dict[str, tuple[str, bytes]], seed: int = 0) -> Any:
    """A 2-slice 8 x 8 CT series (UTF-8 character set) with the hostile values stored as they are, byte for byte."""
    series = write_dicom_series(folder, n_slices=2, rows=8, cols=8, seed=seed, shuffle_names=False)
    for path in series.paths:
        ds = pydicom.dcmread(path)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.save_as(path, enforce_file_format=True)
        ds = pydicom.dcmread(path)  # same character set now: pydicom writes raw elements byte for byte
        placeholders = {}
        for keyword, (_, value) in hostile.items():
            if keyword in SEQUENCE:  # pydicom re-encodes new items: store a placeholder, then patch the bytes
                stored = _raw("PatientID", value).value
                placeholders[b"\x7f" * len(stored)] = stored
                item = Dataset()
                item.PatientID, item.TypeOfPatientID = "\x7f" * len(stored), "TEXT"
                ds.OtherPatientIDsSequence = [item]
            else:
                ds[tag_for_keyword(keyword)] = _raw(keyword, value)
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        for placeholder, stored in placeholders.items():
            assert data.count(placeholder) == 1
            data = data.replace(placeholder, stored)
        path.write_bytes(data)
    return series


def read_sorted(paths: list[Path]) -> list[Any]:
    return sorted((pydicom.dcmread(p) for p in paths), key=lambda ds: float(ds.ImagePositionPatient[2]))


# ------------------------------------------------------------------------------------------- finding markers


def file_text(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def leaks(markers: list[str], texts: dict[str, bytes | str]) -> list[str]:
    """``"<where>: <marker>"`` for every marker found in any of ``texts``."""
    found = []
    for where, text in texts.items():
        data = text.encode("utf-8", "replace") if isinstance(text, str) else text
        found += [f"{where}: {m}" for m in markers if m.encode() in data]
    return found


def log_texts(caplog: Any) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
        if record.exc_text:
            lines.append(record.exc_text)
    return "\n".join([caplog.text, *lines])


def element_ids(ds: Any) -> list[tuple[int, int]]:
    """Identity of every element (nested too): a writer that converts or replaces any changes this."""
    ids = []
    for tag in ds.keys():  # noqa: SIM118 - iterating a pydicom Dataset gives elements, not tags
        elem = ds.get_item(tag)
        ids.append((int(tag), id(elem)))
        if getattr(elem, "VR", None) == "SQ" and not isinstance(elem, RawDataElement):
            for item in elem.value:
                ids += element_ids(item)
    return ids


# ------------------------------------------------------------------------------------------- the writers

LABELS = labels_from_names(["background", "lesion"])
MODEL = {"model_name": "fuzz", "model_version": "1"}
WRITER_SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                HealthCheck.too_slow])  # fmt: skip


@WRITER_SETTINGS
@given(hostile=hostile_headers())
def test_writers_never_fail_on_or_quote_invalid_patient_values(hostile, caplog):
    markers = [marker for marker, _ in hostile.values()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = write_hostile_series(tmp / "in", hostile)
        datasets = read_sorted(series.paths)
        before = [element_ids(ds) for ds in datasets]
        mask = np.zeros((2, 8, 8), np.uint8)
        mask[:, 2:5, 2:6] = 1
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            seg_path = write_seg(datasets, mask, LABELS, tmp / "out" / "seg.dcm", uid_entropy=["fuzz", "seg"], **MODEL)
            detections = [Detection("nodule", 0.9, (0, 1, 1, 2, 5, 6))]
            sr_path = write_detection_sr(datasets, detections, tmp / "out" / "sr.dcm", uid_entropy=["fuzz", "sr"],
                                         **MODEL)  # fmt: skip
            assert [element_ids(ds) for ds in datasets] == before, "the caller's datasets were changed"
            sidecars = write_detection_sidecars(detections, tmp / "out", datasets=datasets, **MODEL)

        seg, sr = hd.seg.segread(seg_path), hd.sr.srread(sr_path)
        for keyword in hostile:
            for written in (seg, sr):
                assert written.get(keyword) in (None, "", []), f"{keyword} was not written empty"
        assert seg.PatientID == "SYN0001" or "PatientID" in hostile  # valid values are kept
        texts = {p.name: p.read_bytes() for p in (seg_path, sr_path, *sidecars)}
        texts["log"] = log_texts(caplog)
        assert not leaks(markers, texts)
        assert any(r.levelno == logging.WARNING and "written empty" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------- the pipeline


def threshold_predictor() -> Predictor:
    """A model-free segmenter (HU above 150 -> lesion), as in tests/engine/test_batch.py."""
    return Predictor(kind="segmentation", name="threshold", version="1", weights_sha256="0" * 64, labels=LABELS,
                     run=lambda a: (a > 150).astype(np.uint8), source=Path("."))  # fmt: skip


PIPELINE = PipelineConfig(name="phi_fuzz", selection=[{"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
                                                       "min_slices": 2}])  # fmt: skip
PIPELINE_SETTINGS = settings(max_examples=12, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PIPELINE_SETTINGS
@given(hostile=hostile_headers())
def test_pipeline_outputs_hold_no_invalid_patient_value(hostile, capfd, caplog):
    markers = [marker for marker, _ in hostile.values()]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = write_hostile_series(tmp / "in", hostile)
        capfd.readouterr()
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            summary = run_pipeline(PIPELINE, tmp / "in", tmp / "out", workers=0, predictor=threshold_predictor(),
                                   progress=False)  # fmt: skip
        out, err = capfd.readouterr()
        rows = [r for r in summary.rows if r.kind == "series"]
        assert [(r.series_uid, r.status) for r in rows] == [(series.series_uid, "processed")], rows
        texts: dict[str, bytes | str] = {str(p.relative_to(tmp)): file_text(p)
                                         for p in (tmp / "out").rglob("*") if p.is_file()}  # fmt: skip
        assert {"out/medkd_report.csv", "out/medkd_report.json", "out/medkd.log"} <= set(texts)
        assert any(name.endswith("seg.dcm") for name in texts) and any(name.endswith("result.json") for name in texts)
        texts.update(stdout=out, stderr=err, log=log_texts(caplog))
        assert not leaks(markers, texts)
