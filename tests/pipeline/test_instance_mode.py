# SPDX-License-Identifier: Apache-2.0
"""Per-instance DICOM pipelines (issue 10, item 6): ``unit: instance`` runs a detection model on every selected 2D
image (mammography MG, DX) and writes, per image, a DICOM SR dciodvfy accepts plus ``detections.json``/``.csv`` in
``OUT/<study>/<series>/<SOPInstanceUID>/``, with a report row per image; resumable; bad files skipped and reported."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.data.synthetic_dicom import write_dicom_series, write_mammo_series
from medkd.errors import ConfigError
from medkd.inference import Predictor
from medkd.io.dicom_seg import dciodvfy_messages
from medkd.io.labels import LabelInfo
from medkd.pipeline import PipelineConfig, load_pipeline, run_pipeline

hd = pytest.importorskip("highdicom")

REPO = Path(__file__).resolve().parents[2]
MASS = LabelInfo(value=1, name="mass", code=("SCT", "4147007", "Mass"))
MG_RULE = [{"name": "mg", "conditions": {"Modality": "(?i)^MG$"}}]
ROWS, COLS = 40, 32


def box_for(image: np.ndarray) -> list[float]:
    """The fake model's box: from column 1, row 2 to half the width and height (so it depends on the image)."""
    return [1.0, 2.0, image.shape[1] / 2, image.shape[0] / 2]


def detector(seen: list | None = None, fail_on: float | None = None) -> Predictor:
    """A model-free detection predictor: one box per image with label 1 ("mass"); records the images it gets."""

    def run(image: np.ndarray) -> dict:
        if seen is not None:
            seen.append(image.copy())
        if fail_on is not None and image.max() == fail_on:
            raise RuntimeError("model broke on this image")
        return {"boxes": np.array([box_for(image)], np.float32), "scores": np.array([0.75], np.float32),
                "labels": np.array([1])}

    return Predictor(kind="detection", name="boxer2d", version="1", weights_sha256="0" * 64, labels=[MASS], run=run,
                     source=Path("."))


@pytest.fixture
def tree(tmp_path: Path):
    """4 MG images (one series), a 3-slice CT series that must not be selected, and a broken file."""
    mg = write_mammo_series(tmp_path / "in" / "mg", n_images=4, rows=ROWS, cols=COLS, seed=1)
    ct = write_dicom_series(tmp_path / "in" / "ct", n_slices=3, rows=8, cols=8, seed=1)
    (tmp_path / "in" / "broken.dcm").write_bytes(b"DICM" + b"\x00" * 10)
    return mg, ct


def _run(tmp_path: Path, cfg: PipelineConfig | None = None, predictor: Predictor | None = None, out: str = "out",
         **kwargs):
    cfg = cfg or PipelineConfig(name="mammo", unit="instance", selection=MG_RULE)
    return run_pipeline(cfg, tmp_path / "in", tmp_path / out, workers=kwargs.pop("workers", 0), progress=False,
                        predictor=predictor or detector(), **kwargs)


def _rows(summary, kind: str) -> list:
    return [r for r in summary.rows if r.kind == kind]


def test_one_sr_per_image_with_sidecars_and_report_rows(tmp_path, tree):
    mg, ct = tree
    seen: list = []
    summary = _run(tmp_path, predictor=detector(seen))
    images = _rows(summary, "instance")
    assert sorted(r.sop_uid for r in images) == sorted(mg.sop_uids)
    assert {(r.status, r.reason) for r in images} == {("processed", "")}, [r.message for r in images]
    assert [(r.status, r.reason, r.series_uid) for r in _rows(summary, "series")] == [
        ("skipped", "not_selected", ct.series_uid)]  # one row for the CT series, not one per slice
    files = {r.path: r for r in _rows(summary, "file")}
    assert (files["broken.dcm"].status, files["broken.dcm"].reason) == ("skipped", "not_dicom")
    assert {files[f"mg/{p.name}"].status for p in mg.paths} == {"processed"}
    assert {files[f"ct/{p.name}"].reason for p in ct.paths} == {"not_selected"}
    assert "images: 4 processed" in summary.line()

    # the model got float32 (rows, cols) images: the stored values (MONOCHROME2, rescale 1/0)
    assert len(seen) == 4 and all(a.dtype == np.float32 and a.shape == (ROWS, COLS) for a in seen)
    assert sorted(float(a.sum()) for a in seen) == sorted(float(p.sum()) for p in mg.pixels.astype(np.float32))

    for sop, path in zip(mg.sop_uids, mg.paths):
        folder = tmp_path / "out" / mg.study_uid / mg.series_uid / sop
        assert sorted(p.name for p in folder.iterdir()) == ["detections.csv", "detections.json", "done.json",
                                                            "result.json", "sr.dcm"]
        messages = dciodvfy_messages(folder / "sr.dcm")
        if messages is not None:  # dciodvfy is installed by `make test` (Debian dicom3tools)
            assert not [m for m in messages if m.startswith("Error")], "\n".join(messages)
        sr = hd.sr.srread(folder / "sr.dcm")
        [group] = sr.content.get_planar_roi_measurement_groups()
        x0, y0, x1, y1 = box_for(np.zeros((ROWS, COLS)))
        np.testing.assert_allclose(group.roi.value, [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        assert group.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop
        assert group.finding_type.value == "4147007" and group.tracking_identifier == "mass #1"
        assert sr.StudyInstanceUID == mg.study_uid
        sidecar = json.loads((folder / "detections.json").read_text())
        assert sidecar["sop_instance_uid"] == sop
        assert [[d[k] for k in ("x0", "y0", "x1", "y1")] for d in sidecar["detections"]] == [[x0, y0, x1, y1]]
        with open(folder / "detections.csv", newline="") as fh:
            [record] = list(csv.DictReader(fh))
        assert (record["label"], float(record["score"]), float(record["x1"])) == ("mass", 0.75, x1)
        result = json.loads((folder / "result.json").read_text())
        assert result["sop_instance_uid"] == sop and result["shape"] == [ROWS, COLS]
        assert result["detections"]["sr"] == "sr.dcm"
    report = json.loads(summary.report_json.read_text())
    assert sum(r["kind"] == "instance" and r["status"] == "processed" for r in report) == 4
    with open(summary.report_csv, newline="") as fh:
        assert {r["sop_uid"] for r in csv.DictReader(fh) if r["kind"] == "instance"} == set(mg.sop_uids)
    assert not (tmp_path / "out" / ".work").exists()
    assert "Synthetic^Mammo" not in (tmp_path / "out" / "medkd.log").read_text()


def test_reruns_skip_done_images_and_redo_missing_ones(tmp_path, tree):
    mg, _ = tree
    _run(tmp_path)
    first = pydicom.dcmread(tmp_path / "out" / mg.study_uid / mg.series_uid / mg.sop_uids[0] / "sr.dcm")
    again = _run(tmp_path)
    assert [r.status for r in _rows(again, "instance")] == ["unchanged"] * 4
    assert all(r.outputs for r in _rows(again, "instance"))
    # one image's outputs gone (or an interrupted run): only that image is redone
    import shutil

    shutil.rmtree(tmp_path / "out" / mg.study_uid / mg.series_uid / mg.sop_uids[2])
    third = _run(tmp_path)
    status = {r.sop_uid: r.status for r in _rows(third, "instance")}
    assert status == {uid: "processed" if uid == mg.sop_uids[2] else "unchanged" for uid in mg.sop_uids}
    redone = pydicom.dcmread(tmp_path / "out" / mg.study_uid / mg.series_uid / mg.sop_uids[0] / "sr.dcm")
    assert [r.status for r in _rows(_run(tmp_path, overwrite=True), "instance")] == ["processed"] * 4
    assert first.SOPInstanceUID == redone.SOPInstanceUID  # deterministic UIDs


def test_rules_are_checked_on_each_image_and_bad_images_are_skipped(tmp_path, tree):
    mg, _ = tree
    data = mg.paths[3].read_bytes()
    mg.paths[3].write_bytes(data[: len(data) - 500])  # the L MLO image cut short
    cc = [{"name": "cc", "conditions": {"Modality": "MG", "ViewPosition": "^(CC|MLO)$", "ImageLaterality": "L"}}]
    summary = _run(tmp_path, PipelineConfig(name="left", unit="instance", selection=cc))
    outcome = {r.sop_uid: (r.status, r.reason) for r in _rows(summary, "instance")}
    assert outcome == {mg.sop_uids[0]: ("skipped", "not_selected"), mg.sop_uids[1]: ("processed", ""),
                       mg.sop_uids[2]: ("skipped", "not_selected"), mg.sop_uids[3]: ("skipped", "truncated")}
    assert (tmp_path / "out" / mg.study_uid / mg.series_uid / mg.sop_uids[1] / "sr.dcm").is_file()
    assert not (tmp_path / "out" / mg.study_uid / mg.series_uid / mg.sop_uids[3]).exists()


def test_model_errors_fail_one_image_only(tmp_path, tree):
    mg, _ = tree
    summary = _run(tmp_path, predictor=detector(fail_on=float(mg.pixels[1].max())))
    outcome = {r.sop_uid: (r.status, r.reason) for r in _rows(summary, "instance")}
    assert outcome[mg.sop_uids[1]] == ("failed", "model_error")
    assert sum(v == ("processed", "") for v in outcome.values()) == 3


def test_monochrome1_images_reach_the_model_inverted(tmp_path):
    dx = write_mammo_series(tmp_path / "in" / "dx", n_images=1, rows=12, cols=10, modality="DX",
                            photometric="MONOCHROME1")
    seen: list = []
    cfg = PipelineConfig(name="dx", unit="instance", selection=[{"name": "dx", "conditions": {"Modality": "DX"}}])
    summary = _run(tmp_path, cfg, detector(seen))
    assert [r.status for r in _rows(summary, "instance")] == ["processed"]
    stored = dx.pixels[0].astype(np.float32)
    np.testing.assert_array_equal(seen[0], stored.max() + stored.min() - stored)


def test_decoding_in_worker_processes(tmp_path, tree):
    summary = _run(tmp_path, workers=1)
    assert [r.status for r in _rows(summary, "instance")] == ["processed"] * 4


def test_series_mode_is_unchanged_for_projection_images(tmp_path, tree):
    """``unit: series`` (the default) still treats the MG series as a volume, which it is not: skipped, not a crash."""
    summary = _run(tmp_path, PipelineConfig(name="mammo", selection=MG_RULE))
    assert not _rows(summary, "instance")
    [row] = [r for r in _rows(summary, "series") if r.rule == "mg"]
    assert (row.status, row.reason) == ("skipped", "missing_tags")


@pytest.mark.parametrize("text, match", [
    ("unit: slices\n", "unit must be 'series'"),
    ("unit: instance\nall_matched: false\n", "all_matched"),
    ("unit: instance\nselection:\n  - {name: r, conditions: {Modality: MG}, min_slices: 2}\n", "min_slices"),
])
def test_bad_unit_settings_are_config_errors(tmp_path, text, match):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + text)
    with pytest.raises(ConfigError, match=match):
        load_pipeline(path)


def test_a_segmentation_model_cannot_run_per_image(tmp_path, tree):
    seg = Predictor(kind="segmentation", name="seg", version="1", weights_sha256="0" * 64, labels=[MASS],
                    run=lambda image: np.zeros((1, *image.shape), np.uint8), source=Path("."))
    with pytest.raises(ConfigError, match="unit: instance runs models on 2D images.*detection"):
        _run(tmp_path, predictor=seg)


def test_shipped_mammo_pipeline_selects_mg_and_dx_per_image(tmp_path, tree):
    mg, ct = tree
    write_mammo_series(tmp_path / "in" / "dx", n_images=1, rows=16, cols=12, modality="DX")
    write_mammo_series(tmp_path / "in" / "raw", n_images=1, rows=16, cols=12)  # made "for processing" below
    raw = next((tmp_path / "in" / "raw").iterdir())
    ds = pydicom.dcmread(raw)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2.1"
    ds.save_as(raw, enforce_file_format=True)
    cfg = load_pipeline(REPO / "pipelines" / "mammo_lesions.yaml")
    assert (cfg.name, cfg.unit, cfg.outputs.sr.enabled) == ("mammo_lesions", "instance", True)
    summary = _run(tmp_path, cfg)
    rules = sorted(r.rule for r in _rows(summary, "instance") if r.status == "processed")
    assert rules == ["mammo"] * 4 + ["radiograph"]
    skipped = {(r.series_uid == ct.series_uid, r.reason) for r in _rows(summary, "series")}
    assert skipped == {(True, "not_selected"), (False, "not_selected")}  # the CT and the "for processing" image
