# SPDX-License-Identifier: Apache-2.0
"""Load a trained BCP run and segment NIfTI files, image folders or DICOM series with it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from medkd.config import config_from_dict
from medkd.engine.checkpoint import load_checkpoint
from medkd.errors import DataError
from medkd.inference import Predictor, file_sha256, resolve_device
from medkd.io.labels import labels_from_names
from medkd.io.volume_io import list_inputs, output_name, read_volume, write_mask_like
from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.evaluate import class_names, segmentation_spec
from medkd.methods.bcp.trainer import METHOD, build_student, final_stage, run_device
from medkd.runs import read_run_info

__all__ = [
    "load_run", "load_run_config", "checkpoint_path", "segmentation_spec", "segment_array", "run_predictor",
    "load_run_predictor", "predict_paths",
]

logger = logging.getLogger(__name__)


def checkpoint_path(run: str | Path, cfg: BCPConfig, which: str = "best", stage: str | None = None) -> Path:
    """``RUN/<stage>/<which>.pt`` (default stage: the run's final one, or the ``stage`` its ``run.json`` names);
    ``best`` falls back to ``last``."""
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    stage_dir = Path(run) / (stage or _run_stage(run) or final_stage(cfg))
    for name in (which, "last"):
        if (stage_dir / f"{name}.pt").is_file():
            return stage_dir / f"{name}.pt"
    raise DataError(stage_dir, f"no {which}.pt checkpoint: train the run first (medkd bcp train ... --out {run})")


def _run_stage(run: str | Path) -> str | None:
    """The student's stage folder a ``run.json`` names (runs of other methods storing a BCP-format student)."""
    stage = read_run_info(run).get("stage")
    return stage if isinstance(stage, str) and stage else None


def load_run_config(run: str | Path) -> BCPConfig:
    """The config a run was trained with (``RUN/config.yaml``), without loading any weights.

    Runs of other methods whose student is a BCP-format segmentation network (a distilled student: ``run.json``
    has ``"format": "bcp"``) read the same way.

    Raises:
        DataError: the folder is not a medkd run, or its ``run.json`` names another method.
    """
    cfg_file = Path(run) / "config.yaml"
    if not cfg_file.is_file():
        raise DataError(run, "not a medkd run folder (config.yaml is missing)")
    info = read_run_info(run)  # a legacy folder without run.json is a BCP run
    method = info["method"]
    if method != METHOD and info.get("format") != METHOD:
        raise DataError(run, f"a run of method {method!r} (run.json), not a BCP run: use 'medkd {method} ...'")
    return config_from_dict(BCPConfig, yaml.safe_load(cfg_file.read_text()) or {}, source=str(cfg_file))


def load_run(
    run: str | Path, which: str = "best", device: str | torch.device | None = None, *, stage: str | None = None
) -> tuple[BCPConfig, nn.Module]:
    """Rebuild the run's network from ``RUN/config.yaml`` and load a stage's student weights (eval mode).

    Args:
        which: ``best`` (on validation) or ``last``. stage: ``pretrain``, ``selftrain`` or ``supervised``;
            default the run's final stage.

    Raises:
        DataError: the folder is not a medkd BCP run, or its checkpoint is missing/corrupt.
    """
    cfg = load_run_config(run)
    state = load_checkpoint(checkpoint_path(run, cfg, which, stage))
    model = build_student(cfg)
    model.load_state_dict(state["student"])
    dev = resolve_device(device) if device is not None else run_device(cfg)
    return cfg, model.to(dev).eval()


def segment_array(model: nn.Module, cfg: BCPConfig, array: np.ndarray) -> np.ndarray:
    """Label map ``(z, y, x)`` of a volume ``(z, y, x)`` as read by SimpleITK (see :func:`segmentation_spec`)."""
    return segmentation_spec(cfg).segment(model, array)


def run_predictor(
    run: str | Path, which: str = "best", device: str | torch.device | None = None, *, stage: str | None = None
) -> Predictor:
    """A :class:`~medkd.inference.Predictor` for a run's final (or ``stage``'s) student."""
    cfg, model = load_run(run, which, device, stage=stage)
    spec = segmentation_spec(cfg)
    ckpt = checkpoint_path(run, cfg, which, stage)
    return Predictor(
        kind="segmentation", name=Path(run).resolve().name, version=f"run:{ckpt.parent.name}/{ckpt.stem}",
        weights_sha256=file_sha256(ckpt), labels=labels_from_names(class_names(cfg)),
        run=lambda array: spec.segment(model, array), source=Path(run), spec=spec,
        metadata={"method": cfg.method.value, "dataset": cfg.dataset.value, "net": cfg.net},
    )


def load_run_predictor(run: str | Path, device: str | torch.device | None = None, *, trust: bool = False) -> Predictor:
    """BCP's ``Method.load_predictor``: the run's final student, best checkpoint (``trust`` is unused: a run folder
    holds no code)."""
    del trust
    return run_predictor(run, "best", device)


def predict_paths(
    run: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    checkpoint: str = "best",
    on_case: Callable[[Path, Path], None] | None = None,
) -> list[Path]:
    """Segment every input under ``input`` and write NIfTI masks with the inputs' geometry.

    Args:
        input: a NIfTI/MHA/NRRD file, a folder of them, or a DICOM series folder.
        output: a ``.nii``/``.nii.gz`` file for a single input, else a folder (created).

    Returns:
        The written mask paths.
    """
    cfg, model = load_run(run, checkpoint)
    inputs = list_inputs(Path(input))
    output = Path(output)
    single_file = len(inputs) == 1 and output.name.endswith((".nii", ".nii.gz"))
    written = []
    for path in inputs:
        volume = read_volume(path)
        mask = segment_array(model, cfg, volume.array)
        target = output if single_file else output / output_name(path)
        written.append(write_mask_like(mask.astype(np.uint8), volume.image, target))
        logger.info("%s -> %s", path, target)
        if on_case is not None:
            on_case(path, target)
    return written
