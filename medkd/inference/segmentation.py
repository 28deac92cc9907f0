# SPDX-License-Identifier: Apache-2.0
"""Segmentation inference: the :class:`SegmentationSpec` recipe and the BCP papers' two protocols (Bai et al., 2023).

:class:`SegmentationSpec` is the exact inference recipe of a segmentation model (normalisation, slice by slice or
sliding window, axes). ``medkd bcp predict``, the bundle's inferer, the pipeline and evaluation all go through it,
so their masks are identical; :meth:`SegmentationSpec.infer` is medkd's one 2D/3D dispatch.

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

Example:
    >>> net = nn.Conv2d(1, 2, 3, padding=1)
    >>> spec = SegmentationSpec("slices_2d", 2, (16, 16))
    >>> spec.segment(net, np.random.rand(3, 20, 24).astype("float32")).shape
    (3, 20, 24)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from scipy.ndimage import zoom
from torch import nn

__all__ = [
    "SegmentationSpec", "predict_slices_2d", "predict_sliding_3d", "exact_overlaps", "labels_from_probs",
]

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


def labels_from_probs(probs: np.ndarray, keep_largest: bool) -> np.ndarray:
    """``(C, ...)`` probabilities to a uint8 label map: ``p_fg > 0.5`` for 2 classes, argmax otherwise; then LCC.

    Example:
        >>> probs = np.array([[[0.9, 0.2, 0.8]], [[0.1, 0.8, 0.2]]])
        >>> labels_from_probs(probs, keep_largest=False).tolist()
        [[0, 1, 0]]
    """
    # metrics imports this module's old path (medkd.metrics.seg_inference): import on call, no import cycle
    from medkd.metrics.components import largest_component

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
    return labels_from_probs(probs, keep_largest), probs


@dataclass(frozen=True)
class SegmentationSpec:
    """How a segmentation network turns a volume ``(z, y, x)`` into a label map.

    Attributes:
        mode: ``slices_2d`` (each z slice nearest-resized to ``patch``, softmax, argmax, resized back) or
            ``sliding_3d`` (sliding window of ``patch`` with ``stride``).
        num_classes: output channels, background included.
        patch: network input size.
        intensity: ``minmax`` or ``zscore`` per-volume normalisation.
        axes: how the network sees the ``(z, y, x)`` array: ``zyx`` as read, or ``xyz`` (the LA h5 layout).
        batch_size: slices per forward pass (``slices_2d``).
        stride: sliding-window stride (``sliding_3d``; default half the patch).
        keep_largest: ``sliding_3d`` keeps the largest 3D component per class (the LA protocol).

    Example:
        >>> spec = SegmentationSpec("sliding_3d", 2, [16, 16, 8], "zscore", "xyz", stride=[4, 4, 2])
        >>> SegmentationSpec.from_dict(spec.to_dict()) == spec, spec.spatial_dims
        (True, 3)
    """

    mode: Literal["slices_2d", "sliding_3d"]
    num_classes: int
    patch: tuple[int, ...]
    intensity: str = "minmax"
    axes: Literal["zyx", "xyz"] = "zyx"
    batch_size: int = 16
    stride: tuple[int, ...] | None = None
    keep_largest: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("slices_2d", "sliding_3d"):
            raise ValueError(f"mode must be 'slices_2d' or 'sliding_3d', got {self.mode!r}")
        if self.axes not in ("zyx", "xyz"):
            raise ValueError(f"axes must be 'zyx' or 'xyz', got {self.axes!r}")
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        if self.stride is not None:
            object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))

    @property
    def spatial_dims(self) -> int:
        """2 for ``slices_2d``, 3 for ``sliding_3d``."""
        return 2 if self.mode == "slices_2d" else 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists for tuples), the inferer's arguments in a bundle."""
        out = asdict(self)
        out["patch"] = list(self.patch)
        out["stride"] = list(self.stride) if self.stride is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SegmentationSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        return cls(**data)

    def infer(self, model: nn.Module, image: np.ndarray, device: torch.device | str | None = None) -> np.ndarray:
        """Label map of an image already normalised and in the network's axes: the one 2D/3D dispatch.

        Args:
            model: the network (put in eval mode here).
            image: ``(S, H, W)`` slices (``slices_2d``) or a volume in the network's axes (``sliding_3d``).
            device: where the forwards run (default: where the model's parameters are).

        Returns:
            uint8 label map of ``image``'s shape.
        """
        if device is None:
            device = next(model.parameters()).device
        model.eval()
        if self.mode == "slices_2d":
            return predict_slices_2d(
                model, image, patch=self.patch, num_classes=self.num_classes, batch_size=self.batch_size, device=device
            )
        labels, _ = predict_sliding_3d(
            model, image, patch=self.patch, stride=self.stride or tuple(max(1, p // 2) for p in self.patch),
            num_classes=self.num_classes, device=device, keep_largest=self.keep_largest,
        )
        return labels

    def segment(self, model: nn.Module, array: np.ndarray) -> np.ndarray:
        """uint8 label map ``(z, y, x)`` of a volume ``(z, y, x)`` (a 2D image ``(y, x)`` is one slice).

        Normalises the intensities (:attr:`intensity`), puts the array in the network's axes (:attr:`axes`),
        runs :meth:`infer` and puts the labels back in ``(z, y, x)``.

        Raises:
            ValueError: ``array`` is neither 2D nor 3D.
        """
        from medkd.data.transforms import normalise_intensity

        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"expected a 2D image or a 3D volume, got shape {array.shape}")
        image = normalise_intensity(array, self.intensity)
        if self.axes == "xyz":
            image = image.transpose(2, 1, 0)
        with torch.inference_mode():
            labels = self.infer(model, image)
        labels = np.asarray(labels).astype(np.uint8, copy=False)
        return labels.transpose(2, 1, 0) if self.axes == "xyz" else labels
