# SPDX-License-Identifier: Apache-2.0
"""Per-anchor classification loss pieces of :mod:`medkd.nets.retinanet`: a sigmoid focal loss that takes soft
targets, and the ``(g, p)`` pairs (matched box's class, predicted class) of positive anchors.

Plain torch (no MONAI), vectorised over anchors and classes.

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, -2.0], [-1.0, -1.0]])
    >>> targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    >>> soft_sigmoid_focal_loss(logits, targets).shape
    torch.Size([2, 2])
    >>> anchor_pairs(logits, torch.tensor([0, 1])).tolist()  # second anchor: best score 0.27 < 0.5, background
    [[0, 0], [1, -1]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["anchor_pairs", "soft_sigmoid_focal_loss"]


def soft_sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, *, gamma: float = 2.0, alpha: float | None = None
) -> Tensor:
    """Element-wise sigmoid focal loss with soft targets ``y`` in ``[0, 1]``:
    ``BCE(x, y) * |y - sigmoid(x)| ** gamma`` (times ``alpha * y + (1 - alpha) * (1 - y)`` when ``alpha`` is set).

    For hard targets (``y`` in ``{0, 1}``) ``|y - p|`` is ``1 - p_t``, so this is the focal loss of Lin et al.,
    "Focal Loss for Dense Object Detection" (ICCV 2017), exactly as MONAI's ``sigmoid_focal_loss`` computes it; for soft
    targets it is the quality focal loss of Li et al., "Generalized Focal Loss" (NeurIPS 2020), whose minimum sits at
    ``p = y`` (mixed-class targets of semantic augmentation, e.g. ``0.7 / 0.3``).

    Args:
        logits: ``(N, K)`` classification logits.
        targets: ``(N, K)`` targets in ``[0, 1]``, same shape.
        gamma: focusing parameter.
        alpha: optional positive/negative balance.

    Returns:
        The ``(N, K)`` loss per anchor and class (no reduction).

    Raises:
        ValueError: shapes differ.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma:
        loss = loss * (targets - torch.sigmoid(logits)).abs().pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * targets + (1.0 - alpha) * (1.0 - targets))
    return loss


def anchor_pairs(logits: Tensor, gt_labels: Tensor, *, threshold: float = 0.5) -> Tensor:
    """``(g, p)`` per positive anchor: ``g`` its matched box's class, ``p`` the argmax of its sigmoid scores, or -1
    (background) when the highest score is below ``threshold``.

    Args:
        logits: ``(M, K)`` classification logits of the positive anchors (not differentiated).
        gt_labels: ``(M,)`` class of the box each anchor is matched to.
        threshold: score below which the prediction counts as background.

    Returns:
        LongTensor ``(M, 2)``.
    """
    with torch.no_grad():
        scores = torch.sigmoid(logits.detach().float())
        if scores.shape[0] == 0 or scores.shape[1] == 0:
            pred = torch.full((scores.shape[0],), -1, dtype=torch.long, device=logits.device)
        else:
            best, arg = scores.max(dim=1)
            pred = torch.where(best >= threshold, arg, torch.full_like(arg, -1))
    return torch.stack([gt_labels.to(device=logits.device, dtype=torch.long), pred], dim=1)
