# SPDX-License-Identifier: Apache-2.0
"""The pipeline YAML's typed ``outputs:`` blocks (issue 9, item 3): each block switches its file, issue 8's keys
still read, an old key against its block is an error, unknown nested keys are named by dotted path and file, and
the old import path ``medkd.engine.batch`` still works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.config import config_from_dict, config_to_dict
from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import Predictor
from medkd.errors import ConfigError
from medkd.io.labels import labels_from_names
from medkd.pipeline import PipelineConfig, load_pipeline, run_pipeline

REPO = Path(__file__).resolve().parents[2]

#: issue 8's pipelines/acdc_cine_mr.yaml, before the outputs blocks
OLD_FORM = """\
name: acdc_cine_mr
model: demo_acdc_bcp
device: auto
selection:
  - name: cine_short_axis
    conditions:
      Modality: "(?i)^MR$"
    min_slices: 3
write_seg: {seg}
seg_type: {seg_type}
write_nifti: {nifti}
"""
SELECT_CT = "selection:\n  - name: ct\n    conditions: {Modality: '(?i)^CT$'}\n"


def threshold() -> Predictor:
    return Predictor(kind="segmentation", name="threshold", version="1", weights_sha256="0" * 64,
                     labels=labels_from_names(["background", "lesion"]), run=lambda a: (a > 150).astype(np.uint8),
                     source=Path("."))


@pytest.fixture
def ct(tmp_path: Path):
    return write_dicom_series(tmp_path / "in" / "ct", n_slices=4, rows=16, cols=16, seed=2)


def _files(tmp_path: Path, ct, yaml_text: str, out: str = "out", overrides: tuple[str, ...] = ()) -> set[str]:
    path = tmp_path / f"{out}.yaml"
    path.write_text(f"name: {out}\n{SELECT_CT}{yaml_text}")
    summary = run_pipeline(path, tmp_path / "in", tmp_path / out, workers=0, progress=False, predictor=threshold(),
                           overrides=overrides)
    assert [r.status for r in summary.rows if r.kind == "series"] == ["processed"]
    return {p.name for p in (tmp_path / out / ct.study_uid / ct.series_uid).iterdir()}


@pytest.mark.parametrize("outputs, absent", [
    ("", set()),
    ("outputs: {seg: {enabled: false}}", {"seg.dcm"}),
    ("outputs: {nifti: {enabled: false}}", {"mask.nii.gz"}),
    ("outputs: {seg: {enabled: false}, nifti: {enabled: false}, sr: {enabled: false}}", {"seg.dcm", "mask.nii.gz"}),
    ("write_seg: false\nwrite_nifti: true", {"seg.dcm"}),  # the old keys
    ("write_nifti: false", {"mask.nii.gz"}),
])
def test_each_block_switches_its_file(tmp_path, ct, outputs, absent):
    every = {"seg.dcm", "mask.nii.gz", "result.json", "done.json"}
    assert _files(tmp_path, ct, outputs + "\n") == every - absent


def test_seg_type_from_block_old_key_and_set_override(tmp_path, ct):
    def seg_type(out: str) -> str:
        return pydicom.dcmread(tmp_path / out / ct.study_uid / ct.series_uid / "seg.dcm").SegmentationType

    _files(tmp_path, ct, "outputs: {seg: {type: labelmap}}\n", "block")
    _files(tmp_path, ct, "seg_type: labelmap\n", "old")
    _files(tmp_path, ct, "", "override", overrides=("outputs.seg.type=labelmap",))
    _files(tmp_path, ct, "", "binary")
    assert [seg_type(o) for o in ("block", "old", "override", "binary")] == ["LABELMAP"] * 3 + ["BINARY"]


def test_seg_uids_keep_issue_8s_entropy_and_change_with_the_seg_type(tmp_path, ct):
    """Same SEG UIDs as before the outputs blocks: [series, model, version, weights, seg type]."""
    from medkd.io.dicom_seg import seg_uids

    _files(tmp_path, ct, "", "binary")
    _files(tmp_path, ct, "outputs: {seg: {type: labelmap}}\n", "labelmap")
    for out, kind in (("binary", "binary"), ("labelmap", "labelmap")):
        seg = pydicom.dcmread(tmp_path / out / ct.study_uid / ct.series_uid / "seg.dcm")
        assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == seg_uids([ct.series_uid, "threshold", "1", "0" * 64,
                                                                        kind])
    done = json.loads((tmp_path / "labelmap" / ct.study_uid / ct.series_uid / "done.json").read_text())
    assert done["fingerprint"]["outputs"] == {"seg": {"enabled": True, "type": "labelmap"},
                                              "nifti": {"enabled": True}}


@pytest.mark.parametrize("seg, seg_type, nifti", [("true", "binary", "true"), ("false", "labelmap", "false")])
def test_old_form_yaml_still_reads(tmp_path, seg, seg_type, nifti):
    path = tmp_path / "old.yaml"
    path.write_text(OLD_FORM.format(seg=seg, seg_type=seg_type, nifti=nifti))
    cfg = load_pipeline(path)
    assert cfg.outputs.seg.enabled is (seg == "true") and cfg.outputs.seg.type == seg_type
    assert cfg.outputs.nifti.enabled is (nifti == "true") and cfg.outputs.sr.enabled
    assert (cfg.write_seg, cfg.seg_type, cfg.write_nifti) == (None, None, None)  # folded into the blocks
    assert config_from_dict(PipelineConfig, config_to_dict(cfg)) == cfg


def test_shipped_pipelines_use_the_blocks_with_issue_8s_defaults():
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        cfg = load_pipeline(path)
        assert "outputs" in path.read_text() and "write_seg:" not in path.read_text().replace("# ", "")
        assert (cfg.outputs.seg.enabled, cfg.outputs.seg.type, cfg.outputs.nifti.enabled) == (True, "binary", True)


@pytest.mark.parametrize("text, names", [
    ("write_seg: false\noutputs: {seg: {enabled: true}}\n", ["write_seg", "outputs.seg.enabled"]),
    ("seg_type: labelmap\noutputs: {seg: {type: binary}}\n", ["seg_type", "outputs.seg.type"]),
    ("write_nifti: true\noutputs: {nifti: {enabled: false}}\n", ["write_nifti", "outputs.nifti.enabled"]),
    ("outputs: {seg: {tpye: labelmap}}\n", ["outputs.seg.tpye", "outputs.seg.type"]),
    ("outputs: {segg: {enabled: true}}\n", ["outputs.segg", "outputs.seg"]),
    ("outputs: {seg: {type: fractional}}\n", ["outputs.seg.type", "'fractional'"]),
    ("outputs: {sr: {enabled: maybe}}\n", ["outputs.sr.enabled", "'maybe'"]),
    ("outputs: [seg]\n", ["outputs"]),
    ("seg_type: fractional\n", ["seg_type", "'fractional'"]),
])
def test_bad_outputs_are_config_errors_naming_the_file_and_key(tmp_path, text, names):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\n" + text)
    with pytest.raises(ConfigError) as err:
        load_pipeline(path)
    assert str(err.value).startswith(str(path)) and all(name in str(err.value) for name in names), err.value


def test_old_key_agreeing_with_its_block_is_fine(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("write_seg: false\nseg_type: labelmap\noutputs: {seg: {enabled: false, type: labelmap}}\n")
    assert load_pipeline(path).outputs.seg.enabled is False
    with pytest.raises(ConfigError, match="outputs.seg.tpye"):
        load_pipeline(path, ["outputs.seg.tpye=binary"])


def test_old_import_path_is_the_new_package():
    import medkd.engine.batch as old
    import medkd.pipeline as new

    for name in ("run_pipeline", "OUTPUT_WRITERS", "PipelineConfig", "PipelineSummary", "ReportRow", "load_pipeline",
                 "parse_shard", "in_shard", "resolve_model", "WriteContext", "check_device"):
        assert getattr(old, name) is getattr(new, name), name
    assert "deprecated" in old.__doc__.lower() and "medkd.pipeline" in old.__doc__
    assert old.OUTPUT_WRITERS.get("segmentation") is new.OUTPUT_WRITERS.get("segmentation")
