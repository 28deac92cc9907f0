# SPDX-License-Identifier: Apache-2.0
"""Stage P of Grounded Teacher: the source model's offline pseudo-labels on the target training images.

Writes, in original pixels (COCO results files, :mod:`medkd.methods.grounded_teacher.data`):

- ``RUN/source_detections.json``: every detection of the source model (score >= ``decode.score_threshold``),
  used by the ``teacher_match`` expert class policy;
- ``RUN/pseudo_labels.json``: those above the pseudo-label threshold. Clean mode uses the boxes after the
  detector's NMS and the threshold calibrated at stage S; ``gt_compat`` the reference's raw proposals (no NMS) and
  0.8 (spec section 6).

The images with at least one pseudo-label form the labelled set ``L`` of the adaptation; all target training
images are the unlabelled set ``U``.

Example:
    >>> import numpy as np
    >>> found = {1: {"boxes": np.zeros((2, 4), np.float32), "scores": np.array([0.9, 0.3], np.float32),
    ...              "labels": np.array([0, 1])}}
    >>> {k: v["scores"].tolist() for k, v in above(found, 0.5).items()}
    {1: [0.8999999761581421]}
    >>> {k: v["labels"].tolist() for k, v in above(found, [0.95, 0.2]).items()}  # one threshold per class
    {1: [1]}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkd.methods.grounded_teacher.config import GTConfig, Mode
from medkd.methods.grounded_teacher.data import ViewStore, write_results
from medkd.methods.grounded_teacher.runs import load_detector
from medkd.methods.grounded_teacher.source_stage import detect_store

__all__ = ["PSEUDO_LABELS", "SOURCE_DETECTIONS", "above", "run_pseudo_label_stage"]

logger = logging.getLogger(__name__)

PSEUDO_LABELS, SOURCE_DETECTIONS = "pseudo_labels.json", "source_detections.json"


def above(found: Mapping[int, Mapping[str, np.ndarray]], threshold: float | Sequence[float]
          ) -> dict[int, dict[str, np.ndarray]]:
    """Per-image detections with a score above ``threshold`` (one value, or one per class)."""
    out = {}
    for image_id, det in found.items():
        labels = np.asarray(det["labels"], np.int64)
        limit = np.asarray(threshold, np.float64)[labels] if np.ndim(threshold) else float(threshold)
        keep = np.asarray(det["scores"]) > limit
        out[image_id] = {k: np.asarray(v)[keep] for k, v in det.items()}
    return out


def run_pseudo_label_stage(cfg: GTConfig, run: Path, target_train: ViewStore, threshold: Sequence[float],
                           device: torch.device) -> dict[str, Any]:
    """Run stage P (see the module docstring); returns the stage summary."""
    model = load_detector(run, "source", device)
    if cfg.mode is Mode.GT_COMPAT:  # the reference keeps raw proposals
        model.set_decode(cfg.decode.score_threshold, 1.0, cfg.decode.max_detections)
    records = target_train.dataset.records
    found = dict(zip((r.image_id for r in records), detect_store(model, target_train)))
    ids = target_train.dataset.category_ids
    write_results(run / SOURCE_DETECTIONS, found, ids)
    kept = above(found, threshold)
    write_results(run / PSEUDO_LABELS, kept, ids)
    n_boxes = int(sum(len(d["scores"]) for d in kept.values()))
    n_images = int(sum(len(d["scores"]) > 0 for d in kept.values()))
    per_class = np.bincount(np.concatenate([d["labels"] for d in kept.values()]).astype(np.int64),
                            minlength=len(threshold)).tolist()
    logger.info("stage P: %d pseudo-boxes (per class %s) above %s on %d of %d target images", n_boxes, per_class,
                [round(t, 3) for t in threshold], n_images, len(records))
    if n_images == 0:
        logger.warning("no target image has a pseudo-label above %s: the adaptation's supervised branch has no "
                       "images (lower pseudo_label.score_threshold or train the source model longer)",
                       [round(t, 3) for t in threshold])
    return {"threshold": list(threshold), "boxes_per_class": per_class, "boxes": n_boxes, "images_with_boxes": n_images,
            "images": len(records), "nms": cfg.mode is not Mode.GT_COMPAT}
