# SPDX-License-Identifier: Apache-2.0
"""The DICOM batch runner on mixed trees: real pydicom test files, synthetic series, broken series, reruns, shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import Predictor
from medkd.errors import ConfigError, DataError
from medkd.io.labels import labels_from_names
from medkd.pipeline import PipelineConfig, in_shard, load_pipeline, parse_shard, resolve_model, run_pipeline

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
REPO = Path(__file__).resolve().parents[2]


def threshold_predictor(level: float = 150.0) -> Predictor:
    """A model-free segmenter (HU above ``level`` -> label 1) so the runner is tested without a network."""
    return Predictor(
        kind="segmentation", name="threshold", version="1", weights_sha256="0" * 64,
        labels=labels_from_names(["background", "lesion"]), run=lambda a: (a > level).astype(np.uint8),
        source=Path("."),
    )


CT_ONLY = PipelineConfig(name="test_ct", selection=[{"name": "ct", "conditions": {"Modality": "(?i)^CT$"},
                                                     "min_slices": 3}])


@pytest.fixture
def mixed_tree(tmp_path: Path) -> tuple[Path, dict[str, object]]:
    """pydicom's dicomdirtests studies, two good synthetic CT series and three broken ones, plus junk files."""
    root = tmp_path / "in"
    shutil.copytree(PYDICOM_FILES / "dicomdirtests", root / "dicomdirtests")
    good = write_dicom_series(root / "good" / "a", n_slices=6, rows=24, cols=20, seed=1)
    good2 = write_dicom_series(root / "good" / "b", n_slices=5, rows=16, cols=16, seed=2, study_uid=good.study_uid)
    jitter = write_dicom_series(root / "bad" / "jitter", n_slices=5, rows=16, cols=16, seed=3, jitter_slice=2)
    trunc = write_dicom_series(root / "bad" / "trunc", n_slices=5, rows=16, cols=16, seed=4, truncate_slice=1)
    notag = write_dicom_series(root / "bad" / "notag", n_slices=5, rows=16, cols=16, seed=5,
                               drop_tags=("FrameOfReferenceUID",))
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not dicom")
    (root / "junk" / "empty.dcm").write_bytes(b"")
    return root, {"good": good, "good2": good2, "jitter": jitter, "trunc": trunc, "notag": notag}


def _rows(summary, kind):
    return [r for r in summary.rows if r.kind == kind]


def test_mixed_tree_every_file_reported_and_good_series_written(mixed_tree, tmp_path):
    import highdicom as hd
    import SimpleITK as sitk

    root, series = mixed_tree
    out = tmp_path / "out"
    summary = run_pipeline(CT_ONLY, root, out, workers=0, predictor=threshold_predictor(), progress=False)

    all_files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert sorted(r.path for r in _rows(summary, "file")) == all_files
    by_uid = {r.series_uid: r for r in _rows(summary, "series")}
    for key in ("good", "good2"):
        assert by_uid[series[key].series_uid].status == "processed"
    assert by_uid[series["jitter"].series_uid].reason == "inconsistent_spacing"
    assert by_uid[series["trunc"].series_uid].reason == "truncated"
    assert by_uid[series["notag"].series_uid].reason == "missing_tags"
    reasons = {r.reason for r in _rows(summary, "file")}
    assert {"not_dicom", "non_image"} <= reasons
    # files of a processed series carry its status
    good_files = [r for r in _rows(summary, "file") if r.series_uid == series["good"].series_uid]
    assert len(good_files) == 6 and {r.status for r in good_files} == {"processed"}

    # the report on disk matches, and nothing half-written is left
    report = json.loads(summary.report_json.read_text())
    assert len(report) == len(summary.rows)
    assert summary.report_csv.read_text().count("\n") == len(summary.rows) + 1
    assert not (out / ".work").exists() and not list(out.rglob("*.partial"))

    good = series["good"]
    folder = out / good.study_uid / good.series_uid
    assert sorted(p.name for p in folder.iterdir()) == ["done.json", "mask.nii.gz", "result.json", "seg.dcm"]
    expected = ((good.pixels.astype(np.int32) - 1024) > 150).astype(np.uint8)  # (slices, rows, cols) in z order

    from medkd.io.dicom_seg import validate_with_dciodvfy

    errors = validate_with_dciodvfy(folder / "seg.dcm")  # None: dciodvfy not installed (make test installs it)
    assert not errors, errors
    seg = hd.seg.segread(folder / "seg.dcm")
    assert seg.get_segment_description(1).segment_label == "lesion"
    sop_by_z = {}
    for path in good.paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        sop_by_z[float(ds.ImagePositionPatient[2])] = ds.SOPInstanceUID
    ordered_sops = [sop_by_z[z] for z in sorted(sop_by_z)]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=ordered_sops, segment_numbers=[1], ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(pixels[..., 0], expected)

    mask = sitk.ReadImage(str(folder / "mask.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), expected)
    first = pydicom.dcmread(good.paths[int(np.argmin(list(sop_by_z)))], stop_before_pixels=True)
    np.testing.assert_allclose(mask.GetOrigin(), [float(v) for v in first.ImagePositionPatient], atol=1e-4)

    result = json.loads((folder / "result.json").read_text())
    voxel_ml = 0.8 * 0.8 * 2.5 / 1000
    assert result["labels"]["lesion"]["voxels"] == int(expected.sum())
    assert result["labels"]["lesion"]["volume_ml"] == pytest.approx(expected.sum() * voxel_ml, abs=1e-4)
    assert set(result["seconds"]) == {"read", "infer", "write"}
    log = (out / "medkd.log").read_text()
    assert "Synthetic^Phantom" not in log and "SYN0001" not in log  # no PHI in logs


def test_rerun_skips_done_series_and_overwrite_redoes(mixed_tree, tmp_path):
    root, series = mixed_tree
    out = tmp_path / "out"
    run_pipeline(CT_ONLY, root, out, workers=0, predictor=threshold_predictor(), progress=False)
    seg = out / series["good"].study_uid / series["good"].series_uid / "seg.dcm"
    stamp = seg.stat().st_mtime_ns
    again = run_pipeline(CT_ONLY, root, out, workers=0, predictor=threshold_predictor(), progress=False)
    statuses = {r.series_uid: r.status for r in _rows(again, "series")}
    assert statuses[series["good"].series_uid] == "unchanged" and seg.stat().st_mtime_ns == stamp
    changed = run_pipeline(CT_ONLY, root, out, workers=0, predictor=threshold_predictor(100.0), progress=False)
    assert {r.series_uid: r.status for r in _rows(changed, "series")}[series["good"].series_uid] == "unchanged"
    # a different model version is a different fingerprint
    other = threshold_predictor(100.0)
    other.version = "2"
    redo = run_pipeline(CT_ONLY, root, out, workers=0, predictor=other, progress=False)
    assert {r.series_uid: r.status for r in _rows(redo, "series")}[series["good"].series_uid] == "processed"
    forced = run_pipeline(CT_ONLY, root, out, workers=0, predictor=other, progress=False, overwrite=True)
    assert {r.series_uid: r.status for r in _rows(forced, "series")}[series["good"].series_uid] == "processed"


def test_model_error_fails_one_series_and_interrupt_keeps_report(mixed_tree, tmp_path):
    root, series = mixed_tree
    calls = {"n": 0}

    def flaky(array):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return (array > 150).astype(np.uint8)

    broken = threshold_predictor()
    broken.run = flaky
    summary = run_pipeline(CT_ONLY, root, tmp_path / "o1", workers=0, predictor=broken, progress=False)
    series_rows = _rows(summary, "series")
    assert sum(r.status == "failed" and r.reason == "model_error" for r in series_rows) == 1
    assert sum(r.status == "processed" for r in series_rows) >= 2
    assert "RuntimeError: boom" in (tmp_path / "o1" / "medkd.log").read_text()

    def interrupt(array):
        raise KeyboardInterrupt

    stop = threshold_predictor()
    stop.run = interrupt
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(CT_ONLY, root, tmp_path / "o2", workers=0, predictor=stop, progress=False)
    report = json.loads((tmp_path / "o2" / "medkd_report.json").read_text())
    assert len([r for r in report if r["kind"] == "file"]) == sum(1 for p in root.rglob("*") if p.is_file())
    assert not list((tmp_path / "o2").glob("*/*/done.json"))


def test_shards_partition_the_series(mixed_tree, tmp_path):
    root, _ = mixed_tree
    whole = run_pipeline(CT_ONLY, root, tmp_path / "all", workers=0, predictor=threshold_predictor(), progress=False)
    parts = [run_pipeline(CT_ONLY, root, tmp_path / "shards", workers=0, shard=f"{k}/3",
                          predictor=threshold_predictor(), progress=False) for k in (1, 2, 3)]
    key = lambda r: (r.kind, r.path, r.series_uid)  # noqa: E731
    assert sorted(key(r) for p in parts for r in p.rows) == sorted(key(r) for r in whole.rows)
    assert {p.report_csv.name for p in parts} == {f"medkd_report.shard-{k}-of-3.csv" for k in (1, 2, 3)}
    assert parse_shard(None) == (1, 1) and parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x", "1-2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    assert in_shard("abc", (1, 1))


def test_worker_processes_give_the_same_outputs(tmp_path):
    root = tmp_path / "in"
    a = write_dicom_series(root / "a", n_slices=5, rows=16, cols=16, seed=7)
    write_dicom_series(root / "b", n_slices=4, rows=16, cols=16, seed=8)
    serial = run_pipeline(CT_ONLY, root, tmp_path / "s", workers=0, predictor=threshold_predictor(), progress=False)
    pooled = run_pipeline(CT_ONLY, root, tmp_path / "p", workers=2, predictor=threshold_predictor(), progress=False)
    statuses = [r.status for r in _rows(pooled, "series")]
    assert statuses == [r.status for r in _rows(serial, "series")] == ["processed"] * 2
    rel = Path(a.study_uid) / a.series_uid / "seg.dcm"
    # deterministic UIDs and content whichever way the series was decoded (only creation times differ)
    s_seg, p_seg = (pydicom.dcmread(tmp_path / d / rel) for d in ("s", "p"))
    assert s_seg.SOPInstanceUID == p_seg.SOPInstanceUID and s_seg.SeriesInstanceUID == p_seg.SeriesInstanceUID
    assert s_seg.PixelData == p_seg.PixelData


def test_pipeline_yaml_and_model_resolution(tmp_path, monkeypatch):
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        cfg = load_pipeline(path)
        assert cfg.name == path.stem and cfg.selection
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: m\nselecton: []\n")
    with pytest.raises(ConfigError, match="selecton"):
        load_pipeline(bad)
    bad.write_text("name: x\nselection:\n  - name: r\n    conditions: {NotAKeyword: x}\n")
    with pytest.raises(ConfigError, match="NotAKeyword"):
        load_pipeline(bad)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    monkeypatch.setenv("MEDKD_MODELS", str(tmp_path / "models"))
    assert resolve_model("mine") == tmp_path / "models" / "mine"
    with pytest.raises(DataError, match="medkd bundle export"):
        resolve_model("missing")
    with pytest.raises(ConfigError):
        resolve_model("")


def test_whole_pydicom_test_folder_never_crashes(tmp_path, recwarn):
    root = tmp_path / "in"
    shutil.copytree(PYDICOM_FILES, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cfg = PipelineConfig(name="everything", selection=[])  # select every image series
    summary = run_pipeline(cfg, root, tmp_path / "out", workers=0, predictor=threshold_predictor(), progress=False)
    all_files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert sorted(r.path for r in _rows(summary, "file")) == all_files
    statuses = {r.status for r in summary.rows}
    assert statuses <= {"processed", "skipped", "failed", "ok"}
    assert any(r.status == "processed" for r in _rows(summary, "series"))
    for folder in (tmp_path / "out").glob("*/*"):
        if folder.name != ".work":
            assert (folder / "done.json").is_file()
    # pydicom/highdicom value warnings quote header values (patient names): none may escape the run
    assert not [w for w in recwarn if "pydicom" in w.filename or "highdicom" in w.filename]


def test_all_matched_false_keeps_one_series_per_study_on_every_shard(tmp_path):
    root = tmp_path / "in"
    big = write_dicom_series(root / "big", n_slices=6, rows=16, cols=16, seed=1)
    small = write_dicom_series(root / "small", n_slices=4, rows=16, cols=16, seed=2, study_uid=big.study_uid)
    other = write_dicom_series(root / "other", n_slices=3, rows=16, cols=16, seed=3)
    cfg = PipelineConfig(name="one", selection=CT_ONLY.selection, all_matched=False)
    summary = run_pipeline(cfg, root, tmp_path / "out", workers=0, predictor=threshold_predictor(), progress=False)
    status = {r.series_uid: (r.status, r.reason) for r in _rows(summary, "series")}
    assert status[big.series_uid] == ("processed", "") and status[other.series_uid] == ("processed", "")
    assert status[small.series_uid] == ("skipped", "not_selected")
    assert big.series_uid in next(r.message for r in _rows(summary, "series") if r.series_uid == small.series_uid)
    # sharding does not change which series is chosen
    shards = [run_pipeline(cfg, root, tmp_path / "sh", workers=0, shard=f"{k}/2", predictor=threshold_predictor(),
                           progress=False) for k in (1, 2)]
    merged = {r.series_uid: (r.status, r.reason) for p in shards for r in _rows(p, "series")}
    assert merged == status


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_devices_accepted(device):
    assert PipelineConfig(device=device).device == device


def test_bad_device_and_workers_are_config_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\ndevice: tpu\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: device must be .*'tpu'"):
        load_pipeline(bad)
    root = tmp_path / "in"
    write_dicom_series(root, n_slices=2, rows=8, cols=8)
    for kwargs, key in (({"device": "tpu"}, "device"), ({"device": "cuda:"}, "device"), ({"workers": -1}, "workers"),
                        ({"workers": 1.5}, "workers"), ({"workers": True}, "workers")):
        with pytest.raises(ConfigError, match=key):
            run_pipeline(CT_ONLY, root, tmp_path / "out", predictor=threshold_predictor(), progress=False, **kwargs)
    assert not (tmp_path / "out").exists()
    existing = tmp_path / "file.txt"
    existing.write_text("keep")
    with pytest.raises(DataError, match="not a folder"):
        run_pipeline(CT_ONLY, root, existing, workers=0, predictor=threshold_predictor(), progress=False)
    assert existing.read_text() == "keep"
