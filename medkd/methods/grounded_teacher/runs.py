# SPDX-License-Identifier: Apache-2.0
"""A Grounded Teacher run folder: its layout, config and models.

Layout::

    RUN/run.json                {"method": "gt", "kind": "detection", ...}
    RUN/config.yaml             the resolved GTConfig (classes filled in from the source dataset)
    RUN/source/                 stage S (engine folder): best.pt / last.pt (the student), metrics.jsonl,
                                calibration.json (clean thresholds calibrated on the source val split)
    RUN/pseudo_labels.json      stage P: source pseudo-labels on the target train images (COCO results, original px)
    RUN/expert_boxes.json       stage E: expert boxes (COCO results, original px; category_id -1 = class-agnostic)
    RUN/adapt/                  stage A (engine folder): last.pt holds the EMA teacher (the final model)
    RUN/stages.json             which stages are done, with their summaries

Example:
    >>> from pathlib import Path
    >>> stage_dir(Path("RUN"), "adapt").as_posix()
    'RUN/adapt'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from medkd.config import config_from_dict, config_to_dict
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic
from medkd.methods.grounded_teacher.config import GTConfig, GTMethod
from medkd.runs import read_run_info, write_run_info

__all__ = [
    "KIND",
    "METHOD",
    "STAGES",
    "final_stage",
    "load_detector",
    "load_run_config",
    "read_stages",
    "save_run_config",
    "stage_checkpoint",
    "stage_dir",
    "mark_stage",
]

logger = logging.getLogger(__name__)

METHOD, KIND = "gt", "detection"
#: stage names in order: source training, pseudo-labels, expert boxes, adaptation
STAGES: tuple[str, ...] = ("source", "pseudo_label", "expert_boxes", "adapt")


def stage_dir(run: Path, stage: str) -> Path:
    """The engine folder of a training stage (``source`` or ``adapt``)."""
    return Path(run) / stage


def save_run_config(run: Path, cfg: GTConfig) -> None:
    """Write ``run.json`` and ``config.yaml``."""
    run.mkdir(parents=True, exist_ok=True)
    write_run_info(run, method=METHOD, kind=KIND)
    write_text_atomic(run / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def load_run_config(run: str | Path) -> GTConfig:
    """``RUN/config.yaml`` of a Grounded Teacher run.

    Raises:
        DataError: not a GT run, or no config.
    """
    info = read_run_info(run)
    if info["method"] != METHOD:
        raise DataError(run, f"a run of method {info['method']!r}, not {METHOD!r}")
    cfg_file = Path(run) / "config.yaml"
    if not cfg_file.is_file():
        raise DataError(run, "config.yaml is missing")
    return config_from_dict(GTConfig, yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {},
                            source=str(cfg_file))


def read_stages(run: Path) -> dict[str, Any]:
    """``RUN/stages.json`` (``{}`` before the first stage finishes)."""
    path = Path(run) / "stages.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg})") from None


def mark_stage(run: Path, stage: str, summary: dict[str, Any]) -> None:
    """Record ``stage`` as done with its summary in ``RUN/stages.json``."""
    stages = read_stages(run)
    stages[stage] = {"done": True, **summary}
    write_text_atomic(Path(run) / "stages.json", json.dumps(stages, indent=2))


def final_stage(cfg: GTConfig) -> str:
    """The stage whose model is the run's result: ``adapt`` (its EMA teacher), ``source`` for ``source_only``."""
    return "source" if cfg.method is GTMethod.SOURCE_ONLY else "adapt"


def stage_checkpoint(run: str | Path, stage: str) -> tuple[Path, str]:
    """The checkpoint of a stage's model and the entry holding it.

    ``source``: ``best.pt`` (else ``last.pt``), entry ``student``; ``adapt``: ``last.pt``, entry ``teacher`` (the EMA
    teacher of the last iteration is the model; selecting on target val would be an oracle).

    Raises:
        DataError: the stage has not been trained.
    """
    folder = stage_dir(Path(run), stage)
    names, entry = ((("best", "last"), "student") if stage == "source" else (("last",), "teacher"))
    if stage not in ("source", "adapt"):
        raise DataError(run, f"stage must be 'source' or 'adapt', got {stage!r}")
    for name in names:
        if (folder / f"{name}.pt").is_file():
            return folder / f"{name}.pt", entry
    raise DataError(folder, f"no checkpoint: run stage {stage!r} first (medkd gt train ... --out {run})")


def load_detector(run: str | Path, stage: str | None = None, device: Any = "cpu") -> Any:
    """The detector of a run's ``stage`` (default: :func:`final_stage`), in ``eval()`` mode on ``device``.

    Raises:
        DataError: not a GT run, or the stage has no checkpoint.
    """
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.nets import create_net

    cfg = load_run_config(run)
    stage = stage or final_stage(cfg)
    if stage == "adapt" and cfg.method is GTMethod.SOURCE_ONLY:
        logger.info("a source_only run has no adaptation stage: using its source model")
        stage = "source"
    path, entry = stage_checkpoint(run, stage)
    state = load_checkpoint(path).get(entry)
    if state is None:
        raise DataError(path, f"the checkpoint has no {entry!r} weights")
    model = create_net(cfg.net.name, **cfg.net_kwargs())
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(path, f"the weights do not fit the run's detector ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()
