# SPDX-License-Identifier: Apache-2.0
"""``medkd pipeline run`` on bad input: one line naming the key or path, exit 2, never a traceback (issue 8);
``--trust-bundle`` reaches the model loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from medkd.cli import main
from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import Predictor
from medkd.errors import UntrustedBundleError
from medkd.io.labels import labels_from_names

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(pipeline YAML, input folder with one tiny series, an existing model folder)``."""
    root = tmp_path / "in"
    write_dicom_series(root / "ct", n_slices=2, rows=8, cols=8)
    model = tmp_path / "model"
    model.mkdir()
    yaml = tmp_path / "p.yaml"
    yaml.write_text(f"name: p\nmodel: {model}\n")
    return yaml, root, model


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "medkd: error:" in err and len(err.strip().splitlines()) == 1
    return err


def test_device_tpu_in_the_yaml_names_the_key(capsys, setup, tmp_path):
    yaml, root, _ = setup
    yaml.write_text(yaml.read_text() + "device: tpu\n")
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(tmp_path / "out")])
    assert "device" in err and "'tpu'" in err and str(yaml) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, key", [(["--device", "tpu"], "device"), (["--device", "cuda:x"], "device"),
                                       (["--workers", "-1"], "workers")])
def test_bad_arguments_name_the_option(capsys, setup, tmp_path, argv, key):
    yaml, root, _ = setup
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(tmp_path / "out"), *argv])
    assert f"--{key}" in err and argv[1] in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_output_that_is_an_existing_file(capsys, setup, tmp_path):
    yaml, root, _ = setup
    target = tmp_path / "report.txt"
    target.write_text("mine")
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(target)])
    assert str(target) in err and "not a folder" in err
    assert target.read_text() == "mine"


@pytest.mark.parametrize("where", ["parent_is_a_file", "proc", "read_only"])
def test_unwritable_output_folder(capsys, setup, tmp_path, where):
    yaml, root, _ = setup
    if where == "parent_is_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    elif where == "proc":  # root may write anywhere, but not in /proc
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc")
        out = Path("/proc/self/medkd-out")
    else:
        if IS_ROOT:
            pytest.skip("root writes whatever the mode")
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    try:
        err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(out)])
    finally:
        if where == "read_only":
            out.chmod(0o700)
    assert str(out) in err and "output folder" in err


def test_output_folder_that_is_the_input_folder(capsys, setup):
    yaml, root, _ = setup
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(root)])
    assert "input folder" in err
    assert sorted(p.name for p in root.iterdir()) == ["ct"]


def test_trust_bundle_reaches_the_loader(capsys, setup, tmp_path, monkeypatch):
    import medkd.inference as engine_predictor  # where the runner looks load_predictor up

    yaml, root, _ = setup
    seen = []

    def load(path, device="auto", *, trust=False):
        seen.append(trust)
        if not trust:
            raise UntrustedBundleError(Path(path) / "configs" / "inference.json", "network_def#_target_",
                                       "'subprocess.run' is not in the allowlist; pass --trust-bundle")
        return Predictor(kind="segmentation", name="t", version="1", weights_sha256="0" * 64,
                         labels=labels_from_names(["background", "x"]),
                         run=lambda a: np.zeros(a.shape, np.uint8), source=Path(path))

    monkeypatch.setattr(engine_predictor, "load_predictor", load)
    out = tmp_path / "out"
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(out), "--device", "cpu"])
    assert "network_def#_target_" in err and "inference.json" in err
    assert not list(out.glob("*/*/done.json"))
    assert main(["-q", "pipeline", "run", str(yaml), "-i", str(root), "-o", str(out), "--trust-bundle"]) == 0
    assert seen == [False, True] and len(list(out.glob("*/*/done.json"))) == 1
    assert "only for bundles you trust" in " ".join(main_help())


def main_help() -> list[str]:
    from medkd.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["pipeline"]
    run = next(a for a in sub._actions if a.dest == "action").choices["run"]
    return run.format_help().split()


def test_hostile_study_uid_exits_0_with_rows_and_nothing_outside(capsys, setup, tmp_path, monkeypatch):
    """The issue's case: a StudyInstanceUID that is an absolute path wrote outside OUT, then exit 1."""
    import warnings

    import pydicom

    import medkd.inference as engine_predictor  # where the runner looks load_predictor up

    yaml, root, _ = setup
    elsewhere = tmp_path / "elsewhere"
    for path in sorted((root / "ct").iterdir()):
        ds = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.StudyInstanceUID = str(elsewhere)
            ds.save_as(path)
    monkeypatch.setattr(engine_predictor, "load_predictor", lambda path, device="auto", *, trust=False: Predictor(
        kind="segmentation", name="t", version="1", weights_sha256="0" * 64, labels=labels_from_names(["bg", "x"]),
        run=lambda a: np.zeros(a.shape, np.uint8), source=Path(path)))
    out = tmp_path / "out"
    assert main(["-q", "pipeline", "run", str(yaml), "-i", str(root), "-o", str(out)]) == 0
    assert "0 processed" in capsys.readouterr().out and not elsewhere.exists()
    report = (out / "medkd_report.csv").read_text()
    assert report.count("invalid_uid") == 3  # the series row and its two files


def _fake_loader(path, device="auto", *, trust=False):
    return Predictor(kind="segmentation", name="t", version="1", weights_sha256="0" * 64,
                     labels=labels_from_names(["bg", "x"]), run=lambda a: (a > -2000).astype(np.uint8),
                     source=Path(path))


def test_set_reaches_the_outputs_blocks(capsys, setup, tmp_path, monkeypatch):
    """Issue 9: ``--set outputs.seg.type=labelmap`` and ``--set outputs.nifti.enabled=false`` reach the blocks."""
    import pydicom

    import medkd.inference as engine_predictor  # where the runner looks load_predictor up

    yaml, root, _ = setup
    monkeypatch.setattr(engine_predictor, "load_predictor", _fake_loader)
    out = tmp_path / "out"
    argv = ["-q", "pipeline", "run", str(yaml), "-i", str(root), "-o", str(out), "--workers", "0",
            "--set", "outputs.seg.type=labelmap", "--set", "outputs.nifti.enabled=false"]
    assert main(argv) == 0
    [folder] = [p.parent for p in out.glob("*/*/done.json")]
    assert sorted(p.name for p in folder.iterdir()) == ["done.json", "result.json", "seg.dcm"]
    assert pydicom.dcmread(folder / "seg.dcm").SegmentationType == "LABELMAP"


@pytest.mark.parametrize("override, names", [
    ("outputs.seg.tpye=labelmap", ["outputs.seg.tpye", "outputs.seg.type"]),
    ("outputs.seg.type=fractional", ["outputs.seg.type", "fractional"]),
    ("write_seg=false", []),  # the old key against the YAML's block: both named
])
def test_bad_set_is_one_line_naming_the_key_and_file(capsys, setup, tmp_path, override, names):
    yaml, root, _ = setup
    if override.startswith("write_seg"):
        yaml.write_text(yaml.read_text() + "outputs: {seg: {enabled: true}}\n")
        names = ["write_seg", "outputs.seg.enabled"]
    err = _fails(capsys, ["pipeline", "run", str(yaml), "-i", str(root), "-o", str(tmp_path / "out"),
                          "--set", override])
    assert str(yaml) in err and all(name in err for name in names), err
    assert not (tmp_path / "out").exists()
