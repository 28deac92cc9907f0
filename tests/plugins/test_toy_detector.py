# SPDX-License-Identifier: Apache-2.0
"""Issue 9's "done when": a detection method from another package, found only through the ``medkd.plugins`` entry
point, goes through medkd with no edit to medkd: ``medkd toy train`` on the engine (and ``--resume``),
``load_predictor`` of the run, ``medkd pipeline run`` writing a DICOM SR, and ``medkd bundle export`` checked by
MONAI's ``verify_net_in_out`` / ``verify_metadata`` and loaded back with ``load_predictor``.

The plugin is ``tests/plugins/toy_detector`` (a tiny CenterNet-like detector on synthetic bright boxes), installed
as a real distribution (a ``*.dist-info`` folder with ``entry_points.txt``, :func:`plugins.dist.install_plugin`).
One module fixture trains the run (about 5 s on a CPU) and exports the bundle; the MONAI commands run as
subprocesses, concurrently, which find the plugin's network through the same entry point.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medkd.bundle import SCHEMA_PATH
from medkd.cli import main
from medkd.data.synthetic_dicom import write_dicom_series
from medkd.inference import load_predictor
from medkd.io.dicom_seg import validate_with_dciodvfy
from plugins.dist import PLUGIN_SRC, install_plugin

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),
    pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning"),
]

REPO = Path(__file__).resolve().parents[2]
#: (z0, z1, row0, row1, col0, col1) of the bright boxes in the synthetic CT (rows != cols catch x/y mix-ups)
CT_BOXES = [(1, 4, 6, 16, 8, 20), (2, 6, 22, 34, 26, 38)]
CONFIG = "iterations: 60\nval_interval: 30\nbatch_size: 16\nseed: 0\ndecode:\n  score_threshold: 0.3\n"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _iteration(run: Path) -> int:
    from medkd.engine.checkpoint import load_checkpoint

    return int(load_checkpoint(run / "train" / "last.pt")["iteration"])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    dims = len(a) // 2
    inter = np.clip(np.minimum(a[dims:], b[dims:]) - np.maximum(a[:dims], b[:dims]), 0, None).prod()
    return float(inter / ((a[dims:] - a[:dims]).prod() + (b[dims:] - b[:dims]).prod() - inter))


@pytest.fixture(scope="module")
def toy(tmp_path_factory, monai_env, monai_bundle):
    """Install the plugin, train (60 iterations), resume to 120, resume again (a no-op), export the bundle and start
    MONAI's checks on it; every step through ``medkd.cli.main``."""
    root = tmp_path_factory.mktemp("toy")
    with pytest.MonkeyPatch.context() as mp:
        info = install_plugin(root / "site", mp, "toy-detector", {"toy_detector": "toy_detector"})
        assert "toy_detector" not in sys.modules  # nothing imported it: only the entry point can
        from toy_detector.data import write_toy_dataset

        data, run, config = write_toy_dataset(root / "data"), root / "run", root / "toy.yaml"
        config.write_text(CONFIG)
        train = ["toy", "train", "--config", str(config), "--data-root", str(data), "--out", str(run)]
        steps = {"first": main([*train])}
        steps["first_iteration"] = _iteration(run)
        steps["resume"] = main([*train, "--resume", "--set", "iterations=120"])
        steps["resume_iteration"] = _iteration(run)
        before = {name: _sha(run / "train" / name) for name in ("last.pt", "best.pt", "metrics.jsonl")}
        steps["again"] = main([*train, "--resume", "--set", "iterations=120"])
        steps["unchanged"] = before == {name: _sha(run / "train" / name) for name in before}

        bundle = root / "models" / "toy_bundle"
        steps["export"] = main(["bundle", "export", "--run", str(run), "-o", str(bundle)])
        env = dict(monai_env)  # tests/conftest.py offline_env(): medkd importable, nothing downloads
        env["PYTHONPATH"] = os.pathsep.join([str(info.parent), str(PLUGIN_SRC), env["PYTHONPATH"]])
        env.pop("MEDKD_NO_PLUGINS", None)
        meta, inference = bundle / "configs" / "metadata.json", bundle / "configs" / "inference.json"
        monai = monai_bundle({
            "net_in_out": ["verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", inference,
                           "--n", "1", "--any", "24", "--device", "cpu"],  # "*" sizes: 24 pixels
            "metadata": ["verify_metadata", "--meta_file", meta, "--filepath", SCHEMA_PATH],
        }, env)
        yield {"root": root, "data": data, "run": run, "bundle": bundle, "steps": steps, "monai": monai}


def test_the_plugin_registers_a_detection_method_net_and_bundle_spec(toy):
    import medkd.plugins
    from medkd.methods import get_method, list_methods
    from medkd.methods.bundle_spec import find_bundle_spec
    from medkd.nets import NetTask, net_task
    from medkd.nets.contracts import check_registered_net

    status = {s.name: s for s in medkd.plugins.loaded_plugins()}["toy_detector"]
    assert (status.loaded, status.distribution) == (True, "toy-detector"), status.error
    assert get_method("toy").kind == "detection" and "toy" in list_methods(kind="detection")
    assert net_task("toy_centernet") == NetTask.DETECTION
    losses, detections = check_registered_net("toy_centernet")  # medkd's detection contract, as the sweep runs it
    assert set(losses) == {"heatmap", "size"} and len(detections) == 2
    spec = find_bundle_spec("toy")
    assert spec.kind == "detection" and spec.component_modules == ("toy_detector.components",)


def test_medkd_toy_train_runs_on_the_engine_and_resumes(toy):
    steps, run = toy["steps"], toy["run"]
    assert steps["first"] == steps["resume"] == steps["again"] == 0
    assert (steps["first_iteration"], steps["resume_iteration"]) == (60, 120)
    assert steps["unchanged"], "resuming a finished run must be a no-op"
    info = json.loads((run / "run.json").read_text())
    assert (info["method"], info["kind"]) == ("toy", "detection")
    lines = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    iterations = [line["iteration"] for line in lines if "loss" in line]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 120 and 70 in iterations  # continued
    scores = [line["val/score"] for line in lines if "val/score" in line]
    assert len(scores) == 4 and max(scores) >= 0.8, scores  # F1 at IoU 0.5 on the val split: it learned


def test_the_run_loads_through_load_predictor(toy):
    from toy_detector.data import draw_boxes

    predictor = load_predictor(toy["run"], "cpu")
    assert (predictor.kind, predictor.version) == ("detection", "run:train/best")
    assert [label.name for label in predictor.labels] == ["box"]
    image, truth = draw_boxes(np.random.default_rng(7), (36, 44), 2)  # truth: (row0, col0, row1, col1)
    out = predictor(image)
    predictor.check(out, image)
    assert out["boxes"].shape[1] == 4 and set(out["labels"].tolist()) == {1}
    for row0, col0, row1, col1 in truth:  # the kind's boxes are (x_min, y_min, x_max, y_max), x the column
        assert max(_iou(box, np.array([col0, row0, col1, row1])) for box in out["boxes"]) >= 0.5, out
    volume = np.stack([image, image, np.zeros_like(image)])
    out3d = predictor(volume)
    predictor.check(out3d, volume)
    assert out3d["boxes"].shape[1] == 6 and (out3d["boxes"][:, [2, 5]] == [0, 2]).all()


def _ct_series(folder: Path):
    rng = np.random.default_rng(1)
    stored = 1024 + rng.normal(0, 20, (6, 40, 48))
    for z0, z1, r0, r1, c0, c1 in CT_BOXES:
        stored[z0:z1, r0:r1, c0:c1] += 600
    return write_dicom_series(folder, pixels=stored, origin=(0, 0, 0), pixel_spacing=(1, 1), slice_spacing=2)


def test_medkd_pipeline_run_writes_a_valid_dicom_sr(toy, tmp_path):
    hd = pytest.importorskip("highdicom")
    ct = _ct_series(tmp_path / "in" / "ct")
    pipeline = tmp_path / "toy_ct.yaml"
    pipeline.write_text(f"name: toy_ct\nmodel: {toy['run']}\ndevice: cpu\nselection:\n  - name: ct\n"
                        f"    conditions: {{Modality: '(?i)^CT$'}}\noutputs:\n  sr: {{enabled: true}}\n")
    out = tmp_path / "out"
    assert main(["-q", "pipeline", "run", str(pipeline), "-i", str(tmp_path / "in"), "-o", str(out), "-j", "0",
                 "--strict"]) == 0
    folder = out / ct.study_uid / ct.series_uid
    found = json.loads((folder / "detections.json").read_text())["detections"]
    assert len(found) == len(CT_BOXES), found
    for z0, z1, r0, r1, c0, c1 in CT_BOXES:
        truth = np.array([z0, r0, c0, z1, r1, c1], float)
        best = max(_iou(np.array([d[k] for k in ("z0", "y0", "x0", "z1", "y1", "x1")]), truth) for d in found)
        assert best >= 0.5, found
    sr = folder / "sr.dcm"
    errors = validate_with_dciodvfy(sr)
    if errors is not None:  # dciodvfy (Debian dicom3tools) is installed by `make test`
        assert errors == [], "\n".join(errors)
    report = hd.sr.srread(sr)
    assert isinstance(report, hd.sr.Comprehensive3DSR) and report.StudyInstanceUID == ct.study_uid
    groups = report.content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier.split(" #")[0] for g in groups] == ["box", "box"]


def test_the_bundle_passes_monai_verify_net_in_out_and_verify_metadata(toy, tmp_path):
    assert toy["steps"]["export"] == 0
    for name, result in toy["monai"].items():
        assert result.returncode == 0, f"{name}: {' '.join(result.args)}\n{result.stdout[-3000:]}"
        assert "verified with no error" in result.stdout, result.stdout[-2000:]
    meta = json.loads((toy["bundle"] / "configs" / "metadata.json").read_text())
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert (pred["type"], pred["num_channels"], meta["medkd"]["kind"]) == ("image", 3, "detection")

    from monai.bundle import verify_net_in_out  # the check is real: a wrong channel count fails it

    broken = tmp_path / "metadata.json"
    pred["num_channels"] = 1
    broken.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel number `3` doesn't match: `1`"):
        verify_net_in_out("network_def", meta_file=str(broken), n=1, device="cpu",
                          config_file=str(toy["bundle"] / "configs" / "inference.json"))


def test_the_bundle_loads_through_load_predictor_and_verifies(toy, capsys):
    from toy_detector.data import draw_boxes

    from medkd.bundle.trust import check_bundle_trust

    assert check_bundle_trust(toy["bundle"]) == []  # the plugin's inferer is allowlisted by its spec
    bundle, run = load_predictor(toy["bundle"], "cpu"), load_predictor(toy["run"], "cpu")  # no trust needed
    assert bundle.kind == "detection" and [label.name for label in bundle.labels] == ["box"]
    image, _ = draw_boxes(np.random.default_rng(3), (40, 40), 2)
    volume = np.stack([image, image])
    for data in (image, volume):
        ours, theirs = bundle(data), run(data)
        bundle.check(ours, data)
        assert len(ours["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-4)
    assert main(["bundle", "verify", str(toy["bundle"])]) == 0, capsys.readouterr().out
