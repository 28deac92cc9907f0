# SPDX-License-Identifier: Apache-2.0
"""Views of 2D detection images that remember their geometry (spec ``grounded_teacher.md`` §2.2, §7).

A *weak view* resizes an image so that its short side is ``size`` and optionally flips it horizontally; its
:class:`ViewGeometry` maps boxes from the original image to the view (:meth:`ViewGeometry.apply`) and back
(:meth:`ViewGeometry.invert`), so teacher detections on the view can be returned in original pixels and expert
boxes (original pixels) can be warped onto the view the student sees. The *strong view* is the weak view plus
photometric noise (:func:`strong_photometric`), which keeps the geometry.

Conventions: images ``(H, W)`` rows x columns (or channel-first ``(C, H, W)`` in dictionaries), boxes float
``(N, 4)`` ``(x_min, y_min, x_max, y_max)`` with x = column and pixel i spanning ``[i, i + 1)``. The box arithmetic
is MONAI's (``monai.apps.detection.transforms.box_ops``), whose box axis i is the array's spatial axis i, so sizes
are passed to it as ``(W, H)``.

Example:
    >>> image = np.zeros((40, 80), np.float32)
    >>> view, boxes, geom = weak_view(image, np.array([[10, 5, 20, 15]], np.float32), size=20, flip=True)
    >>> view.shape, boxes.tolist(), geom.invert(boxes).tolist()
    ((20, 40), [[30.0, 2.5, 35.0, 7.5]], [[10.0, 5.0, 20.0, 15.0]])
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.detection.transforms.box_ops import flip_boxes, resize_boxes
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform, Transform
from monai.utils import ensure_tuple

from medkd.keys import Keys

__all__ = [
    "normalise_intensity",
    "view_size",
    "ViewGeometry",
    "resize_image",
    "weak_view",
    "StrongAugConfig",
    "strong_photometric",
    "WeakView",
    "RecordedViewd",
    "RecordedViewD",
    "RecordedViewDict",
]

Boxes = TypeVar("Boxes", np.ndarray, torch.Tensor)
Image = TypeVar("Image", np.ndarray, torch.Tensor)


def normalise_intensity(image: np.ndarray, lower: float = 1.0, upper: float = 99.0) -> np.ndarray:
    """Window to the ``lower``..``upper`` percentiles and rescale to float32 ``[0, 1]`` (clipped).

    A constant image becomes zeros.

    Example:
        >>> out = normalise_intensity(np.arange(101, dtype=np.float32).reshape(1, 101))
        >>> float(out.min()), float(out.max()), out.dtype.name
        (0.0, 1.0, 'float32')
    """
    array = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(array, [lower, upper]) if array.size else (0.0, 0.0)
    if not hi > lo:
        return np.zeros_like(array)
    return np.clip((array - np.float32(lo)) / np.float32(hi - lo), 0.0, 1.0).astype(np.float32)


def view_size(src_hw: Sequence[int], size: int) -> tuple[int, int]:
    """The ``(h, w)`` of a view whose short side is ``size``, aspect ratio kept (long side rounded).

    Example:
        >>> view_size((300, 200), 128)
        (192, 128)
    """
    height, width = int(src_hw[0]), int(src_hw[1])
    if height < 1 or width < 1 or size < 1:
        raise ValueError(f"sizes must be positive, got image {height} x {width} and view size {size}")
    scale = size / min(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


@dataclass(frozen=True)
class ViewGeometry:
    """How a view was made from an original image: resized from ``src_hw`` to ``out_hw``, then flipped
    horizontally (along x = columns) when ``flip``.

    Example:
        >>> g = ViewGeometry((10, 20), (20, 40), flip=False)
        >>> g.apply(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
        [[2.0, 4.0, 6.0, 8.0]]
    """

    src_hw: tuple[int, int]
    out_hw: tuple[int, int]
    flip: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "src_hw", (int(self.src_hw[0]), int(self.src_hw[1])))
        object.__setattr__(self, "out_hw", (int(self.out_hw[0]), int(self.out_hw[1])))
        object.__setattr__(self, "flip", bool(self.flip))

    @staticmethod
    def _xy(hw: tuple[int, int]) -> tuple[int, int]:
        return hw[1], hw[0]  # MONAI box axis 0 = x = columns = W

    def apply(self, boxes: Boxes) -> Boxes:
        """Original-image boxes ``(N, 4)`` xyxy -> view boxes (same array type and dtype)."""
        out = resize_boxes(boxes, self._xy(self.src_hw), self._xy(self.out_hw))
        return flip_boxes(out, self._xy(self.out_hw), flip_axes=0) if self.flip else out

    def invert(self, boxes: Boxes) -> Boxes:
        """View boxes ``(N, 4)`` xyxy -> original-image boxes (same array type and dtype)."""
        if self.flip:
            boxes = flip_boxes(boxes, self._xy(self.out_hw), flip_axes=0)
        return resize_boxes(boxes, self._xy(self.out_hw), self._xy(self.src_hw))

    def apply_image(self, image: Image) -> Image:
        """The view of an original image ``(H, W)`` or ``(C, H, W)`` (bilinear, antialiased, then flipped)."""
        return resize_image(image, self.out_hw, flip=self.flip)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary (for batches, caches); :meth:`from_dict` reads it back."""
        return {"src_hw": list(self.src_hw), "out_hw": list(self.out_hw), "flip": self.flip}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViewGeometry:
        """Inverse of :meth:`as_dict`.

        Example:
            >>> g = ViewGeometry((5, 6), (10, 12), True)
            >>> ViewGeometry.from_dict(g.as_dict()) == g
            True
        """
        return cls(tuple(data["src_hw"]), tuple(data["out_hw"]), bool(data["flip"]))  # type: ignore[arg-type]


def resize_image(image: Image, out_hw: Sequence[int], *, flip: bool = False) -> Image:
    """Resize ``(H, W)`` or ``(C, H, W)`` to ``out_hw`` (bilinear, half-pixel centres, antialiased when shrinking),
    then flip horizontally when ``flip``. Returns the input's type; numpy comes back float32.

    Example:
        >>> resize_image(np.eye(4, dtype=np.float32), (2, 2), flip=True).shape
        (2, 2)
    """
    is_numpy = isinstance(image, np.ndarray)
    tensor = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32) if is_numpy else image)
    if tensor.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W) or (C, H, W), got shape {tuple(tensor.shape)}")
    x = tensor[None, None] if tensor.ndim == 2 else tensor[None]
    dtype = x.dtype if x.is_floating_point() else torch.float32
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if tuple(x.shape[-2:]) != out_hw:
        shrink = out_hw[0] < x.shape[-2] or out_hw[1] < x.shape[-1]
        x = F.interpolate(x.to(dtype), size=out_hw, mode="bilinear", align_corners=False, antialias=shrink)
    if flip:
        x = torch.flip(x, dims=(-1,))
    x = x[0, 0] if tensor.ndim == 2 else x[0]
    return x.numpy().astype(np.float32, copy=False) if is_numpy else x.contiguous()


def weak_view(
    image: np.ndarray, boxes: np.ndarray, *, size: int, flip: bool
) -> tuple[np.ndarray, np.ndarray, ViewGeometry]:
    """The weak view: short side resized to ``size``, then a horizontal flip when ``flip``.

    Args:
        image: float32 ``(H, W)``.
        boxes: ``(N, 4)`` xyxy in original pixels (may be empty).
        size: short side of the view.
        flip: flip horizontally.

    Returns:
        ``(view (h, w) float32, boxes (N, 4) in view pixels, geometry)``.

    Example:
        >>> v, b, g = weak_view(np.ones((10, 20), np.float32), np.zeros((0, 4), np.float32), size=5, flip=False)
        >>> v.shape, b.shape, g.out_hw
        ((5, 10), (0, 4), (5, 10))
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"weak_view expects an image (H, W), got shape {image.shape}")
    geometry = ViewGeometry(image.shape, view_size(image.shape, size), flip)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return geometry.apply_image(image), geometry.apply(boxes), geometry


# --- strong photometric augmentation ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StrongAugConfig:
    """Photometric noise of the strong view (spec §2.4: gamma / intensity jitter, smoothing, noise, coarse dropout).

    Each effect is applied to an image with its probability ``p_*``; ranges are ``(low, high)`` of a uniform draw.
    Inputs are assumed in ``[0, 1]``; the output is clipped to ``[0, 1]``.
    """

    p_gamma: float = 0.8
    gamma: tuple[float, float] = (0.7, 1.5)
    p_intensity: float = 0.8
    scale: tuple[float, float] = (0.8, 1.2)
    shift: tuple[float, float] = (-0.1, 0.1)
    p_blur: float = 0.5
    sigma: tuple[float, float] = (0.3, 1.5)
    p_noise: float = 0.5
    noise_std: tuple[float, float] = (0.01, 0.06)
    p_dropout: float = 0.7
    holes: int = 3
    hole_fraction: tuple[float, float] = (0.05, 0.2)

    def __post_init__(self) -> None:
        for name in ("p_gamma", "p_intensity", "p_blur", "p_noise", "p_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"StrongAugConfig.{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("gamma", "scale", "shift", "sigma", "noise_std", "hole_fraction"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"StrongAugConfig.{name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.gamma[0] <= 0 or self.sigma[0] < 0 or self.noise_std[0] < 0 or self.holes < 0:
            raise ValueError("StrongAugConfig: gamma must be > 0, sigma, noise_std and holes >= 0")
        if not 0.0 <= self.hole_fraction[0] <= self.hole_fraction[1] <= 1.0:
            raise ValueError(f"StrongAugConfig.hole_fraction must lie in [0, 1], got {self.hole_fraction}")


def _uniform(generator: torch.Generator, shape: Sequence[int], bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(tuple(shape), generator=generator, device=generator.device)


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image separable Gaussian blur of ``(B, 1, h, w)`` with ``sigma (B,)`` (0 = unchanged), reflect padding."""
    b, _, h, w = x.shape
    radius = max(1, int(math.ceil(3.0 * float(sigma.max()))))
    radius = min(radius, h - 1, w - 1)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    safe = sigma.clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None] == 0).to(x.dtype))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    y = x.reshape(1, b, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b)
    return y.reshape(b, 1, h, w)


def strong_photometric(
    images: torch.Tensor, generator: torch.Generator, cfg: StrongAugConfig | None = None
) -> torch.Tensor:
    """Strong photometric view of a batch: gamma, intensity scale/shift, Gaussian smoothing, Gaussian noise and
    coarse dropout, each drawn per image from ``generator``; geometry unchanged, vectorised over the batch.

    Args:
        images: ``(B, 1, h, w)`` float in ``[0, 1]`` (any device; draws are made on ``generator``'s device).
        generator: the random generator; the result is a pure function of its state and ``images``.
        cfg: strengths and probabilities (default :class:`StrongAugConfig`).

    Returns:
        A new tensor ``(B, 1, h, w)`` in ``[0, 1]``, same dtype and device.

    Example:
        >>> x = torch.rand(2, 1, 16, 16)
        >>> a = strong_photometric(x, torch.Generator().manual_seed(0))
        >>> b = strong_photometric(x, torch.Generator().manual_seed(0))
        >>> a.shape, bool(torch.equal(a, b)), bool(torch.equal(a, x))
        (torch.Size([2, 1, 16, 16]), True, False)
    """
    cfg = cfg or StrongAugConfig()
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"strong_photometric expects images (B, 1, h, w), got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    dev, dtype = images.device, images.dtype if images.is_floating_point() else torch.float32

    def draw(bounds: tuple[float, float], p: float, identity: float) -> torch.Tensor:
        value = _uniform(generator, (b,), bounds)
        on = torch.rand((b,), generator=generator, device=generator.device) < p
        return torch.where(on, value, torch.full_like(value, identity)).to(dev, dtype)

    gamma = draw(cfg.gamma, cfg.p_gamma, 1.0)
    scale = draw(cfg.scale, cfg.p_intensity, 1.0)
    shift = draw(cfg.shift, cfg.p_intensity, 0.0)
    sigma = draw(cfg.sigma, cfg.p_blur, 0.0)
    noise_std = draw(cfg.noise_std, cfg.p_noise, 0.0)
    noise = torch.randn((b, 1, h, w), generator=generator, device=generator.device).to(dev, dtype)
    n = cfg.holes
    hole_on = (torch.rand((b, n), generator=generator, device=generator.device) < cfg.p_dropout).to(dev)
    hole_hw = _uniform(generator, (b, n, 2), cfg.hole_fraction).to(dev, dtype)
    hole_c = torch.rand((b, n, 2), generator=generator, device=generator.device).to(dev, dtype)

    x = images.to(dtype).clamp(0.0, 1.0)
    x = x.pow(gamma[:, None, None, None])
    x = x * scale[:, None, None, None] + shift[:, None, None, None]
    if bool((sigma > 0).any()):
        x = _blur(x, sigma)
    x = x + noise * noise_std[:, None, None, None]
    if n:
        size = torch.tensor([h, w], device=dev, dtype=dtype)
        half = hole_hw * size / 2
        centre = hole_c * size
        rows = torch.arange(h, device=dev, dtype=dtype)[None, None, :] + 0.5  # (1, 1, h)
        cols = torch.arange(w, device=dev, dtype=dtype)[None, None, :] + 0.5  # (1, 1, w)
        in_r = (rows - centre[..., 0:1]).abs() <= half[..., 0:1]  # (B, n, h)
        in_c = (cols - centre[..., 1:2]).abs() <= half[..., 1:2]  # (B, n, w)
        holes = (in_r[..., :, None] & in_c[..., None, :] & hole_on[..., None, None]).any(dim=1)  # (B, h, w)
        fill = x.mean(dim=(1, 2, 3), keepdim=True)
        x = torch.where(holes[:, None], fill, x)
    return x.clamp(0.0, 1.0)


# --- transforms ---------------------------------------------------------------------------------------------------


class WeakView(Transform):
    """Array transform: ``(image, boxes, flip) -> (view, view boxes, ViewGeometry)``; short side resized to ``size``.

    ``image`` is ``(H, W)`` or channel-first ``(C, H, W)``, numpy or torch (type kept); ``boxes`` ``(N, 4)`` xyxy.

    Example:
        >>> view, boxes, geom = WeakView(8)(torch.zeros(1, 16, 32), torch.tensor([[0.0, 0.0, 4.0, 4.0]]), flip=True)
        >>> tuple(view.shape), boxes.tolist(), geom.flip
        ((1, 8, 16), [[14.0, 0.0, 16.0, 2.0]], True)
    """

    def __init__(self, size: int) -> None:
        if int(size) < 1:
            raise ValueError(f"view size must be positive, got {size}")
        self.size = int(size)

    def geometry(self, src_hw: Sequence[int], flip: bool) -> ViewGeometry:
        """The geometry of the view of an image of size ``src_hw``."""
        return ViewGeometry(tuple(src_hw), view_size(src_hw, self.size), flip)  # type: ignore[arg-type]

    def __call__(  # type: ignore[override]
        self, image: Image, boxes: Boxes | None = None, *, flip: bool = False
    ) -> tuple[Image, Boxes | None, ViewGeometry]:
        geometry = self.geometry(tuple(image.shape[-2:]), flip)
        return geometry.apply_image(image), (None if boxes is None else geometry.apply(boxes)), geometry


class RecordedViewd(RandomizableTransform, MapTransform):
    """Dictionary transform: the weak view of ``keys`` (one geometry for all of them), boxes in ``box_keys``
    moved with it, and the :class:`ViewGeometry` stored under ``geometry_key``.

    The flip is drawn with probability ``flip_prob`` from the transform's ``R`` (seed it with
    :meth:`set_random_state`). Images ``(H, W)`` or ``(C, H, W)``, numpy or torch; boxes ``(N, 4)`` xyxy.

    Args:
        keys: image keys (same size).
        box_keys: keys of box arrays in original pixels (ground truth, expert boxes, ...).
        size: short side of the view.
        flip_prob: probability of a horizontal flip.
        geometry_key: where the geometry goes.
        allow_missing_keys: skip absent image or box keys.

    Example:
        >>> t = RecordedViewd(keys="image", box_keys="boxes", size=8, flip_prob=1.0)
        >>> out = t({"image": np.zeros((16, 16), np.float32), "boxes": np.array([[0, 0, 4, 2]], np.float32)})
        >>> out["image"].shape, out["boxes"].tolist(), out["geometry"]
        ((8, 8), [[6.0, 0.0, 8.0, 1.0]], ViewGeometry(src_hw=(16, 16), out_hw=(8, 8), flip=True))
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.IMAGE.value,
        box_keys: KeysCollection = Keys.BOXES.value,
        *,
        size: int,
        flip_prob: float = 0.5,
        geometry_key: str = Keys.GEOMETRY.value,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=flip_prob)
        self.box_keys: tuple[Hashable, ...] = ensure_tuple(box_keys)
        self.view = WeakView(size)
        self.geometry_key = geometry_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        self.randomize(None)
        geometry: ViewGeometry | None = None
        for key in self.key_iterator(d):
            image = d[key]
            g = self.view.geometry(tuple(image.shape[-2:]), self._do_transform)
            if geometry is not None and g != geometry:
                raise ValueError(f"images under {list(self.keys)} differ in size: {geometry.src_hw} vs {g.src_hw}")
            geometry = g
            d[key] = g.apply_image(image)
        if geometry is None:
            return d
        for key in self.box_keys:
            if key in d:
                d[key] = geometry.apply(d[key])
            elif not self.allow_missing_keys:
                raise KeyError(f"box key {key!r} not in the data (allow_missing_keys=False)")
        d[self.geometry_key] = geometry
        return d


RecordedViewD = RecordedViewDict = RecordedViewd
