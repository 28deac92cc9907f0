# SPDX-License-Identifier: Apache-2.0
"""Boundary-privileged knowledge distillation for dense segmentation (Liu et al., "BPKD: Boundary Privileged
Knowledge Distillation for Semantic Segmentation", WACV 2024). The official repository holds evaluation code only;
this follows the third-party re-implementation's defaults and structure.

The ground truth splits every class channel into an edge and a body region:

- ``M_E = AvgPool(dilate(onehot(y)) - erode(onehot(y)))`` per class, dilation and erosion being max-pools with
  kernel ``2r+1`` (2-D or 3-D by the label's dimensions), the average pool the same kernel; ``M_B = 1 - M_E``.
  Ignored voxels count as background (class 0) for the masks.
- ``L_E``: per-voxel ``T^2 * KL(p_t || p_s)`` over the classes of the edge-masked logits ``z * M_E``,
  class-weighted by ``alpha_c / n_c``. Reading used here: ``alpha_c = alpha`` for every class and ``n_c`` is the
  number of edge voxels whose ground truth is ``c`` (an edge voxel has ``M_E > 0`` in some channel), so
  ``L_E = T^2 * sum_c alpha * mean_{v in E, y_v = c} KL_v``: every class present on an edge weighs the same,
  however long its boundary.
- ``L_B``: channel-wise distillation (Shu et al., ICCV 2021) of the body-masked logits ``z * M_B``: for each
  sample and class a softmax over the spatial positions, ``KL`` teacher -> student, ``* T^2 / C``, summed over
  classes and averaged over the batch.

Returned as ``{"bpkd_edge": w * lambda_E * L_E, "bpkd_body": w * lambda_B * L_B}``; the paper's cross-entropy is
the separate ``ce`` term of the experiment. Voxels labelled ``ignore_index`` take part in neither term (left out
of the spatial softmax too), so their logits do not change the loss. With ``radius_mm`` set, the radius in voxels
along each axis is ``max(1, round(radius_mm / spacing))`` from ``batch["spacing"]`` (voxel size in mm, axes in the
label's order; one radius for the batch, read from the first sample).

Example:
    >>> import torch
    >>> s = torch.randn(2, 3, 16, 16)
    >>> y = torch.zeros(2, 16, 16, dtype=torch.long); y[:, 4:10, 4:10] = 1
    >>> out = BPKDLoss()({"logits": s}, {"logits": s.clone()}, {"label": y})
    >>> sorted(out), float(sum(out.values()))
    (['bpkd_body', 'bpkd_edge'], 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, dense_example_inputs, match_spatial
from medkd.distill.registry import register_loss

__all__ = ["BPKDLoss", "boundary_masks"]

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def boundary_masks(label: Tensor, num_classes: int, radius: int | Sequence[int] = 3,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """BPKD's per-class edge and body masks ``(M_E, M_B)``, each ``(B, C, *spatial)`` in ``[0, 1]``.

    Args:
        label: class indices ``(B, *spatial)`` with 1 to 3 spatial dimensions.
        num_classes: C.
        radius: r in voxels (one for every axis, or one per axis); the kernels are ``2r+1`` wide.
        ignore_index: voxels counted as background (class 0).

    Raises:
        ValueError: a label without 1-3 spatial dimensions, a radius < 0 or of the wrong length.

    Example:
        >>> y = torch.zeros(1, 9, 9, dtype=torch.long); y[0, :, 5:] = 1
        >>> edge, body = boundary_masks(y, 2, radius=1)
        >>> edge.shape, bool((edge + body == 1).all())
        (torch.Size([1, 2, 9, 9]), True)
        >>> (edge[0, 0, 4] > 0).nonzero().flatten().tolist()  # the boundary lies between columns 4 and 5
        [3, 4, 5, 6]
    """
    ndim = label.ndim - 1
    if ndim not in _MAX_POOL:
        raise ValueError(f"BPKD needs a dense label (B, *spatial) with 1-3 spatial dims, got {tuple(label.shape)}")
    radii = (int(radius),) * ndim if isinstance(radius, int) else tuple(int(r) for r in radius)
    if len(radii) != ndim or min(radii) < 0:
        raise ValueError(f"radius must be >= 0 for each of the {ndim} spatial axes, got {radius}")
    kernel, pad = tuple(2 * r + 1 for r in radii), radii
    y = label.long().masked_fill(label == ignore_index, 0)
    onehot = F.one_hot(y, num_classes).movedim(-1, 1).float()
    dilated = _MAX_POOL[ndim](onehot, kernel, stride=1, padding=pad)
    eroded = -_MAX_POOL[ndim](-onehot, kernel, stride=1, padding=pad)
    # the average over the in-image part of each window (padded by hand: pooling rejects inputs under the kernel)
    pads = [p for r in reversed(radii) for p in (r, r)]
    window_sum = _AVG_POOL[ndim](F.pad(dilated - eroded, pads), kernel, stride=1)
    window_count = _AVG_POOL[ndim](F.pad(torch.ones_like(onehot[:1, :1]), pads), kernel, stride=1)
    edge = window_sum / window_count
    return edge, 1.0 - edge


def _masked_log_softmax(z: Tensor, keep: Tensor) -> Tensor:
    """``log_softmax`` over the last dim, the positions where ``keep`` is False left out (probability exactly 0)."""
    top = z.masked_fill(~keep, float("-inf")).amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    z = torch.where(keep, z - top, torch.full_like(z, -1e4))
    return F.log_softmax(z, dim=-1)


@register_loss("bpkd")
class BPKDLoss(DistillLoss):
    """BPKD's edge and body distillation terms for dense logits ``(B, C, *spatial)`` (2-D or 3-D).

    The teacher's logits are resized to the student's (bi/trilinear); the label ``(B, *spatial)`` must have the
    student's spatial size.

    Args:
        lambda_body: lambda_B (20). lambda_edge: lambda_E (50). alpha: class weight alpha of the edge term (2).
        temperature: T (4). radius: r in voxels (3). radius_mm: radius in mm; when set, ``batch["spacing"]``
            (voxel size in mm per axis, ``(B, ndim)`` or ``(ndim,)``) turns it into voxels per axis.
        weight: w, multiplies both terms (1). ignore_index: label value of voxels left out.

    Raises:
        ValueError: a non-positive temperature or radius_mm, negative weights or radius.
    """

    requires = Requires(student=("logits",), teacher=("logits",), batch=("label",))

    def __init__(self, lambda_body: float = 20.0, lambda_edge: float = 50.0, alpha: float = 2.0,
                 temperature: float = 4.0, radius: int = 3, radius_mm: float | None = None, weight: float = 1.0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for name, value in (("lambda_body", lambda_body), ("lambda_edge", lambda_edge), ("alpha", alpha),
                            ("weight", weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if int(radius) != radius or radius < 1:
            raise ValueError(f"radius must be an integer >= 1 (voxels), got {radius}")
        if radius_mm is not None and not radius_mm > 0:
            raise ValueError(f"radius_mm must be > 0 (or None to use radius in voxels), got {radius_mm}")
        self.lambda_body, self.lambda_edge, self.alpha = float(lambda_body), float(lambda_edge), float(alpha)
        self.temperature, self.radius, self.radius_mm = float(temperature), int(radius), radius_mm
        self.weight, self.ignore_index = float(weight), ignore_index

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Seeded dense inputs: logits ``(2, 3, 12, 12)`` and a label map with two square structures."""
        return dense_example_inputs(seed)

    def radii(self, batch: Mapping[str, Any], ndim: int) -> tuple[int, ...]:
        """The radius in voxels per spatial axis: ``radius``, or ``max(1, round(radius_mm / spacing))``.

        Raises:
            ValueError: ``radius_mm`` is set but the batch has no usable ``spacing``.
        """
        if self.radius_mm is None:
            return (self.radius,) * ndim
        if batch.get("spacing") is None:
            raise ValueError("bpkd: radius_mm is set but the batch has no 'spacing' (voxel size in mm per axis)")
        spacing = torch.as_tensor(batch["spacing"], dtype=torch.float64).reshape(-1)
        if spacing.numel() % ndim:
            raise ValueError(f"bpkd: batch['spacing'] must hold {ndim} values per sample, got {spacing.numel()}")
        return tuple(max(1, round(self.radius_mm / float(s))) for s in spacing[:ndim])

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        s = student["logits"]
        if s.ndim < 3:
            raise ValueError(f"bpkd needs dense logits (B, C, *spatial), got {tuple(s.shape)}")
        t = match_spatial(teacher["logits"], s).detach()
        label = batch["label"].long()
        if label.shape != s.shape[:1] + s.shape[2:]:
            raise ValueError(f"label {tuple(label.shape)} does not match logits {tuple(s.shape)}")
        n_batch, n_cls = s.shape[:2]
        edge, body = boundary_masks(label, n_cls, self.radii(batch, s.ndim - 2), self.ignore_index)
        edge, body = edge.to(s.dtype), body.to(s.dtype)
        keep = label != self.ignore_index
        temp = self.temperature

        # edge term: per-voxel KL over the classes, class-balanced over the edge voxels
        log_s = F.log_softmax(s * edge / temp, dim=1)
        log_t = F.log_softmax(t * edge / temp, dim=1)
        kl = (log_t.exp() * (log_t - log_s)).sum(dim=1).reshape(-1)
        on_edge = ((edge > 0).any(dim=1) & keep).reshape(-1)
        cls = torch.where(on_edge, label.reshape(-1), torch.zeros_like(label.reshape(-1)))
        sums = torch.zeros(n_cls, dtype=kl.dtype, device=kl.device).index_add(0, cls, kl * on_edge)
        counts = torch.zeros(n_cls, dtype=kl.dtype, device=kl.device).index_add(0, cls, on_edge.to(kl.dtype))
        loss_edge = temp**2 * self.alpha * (sums / counts.clamp_min(1.0)).sum()

        # body term: channel-wise KD, a softmax over the (kept) spatial positions of each class channel
        flat_keep = keep.reshape(n_batch, 1, -1).expand(n_batch, n_cls, -1)
        log_s = _masked_log_softmax((s * body / temp).reshape(n_batch, n_cls, -1), flat_keep)
        log_t = _masked_log_softmax((t * body / temp).reshape(n_batch, n_cls, -1), flat_keep)
        cwd = (log_t.exp() * (log_t - log_s)).sum(dim=-1)
        loss_body = temp**2 * cwd.sum(dim=1).mean() / n_cls

        scale = self.weight
        return {"bpkd_edge": scale * self.lambda_edge * loss_edge, "bpkd_body": scale * self.lambda_body * loss_body}
