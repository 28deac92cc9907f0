# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher end to end on tiny synthetic data (spec test 10 and the issue's "done when" list).

One module fixture writes two synthetic lesion domains (K = 2, 64 px) and runs ``medkd gt train`` (source 24 +
adaptation 24 iterations, burn-in 12, the simulated expert CSV, RCM on), about 30 s on 2 CPU cores; the tests check
the run's files, losses, eval JSON, predict outputs, skipping done stages, the stage order, the gt_compat / clean
difference (label aliasing) and bad input.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.cli import main
from medkd.engine.checkpoint import load_checkpoint
from medkd.inference import load_predictor

REPO = Path(__file__).resolve().parents[3]
PRESET = REPO / "apps" / "grounded_teacher" / "cpu_synthetic.yaml"
QUICK = ["image_size=64", "source_train.iterations=24", "source_train.val_interval=12", "source_train.warmup=4",
         "adapt.iterations=24", "adapt.warmup=4", "adapt.batch_size=2", "adapt.unlabeled_batch_size=2",
         "source_train.batch_size=4", "log_interval=2", "pseudo_label.score_threshold=0.05",
         "adapt.teacher_threshold=0.05"]


def _sets(extra: list[str] = ()) -> list[str]:
    return [arg for item in [*QUICK, *extra] for arg in ("--set", item)]


@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    from medkd.data.synthetic.lesions import write_lesion_domains

    root = tmp_path_factory.mktemp("gt")
    data = root / "data"
    write_lesion_domains(data, n_source_train=24, n_source_val=8, n_target_train=24, n_target_val=10, size=64, seed=1)
    run = root / "run"
    torch.manual_seed(0)
    code = main(["-q", "gt", "train", "--config", str(PRESET), "--data-root", str(data), "--out", str(run), *_sets()])
    return {"root": root, "data": data, "run": run, "code": code}


def _metrics(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_train_runs_every_stage_and_writes_the_run(gt):
    run = gt["run"]
    assert gt["code"] == 0
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == ["source", "pseudo_label", "expert_boxes", "adapt"]
    assert json.loads((run / "run.json").read_text())["method"] == "gt"
    ckpt = load_checkpoint(run / "adapt" / "last.pt")
    assert ckpt["iteration"] == 24 and ckpt["teacher"] is not None
    assert "context" in ckpt["extra_state"] and stages["adapt"]["rcm"] is True  # RCM state saved for resuming
    rows = _metrics(run / "adapt")
    losses = [r for r in rows if "loss" in r]
    assert losses and all(math.isfinite(r["loss"]) for r in losses)
    after = [r for r in losses if r.get("iteration", 0) > 12]
    assert after and all("loss_u" in r and "loss_e" in r for r in after)  # teacher and expert losses after burn-in
    assert all("loss_u" not in r for r in losses if r.get("iteration", 0) <= 12)
    for name in ("pseudo_labels.json", "source_detections.json", "expert_boxes.json"):
        rows = json.loads((run / name).read_text())
        assert isinstance(rows, list) and all({"image_id", "category_id", "bbox", "score"} <= set(r) for r in rows)
    calibration = json.loads((run / "source" / "calibration.json").read_text())
    assert 0.0 < calibration["threshold"] <= 0.95


def test_teacher_differs_from_student_and_from_the_source(gt):
    ckpt = load_checkpoint(gt["run"] / "adapt" / "last.pt")
    source = load_checkpoint(gt["run"] / "source" / "best.pt")["student"]
    key = next(k for k, v in ckpt["teacher"].items() if v.is_floating_point() and v.numel() > 100)
    assert not torch.equal(ckpt["teacher"][key], ckpt["student"][key])
    assert not torch.equal(ckpt["teacher"][key], source[key])


def test_eval_writes_the_issue_json_keys_and_a_froc_plot(gt, tmp_path):
    out = tmp_path / "m.json"
    assert main(["gt", "eval", "--run", str(gt["run"]), "--data-root", str(gt["data"]), "--split", "val",
                 "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    for key in ("AP", "AP50", "R@0.3", "CPM", "per_class", "gt_compat_image_level_froc"):
        assert key in m
    assert set(m["per_class"]) == {"mass", "spiculated"} and m["stage"] == "adapt" and m["images"] == 10
    assert (gt["run"] / "eval" / "adapt_val" / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["gt", "eval", "--run", str(gt["run"]), "--data-root", str(gt["data"]), "--stage", "source",
                 "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["stage"] == "source"


def test_predict_writes_json_csv_and_png_and_skips_bad_files(gt, tmp_path):
    images = tmp_path / "in"
    shutil.copytree(gt["data"] / "target" / "images" / "val", images)
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert main(["gt", "predict", "--run", str(gt["run"]), "-i", str(images), "-o", str(out), "--min-score",
                 "0.0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 10 and [Path(s["file"]).name for s in report["skipped"]] == ["broken.png"]
    first = sorted(images.glob("t_val_*.png"))[0]
    found = json.loads((out / f"{first.stem}.json").read_text())
    assert found["width"] == 64 and all(0 <= v <= 64 for d in found["detections"] for v in d["box_xyxy"])
    assert (out / f"{first.stem}.png").is_file() and (out / "detections.csv").read_text().startswith("image,label")


def test_run_predictor_is_a_detection_predictor(gt):
    predictor = load_predictor(gt["run"], "cpu")
    assert predictor.kind == "detection" and [label.name for label in predictor.labels] == ["mass", "spiculated"]
    image = np.random.default_rng(0).random((70, 50), dtype=np.float32)
    out = predictor(image)
    predictor.check(out, image)
    assert (out["scores"] >= predictor.metadata["report_threshold"]).all()


def test_train_again_skips_done_stages(gt, caplog):
    import logging

    before = (gt["run"] / "adapt" / "last.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="medkd"):
        assert main(["gt", "train", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out",
                     str(gt["run"]), *_sets()]) == 0
    assert (gt["run"] / "adapt" / "last.pt").stat().st_mtime_ns == before
    assert sum("already done: skipped" in r.getMessage() for r in caplog.records) == 4


def _copy_source(gt, name: str) -> Path:
    run = gt["root"] / name
    (run / "source").mkdir(parents=True)
    for item in (gt["run"] / "source").iterdir():
        shutil.copy2(item, run / "source" / item.name)
    for item in ("run.json", "config.yaml"):
        shutil.copy2(gt["run"] / item, run / item)
    stages = json.loads((gt["run"] / "stages.json").read_text())
    (run / "stages.json").write_text(json.dumps({"source": stages["source"]}))
    return run


@pytest.mark.parametrize("mode", ["clean", "gt_compat"])
def test_gt_compat_aliases_the_expert_labels_and_clean_does_not(gt, mode, monkeypatch):
    """The two classification-only forwards of an iteration (teacher loss, expert loss): gt_compat hands both the
    same target list (the reference's in-place aliasing: the expert's labels, twice); clean hands them distinct
    copies, the teacher's boxes to one and the expert's to the other."""
    from medkd.nets.retinanet import RetinaNet2D

    calls: list[list[dict]] = []
    forward = RetinaNet2D.forward

    def spy(self, images, targets=None, *, regress=True, anchor_weights=None):
        if self.training and not regress:
            calls.append(targets)
        return forward(self, images, targets, regress=regress, anchor_weights=anchor_weights)

    monkeypatch.setattr(RetinaNet2D, "forward", spy)
    run = _copy_source(gt, f"alias_{mode}")
    extra = [f"mode={mode}", "adapt.rcm=false", "adapt.iterations=8", "adapt.burn_in=2"]
    assert main(["-q", "gt", "train", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 *_sets(extra)]) == 0
    assert len(calls) == 2 * 6  # iterations 3..8: L_u then L_e
    pairs = list(zip(calls[::2], calls[1::2]))
    if mode == "gt_compat":
        assert all(u is e for u, e in pairs)
    else:
        assert all(u is not e and not any(a is b for a in u for b in e) for u, e in pairs)
        assert any(len(a["labels"]) != len(b["labels"]) or not torch.equal(a["boxes"], b["boxes"])
                   for u, e in pairs for a, b in zip(u, e))


def test_stage_order_and_method_stages_are_checked(gt, tmp_path):
    run = tmp_path / "run"
    assert main(["gt", "adapt", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 *_sets()]) == 2
    assert main(["gt", "expert-boxes", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 *_sets(["method=mean_teacher"])]) == 2


def test_source_only_run_has_one_stage(gt, tmp_path):
    run = _copy_source(gt, "src_only")
    assert main(["-q", "gt", "train", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 *_sets(["method=source_only"])]) == 0
    assert list(json.loads((run / "train_summary.json").read_text())["stages"]) == ["source"]
    assert main(["gt", "eval", "--run", str(run), "--data-root", str(gt["data"]), "--json",
                 str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["stage"] == "source"


def test_bad_input_exits_2_with_one_line(gt, tmp_path, capsys):
    empty = tmp_path / "data"
    shutil.copytree(gt["data"], empty)
    (empty / "target" / "annotations" / "instances_train.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "mass"},
                                                                   {"id": 2, "name": "spiculated"}]}))
    run = _copy_source(gt, "bad_target")
    assert main(["gt", "train", "--config", str(PRESET), "--data-root", str(empty), "--out", str(run),
                 *_sets()]) == 2
    assert "instances_train.json" in capsys.readouterr().err
    csv = tmp_path / "expert.csv"
    csv.write_text("ImageName,Prompt,MeanConfidence,MaxConfidence,X,Y,W,H\nnot_there.png,mass,0.9,0.9,1,1,5,5\n")
    run = _copy_source(gt, "bad_csv")
    assert main(["gt", "train", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 *_sets([f"expert_csv={csv}"])]) == 2
    assert "not_there.png" in capsys.readouterr().err
    assert main(["gt", "train", "--config", str(PRESET), "--data-root", str(gt["data"]), "--out", str(run),
                 "--set", "adapt.burnin=3"]) == 2
    assert "burnin" in capsys.readouterr().err
