# SPDX-License-Identifier: Apache-2.0
"""2D detections on one projection image (issue 10, item 6): a TID 1500 SR with SCOORD rectangles on the source image
that highdicom reads back and dciodvfy accepts, without any patient geometry (mammograms have none); JSON/CSV
sidecars; synthetic MG/DX images with realistic tags."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medkd.data.synthetic_dicom import MG_IMAGE_STORAGE, write_mammo_series
from medkd.io.dicom_seg import dciodvfy_messages
from medkd.io.dicom_sr2d import (
    Detection2D,
    pixel_spacing_mm,
    source_problems_2d,
    write_detection_sidecars_2d,
    write_detection_sr_2d,
)

hd = pytest.importorskip("highdicom")

MASS = ("SCT", "4147007", "Mass")
FOUND = [Detection2D("mass", 0.9, (2.0, 3.0, 10.0, 12.0), code=MASS),
         Detection2D("other", 0.25, (0.0, 0.0, 24.0, 32.0))]


@pytest.fixture(scope="module")
def mammo(tmp_path_factory):
    return write_mammo_series(tmp_path_factory.mktemp("mg"), n_images=4, rows=32, cols=24, seed=2)


def _errors(path: Path) -> list[str]:
    messages = dciodvfy_messages(path)
    if messages is None:  # dciodvfy is installed by `make test` (Debian dicom3tools)
        pytest.skip("dciodvfy not installed")
    return [m for m in messages if m.startswith("Error")]


def test_synthetic_mammograms_have_realistic_tags_and_no_patient_geometry(mammo):
    datasets = [pydicom.dcmread(p) for p in mammo.paths]
    assert [(ds.ImageLaterality, ds.ViewPosition) for ds in datasets] == [("R", "CC"), ("L", "CC"), ("R", "MLO"),
                                                                          ("L", "MLO")]
    assert {ds.SOPClassUID for ds in datasets} == {MG_IMAGE_STORAGE} and {ds.Modality for ds in datasets} == {"MG"}
    assert len({ds.SOPInstanceUID for ds in datasets}) == 4 and len({ds.SeriesInstanceUID for ds in datasets}) == 1
    for ds, stored in zip(datasets, mammo.pixels):
        assert not {"ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID"} & set(ds.dir())
        np.testing.assert_array_equal(ds.pixel_array, stored)
    assert pixel_spacing_mm(datasets[0]) == (0.1, 0.1)  # ImagerPixelSpacing: mammograms' own spacing
    for path in mammo.paths[:1]:
        assert _errors(path) == []


def test_sr_2d_regions_reference_the_image_and_dciodvfy_accepts_it(tmp_path, mammo):
    source = pydicom.dcmread(mammo.paths[1])
    path = write_detection_sr_2d(source, FOUND, tmp_path / "sr.dcm", model_name="gt", model_version="2")
    assert _errors(path) == []
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert (sr.StudyInstanceUID, sr.PatientID) == (source.StudyInstanceUID, source.PatientID)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["mass #1", "other #2"]
    assert [g.finding_type.value for g in groups] == ["4147007", "404684003"]  # the detection's code, else Finding
    for group, det in zip(groups, FOUND):
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        x0, y0, x1, y1 = det.box  # pixel coordinates (column, row), closed rectangle
        np.testing.assert_allclose(group.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        source_ref = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        assert (source_ref.ReferencedSOPInstanceUID, source_ref.ReferencedSOPClassUID) == (
            source.SOPInstanceUID, source.SOPClassUID)
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        assert measured == {"Certainty of Finding": pytest.approx(det.score)}
    assert "ImageRegion3D" not in repr(type(groups[0].roi))


def test_sr_2d_uids_are_deterministic_and_depend_on_the_image(tmp_path, mammo):
    first, second = (pydicom.dcmread(p) for p in mammo.paths[:2])
    a = pydicom.dcmread(write_detection_sr_2d(first, FOUND, tmp_path / "a.dcm", model_name="m", model_version="1"))
    b = pydicom.dcmread(write_detection_sr_2d(first, FOUND, tmp_path / "b.dcm", model_name="m", model_version="1"))
    c = pydicom.dcmread(write_detection_sr_2d(second, FOUND, tmp_path / "c.dcm", model_name="m", model_version="1"))
    assert (a.SOPInstanceUID, a.SeriesInstanceUID) == (b.SOPInstanceUID, b.SeriesInstanceUID)
    assert a.SOPInstanceUID != c.SOPInstanceUID


def test_sr_2d_with_absent_type2_patient_tags_and_monochrome1_dx(tmp_path):
    assert _errors(write_mammo_series(tmp_path / "ok", n_images=1, rows=20, cols=16, modality="DX").paths[0]) == []
    dx = write_mammo_series(tmp_path / "dx", n_images=1, rows=20, cols=16, modality="DX", photometric="MONOCHROME1",
                            drop_tags=("PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber"))
    source = pydicom.dcmread(dx.paths[0])
    path = write_detection_sr_2d(source, FOUND[:1], tmp_path / "sr.dcm", model_name="m", model_version="1")
    assert _errors(path) == []
    assert "PatientBirthDate" not in source  # the caller's dataset is not changed
    assert pydicom.dcmread(path).PatientBirthDate == ""


@pytest.mark.parametrize("change, detections, match", [
    ("FrameOfReferenceUID", FOUND, None),  # not needed: written fine
    ("SOPInstanceUID", FOUND, "SOPInstanceUID missing"),
    (None, [], "no detections"),
    (None, [Detection2D("mass", 0.5, (20.0, 1.0, 25.0, 5.0))], "outside the image"),
])
def test_sr_2d_bad_input(tmp_path, mammo, change, detections, match):
    source = pydicom.dcmread(mammo.paths[0])
    if change is not None and change in source:
        delattr(source, change)
    if match is None:
        assert write_detection_sr_2d(source, detections, tmp_path / "ok.dcm", model_name="m", model_version="1")
        return
    with pytest.raises(ValueError, match=match):
        write_detection_sr_2d(source, detections, tmp_path / "x.dcm", model_name="m", model_version="1")
    assert not (tmp_path / "x.dcm").exists()


def test_problems_name_tags_and_multiframe():
    ds = pydicom.Dataset()
    ds.NumberOfFrames = 3
    problems = source_problems_2d(ds)
    assert "Modality missing" in problems and any("NumberOfFrames is 3" in p for p in problems)


def test_detection_2d_validates_its_box():
    with pytest.raises(ValueError, match="x1 > x0"):
        Detection2D("a", 0.5, (5.0, 0.0, 5.0, 3.0))
    with pytest.raises(ValueError, match="4 finite"):
        Detection2D("a", 0.5, (0.0, 0.0, float("nan"), 3.0))


def test_sidecars_2d(tmp_path, mammo):
    source = pydicom.dcmread(mammo.paths[2], stop_before_pixels=True)
    json_path, csv_path = write_detection_sidecars_2d(FOUND, tmp_path, dataset=source, model_name="m",
                                                      model_version="3")
    document = json.loads(json_path.read_text())
    assert (document["sop_instance_uid"], document["rows"], document["columns"]) == (source.SOPInstanceUID, 32, 24)
    assert [[r[k] for k in ("x0", "y0", "x1", "y1")] for r in document["detections"]] == [list(d.box) for d in FOUND]
    assert document["detections"][0]["width_mm"] == pytest.approx(0.8)  # 8 columns of 0.1 mm
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["label"], float(r["score"]), r["code_value"]) for r in rows] == [("mass", 0.9, "4147007"),
                                                                               ("other", 0.25, "404684003")]
    empty_json, _ = write_detection_sidecars_2d([], tmp_path / "none", dataset=source, model_name="m",
                                                model_version="3")
    assert json.loads(empty_json.read_text())["detections"] == []


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 22), st.integers(0, 30), st.integers(1, 8), st.integers(1, 8),
                          st.floats(0.0, 1.0)), min_size=1, max_size=4))
def test_any_boxes_inside_the_image_round_trip(tmp_path_factory, boxes):
    folder = tmp_path_factory.mktemp("prop")
    source = pydicom.dcmread(write_mammo_series(folder, n_images=1, rows=32, cols=24).paths[0])
    found = [Detection2D("mass", s, (x, y, min(x + w, 24), min(y + h, 32))) for x, y, w, h, s in boxes]
    sr = hd.sr.srread(write_detection_sr_2d(source, found, folder / "sr.dcm", model_name="m", model_version="1"))
    groups = sr.content.get_planar_roi_measurement_groups()
    np.testing.assert_allclose([g.roi.value[[0, 2]].ravel() for g in groups], [d.box for d in found], atol=1e-4)
