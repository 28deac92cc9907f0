# SPDX-License-Identifier: Apache-2.0
"""A tiny CenterNet-like 2D detector: dilated convolutions, one heatmap per class and a log box size per pixel.

The network has two faces, like MONAI's ``RetinaNetDetector``:

* a batch tensor ``(B, C_in, H, W)`` gives the dense head output ``(B, num_classes + 2, H, W)``: per-class heatmap
  logits, then ``log(height)`` and ``log(width)`` of the box centred on each pixel (what a MONAI bundle's
  ``verify_net_in_out`` checks);
* a list of ``(C_in, H, W)`` images gives the detector API of :mod:`medkd.nets.contracts` (task ``detection``):
  with targets in ``train()`` mode a dict of scalar losses (CenterNet's penalty-reduced focal loss on a Gaussian
  heatmap, L1 on log sizes at the centres), in ``eval()`` mode one dict of ``boxes``/``scores``/``labels`` per image.

Boxes follow MONAI's convention: coordinate ``i`` runs along spatial dim ``i`` of the tensor, so a 2D box is
``(d0_min, d1_min, d0_max, d1_max)`` = ``(row_min, col_min, row_max, col_max)``; labels are ``0..num_classes-1``.

Example:
    >>> net = ToyCenterNet(in_channels=1, num_classes=1).eval()
    >>> tuple(net(torch.zeros(2, 1, 24, 20)).shape)
    (2, 3, 24, 20)
    >>> sorted(net([torch.zeros(1, 24, 20)])[0])
    ['boxes', 'labels', 'scores']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ToyCenterNet", "centernet_targets", "decode", "normalise"]


def normalise(array: torch.Tensor) -> torch.Tensor:
    """Min-max scale an image or volume to ``[0, 1]`` (a constant input becomes zeros)."""
    low, high = array.min(), array.max()
    return (array - low) / (high - low) if float(high - low) > 0 else torch.zeros_like(array)


def centernet_targets(
    boxes: torch.Tensor, labels: torch.Tensor, num_classes: int, size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap ``(K, H, W)`` (a Gaussian per box, 1 at its centre pixel), centre pixels ``(N, 2)`` and log sizes
    ``(N, 2)`` for boxes ``(N, 4)`` as ``(d0_min, d1_min, d0_max, d1_max)``."""
    h, w = int(size[0]), int(size[1])
    heat = torch.zeros(num_classes, h, w)
    boxes = boxes.detach().float().cpu().reshape(-1, 4)
    extent = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    peak = torch.stack([centre[:, 0].floor().clamp(0, h - 1), centre[:, 1].floor().clamp(0, w - 1)], 1).long()
    rows, cols = torch.arange(h).float()[:, None], torch.arange(w).float()[None, :]
    for (p0, p1), (e0, e1), label in zip(peak.tolist(), extent.tolist(), labels.reshape(-1).tolist()):
        s0, s1 = max(e0 / 6, 0.5), max(e1 / 6, 0.5)
        blob = torch.exp(-((rows - p0) ** 2 / (2 * s0**2) + (cols - p1) ** 2 / (2 * s1**2)))
        heat[int(label)] = torch.maximum(heat[int(label)], blob)
        heat[int(label), p0, p1] = 1.0
    return heat, peak, extent.log()


def decode(
    dense: torch.Tensor, num_classes: int, *, score_threshold: float = 0.3, max_detections: int = 20
) -> list[dict[str, torch.Tensor]]:
    """Boxes of a dense head output ``(B, K + 2, H, W)``: local maxima of the heatmaps above ``score_threshold``
    (at most ``max_detections`` per image), each with the box size predicted at its pixel, clipped to the image."""
    b, _, h, w = dense.shape
    heat = torch.sigmoid(dense[:, :num_classes].float())
    peaks = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    limit = math.log(2 * max(h, w))
    found = []
    for i in range(b):
        scores = (heat[i] * peaks[i]).flatten()
        top = torch.topk(scores, min(max_detections, scores.numel()))
        keep = top.values >= score_threshold
        index, score = top.indices[keep], top.values[keep]
        label, pixel = index // (h * w), index % (h * w)
        p0, p1 = (pixel // w).float(), (pixel % w).float()
        size = dense[i, num_classes:num_classes + 2].float().flatten(1)[:, pixel].clamp(max=limit).exp()
        c0, c1 = p0 + 0.5, p1 + 0.5
        boxes = torch.stack([(c0 - size[0] / 2).clamp(0, h), (c1 - size[1] / 2).clamp(0, w),
                             (c0 + size[0] / 2).clamp(0, h), (c1 + size[1] / 2).clamp(0, w)], 1)
        found.append({"boxes": boxes, "scores": score, "labels": label.long()})
    return found


class ToyCenterNet(nn.Module):
    """Dilated 3x3 convolutions (each with GroupNorm and ReLU) and a 1x1 CenterNet head, at full resolution (any size).

    Args:
        in_channels: input channels.
        num_classes: foreground classes (one heatmap each).
        width: channels of the hidden layers (a multiple of 4: GroupNorm uses 4 groups).
        dilations: one 3x3 convolution per entry with that dilation (receptive field ``1 + 2 * sum``).
        score_threshold: heatmap score a detection needs (list API in ``eval()`` mode).
        max_detections: detections per image at most.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 1, width: int = 16, dilations: Sequence[int] = (1, 2, 4, 8),
        score_threshold: float = 0.3, max_detections: int = 20,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for dilation in dilations:
            layers += [nn.Conv2d(channels, width, 3, padding=int(dilation), dilation=int(dilation)),
                       nn.GroupNorm(4, width), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, num_classes + 2, 1)
        with torch.no_grad():
            self.head.bias[:num_classes] = -2.19  # CenterNet's prior: heatmap scores start near 0.1
            self.head.bias[num_classes:] = math.log(8.0)
        self.num_classes = int(num_classes)
        self.score_threshold = float(score_threshold)
        self.max_detections = int(max_detections)

    def dense(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, num_classes + 2, H, W)``: heatmap logits, then log height, log width."""
        return self.head(self.body(images))

    def forward(
        self, images: torch.Tensor | Sequence[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]] | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Dense output for a batch tensor; losses (``train()`` with targets) or detections for a list of images."""
        if isinstance(images, torch.Tensor):
            return self.dense(images)
        batch = torch.stack(list(images))
        dense = self.dense(batch)
        if self.training:
            if targets is None:
                raise ValueError("ToyCenterNet in train() mode needs targets (one dict of boxes and labels per image)")
            return self.loss(dense, targets)
        return decode(dense, self.num_classes, score_threshold=self.score_threshold,
                      max_detections=self.max_detections)

    def loss(self, dense: torch.Tensor, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """CenterNet's focal loss on the heatmaps and L1 on the log sizes at the box centres."""
        k, size = self.num_classes, dense.shape[2:]
        built = [centernet_targets(t["boxes"], t["labels"], k, size) for t in targets]
        heat = torch.stack([b[0] for b in built]).to(dense.device)
        logits = dense[:, :k].float()
        pos = heat.eq(1.0).float()
        log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
        p = torch.sigmoid(logits)
        focal = -(pos * (1 - p) ** 2 * log_p + (1 - pos) * (1 - heat) ** 4 * p**2 * log_not_p).sum()
        n_pos = max(float(pos.sum()), 1.0)
        predicted, wanted = [], []
        for i, (_, peak, log_size) in enumerate(built):
            if len(peak):
                predicted.append(dense[i, k:k + 2][:, peak[:, 0], peak[:, 1]].t().float())
                wanted.append(log_size.to(dense.device))
        size_loss = (F.l1_loss(torch.cat(predicted), torch.cat(wanted)) if predicted
                     else dense[:, k:].sum() * 0.0)
        return {"heatmap": focal / n_pos, "size": size_loss}
