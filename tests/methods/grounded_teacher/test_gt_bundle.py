# SPDX-License-Identifier: Apache-2.0
"""Issue 10, item 6 (deployment): ``medkd bundle export`` on a Grounded Teacher run (kind ``detection``) writes a
bundle that passes MONAI's ``verify_metadata`` and ``verify_net_in_out`` (the network's dense head output
``(B, K + 4, anchors)``; the inferer decodes it) and runs under ``python -m monai.bundle run`` offline, that
``medkd bundle verify`` accepts, and whose predictor gives the run predictor's boxes.

The run is a tiny GT run folder with a randomly initialised ``retinanet2d`` teacher (no training); its head bias is
raised so that the random network reports boxes (an equality check of empty outputs would prove nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("medkd.nets.retinanet")

from medkd.bundle import SCHEMA_PATH, export_bundle, verify_bundle  # noqa: E402
from medkd.cli import main  # noqa: E402
from medkd.config import config_to_dict  # noqa: E402
from medkd.engine.checkpoint import save_checkpoint  # noqa: E402
from medkd.inference import load_predictor  # noqa: E402
from medkd.methods.grounded_teacher.config import GTConfig, NetConfig  # noqa: E402
from medkd.methods.grounded_teacher.runs import save_run_config  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),
    pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning"),
]

REPO = Path(__file__).resolve().parents[3]
CLASSES = ("mass", "spiculated")


def _net(cfg: GTConfig) -> torch.nn.Module:
    import medkd.nets.retinanet  # noqa: F401  - registers retinanet2d
    from medkd.nets import create_net

    torch.manual_seed(0)
    net = create_net("retinanet2d", **cfg.net_kwargs())
    head = net.detector.network.classification_head
    with torch.no_grad():  # random weights with a prior that reports boxes (scores ~0.6 and spread)
        head.cls_logits.bias.fill_(0.4)
    return net


def _images(folder: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate([(72, 96), (80, 64)]):  # rows != columns, neither a multiple of 16
        image = rng.normal(100, 20, (h, w))
        image[20:40, 10 + 5 * i:30 + 5 * i] += 120
        path = folder / f"img{i}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def gt(tmp_path_factory, monai_env, monai_bundle):
    root = tmp_path_factory.mktemp("gt_bundle")
    run = root / "run"
    cfg = GTConfig(classes=CLASSES, image_size=64, net=NetConfig(backbone="resnet10"))
    save_run_config(run, cfg)
    net = _net(cfg)
    save_checkpoint(run / "adapt" / "last.pt", student=net, teacher=net, optimizer=None, config=config_to_dict(cfg),
                    iteration=3)
    bundle = root / "models" / "gt_tiny"
    export = main(["bundle", "export", "--run", str(run), "-o", str(bundle)])
    images, out = _images(root / "images"), root / "out"
    meta, inference = bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"
    monai = monai_bundle({
        "run": ["run", "--config_file", inference, "--meta_file", meta, "--bundle_root", bundle, "--dataset_dir",
                images[0].parent, "--output_dir", out],
        "metadata": ["verify_metadata", "--meta_file", meta, "--filepath", SCHEMA_PATH],
        "net_in_out": ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", inference,
                       "--n", "2", "--any", "5", "--device", "cpu"],  # a 32 x 32 image
    }, monai_env, REPO)
    return {"run": run, "bundle": bundle, "export": export, "images": images, "out": out, "monai": monai, "cfg": cfg}


def test_export_writes_a_detection_bundle_like_model_zoo_retinanet(gt):
    assert gt["export"] == 0
    meta = json.loads((gt["bundle"] / "configs" / "metadata.json").read_text())
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert (pred["type"], pred["num_channels"]) == ("image", 2 + 4)  # K class logits and 4 box deltas per anchor
    assert (image["num_channels"], image["spatial_shape"], image["value_range"]) == (1, ["16*n", "16*n"], [0, 1])
    assert meta["medkd"]["kind"] == "detection" and meta["medkd"]["method"] == "gt"
    assert meta["medkd"]["stage"] == "adapt" and meta["medkd"]["report_threshold"] == 0.5
    assert [c["name"] for c in meta["label_classes"]] == list(CLASSES)
    inference = json.loads((gt["bundle"] / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"] == "medkd.nets.create_net"
    assert inference["network_def"]["name"] == "retinanet2d" and inference["network_def"]["num_classes"] == 2
    assert inference["network_def"]["dense_output"] is True
    assert inference["inferer"]["_target_"].endswith("components.GTDetectionInferer")
    assert inference["inferer"]["image_size"] == 64


def test_monai_verify_metadata_and_run_offline(gt):
    for name, result in gt["monai"].items():
        assert result.returncode == 0, f"{name}: {' '.join(result.args)}\n{result.stdout[-3000:]}"
    assert "verified with no error" in gt["monai"]["metadata"].stdout
    assert "verified with no error" in gt["monai"]["net_in_out"].stdout
    run_predictor = load_predictor(gt["run"], "cpu")
    for path in gt["images"]:
        written = json.loads((gt["out"] / f"{path.stem}_detections.json").read_text())
        ours = run_predictor(np.asarray(Image.open(path), np.float32))
        assert len(ours["boxes"]) > 0, "the biased random net must report boxes"
        np.testing.assert_allclose(np.array(written["boxes"]).reshape(-1, 4), ours["boxes"], atol=2e-3)
        np.testing.assert_allclose(written["scores"], ours["scores"], atol=1e-4)
        assert written["labels"] == ours["labels"].tolist()
        assert set(written["names"]) <= set(CLASSES)


def test_bundle_predictor_equals_the_run_predictor(gt):
    from medkd.bundle.trust import check_bundle_trust

    assert check_bundle_trust(gt["bundle"]) == []  # the GT components are allowlisted by the spec
    bundle, run = load_predictor(gt["bundle"], "cpu"), load_predictor(gt["run"], "cpu")
    assert bundle.kind == run.kind == "detection"
    assert [label.name for label in bundle.labels] == list(CLASSES)
    assert bundle.metadata["report_threshold"] == run.metadata["report_threshold"] == 0.5
    image = np.asarray(Image.open(gt["images"][1]), np.float32)
    ours, theirs = bundle(image), run(image)
    bundle.check(ours, image)
    assert len(ours["boxes"]) > 0 and (ours["scores"] >= 0.5).all() and set(ours["labels"].tolist()) <= {1, 2}
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-4)


def test_medkd_bundle_verify_checks_the_dense_output(gt, tmp_path):
    import shutil

    results = {r.name: r for r in verify_bundle(gt["bundle"])}
    assert all(r.ok for r in results.values()), [str(r) for r in results.values() if not r.ok]
    assert "-> output (1, 6, " in results["net_in_out"].message
    broken = tmp_path / "broken"
    shutil.copytree(gt["bundle"], broken)
    meta = json.loads((broken / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2  # as if the deltas were not there
    (broken / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert not {r.name: r for r in verify_bundle(broken)}["net_in_out"].ok


def test_source_stage_and_missing_checkpoints(gt, tmp_path):
    from medkd.errors import DataError

    with pytest.raises(DataError, match="no checkpoint"):
        export_bundle(gt["run"], tmp_path / "src", stage="source")
    with pytest.raises(DataError, match="stage 'pretrain' is not a stage of method 'gt'"):
        export_bundle(gt["run"], tmp_path / "x", stage="pretrain")
    cfg = gt["cfg"]
    save_checkpoint(gt["run"] / "source" / "best.pt", student=_net(cfg), teacher=None, optimizer=None,
                    config=config_to_dict(cfg), iteration=2, best_score=0.25)
    try:
        bundle = export_bundle(gt["run"], tmp_path / "src", stage="source")
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        assert (meta["medkd"]["stage"], meta["medkd"]["checkpoint"], meta["medkd"]["best_score"]) == \
            ("source", "best.pt", 0.25)
    finally:
        (gt["run"] / "source" / "best.pt").unlink()


def test_mammo_pipeline_runs_the_gt_bundle_and_writes_an_sr_per_image(gt, tmp_path):
    """Issue item 6: the DICOM pipeline runs a GT detection bundle on MG images (one instance is one image) and
    writes a DICOM SR per image that dciodvfy accepts, plus JSON/CSV; the boxes are the bundle predictor's."""
    import highdicom as hd
    import pydicom

    from medkd.data.synthetic_dicom import write_mammo_series
    from medkd.io.dicom_seg import validate_with_dciodvfy
    from medkd.pipeline import run_pipeline

    mg = write_mammo_series(tmp_path / "in" / "mg", n_images=2, rows=80, cols=64, seed=3)
    summary = run_pipeline(REPO / "pipelines" / "mammo_lesions.yaml", tmp_path / "in", tmp_path / "out",
                           model=gt["bundle"], workers=0, progress=False)
    instances = [r for r in summary.rows if r.kind == "instance"]
    assert [r.status for r in instances] == ["processed"] * 2, [r.message for r in instances]
    predictor = load_predictor(gt["bundle"], "cpu")
    for sop, path in zip(mg.sop_uids, mg.paths):
        folder = tmp_path / "out" / mg.study_uid / mg.series_uid / sop
        sidecar = json.loads((folder / "detections.json").read_text())
        expected = predictor(pydicom.dcmread(path).pixel_array.astype(np.float32))
        assert len(sidecar["detections"]) == len(expected["boxes"]) > 0
        assert validate_with_dciodvfy(folder / "sr.dcm") in ([], None)
        groups = hd.sr.srread(folder / "sr.dcm").content.get_planar_roi_measurement_groups()
        assert len(groups) == len(expected["boxes"])
        names = {label.value: label.name for label in predictor.labels}
        assert sorted(g.tracking_identifier.split(" #")[0] for g in groups) == \
            sorted(names[int(k)] for k in expected["labels"])  # each finding named by the model's class
