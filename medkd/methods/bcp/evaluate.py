# SPDX-License-Identifier: Apache-2.0
"""Evaluation of a BCP network with the papers' protocols (spec §4).

ACDC: per slice nearest-resize to the training patch, softmax, argmax, resize back. LA: sliding window with
the reference stride, foreground > 0.5, largest 3D component. Metrics in voxels, per class, averaged over cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from medkd.metrics.seg import case_metrics, summarize_cases
from medkd.metrics.seg_inference import predict_sliding_3d, predict_slices_2d
from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.config import Dataset as DatasetName

__all__ = ["predict_case", "validation_dice", "evaluate_cases", "class_names"]


def class_names(cfg: BCPConfig) -> list[str]:
    """Foreground class names of the run's dataset."""
    names: list[str] = []
    if cfg.dataset == DatasetName.ACDC:
        from medkd.data.acdc import ACDC_CLASSES

        names = list(ACDC_CLASSES)
    elif cfg.dataset == DatasetName.LA:
        from medkd.data.la import LA_CLASSES

        names = list(LA_CLASSES)
    if len(names) != cfg.num_classes:
        names = ["background"] + [f"class_{c}" for c in range(1, cfg.num_classes)]
    return names


def predict_case(model: nn.Module, image: np.ndarray, cfg: BCPConfig, device: torch.device | str) -> np.ndarray:
    """Label map of one volume: ACDC ``(S, H, W)`` slice by slice, LA ``(W, H, D)`` by sliding window."""
    model.eval()
    if cfg.dataset == DatasetName.ACDC:
        return predict_slices_2d(
            model, image, patch=cfg.patch, num_classes=cfg.num_classes, batch_size=cfg.eval_batch_size, device=device
        )
    labels, _ = predict_sliding_3d(
        model, image, patch=cfg.patch, stride=cfg.sliding_stride, num_classes=cfg.num_classes, device=device
    )
    return labels


def validation_dice(
    model: nn.Module, cases: Iterable[tuple[str, np.ndarray, np.ndarray]], cfg: BCPConfig, device: torch.device | str
) -> dict[str, float]:
    """Mean foreground Dice over cases and classes (``score``), plus per-class Dice; fast, for model selection."""
    per_class = np.zeros(cfg.num_classes - 1)
    n = 0
    for _, image, label in cases:
        pred = predict_case(model, image, cfg, device)
        for c in range(1, cfg.num_classes):
            p, g = pred == c, label == c
            denom = p.sum() + g.sum()
            per_class[c - 1] += 2.0 * np.logical_and(p, g).sum() / denom if denom else 1.0
        n += 1
    per_class /= max(n, 1)
    names = class_names(cfg)[1:]
    out = {f"dice_{name}": float(v) for name, v in zip(names, per_class)}
    out["score"] = float(per_class.mean())
    return out


def evaluate_cases(
    model: nn.Module,
    cases: Iterable[tuple[str, np.ndarray, np.ndarray]],
    cfg: BCPConfig,
    device: torch.device | str,
    *,
    progress: Any = None,
) -> dict[str, Any]:
    """Dice, Jaccard, HD95 and ASD per class and case with the run's empty-prediction policy.

    Returns:
        ``summarize_cases`` output: ``{"mean", "per_class", "cases", "empty_predictions"}``.
    """
    policy = cfg.resolved_empty_policy()
    results = []
    for case, image, label in cases:
        pred = predict_case(model, image, cfg, device)
        results.append((case, case_metrics(pred, label, cfg.num_classes, empty_policy=policy)))
        if progress is not None:
            progress.update(1)
    if not results:
        raise ValueError("no cases to evaluate")
    summary = summarize_cases(results, class_names(cfg)[1:])
    summary["empty_policy"] = policy
    return summary
