# SPDX-License-Identifier: Apache-2.0
"""``train_toy``: the toy detector on medkd's engine (one stage, ``train``), and loading its runs.

Run folder::

    RUN/run.json            {"method": "toy", "kind": "detection", ...}
    RUN/config.yaml         the resolved ToyDetectorConfig
    RUN/train/best.pt       best validation F1 (engine checkpoint v2); last.pt, metrics.jsonl, engine_state.json
    RUN/train_summary.json  best score, iterations, time split
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from toy_detector.config import ToyDetectorConfig
from toy_detector.data import read_toy_dataset
from toy_detector.detect import box_iou, detect
from toy_detector.net import normalise

from medkd.config import config_from_dict, config_to_dict
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.seeding import seed_everything
from medkd.engine.task import TrainTask
from medkd.errors import DataError
from medkd.inference import Predictor, file_sha256, resolve_device
from medkd.io.labels import labels_from_names
from medkd.nets import create_net
from medkd.runs import read_run_info, write_run_info

__all__ = [
    "KIND",
    "METHOD",
    "NET",
    "STAGE",
    "ToyTask",
    "checkpoint_path",
    "f1_at_iou",
    "load_run_config",
    "load_run_predictor",
    "train_toy",
]

logger = logging.getLogger(__name__)

METHOD, KIND, NET, STAGE = "toy", "detection", "toy_centernet", "train"


def f1_at_iou(found: list[dict[str, np.ndarray]], truth: list[dict[str, np.ndarray]], iou: float = 0.5) -> float:
    """F1 of greedy matches (same label, IoU >= ``iou``) between found and true boxes, pooled over images."""
    tp = n_found = n_true = 0
    for det, gt in zip(found, truth):
        n_found, n_true = n_found + len(det["boxes"]), n_true + len(gt["boxes"])
        used: set[int] = set()
        for j in np.argsort(-det["scores"], kind="stable"):
            for k, box in enumerate(gt["boxes"]):
                if k not in used and gt["labels"][k] == det["labels"][j] and box_iou(det["boxes"][j], box) >= iou:
                    used.add(k)
                    tp += 1
                    break
    return 2 * tp / (n_found + n_true) if n_found + n_true else 1.0


class ToyTask(TrainTask):
    """One stage: batches of normalised images with random flips, the network's own CenterNet losses."""

    def __init__(self, cfg: ToyDetectorConfig, data_root: Path, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        images, self.targets = read_toy_dataset(data_root, "train")
        self.images = torch.stack([normalise(torch.from_numpy(i)) for i in images])
        self.val_images, self.val_targets = read_toy_dataset(data_root, "val")
        self.student = create_net(NET, **cfg.net_kwargs()).to(device)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=cfg.lr)

    def batches(self, start_iteration: int) -> Iterator[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
        """Batch ``i`` depends only on the seed and ``i``, so a resumed run sees the batches a straight one would."""
        it = start_iteration
        h, w = self.images.shape[1:]
        while True:
            rng = np.random.default_rng([self.cfg.seed, it])
            images, targets = [], []
            for index in rng.integers(0, len(self.images), self.cfg.batch_size):
                image, boxes = self.images[index], torch.from_numpy(self.targets[index]["boxes"]).clone()
                if rng.random() < 0.5:  # flip rows
                    image, boxes[:, [0, 2]] = image.flip(0), h - boxes[:, [2, 0]]
                if rng.random() < 0.5:  # flip columns
                    image, boxes[:, [1, 3]] = image.flip(1), w - boxes[:, [3, 1]]
                images.append(image[None].to(self.device))
                targets.append({"boxes": boxes, "labels": torch.from_numpy(self.targets[index]["labels"])})
            yield images, targets
            it += 1

    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        losses = self.student(images, targets)
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}

    def validate(self) -> dict[str, float]:
        """``score``: F1 at IoU 0.5 of the decoded boxes on the ``val`` split."""
        d = self.cfg.decode
        found = []
        for image in self.val_images:
            out = detect(self.student, image, score_threshold=d.score_threshold, max_detections=d.max_detections)
            boxes = out["boxes"][:, [1, 0, 3, 2]]  # (x, y) back to the dataset's (row, col)
            found.append({"boxes": boxes, "scores": out["scores"], "labels": out["labels"] - 1})
        return {"score": f1_at_iou(found, self.val_targets)}

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.cfg)


def train_toy(
    cfg: ToyDetectorConfig, data_root: str | Path, out: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train into ``out`` (the ``Method.train`` of ``toy``); ``resume`` continues from ``RUN/train/last.pt`` and
    is a no-op for a finished run. Returns the summary also written to ``RUN/train_summary.json``."""
    out = Path(out)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    task = ToyTask(cfg, Path(data_root), device)
    out.mkdir(parents=True, exist_ok=True)
    write_run_info(out, method=METHOD, kind=KIND)
    (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
    engine = EngineConfig(max_iterations=cfg.iterations, val_interval=cfg.val_interval,
                          log_interval=cfg.log_interval, progress=progress)
    result = Engine(task, out / STAGE, engine).run(resume=resume)
    summary = {"method": METHOD, "stages": {STAGE: {
        "best_score": result.best_score, "best_iteration": result.best_iteration,
        "iterations": result.last_iteration, "seconds": result.seconds,
        "seconds_per_iteration": result.time_split}}}
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def load_run_config(run: str | Path) -> ToyDetectorConfig:
    """``RUN/config.yaml`` of a toy run.

    Raises:
        DataError: not a toy run.
    """
    info = read_run_info(run)
    if info["method"] != METHOD:
        raise DataError(run, f"a run of method {info['method']!r}, not {METHOD!r}")
    cfg_file = Path(run) / "config.yaml"
    if not cfg_file.is_file():
        raise DataError(run, "config.yaml is missing")
    return config_from_dict(ToyDetectorConfig, yaml.safe_load(cfg_file.read_text()) or {}, source=str(cfg_file))


def checkpoint_path(run: str | Path, which: str = "best") -> Path:
    """``RUN/train/<which>.pt``; ``best`` falls back to ``last``.

    Raises:
        DataError: neither exists.
    """
    for name in (which, "last"):
        path = Path(run) / STAGE / f"{name}.pt"
        if path.is_file():
            return path
    raise DataError(Path(run) / STAGE, f"no {which}.pt: train the run first (medkd toy train ... --out {run})")


def load_run_predictor(run: str | Path, device: Any = None, *, trust: bool = False) -> Predictor:
    """The ``Method.load_predictor`` of ``toy``: the run's best student as a ``detection`` predictor."""
    del trust  # a run folder holds no code
    cfg = load_run_config(run)
    ckpt = checkpoint_path(run)
    model = create_net(NET, **cfg.net_kwargs())
    model.load_state_dict(load_checkpoint(ckpt)["student"])
    model = model.to(resolve_device(device if device is not None else cfg.device)).eval()
    d = cfg.decode
    return Predictor(
        kind=KIND, name=Path(run).resolve().name, version=f"run:{ckpt.parent.name}/{ckpt.stem}",
        weights_sha256=file_sha256(ckpt), labels=labels_from_names(cfg.label_names()),
        run=lambda array: detect(model, array, score_threshold=d.score_threshold, max_detections=d.max_detections,
                                 link_iou=d.link_iou),
        source=Path(run), metadata={"method": METHOD, "net": NET},
    )
