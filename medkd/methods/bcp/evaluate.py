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

from medkd.inference.segmentation import SegmentationSpec
from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.config import Dataset as DatasetName
from medkd.metrics.seg import case_metrics, summarize_cases

__all__ = ["predict_case", "validation_dice", "evaluate_cases", "class_names", "segmentation_spec"]


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


def segmentation_spec(cfg: BCPConfig) -> SegmentationSpec:
    """The run's inference recipe: ACDC slice by slice (min-max), LA/NIfTI by sliding window (z-score).

    LA runs see a ``(z, y, x)`` volume as ``(x, y, z)``, the LA h5 layout; NIfTI-datalist runs were trained on
    ``(z, y, x)`` arrays and see it as read. Evaluation (:func:`predict_case`), ``medkd bcp predict``, bundles and
    pipelines all segment with it.
    """
    if cfg.dataset == DatasetName.ACDC:
        return SegmentationSpec(
            "slices_2d", cfg.num_classes, tuple(cfg.patch), cfg.intensity, "zyx", batch_size=cfg.eval_batch_size
        )
    return SegmentationSpec(
        "sliding_3d", cfg.num_classes, tuple(cfg.patch), cfg.intensity,
        "xyz" if cfg.dataset == DatasetName.LA else "zyx", stride=tuple(cfg.sliding_stride),
    )


def predict_case(model: nn.Module, image: np.ndarray, cfg: BCPConfig, device: torch.device | str) -> np.ndarray:
    """Label map of one normalised volume in the network's axes: ACDC ``(S, H, W)`` slice by slice, LA
    ``(W, H, D)`` by sliding window (:meth:`~medkd.inference.segmentation.SegmentationSpec.infer`)."""
    return segmentation_spec(cfg).infer(model, image, device)


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
