# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures: tiny untrained BCP runs (2D ACDC-style, 3D LA-style) and NIfTI inputs, for bundles and the app.

No training: the student has random weights (seeded) with its output bias shifted so that the masks hold several
labels, which makes the bundle-vs-``medkd bcp predict`` equality checks meaningful.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import yaml

from medkd.config import config_to_dict
from medkd.engine.checkpoint import save_checkpoint
from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.predict import segmentation_spec
from medkd.methods.bcp.trainer import build_student, final_stage

REPO = Path(__file__).resolve().parents[1]

RUN_SETTINGS = {
    "2d": dict(dataset="acdc", net="bcp_unet2d_half", num_classes=4, patch=(64, 64), batch_size=4,
               labeled_batch_size=2, labeled=1, eval_batch_size=4, num_workers=0, device="cpu", seed=0),
    "3d": dict(dataset="la", net="bcp_vnet_small", num_classes=2, patch=(32, 32, 16), sliding_stride=(16, 16, 8),
               batch_size=4, labeled_batch_size=2, labeled=1, num_workers=0, device="cpu", seed=0),
}


def _balance_bias(model: torch.nn.Module, cfg: BCPConfig, volume: np.ndarray) -> None:
    """Set the head bias to minus the mean logit per class on ``volume``: no class dominates the argmax."""
    spec = segmentation_spec(cfg)
    from medkd.data.transforms import normalise_intensity

    image = normalise_intensity(volume, spec.intensity)
    image = image.transpose(2, 1, 0) if spec.axes == "xyz" else image
    model.eval()
    with torch.no_grad():
        if spec.mode == "slices_2d":
            x = torch.nn.functional.interpolate(torch.from_numpy(image[:, None]), size=spec.patch, mode="nearest")
        else:
            x = torch.from_numpy(np.ascontiguousarray(image[None, None, : spec.patch[0], : spec.patch[1]]))
            x = torch.nn.functional.pad(x, [0, max(0, spec.patch[2] - x.shape[-1])])[..., : spec.patch[2]]
        logits = model(x)
        model.head.bias -= logits.mean(dim=tuple(d for d in range(logits.ndim) if d != 1))


def make_run(folder: Path, kind: str, volume: np.ndarray, *, extra_files: dict[str, str] | None = None) -> Path:
    """A run folder ``RUN/config.yaml`` + ``RUN/<final stage>/best.pt`` with random weights (no training)."""
    cfg = BCPConfig(**RUN_SETTINGS[kind])
    torch.manual_seed(0)
    model = build_student(cfg)
    _balance_bias(model, cfg, volume)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    save_checkpoint(folder / final_stage(cfg) / "best.pt", student=model, teacher=None, optimizer=None,
                    config=config_to_dict(cfg), iteration=1, best_score=0.5, best_iteration=1)
    for name, text in (extra_files or {}).items():
        (folder / name).write_text(text)
    return folder


def write_volumes(folder: Path, seed: int = 0) -> list[Path]:
    """Two small NIfTI volumes (z, y, x) = (6, 40, 48) with 1.5 x 1.5 x 10 mm spacing, an origin and, for the
    second, an oblique direction; one float32, one int16."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.mgrid[0:6, 0:40, 0:48]
    paths = []
    for i, dtype in enumerate((np.float32, np.int16)):
        blob = 400.0 * np.exp(-(((yy - 18 - 3 * i) / 9.0) ** 2 + ((xx - 22 + 2 * i) / 11.0) ** 2)) * (1 + 0.1 * zz)
        array = (blob + 50 * rng.standard_normal(blob.shape) + 100).astype(dtype)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((1.5, 1.5, 10.0))
        image.SetOrigin((-31.5 + 4 * i, 12.25, -40.0))
        if i == 1:
            c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
            image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
        path = folder / f"case{i + 1}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def first_volume(folder: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(sorted(folder.glob("*.nii.gz"))[0]))).astype(np.float32)


def offline_env() -> dict[str, str]:
    """Environment for ``python -m monai.bundle`` subprocesses: medkd importable, nothing downloads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env[var] = "http://127.0.0.1:9"  # any download attempt fails at once instead of hanging
    # one thread each: the CLI tests run several of these at once on small CPUs
    env.update(HF_HUB_OFFLINE="1", NO_PROXY="", no_proxy="", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def run_monai_bundle(
    commands: dict[str, list[str]], env: dict[str, str], cwd: Path = REPO, timeout: float = 300
) -> dict[str, subprocess.CompletedProcess]:
    """Run ``python -m monai.bundle`` commands concurrently; name -> completed process (stdout+stderr in stdout)."""
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "monai.bundle", *map(str, args)], env=env, cwd=cwd, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, args in commands.items()
    }
    done = {}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    return done


@pytest.fixture(scope="session")
def nifti_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nifti")
    write_volumes(folder)
    return folder


@pytest.fixture(scope="session")
def run_2d(tmp_path_factory, nifti_dir) -> Path:
    summary = {"method": "bcp", "dataset": "acdc", "stages": {"selftrain": {"best_score": 0.8125, "best_iteration": 1}}}
    return make_run(tmp_path_factory.mktemp("runs") / "acdc_tiny", "2d", first_volume(nifti_dir),
                    extra_files={"train_summary.json": json.dumps(summary)})


@pytest.fixture(scope="session")
def run_3d(tmp_path_factory, nifti_dir) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "la_tiny", "3d", first_volume(nifti_dir))


@pytest.fixture(scope="session")
def monai_bundle():
    """:func:`run_monai_bundle`, for tests that run ``python -m monai.bundle`` commands."""
    return run_monai_bundle


@pytest.fixture(scope="session")
def monai_env() -> dict[str, str]:
    """Environment for ``python -m monai.bundle`` subprocesses (see :func:`offline_env`)."""
    return offline_env()


@pytest.fixture(autouse=True)
def _restore_library_log_levels():
    """``medkd.cli.main`` sets the levels of library loggers for its process; give each test the levels it found."""
    import logging

    names = ("pydicom", "highdicom", "monai", "medkd")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True)
def _restore_main_module():
    """Streamlit's ``AppTest`` installs the app script as ``sys.modules["__main__"]`` and leaves it there; a later
    test's spawned worker processes would then re-run the app on start-up and die. Put pytest's back."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
