# SPDX-License-Identifier: Apache-2.0
"""Short BCP runs end to end on synthetic data in the real layouts (spec test 10), resume, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd import api
from medkd.data.synthetic import write_synthetic_acdc, write_synthetic_la
from medkd.engine.checkpoint import load_checkpoint

APPS = Path(__file__).resolve().parents[3] / "apps" / "bcp"
SMALL_2D = ["patch=[64, 64]", "batch_size=8", "labeled_batch_size=4", "labeled=1", "pretrain_iterations=30",
            "selftrain_iterations=30", "val_interval=15", "log_interval=1", "num_workers=0", "seed=0",
            "snapshot_interval=15"]
SMALL_3D = ["patch=[32, 32, 16]", "sliding_stride=[16, 16, 8]", "pretrain_iterations=10", "selftrain_iterations=10",
            "val_interval=10", "log_interval=1", "val_from_train=2", "num_workers=0", "seed=0"]
CKPT_KEYS = {"student", "teacher", "optimizer", "config", "iteration", "rng"}


@pytest.fixture(scope="module")
def acdc_root(tmp_path_factory):
    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n_train=8, n_val=2, n_test=2, n_slices=6, seed=0)


@pytest.fixture(scope="module")
def la_root(tmp_path_factory):
    return write_synthetic_la(tmp_path_factory.mktemp("la"), n_train=6, n_test=2, shape=(48, 48, 32), seed=0)


def _losses(path: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, path.read_text().splitlines()) if "loss" in r]


@pytest.fixture(scope="module")
def run_2d(acdc_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run2d")
    api.bcp_train(APPS / "cpu_2d.yaml", acdc_root, out, overrides=SMALL_2D, progress=False)
    return out


@pytest.mark.slow
def test_2d_run_writes_one_checkpoint_format_and_learns(run_2d):
    for stage in ("pretrain", "selftrain"):
        for name in ("best.pt", "last.pt"):
            ckpt = load_checkpoint(run_2d / stage / name)
            assert CKPT_KEYS <= set(ckpt)
        assert load_checkpoint(run_2d / stage / "last.pt")["iteration"] == 30
    assert load_checkpoint(run_2d / "pretrain" / "last.pt")["teacher"] is None
    for stage in ("pretrain", "selftrain"):  # mixed-image snapshots every 15 iterations
        assert sorted(p.name for p in (run_2d / stage / "snapshots").glob("*.png")) == ["it_000015.png", "it_000030.png"]
    assert load_checkpoint(run_2d / "selftrain" / "last.pt")["teacher"] is not None
    losses = _losses(run_2d / "pretrain" / "metrics.jsonl")
    assert all(np.isfinite(losses)) and len(losses) >= 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(np.isfinite(_losses(run_2d / "selftrain" / "metrics.jsonl")))


@pytest.mark.slow
def test_training_writes_run_json_and_the_run_loads_by_it(run_2d):
    """``RUN/run.json`` names the method and kind; load_predictor dispatches on it to BCP's loader."""
    import medkd
    from medkd.inference import load_predictor

    assert json.loads((run_2d / "run.json").read_text()) == {
        "method": "bcp", "kind": "segmentation", "medkd": medkd.__version__,
    }
    predictor = load_predictor(run_2d, "cpu")
    assert predictor.kind == "segmentation" and predictor.version == "run:selftrain/best"
    volume = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    predictor.check(predictor(volume), volume)


@pytest.mark.slow
def test_2d_eval_json_and_predict(run_2d, acdc_root, tmp_path):
    summary = api.bcp_eval(run_2d, acdc_root, split="test", json=tmp_path / "m.json", progress=False)
    written = json.loads((tmp_path / "m.json").read_text())
    assert set(written["mean"]) == {"dice", "jaccard", "hd95", "asd"}
    assert set(written["per_class"]) == {"RV", "Myo", "LV"}
    assert len(written["cases"]) == 2 and 0.0 <= summary["mean"]["dice"] <= 1.0
    assert (run_2d / "metrics_per_case_test.csv").is_file()

    import SimpleITK as sitk

    vol = np.random.default_rng(0).random((5, 40, 48)).astype(np.float32)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((1.25, 1.5, 8.0))
    img.SetOrigin((10.0, -5.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "case.nii.gz"))
    [out] = api.bcp_predict(run_2d, tmp_path / "case.nii.gz", tmp_path / "pred")
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == img.GetSize()
    assert mask.GetSpacing() == pytest.approx(img.GetSpacing()) and mask.GetOrigin() == pytest.approx(img.GetOrigin())
    assert sitk.GetArrayFromImage(mask).max() < 4


@pytest.mark.slow
def test_predict_on_a_real_dicom_series_keeps_its_geometry(run_2d, tmp_path):
    """The CT series shipped inside pydicom (dicomdirtests), segmented slice by slice by a 2D run."""
    import shutil

    import SimpleITK as sitk
    from pydicom.data import get_testdata_file

    series = Path(get_testdata_file("dicomdirtests/77654033/CT2/17106")).parent
    folder = tmp_path / "ct_series"
    shutil.copytree(series, folder)
    [out] = api.bcp_predict(run_2d, folder, tmp_path / "pred")
    assert out.name == "ct_series_seg.nii.gz"
    reader = sitk.ImageSeriesReader()
    ref = sitk.ReadImage(reader.GetGDCMSeriesFileNames(str(folder)))
    mask = sitk.ReadImage(str(out))
    assert mask.GetSize() == ref.GetSize()
    assert mask.GetSpacing() == pytest.approx(ref.GetSpacing()) and mask.GetOrigin() == pytest.approx(ref.GetOrigin())


@pytest.mark.slow
def test_supervised_baseline_uses_the_same_loop(acdc_root, tmp_path):
    api.bcp_train(APPS / "cpu_2d.yaml", acdc_root, tmp_path, overrides=SMALL_2D + ["method=supervised"], progress=False)
    ckpt = load_checkpoint(tmp_path / "supervised" / "last.pt")
    assert ckpt["iteration"] == 60 and ckpt["teacher"] is None
    assert not (tmp_path / "pretrain").exists()
    assert json.loads((tmp_path / "run.json").read_text())["method"] == "bcp"  # the baseline is a BCP run


@pytest.mark.slow
def test_3d_run_and_eval(la_root, tmp_path):
    api.bcp_train(APPS / "cpu_3d.yaml", la_root, tmp_path, overrides=SMALL_3D, progress=False)
    for stage in ("pretrain", "selftrain"):
        ckpt = load_checkpoint(tmp_path / stage / "last.pt")
        assert CKPT_KEYS <= set(ckpt) and ckpt["iteration"] == 10
        assert all(np.isfinite(_losses(tmp_path / stage / "metrics.jsonl")))
    summary = api.bcp_eval(tmp_path, la_root, split="test", progress=False)
    assert set(summary["per_class"]) == {"left_atrium"} and len(summary["cases"]) == 2


@pytest.mark.slow
def test_interrupted_run_resumes_from_last_checkpoint(acdc_root, tmp_path, monkeypatch):
    from medkd.methods.bcp import trainer

    original = trainer.BCPStageTask.compute_loss

    def interrupt(self, batch, iteration):
        if self.stage == "selftrain" and iteration == 23:
            raise KeyboardInterrupt
        return original(self, batch, iteration)

    overrides = SMALL_2D + ["val_interval=10"]
    monkeypatch.setattr(trainer.BCPStageTask, "compute_loss", interrupt)
    with pytest.raises(KeyboardInterrupt):
        api.bcp_train(APPS / "cpu_2d.yaml", acdc_root, tmp_path, overrides=overrides, progress=False)
    saved = load_checkpoint(tmp_path / "selftrain" / "last.pt")["iteration"]
    assert 20 <= saved < 30
    pretrain_log = (tmp_path / "pretrain" / "metrics.jsonl").read_text()

    monkeypatch.setattr(trainer.BCPStageTask, "compute_loss", original)
    api.bcp_train(APPS / "cpu_2d.yaml", acdc_root, tmp_path, overrides=overrides, resume=True, progress=False)
    assert load_checkpoint(tmp_path / "selftrain" / "last.pt")["iteration"] == 30
    assert (tmp_path / "pretrain" / "metrics.jsonl").read_text() == pretrain_log  # the finished stage is not rerun
    iterations = [r["iteration"] for r in map(json.loads, (tmp_path / "selftrain" / "metrics.jsonl").read_text().splitlines())]
    assert max(iterations) == 30


def test_unlabeled_ground_truth_never_enters_the_loss(acdc_root):
    """Randomising the unlabelled half's labels leaves the self-training loss unchanged (spec test 2)."""
    from medkd.config import load_config
    from medkd.engine.ema import EMATeacher
    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.data import build_run_data
    from medkd.methods.bcp.trainer import BCPStageTask, build_student

    cfg = load_config(BCPConfig, APPS / "cpu_2d.yaml", SMALL_2D)
    student = build_student(cfg).eval()
    teacher = EMATeacher(student, decay=0.99)
    task = BCPStageTask("selftrain", cfg, build_run_data(cfg, acdc_root), acdc_root, student,
                        torch.optim.SGD(student.parameters(), lr=0.01), torch.device("cpu"), teacher=teacher)
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(8, 1, 64, 64, generator=g), "label": torch.randint(0, 4, (8, 64, 64), generator=g)}
    scrambled = {"image": batch["image"], "label": batch["label"].clone()}
    scrambled["label"][4:] = torch.randint(0, 4, (4, 64, 64), generator=g)
    np.random.seed(5)
    loss_a, _ = task.compute_loss(batch, 1)
    np.random.seed(5)
    loss_b, _ = task.compute_loss(scrambled, 1)
    assert float(loss_a.detach()) == float(loss_b.detach())
    scrambled["label"][:4] = torch.randint(0, 4, (4, 64, 64), generator=g)  # labelled labels do matter
    np.random.seed(5)
    loss_c, _ = task.compute_loss(scrambled, 1)
    assert float(loss_c.detach()) != float(loss_a.detach())


@pytest.mark.slow
def test_users_own_nifti_datalist_trains_evaluates_and_predicts(tmp_path):
    import SimpleITK as sitk

    from medkd.data.synthetic import write_synthetic_nifti

    root = write_synthetic_nifti(tmp_path / "msd", n=6, shape=(32, 48, 48), seed=0, msd=True)
    overrides = ["patch=[16, 32, 32]", "sliding_stride=[8, 16, 16]", "net=bcp_vnet_small", "labeled=2",
                 "val_from_train=2", "batch_size=4", "labeled_batch_size=2", "pretrain_iterations=4",
                 "selftrain_iterations=4", "val_interval=4", "num_workers=0", "snapshot_interval=0"]
    run = tmp_path / "run"
    api.bcp_train(APPS / "nifti_3d.yaml", root / "dataset.json", run, overrides=overrides, progress=False)
    assert load_checkpoint(run / "selftrain" / "last.pt")["iteration"] == 4
    summary = api.bcp_eval(run, root / "dataset.json", split="val", progress=False)
    assert len(summary["cases"]) == 2 and set(summary["per_class"]) == {"class_1"}
    image = next((root / "imagesTr").iterdir())
    [mask] = api.bcp_predict(run, image, tmp_path / "pred.nii.gz")
    ref, out = sitk.ReadImage(str(image)), sitk.ReadImage(str(mask))
    assert out.GetSize() == ref.GetSize() and out.GetDirection() == pytest.approx(ref.GetDirection())


def test_nifti_datalist_too_small_is_a_clear_error(tmp_path):
    from medkd.config import load_config
    from medkd.data.synthetic import write_synthetic_nifti
    from medkd.errors import DataError
    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.data import build_run_data

    root = write_synthetic_nifti(tmp_path / "msd", n=3, shape=(16, 16, 16), seed=0)
    cfg = load_config(BCPConfig, APPS / "nifti_3d.yaml", ["labeled=2", "val_from_train=2"])
    with pytest.raises(DataError, match="need labeled=2 plus val_from_train=2"):
        build_run_data(cfg, root)
