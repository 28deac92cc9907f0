# SPDX-License-Identifier: Apache-2.0
"""BCP training augmentation as dictionary transforms on dataset items (spec ``bcp.md`` §2 "Augmentation").

Items hold ``image`` as a float32 tensor ``(C, *spatial)`` and ``label`` as an int64 tensor ``(*spatial)``;
every transform here acts on the **trailing** ``spatial_dims`` axes of each key, so one draw moves image and
label together and dtypes are kept.

Randomness: every draw comes from **numpy's global RNG** (``np.random``), as in the reference. Seeding
``numpy`` (``medkd.engine`` seeds ``random``, ``numpy`` and ``torch``) makes the draws reproducible, and
PyTorch's DataLoader reseeds numpy in each worker (``base_seed + worker_id``), so workers differ. MONAI's
``Randomizable`` transforms were not used for the draws because their private ``RandomState`` is neither
seeded by ``np.random.seed`` nor reseeded per worker by a plain ``torch.utils.data.DataLoader``. The
deterministic work (rotation by an angle, resizing) is done by MONAI's ``Rotate`` and ``Resize``.

Example:
    >>> import torch
    >>> item = {"image": torch.rand(1, 40, 48), "label": torch.randint(0, 4, (40, 48))}
    >>> out = acdc_train_transform((64, 64))(item)
    >>> out["image"].shape, out["label"].shape, out["label"].dtype
    (torch.Size([1, 64, 64]), torch.Size([64, 64]), torch.int64)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Resize, Rotate
from monai.utils import convert_to_tensor

from medkd.keys import Keys

__all__ = [
    "normalise_intensity",
    "rot90_flip",
    "rotate_nearest",
    "resize_nearest",
    "pad_crop",
    "RandRot90Flipd",
    "RandIntRotated",
    "ResizeNearestd",
    "RandPadCropd",
    "RandOneOfd",
    "acdc_train_transform",
    "la_train_transform",
    "RandRot90FlipD",
    "RandRot90FlipDict",
    "RandIntRotateD",
    "RandIntRotateDict",
    "ResizeNearestD",
    "ResizeNearestDict",
    "RandPadCropD",
    "RandPadCropDict",
]

DictTransform = Callable[[dict[Hashable, Any]], dict[Hashable, Any]]
_KEYS = (Keys.IMAGE.value, Keys.LABEL.value)


# --- array layer: deterministic functions on the trailing spatial axes ---------------------------------


def normalise_intensity(array: np.ndarray, mode: str) -> np.ndarray:
    """Per-volume intensity normalisation, float32: ``minmax`` to [0, 1] (ACDC) or ``zscore`` (LA, NIfTI).

    Example:
        >>> normalise_intensity(np.array([2.0, 4.0, 6.0]), "minmax").tolist()
        [0.0, 0.5, 1.0]
    """
    if mode not in ("minmax", "zscore"):
        raise ValueError(f"intensity normalisation must be 'minmax' or 'zscore', got {mode!r}")
    array = np.asarray(array).astype(np.float32, copy=False)
    if mode == "minmax":
        lo, hi = float(array.min()), float(array.max())
        return (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    std = float(array.std())
    return (array - float(array.mean())) / std if std > 0 else np.zeros_like(array)


def rot90_flip(x: torch.Tensor, k: int, flip_axis: int, spatial_dims: int) -> torch.Tensor:
    """Rotate by ``k`` quarter turns in the first two spatial axes, then flip spatial axis ``flip_axis``.

    Args:
        x: tensor ``(..., *spatial)`` with ``spatial_dims`` trailing spatial axes.
        k: quarter turns (any integer).
        flip_axis: spatial axis to flip (0-based within the spatial axes).
        spatial_dims: number of trailing spatial axes (2 or 3).

    Returns:
        The rotated and flipped tensor (contiguous, same dtype).

    Example:
        >>> rot90_flip(torch.arange(4).reshape(2, 2), 1, 0, 2).tolist()
        [[0, 2], [1, 3]]
    """
    first = x.ndim - spatial_dims
    x = torch.rot90(x, k, dims=(first, first + 1))
    return torch.flip(x, dims=(first + flip_axis,)).contiguous()


def rotate_nearest(x: torch.Tensor, angle_deg: float, spatial_dims: int = 2) -> torch.Tensor:
    """Rotate in the plane of the trailing two axes by ``angle_deg`` degrees, nearest neighbour, zeros outside.

    Args:
        x: tensor ``(C, H, W)`` or ``(H, W)`` (2D only).
        angle_deg: rotation angle in degrees.
        spatial_dims: must be 2.

    Returns:
        Tensor of the same shape and dtype (a plain ``torch.Tensor``).

    Raises:
        ValueError: if ``spatial_dims != 2``.

    Example:
        >>> rotate_nearest(torch.ones(5, 5, dtype=torch.int64), 0.0).sum().item()
        25
    """
    if spatial_dims != 2:
        raise ValueError(f"rotate_nearest supports 2D images only, got spatial_dims={spatial_dims}")
    squeeze = x.ndim == spatial_dims
    img = x.unsqueeze(0) if squeeze else x
    out = Rotate(angle=math.radians(angle_deg), keep_size=True, mode="nearest", padding_mode="zeros")(img)
    out = convert_to_tensor(out, track_meta=False).to(x.dtype)
    return out[0] if squeeze else out


def resize_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of the trailing ``len(size)`` axes (torch ``nearest``: ``floor(i * in / out)``).

    Args:
        x: tensor ``(C, *spatial)`` or ``(*spatial)``.
        size: target spatial size.

    Returns:
        Tensor ``(C, *size)`` or ``(*size)`` of the same dtype; ``x`` itself if already that size.

    Example:
        >>> resize_nearest(torch.arange(4).reshape(2, 2), (4, 4))[0].tolist()
        [0, 0, 1, 1]
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-len(size) :]) == size:
        return x
    squeeze = x.ndim == len(size)
    img = x.unsqueeze(0) if squeeze else x
    out = convert_to_tensor(Resize(spatial_size=size, mode="nearest")(img), track_meta=False).to(x.dtype)
    return out[0] if squeeze else out


def pad_crop(x: torch.Tensor, pads: Sequence[int], starts: Sequence[int], patch: Sequence[int]) -> torch.Tensor:
    """Zero-pad the trailing axes by ``pads[i]`` on both sides, then crop ``patch`` starting at ``starts``.

    Args:
        x: tensor ``(..., *spatial)``.
        pads: symmetric padding per spatial axis.
        starts: crop start per spatial axis, in the padded volume.
        patch: crop size per spatial axis.

    Returns:
        Tensor ``(..., *patch)``, contiguous, same dtype.

    Example:
        >>> pad_crop(torch.ones(2, 2), (1, 1), (0, 0), (3, 3)).tolist()
        [[0.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    """
    if any(pads):
        flat = [p for pad in reversed(pads) for p in (pad, pad)]  # F.pad wants the last axis first
        x = torch.nn.functional.pad(x, flat, mode="constant", value=0)
    first = x.ndim - len(patch)
    index = [slice(None)] * first + [slice(s, s + p) for s, p in zip(starts, patch)]
    return x[tuple(index)].contiguous()


# --- dictionary layer: one random draw per call, applied to every key -------------------------------------


class RandRot90Flipd(MapTransform):
    """Random quarter turns (k uniform in {0..3}) in the first two spatial axes, then a flip of axis 0 or 1.

    Args:
        keys: keys to transform; default ``("image", "label")``.
        spatial_dims: trailing spatial axes of each array (2 or 3).
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.

    Example:
        >>> d = RandRot90Flipd(spatial_dims=2)({"image": torch.rand(1, 4, 4), "label": torch.zeros(4, 4)})
        >>> d["image"].shape
        torch.Size([1, 4, 4])
    """

    def __init__(self, keys: Sequence[Hashable] = _KEYS, spatial_dims: int = 2, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = spatial_dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        k, axis = int(np.random.randint(0, 4)), int(np.random.randint(0, 2))
        for key in self.key_iterator(d):
            d[key] = rot90_flip(torch.as_tensor(d[key]), k, axis, self.spatial_dims)
        return d


class RandIntRotated(MapTransform):
    """Rotation by an integer angle uniform in ``[low, high)`` degrees, nearest neighbour, zeros outside (2D).

    Args:
        keys: keys to transform; default ``("image", "label")``.
        degrees: ``(low, high)``, high exclusive; the reference uses ``(-20, 20)``.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.

    Example:
        >>> d = RandIntRotated()({"image": torch.rand(1, 8, 8), "label": torch.zeros(8, 8, dtype=torch.int64)})
        >>> d["label"].dtype
        torch.int64
    """

    def __init__(
        self, keys: Sequence[Hashable] = _KEYS, degrees: tuple[int, int] = (-20, 20), allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        if degrees[0] >= degrees[1]:
            raise ValueError(f"degrees must be (low, high) with low < high, got {degrees}")
        self.degrees = (int(degrees[0]), int(degrees[1]))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        angle = int(np.random.randint(*self.degrees))
        for key in self.key_iterator(d):
            d[key] = rotate_nearest(torch.as_tensor(d[key]), angle)
        return d


class ResizeNearestd(MapTransform):
    """Nearest-neighbour resize of every key's trailing spatial axes to ``size`` (image **and** label).

    Example:
        >>> ResizeNearestd(size=(8, 8))({"image": torch.rand(1, 4, 4), "label": torch.zeros(4, 4)})["label"].shape
        torch.Size([8, 8])
    """

    def __init__(
        self, keys: Sequence[Hashable] = _KEYS, size: Sequence[int] = (256, 256), allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.size = tuple(int(s) for s in size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = resize_nearest(torch.as_tensor(d[key]), self.size)
        return d


class RandPadCropd(MapTransform):
    """Uniform random crop of ``patch``, padding first as the reference ``RandomCrop`` does.

    If any spatial axis is ``<= patch``, every axis is zero-padded by ``max((patch - size) // 2 + 3, 0)`` on
    each side. The crop start on each axis is then ``np.random.randint(0, size - patch)`` (high exclusive,
    as in the reference), or 0 when the padded axis equals the patch.

    Args:
        keys: keys to transform; default ``("image", "label")``; all must share their spatial shape.
        patch: crop size per spatial axis.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.

    Example:
        >>> d = RandPadCropd(patch=(8, 8, 8))({"image": torch.rand(1, 5, 9, 12), "label": torch.zeros(5, 9, 12)})
        >>> d["image"].shape, d["label"].shape
        (torch.Size([1, 8, 8, 8]), torch.Size([8, 8, 8]))
    """

    def __init__(
        self, keys: Sequence[Hashable] = _KEYS, patch: Sequence[int] = (112, 112, 80), allow_missing_keys: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.patch = tuple(int(p) for p in patch)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        n = len(self.patch)
        shape = tuple(torch.as_tensor(d[keys[0]]).shape[-n:])
        pads = [0] * n
        if any(s <= p for s, p in zip(shape, self.patch)):
            pads = [max((p - s) // 2 + 3, 0) for s, p in zip(shape, self.patch)]
        padded = [s + 2 * q for s, q in zip(shape, pads)]
        starts = [int(np.random.randint(0, s - p)) if s > p else 0 for s, p in zip(padded, self.patch)]
        for key in keys:
            x = torch.as_tensor(d[key])
            if tuple(x.shape[-n:]) != shape:
                raise ValueError(f"RandPadCropd: {key!r} has spatial shape {tuple(x.shape[-n:])}, expected {shape}")
            d[key] = pad_crop(x, pads, starts, self.patch)
        return d


class RandOneOfd:
    """Apply one of several dict transforms (``None`` = identity), chosen by ``weights`` with one numpy draw.

    Args:
        transforms: the branches; ``None`` leaves the item unchanged.
        weights: branch probabilities (normalised to sum 1).

    Example:
        >>> t = RandOneOfd([None], [1.0])
        >>> t({"image": 1})
        {'image': 1}
    """

    def __init__(self, transforms: Sequence[DictTransform | None], weights: Sequence[float]) -> None:
        if len(transforms) != len(weights) or not transforms:
            raise ValueError("need one weight per transform and at least one transform")
        w = np.asarray(weights, dtype=np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}")
        self.transforms = list(transforms)
        self.cumulative = np.cumsum(w / w.sum())

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        branch = int(np.searchsorted(self.cumulative, np.random.random(), side="right"))
        transform = self.transforms[min(branch, len(self.transforms) - 1)]
        return dict(data) if transform is None else transform(dict(data))


class _Chain:
    """Apply dict transforms in order (kept local so a transform's error surfaces unwrapped)."""

    def __init__(self, transforms: Sequence[DictTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for transform in self.transforms:
            d = transform(d)
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms!r})"


def acdc_train_transform(patch: Sequence[int] = (256, 256)) -> DictTransform:
    """The ACDC training augmentation of BCP/SSL4MIS.

    Exactly one branch: with p = 0.5 rot90 (k uniform in {0..3}) then a flip on axis 0 or 1; otherwise with
    p = 0.5 a rotation by an integer angle in [-20, 20) with nearest interpolation; otherwise nothing. Then
    image and label are nearest-resized to ``patch``.

    Args:
        patch: output size (H, W).

    Returns:
        A callable on ``{"image": float32 (1, H, W), "label": int64 (H, W), ...}`` returning the same keys
        with spatial size ``patch`` and unchanged dtypes.

    Example:
        >>> out = acdc_train_transform((32, 32))({"image": torch.rand(1, 16, 16), "label": torch.zeros(16, 16)})
        >>> out["image"].shape
        torch.Size([1, 32, 32])
    """
    branches = RandOneOfd([RandRot90Flipd(spatial_dims=2), RandIntRotated(), None], [0.5, 0.25, 0.25])
    return _Chain([branches, ResizeNearestd(size=patch)])


def la_train_transform(patch: Sequence[int] = (112, 112, 80)) -> DictTransform:
    """The LA training augmentation of BCP/UA-MT: rot90 + flip (always), then a uniform random crop of ``patch``.

    Args:
        patch: crop size (W, H, D); smaller volumes are padded first (see :class:`RandPadCropd`).

    Returns:
        A callable on ``{"image": float32 (1, W, H, D), "label": int64 (W, H, D), ...}`` returning image
        ``(1, *patch)`` and label ``patch``.

    Example:
        >>> out = la_train_transform((8, 8, 4))({"image": torch.rand(1, 10, 12, 6), "label": torch.zeros(10, 12, 6)})
        >>> out["label"].shape
        torch.Size([8, 8, 4])
    """
    return _Chain([RandRot90Flipd(spatial_dims=3), RandPadCropd(patch=patch)])


RandRot90FlipD = RandRot90FlipDict = RandRot90Flipd
RandIntRotateD = RandIntRotateDict = RandIntRotated
ResizeNearestD = ResizeNearestDict = ResizeNearestd
RandPadCropD = RandPadCropDict = RandPadCropd
