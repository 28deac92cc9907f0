# SPDX-License-Identifier: Apache-2.0
"""Stage S of Grounded Teacher: supervised detector training on the source domain, then threshold calibration.

The reference trains Faster R-CNN on the source images (``Source/trainval_pretrain_adv.py``); medkd trains the
registered RetinaNet with SGD and a linear warm-up, validating AP50 on the source val split. Clean mode then
calibrates the pseudo-label threshold: the lowest score at which the source model's detections on the source val
split reach ``pseudo_label.target_precision`` (a TP hits an unmatched box of its class at IoU >= 0.5), written to
``RUN/source/calibration.json``; ``gt_compat`` keeps the reference's 0.8.

Example:
    >>> import numpy as np
    >>> det = [{"boxes": np.array([[0, 0, 4, 4], [10, 10, 12, 12]], np.float32), "scores": np.array([0.9, 0.4]),
    ...         "labels": np.array([0, 0])}]
    >>> gt = [{"boxes": np.array([[0, 0, 4, 4]], np.float32), "labels": np.array([0])}]
    >>> precision_threshold(det, gt, precision=0.8)
    0.9
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkd.config import config_to_dict
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.task import TrainTask
from medkd.io.atomic import write_text_atomic
from medkd.methods.grounded_teacher.config import GTConfig, Mode
from medkd.methods.grounded_teacher.data import Batch, ViewStore
from medkd.methods.grounded_teacher.predict import detect_views, to_original
from medkd.metrics.detection import coco_ap
from medkd.nets import create_net

__all__ = ["SourceTask", "calibrate_thresholds", "detect_store", "precision_threshold", "run_source_stage", "warmup_lr"]

logger = logging.getLogger(__name__)


def warmup_lr(lr: float, warmup: int, iteration: int) -> float:
    """Linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup`` iterations, then constant."""
    return lr * min(1.0, iteration / warmup) if warmup > 0 else lr


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def precision_threshold(detections: Sequence[dict[str, np.ndarray]], truths: Sequence[dict[str, np.ndarray]],
                        *, precision: float = 0.8, iou: float = 0.5) -> float | None:
    """The lowest detection score at which the detections above it reach ``precision`` (greedy matching per image
    at ``iou``, same class); ``None`` if no score does."""
    scores, hits = [], []
    for det, gt in zip(detections, truths):
        order = np.argsort(-np.asarray(det["scores"]), kind="stable")
        boxes, labels = np.asarray(det["boxes"])[order], np.asarray(det["labels"])[order]
        ious = _box_iou(boxes.reshape(-1, 4), np.asarray(gt["boxes"]).reshape(-1, 4))
        used = np.zeros(ious.shape[1], bool)
        for j in range(len(boxes)):  # greedy matching in score order: each prediction depends on the earlier ones
            ok = (ious[j] >= iou) & ~used & (np.asarray(gt["labels"]) == labels[j])
            hit = bool(ok.any())
            if hit:
                used[np.argmax(np.where(ok, ious[j], -1))] = True
            hits.append(hit)
        scores.extend(np.asarray(det["scores"])[order].tolist())
    if not scores:
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    s, h = np.asarray(scores)[order], np.asarray(hits, float)[order]
    prec = np.cumsum(h) / np.arange(1, len(h) + 1)
    ok = np.nonzero(prec >= precision)[0]
    return float(s[ok[-1]]) if len(ok) else None


class SourceTask(TrainTask):
    """Stage S: the detector on flipped, resized source images, SGD with warm-up, AP50 on the source val split."""

    def __init__(self, cfg: GTConfig, train: ViewStore, val: ViewStore, num_classes: int,
                 device: torch.device) -> None:
        self.cfg, self.train_store, self.val_store, self.device = cfg, train, val, device
        self.student = create_net(cfg.net.name, **cfg.net_kwargs(num_classes)).to(device)
        s = cfg.source_train
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=s.lr, momentum=s.momentum,
                                         weight_decay=s.weight_decay)

    def batches(self, start_iteration: int) -> Iterator[Batch]:
        return self.train_store.batches(self.cfg.source_train.batch_size, self.cfg.seed, start_iteration, stream=0)

    def compute_loss(self, batch: Batch, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        images = [image.to(self.device) for image in batch.images]
        losses = self.student(images, batch.targets)
        total = sum(losses.values())
        return total, {k: float(v.detach()) for k, v in losses.items()}

    def learning_rate(self, iteration: int) -> float:
        s = self.cfg.source_train
        return warmup_lr(s.lr, s.warmup, iteration)

    def validate(self) -> dict[str, float]:
        """``score``: AP50 on the source val split (views at the training size)."""
        found = detect_store(self.student, self.val_store)
        truths = [{"boxes": r.boxes, "labels": r.labels} for r in self.val_store.dataset.records]
        ap = coco_ap(found, truths, list(self.val_store.dataset.class_names))
        return {"score": float(ap["AP50"]), "AP": float(ap["AP"]), "AP50": float(ap["AP50"])}

    def config_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self.cfg), "stage": "source"}


def detect_store(model: torch.nn.Module, store: ViewStore) -> list[dict[str, np.ndarray]]:
    """Detections in original pixels for every image of a store (from its cached views)."""
    found = detect_views(model, [image.astype(np.float32) for image in store.images])
    return [to_original(det, geometry) for det, geometry in zip(found, store.geometries)]


def _only(sets: list[dict[str, np.ndarray]], c: int) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v)[np.asarray(s["labels"]) == c] for k, v in s.items()} for s in sets]


def calibrate_thresholds(model: torch.nn.Module, val: ViewStore, cfg: GTConfig) -> dict[str, Any]:
    """Clean mode's pseudo-label thresholds (see the module docstring): one over all classes, and one per class
    (the class's own detections reaching the precision; the overall one where a class never does), so a rare class
    with lower scores keeps pseudo-labels. ``gt_compat``: 0.8 for every class."""
    k = len(val.dataset.class_names)
    if cfg.mode is Mode.GT_COMPAT:
        return {"threshold": 0.8, "per_class": [0.8] * k, "how": "gt_compat: the reference's fixed 0.8"}
    found = detect_store(model, val)
    truths = [{"boxes": r.boxes, "labels": r.labels} for r in val.dataset.records]
    precision = cfg.pseudo_label.target_precision
    clip = lambda t: float(min(max(t, cfg.decode.score_threshold), 0.95))  # noqa: E731
    threshold = precision_threshold(found, truths, precision=precision)
    if threshold is None:
        logger.warning("the source model never reaches precision %.2f on the source val split: pseudo-label "
                       "threshold falls back to 0.8", precision)
        return {"threshold": 0.8, "per_class": [0.8] * k,
                "how": f"fallback: precision {precision} never reached on source val"}
    per_class = []
    for c in range(k):
        own = precision_threshold(_only(found, c), _only(truths, c), precision=precision)
        per_class.append(clip(own) if own is not None else clip(threshold))
    return {"threshold": clip(threshold), "per_class": per_class,
            "how": f"lowest score with precision >= {precision} on source val (IoU 0.5), overall and per class"}


def run_source_stage(cfg: GTConfig, train: ViewStore, val: ViewStore, out: Path, device: torch.device, *,
                     resume: bool, progress: bool) -> dict[str, Any]:
    """Train stage S into ``out`` (``RUN/source``) and write ``calibration.json``; returns the stage summary."""
    k = len(train.dataset.class_names)
    task = SourceTask(cfg, train, val, k, device)
    s = cfg.source_train
    engine = EngineConfig(max_iterations=s.iterations, val_interval=s.val_interval, log_interval=cfg.log_interval,
                          progress=progress, precision=cfg.precision)
    result = Engine(task, out, engine).run(resume=resume)
    best = result.best_path if Path(result.best_path).exists() else result.last_path
    from medkd.engine.checkpoint import load_checkpoint

    task.student.load_state_dict(load_checkpoint(best)["student"])
    task.student.eval()
    calibration = calibrate_thresholds(task.student, val, cfg)
    write_text_atomic(out / "calibration.json", json.dumps(calibration, indent=2))
    logger.info("stage S done: best source AP50 %.3f; pseudo-label threshold %.3f (%s)", result.best_score,
                calibration["threshold"], calibration["how"])
    return {"best_score": result.best_score, "best_iteration": result.best_iteration,
            "iterations": result.last_iteration, "seconds": result.seconds,
            "seconds_per_iteration": result.time_split, "threshold": calibration["threshold"]}
