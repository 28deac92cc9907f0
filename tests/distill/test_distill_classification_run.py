# SPDX-License-Identifier: Apache-2.0
"""``medkd distill run`` on classification (SynthLesion-2D in the folder and CSV layouts): teacher trained first,
from a run or a bundle; feature taps and auxiliary modules; the teacher-output cache; bad inputs exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medkd.cli import main
from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_kd.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.val_interval=3", "eval.log_interval=3",
        "data.batch_size=8", "data.image_size=[16, 16]", "teacher.net_params={width: 8}"]


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=30, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)
    write_classification_datalist(root)
    return root


def _run(data: Path, out: Path, *sets: str) -> int:
    return main(["-q", "distill", "run", "--config", str(PRESET), "--data-root", str(data), "--out", str(out),
                 "--set", *FAST, *sets])


@pytest.fixture(scope="module")
def run(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medkd import api  # not medkd.cli.main: its library log levels would outlive this module-scoped fixture

    out = tmp_path_factory.mktemp("runs") / "kd"
    api.distill_run(PRESET, lesions, out, overrides=FAST, progress=False)
    return out


def test_classification_run_layout_summary_and_cache(run: Path) -> None:
    info = json.loads((run / "run.json").read_text())
    assert (info["method"], info["kind"], info["format"]) == ("distill", "classification", "classifier")
    student = json.loads((run / "student.json").read_text())
    assert student["net"] == "kd_cnn" and student["num_classes"] == 5 and student["image_size"] == [16, 16]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["teacher_training"]["net"] == "kd_cnn_wide"
    assert summary["student"]["best"]["test"]["n"] == 10
    assert 0.0 <= summary["student"]["best"]["test"]["accuracy"] <= 1.0
    cache = summary["student"]["teacher_cache"]
    assert cache["hits"] > 0 and cache["misses"] > 0  # the 20 training images are computed once, then read back
    assert any((run / "teacher_cache").rglob("*.pt"))


def test_eval_cli_reports_accuracy(run: Path, lesions: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "distill", "eval", str(run), "--data-root", str(lesions), "--split", "val",
                 "--json", str(tmp_path / "v.json")]) == 0
    assert "accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "v.json").read_text())
    assert metrics["n"] == 10 and len(metrics["confusion"]) == 5 and metrics["split"] == "val"


def test_teacher_from_a_run_with_taps_and_auxiliary_branches(run: Path, lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "ofa"
    assert _run(lesions, out, f"teacher.checkpoint={run / 'teacher'}", "teacher.cache=false",
                "student.taps=[stages.1, stages.2]",
                "distill.terms=[{name: ce, plugin: ce}, {name: ofa, plugin: ofa}]") == 0
    student = json.loads((out / "summary.json").read_text())["student"]
    assert student["extra_params"] > 0  # the exit branches train with the student
    ckpt = torch.load(out / "student" / "last.pt", weights_only=True)
    assert any("branches" in k for k in ckpt["modules"]["distill"])  # saved for resume...
    assert not any("branch" in k for k in ckpt["student"])  # ...never part of the student
    assert not (out / "teacher").exists()


def test_teacher_from_a_bundle_folder_and_the_csv_layout(run: Path, lesions: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    state = torch.load(run / "teacher" / "student" / "best.pt", weights_only=True)["student"]
    torch.save(state, bundle / "models" / "model.pt")
    net_def = {"_target_": "medkd.nets.create_net", "name": "kd_cnn_wide", "in_channels": 1, "num_classes": 5,
               "width": 8}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    out = tmp_path / "from_bundle"
    assert _run(lesions, out, f"teacher.checkpoint={bundle}", "teacher.cache=false", "data.layout=csv",
                "data.datalist=datalist.csv") == 0
    assert json.loads((out / "summary.json").read_text())["teacher"]["net"] == "kd_cnn_wide"

    net_def["_target_"] = "os.system"
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    assert _run(lesions, tmp_path / "refused", f"teacher.checkpoint={bundle}") == 2


def test_tgeo_trains_from_yaml_with_its_mlp_outside_the_student_optimiser(run: Path, lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "tgeo"
    assert _run(lesions, out, f"teacher.checkpoint={run / 'teacher'}",
                "distill.terms=[{name: tgeo, plugin: tgeo}]") == 0
    assert json.loads((out / "summary.json").read_text())["student"]["extra_params"] == 0


@pytest.mark.parametrize(("sets", "message"), [
    (["teacher.checkpoint=SEG"], "is a segmentation model"),
    (["teacher.checkpoint=DATA"], "neither a medkd run folder"),
    (["data.num_classes=3"], "data.num_classes is 3"),
    (["teacher.taps=[stages.7]", "student.taps=[pool]", "teacher.checkpoint=TEACHER",
      "distill.terms=[{name: p, plugin: prokd}]"],
     "teacher has no module 'stages.7'"),
    (["distill.terms=[{name: d, plugin: dkd, params: {betta: 2}}]"], "Did you mean 'beta'"),
    (["data.augment=true"], "teacher.cache needs deterministic inputs"),
])
def test_bad_input_exits_2(sets: list[str], message: str, run: Path, lesions: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "run.json").write_text(json.dumps({"method": "bcp", "kind": "segmentation"}))
    (seg / "config.yaml").write_text("dataset: acdc\nnet: bcp_unet2d_half\npatch: [16, 16]\n")
    from medkd.engine.checkpoint import save_checkpoint
    from medkd.nets import create_net

    net = create_net("bcp_unet2d_half", in_channels=1, out_channels=4)
    save_checkpoint(seg / "selftrain" / "best.pt", student=net, teacher=None, optimizer=None, config={},
                    iteration=1, rng={})
    sets = [s.replace("SEG", str(seg)).replace("DATA", str(lesions)).replace("TEACHER", str(run / "teacher"))
            for s in sets]
    assert _run(lesions, tmp_path / "bad", *sets) == 2
    assert message in capsys.readouterr().err
