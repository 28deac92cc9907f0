# SPDX-License-Identifier: Apache-2.0
"""Detection SR and sidecars: box geometry in patient mm (axial and oblique), TID 1500 content read back with
highdicom, deterministic tracking UIDs, atomic writes, dciodvfy-clean files, and sidecars that match."""

from __future__ import annotations

import copy
import csv
import json
import logging
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from medkd.data.synthetic_dicom import write_dicom_series  # noqa: E402
from medkd.io.dicom_seg import dciodvfy_messages  # noqa: E402
from medkd.io.dicom_sr import (  # noqa: E402
    Detection,
    box_centre_lps,
    box_corners_lps,
    box_diameter_mm,
    write_detection_sidecars,
    write_detection_sr,
)

ORIGIN, SPACING, DZ = np.array([-12.0, -14.0, 30.0]), (0.8, 0.7), 2.5  # PixelSpacing = (row spacing, col spacing)
MODEL = {"model_name": "tiny_det", "model_version": "0.4"}


def assert_dciodvfy_clean(path: Path) -> None:
    """No ``Error`` lines from dciodvfy (warnings allowed, printed on failure); skip when it is not installed."""
    messages = dciodvfy_messages(path)
    if messages is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; `make test` installs it)")
    assert not [m for m in messages if m.startswith("Error")], "dciodvfy errors:\n" + "\n".join(messages)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    synthetic = write_dicom_series(tmp_path_factory.mktemp("src"), n_slices=5, rows=12, cols=10,
                                   pixel_spacing=SPACING, slice_spacing=DZ, origin=tuple(ORIGIN))  # fmt: skip
    datasets = sorted([pydicom.dcmread(p) for p in synthetic.paths], key=lambda ds: float(ds.ImagePositionPatient[2]))
    return synthetic, datasets


def expected_lps(index_zyx) -> np.ndarray:
    """Hand-written axial mapping: x along columns (col spacing), y along rows (row spacing), z along slices."""
    z, y, x = index_zyx
    return ORIGIN + np.array([x * SPACING[1], y * SPACING[0], z * DZ])


DETECTIONS = [
    Detection("nodule", 0.91, (1, 2, 3, 4, 10, 9), ("SCT", "27925004", "Nodule")),
    Detection("spot", 0.25, (0, 0, 0, 1, 1, 1)),
]


@pytest.mark.parametrize(
    "box, centre_index",
    [
        ((0, 0, 0, 1, 1, 1), (0, 0, 0)),
        ((1, 2, 3, 4, 10, 9), (2, 5.5, 5.5)),
        ((0.5, 1.25, 2, 2.5, 3.25, 6), (1, 1.75, 3.5)),
    ],
)
def test_box_centre_axial(series, box, centre_index):
    _, datasets = series
    np.testing.assert_allclose(box_centre_lps(datasets, box), expected_lps(centre_index), atol=1e-9)
    start, end = box_corners_lps(datasets, box)
    np.testing.assert_allclose(start, expected_lps(np.asarray(box[:3]) - 0.5), atol=1e-9)
    np.testing.assert_allclose(end, expected_lps(np.asarray(box[3:]) - 0.5), atol=1e-9)


def test_box_diameter_is_largest_extent(series):
    _, datasets = series
    assert box_diameter_mm(datasets, (1, 2, 3, 4, 10, 9)) == pytest.approx(max(3 * DZ, 8 * SPACING[0], 6 * SPACING[1]))
    assert box_diameter_mm(datasets, (0, 0, 0, 1, 20, 1)) == pytest.approx(20 * SPACING[0])


def test_oblique_series_rotates_with_the_patient(series):
    """Rotating every position and orientation rotates the box centre and corners the same way."""
    _, datasets = series
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    rotated = []
    for ds in datasets:
        copy_ = copy.deepcopy(ds)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        copy_.ImageOrientationPatient = [*(rotation @ iop[:3]), *(rotation @ iop[3:])]
        copy_.ImagePositionPatient = list(rotation @ np.asarray(ds.ImagePositionPatient, float))
        rotated.append(copy_)
    box = (1, 2, 3, 4, 10, 9)
    np.testing.assert_allclose(box_centre_lps(rotated, box), rotation @ box_centre_lps(datasets, box), atol=1e-9)
    for turned, straight in zip(box_corners_lps(rotated, box), box_corners_lps(datasets, box)):
        np.testing.assert_allclose(turned, rotation @ straight, atol=1e-9)
    assert box_diameter_mm(rotated, box) == pytest.approx(box_diameter_mm(datasets, box))


def test_single_slice_steps_along_the_normal(series):
    _, datasets = series
    np.testing.assert_allclose(box_centre_lps(datasets[:1], (0, 0, 0, 2, 1, 1)), expected_lps((0.5, 0, 0)))


@pytest.mark.parametrize(
    "box, score, match",
    [((0, 0, 0, 1, 1), 0.5, "6 finite"), ((0, 0, 0, 1, 1, float("nan")), 0.5, "6 finite"),
     ((2, 0, 0, 2, 1, 1), 0.5, "z1 > z0"), ((0, 0, 0, 1, 1, 1), float("inf"), "score")],
)  # fmt: skip
def test_bad_detection_raises(box, score, match):
    with pytest.raises(ValueError, match=match):
        Detection("x", score, box)


def test_sr_round_trip(tmp_path, series):
    synthetic, datasets = series
    entropy = [synthetic.series_uid, "tiny_det", "0.4", "sha", "sr"]
    path = write_detection_sr(datasets, DETECTIONS, tmp_path / "sr.dcm", uid_entropy=entropy, **MODEL)
    assert path == tmp_path / "sr.dcm" and sorted(p.name for p in tmp_path.iterdir()) == ["sr.dcm"]
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert "research use only" in sr.SeriesDescription and sr.Manufacturer == "medkd"
    assert sr.StudyInstanceUID == synthetic.study_uid and sr.PatientID == datasets[0].PatientID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [item.SeriesInstanceUID for item in evidence] == [synthetic.series_uid]
    assert {i.ReferencedSOPInstanceUID for i in evidence[0].ReferencedSOPSequence} == {
        ds.SOPInstanceUID for ds in datasets
    }
    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(DETECTIONS)
    assert [g.tracking_identifier for g in groups] == ["nodule #1", "spot #2"]
    assert len({g.tracking_uid for g in groups}) == 2
    for group, detection in zip(groups, DETECTIONS):
        assert group.roi.graphic_type.value == "POINT"
        assert group.roi.ReferencedFrameOfReferenceUID == synthetic.frame_of_reference_uid
        centre = np.asarray(group.roi.value, dtype=float).reshape(3)  # stored as float32 (FL)
        np.testing.assert_allclose(centre, box_centre_lps(datasets, detection.box), atol=1e-4)
        np.testing.assert_allclose(centre, expected_lps(np.add(detection.box[:3], detection.box[3:]) / 2 - 0.5),
                                   atol=1e-4)  # fmt: skip
        assert group.finding_type.value == (detection.code or ("SCT", "404684003"))[1]
        measured = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        assert measured["Certainty of Finding"] == (pytest.approx(detection.score), "1")
        assert measured["Diameter"] == (pytest.approx(box_diameter_mm(datasets, detection.box)), "mm")
    again = hd.sr.srread(write_detection_sr(datasets, DETECTIONS, tmp_path / "again.dcm", uid_entropy=entropy,
                                            **MODEL))  # fmt: skip
    assert again.SOPInstanceUID == sr.SOPInstanceUID
    assert [g.tracking_uid for g in again.content.get_planar_roi_measurement_groups()] == [
        g.tracking_uid for g in groups
    ]
    assert_dciodvfy_clean(path)


def test_sr_refuses_no_detections_and_failed_writes(tmp_path, series, monkeypatch):
    _, datasets = series
    with pytest.raises(ValueError, match="no detections"):
        write_detection_sr(datasets, [], tmp_path / "sr.dcm", uid_entropy=["a"], **MODEL)

    def failing_dcmwrite(filename, dataset, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom, "dcmwrite", failing_dcmwrite)
    with pytest.raises(OSError, match="disk full"):
        write_detection_sr(datasets, DETECTIONS, tmp_path / "sr.dcm", uid_entropy=["a"], **MODEL)
    assert list(tmp_path.iterdir()) == []


def test_sidecars(tmp_path, series):
    synthetic, datasets = series
    json_path, csv_path = write_detection_sidecars(DETECTIONS, tmp_path / "out", datasets=datasets, **MODEL)
    assert (json_path.name, csv_path.name) == ("detections.json", "detections.csv")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.csv", "detections.json"]
    document = json.loads(json_path.read_text())
    assert (document["study_uid"], document["series_uid"]) == (synthetic.study_uid, synthetic.series_uid)
    assert document["model"] == {"name": "tiny_det", "version": "0.4"}
    records = document["detections"]
    assert [r["label"] for r in records] == ["nodule", "spot"] and [r["score"] for r in records] == [0.91, 0.25]
    first = records[0]
    assert [first[k] for k in ("z0", "y0", "x0", "z1", "y1", "x1")] == [1, 2, 3, 4, 10, 9]
    np.testing.assert_allclose([first[f"centre_lps_{a}"] for a in "xyz"], expected_lps((2, 5.5, 5.5)))
    np.testing.assert_allclose([first[f"start_lps_{a}"] for a in "xyz"], expected_lps((0.5, 1.5, 2.5)))
    np.testing.assert_allclose([first[f"end_lps_{a}"] for a in "xyz"], expected_lps((3.5, 9.5, 8.5)))
    assert first["code_value"] == "27925004" and records[1]["code_meaning"] == "Finding"
    assert first["centre_sop_instance_uid"] == datasets[first["centre_slice"]].SOPInstanceUID
    assert first["centre_slice"] == 2
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["series_uid"] == synthetic.series_uid and rows[1]["tracking_id"] == "spot #2"
    for row, record in zip(rows, records):
        assert float(row["diameter_mm"]) == pytest.approx(record["diameter_mm"])
        assert float(row["centre_lps_z"]) == pytest.approx(record["centre_lps_z"])

    json_path, csv_path = write_detection_sidecars([], tmp_path / "out", datasets=datasets, **MODEL)
    assert json.loads(json_path.read_text())["detections"] == []
    assert csv_path.read_text().count("\n") == 1 and csv_path.read_text().startswith("study_uid,series_uid")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.csv", "detections.json"]


# ------------------------------------------------------------------------------------------- patient data (issue 8)


@pytest.mark.parametrize("keyword, value", [("PatientBirthDate", "1945-03-17"), ("PatientSex", "Female"),
                                            ("StudyDate", "2024-01-02"), ("AccessionNumber", "ACC-" + "7" * 20)])
def test_invalid_patient_values_are_written_empty_and_never_quoted(tmp_path, series, caplog, keyword, value):
    """An invalid type 2 value made highdicom fail with the value in its message; now it is written empty."""
    _, datasets = series
    hostile = [copy.deepcopy(ds) for ds in datasets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ds in hostile:
            setattr(ds, keyword, value)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    path = write_detection_sr(hostile, DETECTIONS, tmp_path / "sr.dcm", uid_entropy=["a", "sr"], **MODEL)
    sr = hd.sr.srread(path)
    assert sr[keyword].value in ("", None) and value.encode() not in path.read_bytes()
    assert len(sr.content.get_planar_roi_measurement_groups()) == len(DETECTIONS)
    assert f"DICOM SR: source {keyword} " in caplog.text and "in 5 of 5 images: written empty" in caplog.text
    assert value not in caplog.text and all(str(getattr(ds, keyword)) == value for ds in hostile)


def test_unexpected_errors_are_redacted(tmp_path, series, monkeypatch):
    _, datasets = series

    def failing(**kwargs):
        raise ValueError(f"cannot handle {kwargs['evidence'][0].AccessionNumber!r}")

    monkeypatch.setattr(hd.sr, "Comprehensive3DSR", failing)
    with pytest.raises(ValueError) as info:
        write_detection_sr(datasets, DETECTIONS, tmp_path / "sr.dcm", uid_entropy=["a"], **MODEL)
    assert str(info.value) == ("cannot write the DICOM SR: ValueError: cannot handle '<redacted>' "
                               "[redacted: values of AccessionNumber]")  # fmt: skip
    assert "ACC0001" not in "".join(traceback.format_exception(info.value))
    assert list(tmp_path.iterdir()) == []
