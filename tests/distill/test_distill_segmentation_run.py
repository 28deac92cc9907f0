# SPDX-License-Identifier: Apache-2.0
"""``medkd distill run`` on a segmentation task (the synthetic ACDC layout): the student is a normal run that
``medkd distill eval``, run predictors (pipelines, the app) and bundle export take; bad inputs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from medkd.cli import main
from medkd.data.synthetic import write_synthetic_acdc

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "cpu_acdc_bpkd.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.val_interval=3", "eval.log_interval=3",
        "teacher.net=bcp_unet2d_half", "data.batch_size=4", "data.labeled=2", "data.image_size=[32, 32]"]


@pytest.fixture(scope="module")
def acdc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n_train=4, n_val=1, n_test=1, n_slices=3, size=32)


@pytest.fixture(scope="module")
def run(acdc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medkd import api  # not medkd.cli.main: its library log levels would outlive this module-scoped fixture

    out = tmp_path_factory.mktemp("runs") / "bpkd"
    api.distill_run(PRESET, acdc, out, overrides=FAST, progress=False)
    return out


def test_run_folder_is_a_normal_segmentation_run(run: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    assert (info["method"], info["kind"], info["format"], info["stage"]) == ("distill", "segmentation", "bcp", "student")
    assert (run / "student" / "best.pt").is_file() and (run / "teacher" / "run.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    student = summary["student"]
    assert student["net"] == "bcp_unet2d_half" and student["iterations"] == 6
    assert {"best", "last"} <= set(student) and "dice" in student["best"]["test"]["mean"]
    assert summary["teacher"]["net"] == "bcp_unet2d_half" and summary["teacher_training"]["iterations"] == 4
    metrics = [json.loads(line) for line in (run / "student" / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*metrics)
    assert {"bpkd/raw", "bpkd/weighted", "bpkd/bpkd_edge", "ce/raw", "dice/weighted"} <= logged
    experiment = yaml.safe_load((run / "experiment.yaml").read_text())
    assert experiment["plugins"]["bpkd"]["module"] == "medkd.distill.losses.bpkd"


def test_eval_predictor_and_bundle_take_the_student(run: Path, acdc: Path, tmp_path: Path) -> None:
    assert main(["-q", "distill", "eval", str(run), "--data-root", str(acdc), "--json", str(tmp_path / "t.json")]) == 0
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["method"] == "distill" and 0.0 <= summary["mean"]["dice"] <= 1.0

    from medkd.inference import load_predictor

    predictor = load_predictor(run, device="cpu")
    mask = predictor(np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
    assert predictor.kind == "segmentation" and mask.shape == (2, 32, 32) and mask.dtype == np.uint8

    from medkd import api

    bundle = api.bundle_export(run, tmp_path / "bundle")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["medkd"]["method"] == "distill" and "bpkd" in meta["medkd"]["terms"]
    assert "knowledge distillation" in (bundle / "docs" / "README.md").read_text()


@pytest.mark.parametrize(("overrides", "message"), [
    (["distill.terms=[{name: x, plugin: bpdk}]"], "unknown distillation plugin 'bpdk'. Did you mean 'bpkd'"),
    (["distill.terms=[{name: x, plugin: bpkd, params: {radus: 2}}]"], "Did you mean 'radius'"),
    (["student.taps=[encoder.9]", "distill.terms=[{name: x, plugin: ofa}]"], "student has no module 'encoder.9'"),
    (["distill.terms=[{name: x, plugin: leaf}]"], "needs student output 'embedding|feat:*'"),
    (["teacher.checkpoint=/no/such/run"], "/no/such/run: teacher not found"),
    (["data.num_classes=3", "teacher.checkpoint=RUN"], "the teacher predicts 4 classes, the student 3"),
    (["teacher.checkpoint=DATA"], "neither a medkd run folder"),
    (["experiment.colour=red"], "unknown config key 'experiment.colour'"),
])
def test_bad_input_exits_2_naming_the_key_or_file(overrides: list[str], message: str, run: Path, acdc: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    overrides = [o.replace("RUN", str(run)).replace("DATA", str(acdc)) for o in overrides]
    code = main(["-q", "distill", "run", "--config", str(PRESET), "--data-root", str(acdc), "--out",
                 str(tmp_path / "r"), "--set", *FAST, *overrides])
    assert code == 2
    assert message in capsys.readouterr().err
