# SPDX-License-Identifier: Apache-2.0
"""The evaluation inference of the BCP papers (Bai et al., CVPR 2023): ACDC slice-wise and LA sliding-window.

* :func:`predict_slices_2d` follows ``test_ACDC.py``: every slice is nearest-resized (``scipy.ndimage.zoom`` with
  ``order=0``, for the **image** too) to the network size, softmax + argmax, nearest-resized back. Slices are
  batched; the result equals the reference's one-slice-at-a-time loop.
* :func:`predict_sliding_3d` follows ``test_3d_patch.py::test_single_case``: centred zero padding where an axis is
  smaller than the patch, window starts ``stride * i`` with the last one clipped to the end, softmax per window,
  equal-weight averaging, padding cropped back; then foreground probability ``> 0.5`` (argmax for more than two
  classes) and the largest connected component (``getLargestCC``, the reference's default ``nms=1``). It runs MONAI's
  ``sliding_window_inference`` with overlaps chosen so that MONAI's interval ``int(roi * (1 - overlap))`` is
  exactly the stride, which reproduces the reference window grid. The reference's score map copies the foreground
  probability into every channel; here channel ``c`` holds the probability of class ``c``.

Both functions call ``model.eval()`` (and leave the model in eval mode) and run under ``torch.inference_mode()``.
The model must already sit on ``device``; inputs are moved there and results come back as numpy arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy.ndimage import zoom
from torch import nn

from medkd.metrics.components import largest_component

__all__ = ["predict_slices_2d", "predict_sliding_3d", "largest_component", "exact_overlaps"]

logger = logging.getLogger(__name__)


def _logits(output: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The segmentation logits of a model output: the tensor itself, or element 0 of a tuple/list."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _check_channels(logits: torch.Tensor, num_classes: int) -> None:
    if logits.shape[1] != num_classes:
        raise ValueError(
            f"model returned {logits.shape[1]} channels (output {tuple(logits.shape)}), expected {num_classes}"
        )


def _resize_nearest(stack: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-resize ``(S, H, W)`` to ``(S, *size)`` exactly as per-slice ``zoom(slice, size/(H, W), order=0)``."""
    height, width = stack.shape[1:]
    if (height, width) == tuple(size):
        return stack
    factors = (1.0, size[0] / height, size[1] / width)
    return zoom(stack, factors, order=0)


def predict_slices_2d(
    model: nn.Module,
    volume: np.ndarray,
    *,
    patch: Sequence[int] = (256, 256),
    num_classes: int,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Slice-by-slice prediction of a ``(S, H, W)`` volume, the ACDC protocol of ``test_ACDC.py``.

    Args:
        model: 2D network mapping ``(B, 1, *patch)`` to logits ``(B, num_classes, *patch)`` (or a tuple whose
            element 0 is that); put in eval mode here.
        volume: image ``(S, H, W)``.
        patch: network input size ``(h, w)``; every slice is nearest-resized to it and the labels back.
        num_classes: number of output channels, background included (at most 256).
        batch_size: slices per forward.
        device: where the forwards run; the model must already be there.

    Returns:
        Label map ``(S, H, W)``, uint8.

    Raises:
        ValueError: ``volume`` is not 3D, or the model output has the wrong number of channels.

    Example:
        >>> net = nn.Conv2d(1, 4, 3, padding=1)
        >>> predict_slices_2d(net, np.random.rand(2, 20, 24).astype("float32"), patch=(16, 16), num_classes=4).shape
        (2, 20, 24)
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (S, H, W), got shape {volume.shape}")
    if not 2 <= num_classes <= 256 or batch_size < 1:
        raise ValueError(f"need 2 <= num_classes <= 256 and batch_size >= 1, got {num_classes}, {batch_size}")
    model.eval()
    resized = _resize_nearest(volume.astype(np.float32, copy=False), patch)
    labels = np.empty(resized.shape, dtype=np.uint8)
    with torch.inference_mode():
        for start in range(0, resized.shape[0], batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(resized[start : start + batch_size, None])).to(device)
            logits = _logits(model(batch))
            _check_channels(logits, num_classes)
            pred = torch.argmax(torch.softmax(logits, dim=1), dim=1)
            labels[start : start + batch_size] = pred.to(device="cpu", dtype=torch.uint8).numpy()
    return _resize_nearest(labels, volume.shape[1:])


def exact_overlaps(patch: Sequence[int], stride: Sequence[int]) -> tuple[float, ...]:
    """Overlaps for MONAI ``sliding_window_inference`` whose scan interval is exactly ``stride``.

    MONAI uses ``int(roi * (1 - overlap))``; ``1 - stride / roi`` often truncates to ``stride - 1`` in floating
    point (``roi=96, stride=16`` gives 15), so the overlap is set half a voxel lower.

    Args:
        patch: window size per axis.
        stride: step per axis, ``1 <= stride <= patch``.

    Returns:
        One overlap in ``[0, 1)`` per axis.

    Raises:
        ValueError: lengths differ or a stride is outside ``[1, patch]``.

    Example:
        >>> [int(p * (1 - o)) for p, o in zip((112, 96), exact_overlaps((112, 96), (18, 16)))]
        [18, 16]
    """
    if len(patch) != len(stride):
        raise ValueError(f"patch {tuple(patch)} and stride {tuple(stride)} have different lengths")
    overlaps = []
    for p, s in zip(patch, stride):
        if not 1 <= s <= p:
            raise ValueError(f"stride {tuple(stride)} must lie in [1, patch] per axis, patch {tuple(patch)}")
        overlap = 0.0 if s == p else 1.0 - (s + 0.5) / p
        if int(p * (1 - overlap)) != s:  # cannot happen for integer p, s; keeps the parity promise explicit
            raise ValueError(f"no overlap reproduces stride {s} for window {p}")
        overlaps.append(overlap)
    return tuple(overlaps)


def _labels_from_probs(probs: np.ndarray, keep_largest: bool) -> np.ndarray:
    """``(C, ...)`` probabilities to a uint8 label map: ``p_fg > 0.5`` for 2 classes, argmax otherwise; then LCC."""
    if probs.shape[0] == 2:
        labels = (probs[1] > 0.5).astype(np.uint8)
        return largest_component(labels) if keep_largest else labels
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    if not keep_largest:
        return labels
    out = np.zeros_like(labels)
    for c in range(1, probs.shape[0]):  # per class, like KeepLargestConnectedComponent(independent=True)
        out[largest_component(labels == c)] = c
    return out


def predict_sliding_3d(
    model: nn.Module,
    volume: np.ndarray,
    *,
    patch: Sequence[int] = (112, 112, 80),
    stride: Sequence[int] = (18, 18, 4),
    num_classes: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    keep_largest: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding-window prediction of a ``(W, H, D)`` volume, the LA protocol of ``test_3d_patch.py``.

    Args:
        model: 3D network mapping ``(B, 1, *patch)`` to logits ``(B, num_classes, *patch)`` (or a tuple whose
            element 0 is that); put in eval mode here.
        volume: image ``(W, H, D)``; axes smaller than ``patch`` are zero-padded, centred, then cropped back.
        patch: window size (LA: ``(112, 112, 80)``).
        stride: window step per axis, ``1 <= stride <= patch`` (LA: ``(18, 18, 4)``).
        num_classes: number of output channels, background included (at most 256).
        device: where the forwards and the averaging run; the model must already be there.
        batch_size: windows per forward. 1 reproduces the reference bit for bit; larger batches may change
            probabilities in the last float bits.
        keep_largest: keep only the largest connected component (per class when ``num_classes > 2``), as the
            reference with ``nms=1``.

    Returns:
        ``(labels, probs)``: label map ``(W, H, D)`` uint8 and class probabilities ``(C, W, H, D)`` float32.

    Raises:
        ValueError: ``volume`` is not 3D, a bad patch/stride, or a wrong number of output channels.

    Example:
        >>> net = nn.Conv3d(1, 2, 3, padding=1)
        >>> lab, prob = predict_sliding_3d(net, np.random.rand(10, 9, 6).astype("float32"),
        ...                                patch=(8, 8, 4), stride=(4, 4, 2), num_classes=2)
        >>> lab.shape, prob.shape
        ((10, 9, 6), (2, 10, 9, 6))
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or len(patch) != 3:
        raise ValueError(f"volume must be (W, H, D) with a 3D patch, got shape {volume.shape}, patch {tuple(patch)}")
    if not 2 <= num_classes <= 256 or batch_size < 1:
        raise ValueError(f"need 2 <= num_classes <= 256 and batch_size >= 1, got {num_classes}, {batch_size}")
    overlaps = exact_overlaps(patch, stride)
    model.eval()

    def predictor(window: torch.Tensor) -> torch.Tensor:
        logits = _logits(model(window))
        _check_channels(logits, num_classes)
        return torch.softmax(logits, dim=1)

    inputs = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None].to(device)
    with torch.inference_mode():
        probs = sliding_window_inference(
            inputs, tuple(patch), batch_size, predictor, overlap=overlaps, mode="constant", cval=0.0
        )
    probs = probs[0].to(device="cpu", dtype=torch.float32).numpy()
    return _labels_from_probs(probs, keep_largest), probs
