# SPDX-License-Identifier: Apache-2.0
"""``train_gt``: Grounded Teacher's stages in order (source training, pseudo-labels, expert boxes, adaptation).

Each stage is skipped when ``RUN/stages.json`` records it as done, so ``medkd gt train`` continues a run where it
stopped, and the stages can also run alone (``medkd gt source-train | pseudo-label | expert-boxes | adapt``), each
checking that the stages before it are done. A training stage interrupted midway continues from its ``last.pt``
with ``--resume``. The run layout is in :mod:`medkd.methods.grounded_teacher.runs`.

Which stages a run has depends on ``method``: ``source_only`` stops after S; ``mean_teacher`` skips E; ``gt`` runs
E when an expert is configured.

Example:
    >>> from medkd.methods.grounded_teacher.config import GTConfig
    >>> planned_stages(GTConfig(method="mean_teacher"))
    ['source', 'pseudo_label', 'adapt']
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.seeding import seed_everything
from medkd.errors import ConfigError, DataError
from medkd.inference import resolve_device
from medkd.io.atomic import write_text_atomic
from medkd.methods.grounded_teacher.config import GTConfig, GTMethod, Mode
from medkd.methods.grounded_teacher.data import ViewStore, load_domain, read_results
from medkd.methods.grounded_teacher.runs import (
    STAGES,
    load_run_config,
    mark_stage,
    read_stages,
    save_run_config,
    stage_checkpoint,
    stage_dir,
)

__all__ = ["planned_stages", "run_stage", "train_gt"]

logger = logging.getLogger(__name__)


def planned_stages(cfg: GTConfig) -> list[str]:
    """The stages a run of ``cfg`` has, in order."""
    if cfg.method is GTMethod.SOURCE_ONLY:
        return ["source"]
    return [s for s in STAGES if s != "expert_boxes" or cfg.uses_expert()]


def _with_classes(cfg: GTConfig, data_root: Path) -> GTConfig:
    """``cfg`` with ``classes`` set from the source training split when empty."""
    if cfg.classes:
        return cfg
    found = load_domain(data_root, cfg.source.dataset, cfg.source.train_split)
    logger.info("classes from %s: %s", cfg.source.dataset, ", ".join(found.class_names))
    return dataclasses.replace(cfg, classes=tuple(found.class_names))


def _prepare(cfg: GTConfig, data_root: Path, out: Path) -> GTConfig:
    """Resolve classes, check a continued run has the same config, write run.json/config.yaml."""
    cfg = _with_classes(cfg, data_root)
    if (out / "config.yaml").is_file() and read_stages(out):
        saved = load_run_config(out)
        if saved.classes != cfg.classes:
            raise ConfigError(f"{out}: the run was trained with classes {list(saved.classes)}, not "
                              f"{list(cfg.classes)}; use a new --out")
    save_run_config(out, cfg)
    return cfg


def _threshold(cfg: GTConfig, run: Path, configured: float | None) -> list[float]:
    """Pseudo-label thresholds per class: configured, else ``gt_compat`` 0.8, else the calibration of stage S."""
    k = len(cfg.classes)
    if configured is not None:
        return [float(configured)] * k
    if cfg.mode is Mode.GT_COMPAT:
        return [0.8] * k
    path = stage_dir(run, "source") / "calibration.json"
    try:
        calibration = json.loads(path.read_text(encoding="utf-8"))
        per_class = [float(v) for v in calibration.get("per_class", [calibration["threshold"]] * k)]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(path, "no calibrated threshold: run stage source first") from None
    if len(per_class) != k:
        raise DataError(path, f"{len(per_class)} class thresholds for {k} classes")
    return per_class


def run_stage(stage: str, cfg: GTConfig, data_root: str | Path, out: str | Path, *, resume: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Run one stage into ``out`` (the stages before it must be done); returns its summary.

    Raises:
        ConfigError: an unknown stage, or one the run's method does not have.
        DataError: an earlier stage is missing, or bad data.
    """
    data_root, out = Path(data_root), Path(out)
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if not data_root.is_dir():
        raise DataError(data_root, "data root not found")
    plan = planned_stages(cfg)
    if stage not in plan:
        raise ConfigError(f"method {cfg.method.value!r} (expert {cfg.expert.value!r}) has no stage {stage!r}; its "
                          f"stages: {', '.join(plan)}")
    cfg = _prepare(cfg, data_root, out)
    done = read_stages(out)
    missing = [s for s in plan[:plan.index(stage)] if s not in done]
    if missing:
        raise DataError(out, f"stage {stage!r} needs stage(s) {', '.join(missing)} first (medkd gt train runs all)")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    classes = cfg.classes
    if stage == "source":
        train = ViewStore(load_domain(data_root, cfg.source.dataset, cfg.source.train_split, classes), cfg.image_size)
        val = ViewStore(load_domain(data_root, cfg.source.dataset, cfg.source.val_split, classes), cfg.image_size)
        from medkd.methods.grounded_teacher.source_stage import run_source_stage

        summary = run_source_stage(cfg, train, val, stage_dir(out, "source"), device, resume=resume,
                                   progress=progress)
    else:
        target = load_domain(data_root, cfg.target.dataset, cfg.target.train_split, classes)
        if stage == "pseudo_label":
            from medkd.methods.grounded_teacher.pseudo_labels import run_pseudo_label_stage

            summary = run_pseudo_label_stage(cfg, out, ViewStore(target, cfg.image_size),
                                             _threshold(cfg, out, cfg.pseudo_label.score_threshold), device)
        elif stage == "expert_boxes":
            from medkd.methods.grounded_teacher.expert_stage import run_expert_stage

            summary = run_expert_stage(cfg, out, target, device, data_root=data_root, progress=progress)
        else:
            summary = _adapt(cfg, data_root, out, target, device, resume=resume, progress=progress)
    mark_stage(out, stage, summary)
    return summary


def _adapt(cfg: GTConfig, data_root: Path, out: Path, target: Any, device: Any, *, resume: bool,
           progress: bool) -> dict[str, Any]:
    from medkd.methods.grounded_teacher.adapt import AdaptTask, run_adapt_stage
    from medkd.methods.grounded_teacher.expert_stage import EXPERT_BOXES
    from medkd.methods.grounded_teacher.pseudo_labels import PSEUDO_LABELS

    ids, image_ids = target.category_ids, [r.image_id for r in target.records]
    pseudo = read_results(out / PSEUDO_LABELS, ids, image_ids)
    labelled = ViewStore(target, cfg.image_size, boxes=[(pseudo[i]["boxes"], pseudo[i]["labels"]) for i in image_ids])
    pool = np.array([n for n, i in enumerate(image_ids) if len(pseudo[i]["labels"])])
    if len(pool) == 0:
        raise DataError(out / PSEUDO_LABELS, "no target image has a source pseudo-label: nothing to adapt on "
                                             "(lower pseudo_label.score_threshold or train the source longer)")
    expert = None
    if cfg.uses_expert():
        boxes = read_results(out / EXPERT_BOXES, ids, image_ids)
        expert = [boxes[i] for i in image_ids]
    val = None
    try:
        val = ViewStore(load_domain(data_root, cfg.target.dataset, cfg.target.val_split, cfg.classes), cfg.image_size)
    except DataError as err:
        logger.info("no target val split for the stage's report: %s", err)
    path, entry = stage_checkpoint(out, "source")
    source_state = load_checkpoint(path)[entry]
    task = AdaptTask(cfg, labelled, pool, labelled, val, source_state,
                     _threshold(cfg, out, cfg.adapt.teacher_threshold), expert, device)
    return run_adapt_stage(task, stage_dir(out, "adapt"), resume=resume, progress=progress)


def train_gt(cfg: GTConfig, data_root: str | Path, out: str | Path, *, resume: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run every stage of ``cfg``'s method in order into ``out`` (the ``Method.train`` of ``gt``), skipping those
    already done. Returns ``{"method", "stages": {stage: summary}}``, also written to ``RUN/train_summary.json``."""
    out = Path(out)
    cfg = _prepare(cfg, Path(data_root), out)
    for stage in planned_stages(cfg):
        if stage in read_stages(out):
            logger.info("stage %s already done: skipped", stage)
            continue
        logger.info("stage %s", stage)
        run_stage(stage, cfg, data_root, out, resume=resume, progress=progress)
    summary = {"method": cfg.method.value, "mode": cfg.mode.value,
               "stages": {k: v for k, v in read_stages(out).items() if k in planned_stages(cfg)}}
    write_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2))
    return summary
