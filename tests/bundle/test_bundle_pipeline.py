# SPDX-License-Identifier: Apache-2.0
"""``medkd pipeline run`` with an exported bundle: DICOM in, SEG out, same masks as the run; exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.bundle import export_bundle
from medkd.cli import main
from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import load_predictor

REPO = Path(__file__).resolve().parents[2]
CT_ANY = REPO / "pipelines" / "ct_any.yaml"

pytestmark = pytest.mark.filterwarnings("ignore:.*(_target_|parsing config).*")


@pytest.fixture(scope="module")
def bundle_2d(run_2d, tmp_path_factory) -> Path:
    return export_bundle(run_2d, tmp_path_factory.mktemp("models") / "tiny_2d")


def test_pipeline_cli_with_bundle_matches_run(bundle_2d, run_2d, tmp_path, capsys):
    series = write_dicom_series(tmp_path / "in" / "ct", n_slices=5, rows=40, cols=48, seed=3)
    write_dicom_series(tmp_path / "in" / "bad", n_slices=4, rows=16, cols=16, seed=4, jitter_slice=1)
    out = tmp_path / "out"
    argv = ["-q", "pipeline", "run", str(CT_ANY), "-i", str(tmp_path / "in"), "-o", str(out), "--model",
            str(bundle_2d), "--workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    assert "1 processed" in capsys.readouterr().out
    folder = out / series.study_uid / series.series_uid
    result = json.loads((folder / "result.json").read_text())
    assert result["model"]["name"] == "tiny_2d" and set(result["labels"]) == {"RV", "Myo", "LV"}

    import SimpleITK as sitk

    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "mask.nii.gz")))
    volume = (series.pixels.astype(np.float32) - 1024.0)  # slices in z order, HU
    expected = load_predictor(run_2d, "cpu")(volume)
    np.testing.assert_array_equal(mask, expected)
    assert len(np.unique(expected)) > 1
    seg = pydicom.dcmread(folder / "seg.dcm")
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["RV", "Myo", "LV"]

    # the jittered series was skipped: fine by default, exit 3 under --strict; the done series is not redone
    assert main(argv + ["--strict"]) == 3
    report = (out / "medkd_report.csv").read_text()
    assert "inconsistent_spacing" in report and "unchanged" in report


def test_pipeline_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["pipeline", "run", str(CT_ANY), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                 "--shard", "5/2"]) == 2
    assert "--shard" in capsys.readouterr().err
    assert main(["pipeline", "run", str(tmp_path / "nope.yaml"), "-i", str(tmp_path / "in"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    write_dicom_series(tmp_path / "in" / "ct", n_slices=3, rows=16, cols=16)
    assert main(["pipeline", "run", str(CT_ANY), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no model" in err and "--model" in err and "Traceback" not in err
