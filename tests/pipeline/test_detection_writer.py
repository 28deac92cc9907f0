# SPDX-License-Identifier: Apache-2.0
"""Detection models through the DICOM batch runner (issue 9, item 3): the ``detection`` writer found by kind writes a
TID 1500 SR that highdicom reads back and dciodvfy accepts, plus the ``detections.json``/``.csv`` sidecars."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import Predictor
from medkd.errors import ConfigError
from medkd.io.dicom_seg import dciodvfy_messages
from medkd.io.labels import LabelInfo
from medkd.pipeline import OUTPUT_WRITERS, PipelineConfig, run_pipeline
from medkd.pipeline.writers.detection import detections_from_output

hd = pytest.importorskip("highdicom")

NODULE = LabelInfo(value=1, name="nodule", code=("SCT", "27925004", "Nodule"))
#: (x_min, y_min, z_min, x_max, y_max, z_max) voxels, as the detection kind returns them; the last has no x extent
BOXES = np.array([[2.0, 3.0, 1.0, 10.0, 12.0, 4.0], [4.0, 2.0, 0.0, 8.0, 6.0, 2.0], [5.0, 5.0, 2.0, 5.0, 9.0, 3.0]])
SCORES = np.array([0.9, 0.4, 0.7])
CLASSES = np.array([1, 7, 1])
#: box centres in LPS mm on the series below (origin 0, 1 mm pixels, 2 mm slices, axial): x = col, y = row, z = 2 slice
CENTRES = [(5.5, 7.0, 4.0), (5.5, 3.5, 1.0)]
EVERY_CT = PipelineConfig(name="det", selection=[{"name": "ct", "conditions": {"Modality": "(?i)^CT$"}}])


def detector(boxes: np.ndarray = BOXES, scores: np.ndarray = SCORES, classes: np.ndarray = CLASSES) -> Predictor:
    """A model-free detector returning fixed boxes, so the runner and writer are tested without a network."""
    return Predictor(kind="detection", name="boxer", version="1", weights_sha256="0" * 64, labels=[NODULE],
                     run=lambda volume: {"boxes": boxes, "scores": scores, "labels": classes}, source=Path("."))


@pytest.fixture
def ct(tmp_path: Path):
    """One synthetic axial CT series, 6 slices of 24 x 20, files in shuffled order."""
    return write_dicom_series(tmp_path / "in" / "ct", n_slices=6, rows=24, cols=20, origin=(0, 0, 0),
                              pixel_spacing=(1, 1), slice_spacing=2, seed=3)


def _run(tmp_path: Path, cfg: PipelineConfig = EVERY_CT, predictor: Predictor | None = None, out: str = "out"):
    return run_pipeline(cfg, tmp_path / "in", tmp_path / out, workers=0, progress=False,
                        predictor=predictor or detector())


def test_detection_writer_is_registered_by_kind():
    assert {"segmentation", "detection"} <= set(OUTPUT_WRITERS.list())
    assert OUTPUT_WRITERS.meta("detection")["blocks"] == ("sr",)


def test_detections_through_the_runner_write_sr_and_sidecars(tmp_path, ct):
    summary = _run(tmp_path)
    [row] = [r for r in summary.rows if r.kind == "series"]
    assert (row.status, row.reason) == ("processed", ""), row.message
    folder = tmp_path / "out" / ct.study_uid / ct.series_uid
    assert sorted(p.name for p in folder.iterdir()) == ["detections.csv", "detections.json", "done.json",
                                                        "result.json", "sr.dcm"]
    assert sorted(row.outputs) == sorted(f"{ct.study_uid}/{ct.series_uid}/{n}" for n in
                                         ("detections.csv", "detections.json", "result.json", "sr.dcm"))

    sr = hd.sr.srread(folder / "sr.dcm")
    assert isinstance(sr, hd.sr.Comprehensive3DSR) and sr.StudyInstanceUID == ct.study_uid
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert [item.SeriesInstanceUID for item in evidence] == [ct.series_uid]
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["nodule #1", "class 7 #2"]  # the empty box is dropped
    assert [g.finding_type.value for g in groups] == ["27925004", "404684003"]  # the label's code, else "Finding"
    for group, centre, score in zip(groups, CENTRES, SCORES[:2]):
        np.testing.assert_allclose(np.asarray(group.roi.value, dtype=float).reshape(3), centre, atol=1e-4)
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        assert measured["Certainty of Finding"] == pytest.approx(score)
    messages = dciodvfy_messages(folder / "sr.dcm")
    if messages is not None:  # dciodvfy is installed by `make test` (Debian dicom3tools)
        assert not [m for m in messages if m.startswith("Error")], "\n".join(messages)

    sidecar = json.loads((folder / "detections.json").read_text())
    assert sidecar["series_uid"] == ct.series_uid and sidecar["model"] == {"name": "boxer", "version": "1"}
    records = sidecar["detections"]
    assert [r["label"] for r in records] == ["nodule", "class 7"]
    assert [[r[k] for k in ("z0", "y0", "x0", "z1", "y1", "x1")] for r in records] == [
        [1.0, 3.0, 2.0, 4.0, 12.0, 10.0], [0.0, 2.0, 4.0, 2.0, 6.0, 8.0]]
    np.testing.assert_allclose([[r[f"centre_lps_{a}"] for a in "xyz"] for r in records], CENTRES, atol=1e-6)
    with open(folder / "detections.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["label"], float(r["score"])) for r in table] == [("nodule", 0.9), ("class 7", 0.4)]

    result = json.loads((folder / "result.json").read_text())
    assert result["detections"] == {"count": 2, "by_label": {"class 7": 1, "nodule": 1}, "dropped_empty_boxes": 1,
                                    "sr": "sr.dcm"}
    assert result["model"]["kind"] == "detection"
    assert "Synthetic^Phantom" not in (tmp_path / "out" / "medkd.log").read_text()


def test_sr_uids_are_deterministic_and_reruns_skip(tmp_path, ct):
    _run(tmp_path)
    sr = tmp_path / "out" / ct.study_uid / ct.series_uid / "sr.dcm"
    first = pydicom.dcmread(sr)
    again = _run(tmp_path)
    assert [r.status for r in again.rows if r.kind == "series"] == ["unchanged"]
    _run(tmp_path, out="other")
    second = pydicom.dcmread(tmp_path / "other" / ct.study_uid / ct.series_uid / "sr.dcm")
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (second.SOPInstanceUID, second.SeriesInstanceUID)


def test_sr_block_switches_the_sr_off_and_no_detections_write_only_sidecars(tmp_path, ct):
    off = PipelineConfig(name="det", selection=EVERY_CT.selection, outputs={"sr": {"enabled": False}})
    _run(tmp_path, off)
    folder = tmp_path / "out" / ct.study_uid / ct.series_uid
    assert sorted(p.name for p in folder.iterdir()) == ["detections.csv", "detections.json", "done.json",
                                                        "result.json"]
    assert json.loads((folder / "result.json").read_text())["detections"]["sr"].startswith("disabled")
    # switching the SR back on is a different fingerprint: the series is redone, not "unchanged"
    assert [r.status for r in _run(tmp_path).rows if r.kind == "series"] == ["processed"]
    assert (folder / "sr.dcm").is_file()

    empty = detector(np.zeros((0, 6)), np.zeros(0), np.zeros(0, np.int64))
    _run(tmp_path, predictor=empty, out="empty")
    folder = tmp_path / "empty" / ct.study_uid / ct.series_uid
    assert "sr.dcm" not in {p.name for p in folder.iterdir()}
    assert json.loads((folder / "detections.json").read_text())["detections"] == []
    assert json.loads((folder / "result.json").read_text())["detections"]["count"] == 0


def test_output_outside_the_kind_contract_is_a_model_error(tmp_path, ct):
    outside = detector(np.array([[0.0, 0.0, 0.0, 30.0, 5.0, 2.0]]), np.array([0.5]), np.array([1]))  # x > 20 cols
    [row] = [r for r in _run(tmp_path, predictor=outside).rows if r.kind == "series"]
    assert (row.status, row.reason) == ("failed", "model_error") and "inside" in row.message


def test_a_kind_without_a_writer_is_a_config_error(tmp_path, ct):
    forecaster = Predictor(kind="forecasting", name="fc", version="1", weights_sha256="0" * 64, labels=[],
                           run=lambda frames: {"phase": np.zeros(len(frames))}, source=Path("."))
    with pytest.raises(ConfigError, match=r"'forecasting' model; pipelines write outputs for detection, segmentation"):
        _run(tmp_path, predictor=forecaster)


@pytest.mark.parametrize("output, match", [
    ({"boxes": np.zeros((1, 4)), "scores": np.zeros(1), "labels": np.zeros(1)}, r"boxes \(N, 6\)"),
    ({"boxes": np.zeros((2, 6)), "scores": np.zeros(1), "labels": np.zeros(2)}, "scores and labels"),
    ({"boxes": np.zeros((1, 6))}, "'boxes', 'scores' and 'labels'"),
])
def test_detections_from_bad_output_raise(output, match):
    with pytest.raises(ValueError, match=match):
        detections_from_output(output, [NODULE])
