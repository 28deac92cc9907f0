# SPDX-License-Identifier: Apache-2.0
"""Stage E of Grounded Teacher: a frozen expert's boxes for every target training image, cached offline.

The expert (``expert: csv`` reading e.g. BiomedParse output, ``expert: sam`` with a user-supplied segment-anything
checkpoint; :mod:`medkd.methods.grounded_teacher.experts`) sees each original image; its boxes above
``expert_threshold`` (tau_e) get a class by ``expert_class_policy`` and are written in original pixels to
``RUN/expert_boxes.json`` (COCO results). ``sam_mode: refine`` prompts SAM with the source pseudo-labels of stage P.
``teacher_match`` matches against the source model's detections of stage P (the teacher at the start of the
adaptation), so the cache does not depend on the adaptation.

Example:
    >>> resolved_policy("auto", num_classes=1), resolved_policy("auto", num_classes=2)
    ('fixed:0', 'teacher_match')
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medkd.data.coco import DetectionDataset, read_image
from medkd.methods.grounded_teacher.config import ExpertName, GTConfig
from medkd.methods.grounded_teacher.data import read_results, write_results
from medkd.methods.grounded_teacher.pseudo_labels import PSEUDO_LABELS, SOURCE_DETECTIONS

__all__ = ["EXPERT_BOXES", "build_expert", "resolved_policy", "run_expert_stage"]

logger = logging.getLogger(__name__)

EXPERT_BOXES = "expert_boxes.json"


def resolved_policy(policy: str, num_classes: int) -> str:
    """``auto`` -> ``fixed:0`` at one class, else ``teacher_match``; other policies unchanged."""
    if policy != "auto":
        return policy
    return "fixed:0" if num_classes == 1 else "teacher_match"


def _resolve(path: str, data_root: Path | None) -> Path:
    """``path`` as given if it exists (or is absolute), else under ``data_root``."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or data_root is None:
        return p
    return Path(data_root) / p


def build_expert(cfg: GTConfig, target_train: DetectionDataset, device: Any = "cpu", data_root: Path | None = None
                 ) -> Any:
    """The configured expert (``csv`` or ``sam``); a relative ``expert_csv`` / ``sam_checkpoint`` that does not
    exist from the working folder is looked up under ``data_root``."""
    from medkd.methods.grounded_teacher.experts import create_expert

    if cfg.expert is ExpertName.CSV:
        names = [Path(r.file).name for r in target_train.records]
        sizes = {Path(r.file).name: (r.height, r.width) for r in target_train.records}
        return create_expert("csv", csv_path=_resolve(cfg.expert_csv, data_root), image_names=names,
                             image_sizes=sizes)
    return create_expert("sam", checkpoint=_resolve(cfg.sam_checkpoint, data_root), arch=cfg.sam_arch,
                         mode=cfg.sam_mode, score_threshold=cfg.expert_threshold, device=device)


def run_expert_stage(cfg: GTConfig, run: Path, target_train: DetectionDataset, device: Any = "cpu", *,
                     data_root: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run stage E (see the module docstring); returns the stage summary."""
    from medkd.methods.grounded_teacher.experts import assign_classes

    k = len(target_train.class_names)
    expert = build_expert(cfg, target_train, device, data_root)
    policy = resolved_policy(cfg.expert_class_policy, k)
    ids = target_train.category_ids
    image_ids = [r.image_id for r in target_train.records]
    source = read_results(run / SOURCE_DETECTIONS, ids, image_ids)
    pseudo = read_results(run / PSEUDO_LABELS, ids, image_ids) if cfg.sam_mode == "refine" else {}
    prompt_map = {name: i for i, name in enumerate(target_train.class_names)} if policy == "prompt_map" else None
    found: dict[int, dict[str, np.ndarray]] = {}
    raw = dropped_class = 0
    for record in tqdm(target_train.records, desc="expert boxes", disable=not progress, unit="image"):
        prompts = pseudo.get(record.image_id, {}).get("boxes") if cfg.expert is ExpertName.SAM else None
        image = read_image(record.file) if cfg.expert is ExpertName.SAM else np.zeros((0, 0), np.float32)
        boxes = expert.predict(image, Path(record.file).name, prompt_boxes=prompts)
        boxes = boxes.select(np.asarray(boxes.scores) > cfg.expert_threshold)
        raw += len(boxes.scores)
        classed = assign_classes(boxes, source[record.image_id], policy, k, prompt_map=prompt_map)
        dropped_class += len(boxes.scores) - len(classed.scores)
        found[record.image_id] = {"boxes": np.asarray(classed.boxes, np.float32).reshape(-1, 4),
                                  "scores": np.asarray(classed.scores, np.float32),
                                  "labels": np.asarray(classed.labels, np.int64)}
    write_results(run / EXPERT_BOXES, found, ids)
    kept = int(sum(len(d["scores"]) for d in found.values()))
    logger.info("stage E: %d expert boxes above %.2f, %d kept after the %s class policy", raw,
                cfg.expert_threshold, kept, policy)
    return {"expert": cfg.expert.value, "boxes_above_threshold": raw, "boxes": kept,
            "dropped_by_class_policy": dropped_class, "class_policy": policy}
