# SPDX-License-Identifier: Apache-2.0
"""Mixed-image snapshots of a BCP stage: what the student is fed and supervised with, as a PNG.

``RUN/<stage>/snapshots/it_<iteration>.png`` shows the copy-paste input, its mixed supervision (ground truth,
or ground truth and teacher pseudo-labels in self-training) and the student's prediction. 3D runs show the
middle slice along the last axis.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medkd.viz.overlay import save_overlay_png
from medkd.methods.bcp.masks import box_mask
from medkd.methods.bcp.mix import mix
from medkd.methods.bcp.steps import StepOptions, pseudo_labels

__all__ = ["save_mixed_snapshot"]


def _slice(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    return (x[..., x.shape[-1] // 2] if x.ndim == 3 else x).numpy()


@torch.no_grad()
def save_mixed_snapshot(
    path: Path,
    student: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None,
    labeled: int,
    opts: StepOptions,
    mask_ratio: float,
    class_names: list[str],
) -> Path:
    """Save one snapshot PNG for a training batch (``images`` ``(B, C, *S)``, ``labels`` ``(B, *S)``)."""
    mask = box_mask(images.shape[2:], mask_ratio, device=images.device)
    if teacher is None:  # pre-training / supervised: two labelled samples mixed
        x = mix(images[:1], images[1:2], mask)
        y = mix(labels[:1], labels[1:2], mask)
    else:  # self-training: unlabelled outside, labelled in the box, supervised by pseudo-labels and ground truth
        u = images[labeled : labeled + 1]
        x = mix(u, images[:1], mask)
        y = mix(pseudo_labels(teacher, u, opts), labels[:1], mask)
    was_training = student.training
    student.eval()
    pred = student(x).argmax(1)
    student.train(was_training)
    return save_overlay_png(
        _slice(x[0, 0]),
        {"mixed input": None, "mixed supervision": _slice(y[0]).astype(np.int64), "student": _slice(pred[0]).astype(np.int64)},
        path,
        class_names=class_names,
        title=path.stem,
    )
