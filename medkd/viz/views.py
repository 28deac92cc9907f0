# SPDX-License-Identifier: Apache-2.0
"""Slices of a ``(z, y, x)`` volume as display-ready RGB images: orientation, pixel aspect, label overlay, panels, PNG.

Orientations follow the usual radiological display of an LPS-ordered DICOM stack (rows along +y, columns along +x,
slices sorted by increasing z), as :func:`medkd.io.dicom_volume.load_series_volume` returns it:

- axial: ``(y, x)``; anterior at the top, patient left on the right.
- coronal: ``(z, x)`` with z flipped, so the last slice (superior) is at the top.
- sagittal: ``(z, y)`` with z flipped likewise; anterior on the left.

Slice indices always count along the volume axis (``0 .. n - 1`` in array order), whatever the flip on screen.
Everything is numpy; PIL is imported only to draw titles and encode PNG.

Example:
    >>> from medkd.io.labels import labels_from_names
    >>> vol = np.random.default_rng(0).normal(size=(10, 32, 32)).astype(np.float32)
    >>> mask = np.zeros(vol.shape, np.uint8); mask[4:6, 8:16, 8:16] = 1
    >>> k = default_index(mask, "coronal")
    >>> img, m = extract_slice(vol, "coronal", k), extract_slice(mask, "coronal", k)
    >>> aspect = pixel_aspect((5.0, 1.0, 1.0), "coronal")
    >>> rgb = render_view(img, m, labels_from_names(["bg", "LV"]), lo=-2, hi=2, opacity=0.5, aspect=aspect)
    >>> rgb.shape, rgb.dtype
    ((400, 256, 3), dtype('uint8'))
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medkd.io.labels import LABEL_COLOURS
from medkd.viz.window import _unit

if TYPE_CHECKING:
    from medkd.io.labels import LabelInfo

__all__ = [
    "ORIENTATIONS",
    "MIN_DISPLAY_SIDE",
    "slice_count",
    "default_index",
    "extract_slice",
    "pixel_aspect",
    "render_view",
    "render_slice",
    "side_by_side",
    "legend_entries",
    "to_png",
]

ORIENTATIONS = ("axial", "coronal", "sagittal")

#: orientation -> (volume axis sliced, volume axis shown as rows, volume axis shown as columns, flip rows)
_LAYOUT: dict[str, tuple[int, int, int, bool]] = {
    "axial": (0, 1, 2, False),
    "coronal": (1, 0, 2, True),
    "sagittal": (2, 0, 1, True),
}

#: small images are upscaled by an integer factor until their shorter side reaches this many pixels
MIN_DISPLAY_SIDE = 256


def _layout(orientation: str) -> tuple[int, int, int, bool]:
    try:
        return _LAYOUT[orientation]
    except KeyError:
        valid = ", ".join(ORIENTATIONS)
        raise ValueError(f"unknown orientation {orientation!r}; valid orientations: {valid}") from None


def _shape3(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"expected a (z, y, x) shape, got {shape}")
    return shape  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- slicing


def slice_count(shape_zyx: Sequence[int], orientation: str) -> int:
    """Number of slices of a ``(z, y, x)`` volume in an orientation (``z`` axial, ``y`` coronal, ``x`` sagittal)."""
    return _shape3(shape_zyx)[_layout(orientation)[0]]


def default_index(mask_or_shape: np.ndarray | Sequence[int], orientation: str) -> int:
    """The slice to show first.

    Args:
        mask_or_shape: a ``(z, y, x)`` label map, or just the volume's shape.
        orientation: one of :data:`ORIENTATIONS`.

    Returns:
        Given a mask with foreground, the slice with the most foreground voxels (the first of ties); otherwise the
        middle slice ``n // 2``.
    """
    axis = _layout(orientation)[0]
    if isinstance(mask_or_shape, np.ndarray) and mask_or_shape.ndim == 3:
        others = tuple(a for a in range(3) if a != axis)
        per_slice = np.count_nonzero(mask_or_shape, axis=others)
        if per_slice.any():
            return int(np.argmax(per_slice))
        return mask_or_shape.shape[axis] // 2
    return _shape3(mask_or_shape)[axis] // 2


def extract_slice(volume_zyx: np.ndarray, orientation: str, index: int) -> np.ndarray:
    """One slice in display orientation (see the module table); a view where possible, not a copy.

    Raises:
        ValueError: not a 3D array, or an unknown orientation.
        IndexError: ``index`` outside ``0 .. n - 1``; the message gives the range.
    """
    volume_zyx = np.asarray(volume_zyx)
    if volume_zyx.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {volume_zyx.shape}")
    axis, _, _, flip = _layout(orientation)
    n = volume_zyx.shape[axis]
    if not 0 <= int(index) < n:
        raise IndexError(f"{orientation} slice {index} out of range: valid slices are 0 .. {n - 1}")
    image = np.take(volume_zyx, int(index), axis=axis)
    return image[::-1] if flip else image


def pixel_aspect(spacing_zyx: Sequence[float], orientation: str) -> float:
    """Physical height / width of one displayed pixel: axial ``dy/dx``, coronal ``dz/dx``, sagittal ``dz/dy``."""
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (dz, dy, dx), got {tuple(spacing_zyx)}")
    _, rows, cols, _ = _layout(orientation)
    return spacing[rows] / spacing[cols]


# --------------------------------------------------------------------------------------------- resampling


def _display_shape(shape: tuple[int, int], aspect: float, scale: int | None) -> tuple[int, int]:
    """Output size: stretch one side so pixels are square (never shrink), then upscale small images by an integer."""
    h, w = (shape[0] * aspect, float(shape[1])) if aspect >= 1 else (float(shape[0]), shape[1] / aspect)
    if scale is None:
        scale = max(1, math.ceil(MIN_DISPLAY_SIDE / min(h, w)))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def _linear(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def _resize_linear(image: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """Separable bilinear resize of a 2D float array (pixel-centre aligned; identity when the size is unchanged)."""
    if image.shape == out:
        return image
    i0, i1, wy = _linear(image.shape[0], out[0])
    image = image[i0] * (1 - wy)[:, None] + image[i1] * wy[:, None]
    j0, j1, wx = _linear(image.shape[1], out[1])
    return image[:, j0] * (1 - wx) + image[:, j1] * wx


def _resize_nearest(mask: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    if mask.shape == out:
        return mask
    return mask[np.ix_(_nearest(mask.shape[0], out[0]), _nearest(mask.shape[1], out[1]))]


# --------------------------------------------------------------------------------------------- overlay


def _colour_table(labels: Sequence[LabelInfo], max_value: int) -> np.ndarray:
    """``(n, 3)`` float32 colours indexed by label value: each label's own colour; unlisted values get the default
    palette colour for their value (as :func:`medkd.io.labels.labels_from_names` would give)."""
    n = max([max_value, *(int(l.value) for l in labels)]) + 1
    values = np.arange(n)
    table = LABEL_COLOURS[1 + (values - 1) % (len(LABEL_COLOURS) - 1)].astype(np.float32)
    for label in labels:  # one row per label, not per pixel
        table[int(label.value)] = label.colour[:3]
    return table


def _borders(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Foreground pixels within ``thickness`` pixels (4-neighbourhood steps) of a different label or the image edge."""
    padded = np.pad(mask, thickness, constant_values=0)
    h, w = mask.shape
    t = thickness
    edge = np.zeros(mask.shape, dtype=bool)
    for d in range(1, t + 1):  # a few whole-array shifts
        for dy, dx in ((-d, 0), (d, 0), (0, -d), (0, d)):
            edge |= padded[t + dy : t + dy + h, t + dx : t + dx + w] != mask
    return edge & (mask > 0)


def _label_map(mask2d: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask2d = np.asarray(mask2d)
    if mask2d.shape != shape:
        raise ValueError(f"mask shape {mask2d.shape} does not match image shape {shape}")
    if mask2d.dtype == bool:
        return mask2d.astype(np.uint8)
    if not np.issubdtype(mask2d.dtype, np.integer):
        mask2d = np.rint(mask2d).astype(np.int64)
    return np.where(mask2d > 0, mask2d, 0)


def render_view(
    image2d: np.ndarray,
    mask2d: np.ndarray | None,
    labels: Sequence[LabelInfo],
    *,
    lo: float,
    hi: float,
    opacity: float = 0.5,
    aspect: float = 1.0,
    scale: int | None = None,
    outline: bool = False,
    outline_width: int | None = None,
) -> np.ndarray:
    """Windowed grey image with coloured labels, stretched to square pixels and enlarged for display.

    Args:
        image2d: ``(H, W)`` intensities (from :func:`extract_slice`).
        mask2d: ``(H, W)`` integer labels (0 = background, left uncoloured) or None.
        labels: label colours come from ``LabelInfo.colour``; values in the mask that no label lists get the default
            palette colour of their value.
        lo: lower window limit (from :func:`medkd.viz.window.window_limits`).
        hi: upper window limit, ``> lo``.
        opacity: weight of the label colour, 0 (grey only) .. 1 (solid colour).
        aspect: physical height / width of one input pixel (:func:`pixel_aspect`); the image is stretched along one
            side so that displayed pixels are square (the image linearly, the mask by nearest neighbour).
        scale: integer zoom applied after the aspect stretch; None picks the smallest that makes the shorter side at
            least :data:`MIN_DISPLAY_SIDE` pixels (1 for large images).
        outline: colour only label borders instead of whole regions.
        outline_width: border width in output pixels; None gives 1 px per started 256 px of the shorter output side
            (1 up to 256 px, 2 up to 512 px, ...).

    Returns:
        ``(H', W', 3)`` uint8 RGB.

    Raises:
        ValueError: bad shapes, ``hi <= lo``, opacity outside ``[0, 1]``, non-positive aspect, scale or width.
    """
    image2d = np.asarray(image2d)
    if image2d.ndim != 2:
        raise ValueError(f"expected a 2D image, got shape {image2d.shape}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if not aspect > 0 or any(v is not None and v < 1 for v in (scale, outline_width)):
        raise ValueError(f"aspect must be > 0, scale and outline_width >= 1 (or None), got aspect={aspect}, "
                         f"scale={scale}, outline_width={outline_width}")
    out = _display_shape(image2d.shape, float(aspect), None if scale is None else int(scale))
    grey = _resize_linear(_unit(image2d, lo, hi), out) * np.float32(255.0)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if mask2d is not None and opacity > 0:
        mask = _resize_nearest(_label_map(mask2d, image2d.shape), out)
        width = outline_width or -(-min(out) // MIN_DISPLAY_SIDE)
        drawn = _borders(mask, int(width)) if outline else mask > 0
        if drawn.any():
            table = _colour_table(labels, int(mask.max()))
            alpha = drawn[..., None] * np.float32(opacity)
            rgb = rgb * (1 - alpha) + table[mask] * alpha
    return np.rint(rgb).astype(np.uint8)


def render_slice(
    volume_zyx: np.ndarray,
    mask_zyx: np.ndarray | None,
    labels: Sequence[LabelInfo],
    orientation: str,
    index: int,
    spacing_zyx: Sequence[float],
    **kwargs: Any,
) -> np.ndarray:
    """:func:`extract_slice` of the volume and mask, then :func:`render_view` with the orientation's pixel aspect.

    ``kwargs`` are :func:`render_view`'s keyword arguments (``lo``, ``hi`` required; not ``aspect``).
    """
    if mask_zyx is not None and np.shape(mask_zyx) != np.shape(volume_zyx):
        raise ValueError(f"mask shape {np.shape(mask_zyx)} does not match volume shape {np.shape(volume_zyx)}")
    image = extract_slice(volume_zyx, orientation, index)
    mask = None if mask_zyx is None else extract_slice(mask_zyx, orientation, index)
    return render_view(image, mask, labels, aspect=pixel_aspect(spacing_zyx, orientation), **kwargs)


# --------------------------------------------------------------------------------------------- panels, legend, PNG


def _as_rgb(panel: np.ndarray) -> np.ndarray:
    panel = np.asarray(panel)
    if panel.ndim == 2:
        panel = np.repeat(panel[..., None], 3, axis=-1)
    if panel.ndim != 3 or panel.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {panel.shape}")
    panel = panel[..., :3]
    if panel.dtype != np.uint8:
        panel = np.clip(np.rint(panel), 0, 255).astype(np.uint8)
    return panel


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable built-in font (Pillow >= 10.1 with FreeType)
    except (TypeError, AttributeError, OSError):
        return ImageFont.load_default()


def _fit(text: str, font: Any, width: float) -> str:
    """``text`` shortened with ``...`` until it fits ``width`` pixels (or nothing fits)."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..." if text else ""


def side_by_side(
    panels: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    gap: int = 8,
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    font_size: int = 14,
) -> np.ndarray:
    """Panels in one row (top-aligned), ``gap`` pixels apart, with an optional title strip above each.

    Args:
        panels: ``(H, W, 3)`` uint8 images (or ``(H, W)`` grey; other dtypes are clipped to 0..255), heights may
            differ.
        titles: one per panel, drawn with PIL's built-in font (shortened with ``...`` to fit the panel).
        gap: pixels between panels.
        background: fill of gaps, padding and the title strip; text is black or white, whichever contrasts.
        font_size: title text size in pixels.

    Returns:
        ``(H, W, 3)`` uint8 with ``W = sum of widths + gap * (n - 1)``.

    Raises:
        ValueError: no panels, a bad panel shape, a negative gap, or as many titles as panels missing.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"got {len(titles)} titles for {len(panels)} panels")
    rgbs = [_as_rgb(p) for p in panels]
    font = _font(font_size) if titles is not None else None
    strip = 0 if font is None else font_size + 8
    widths = [p.shape[1] for p in rgbs]
    canvas = np.empty((strip + max(p.shape[0] for p in rgbs), sum(widths) + gap * (len(rgbs) - 1), 3), np.uint8)
    canvas[:] = background
    lefts = np.concatenate([[0], np.cumsum(np.asarray(widths) + gap)[:-1]]).astype(int)
    for left, panel in zip(lefts, rgbs):
        canvas[strip : strip + panel.shape[0], left : left + panel.shape[1]] = panel
    if font is None:
        return canvas
    from PIL import Image, ImageDraw

    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    ink = (0, 0, 0) if sum(background) > 382 else (255, 255, 255)
    for left, width, title in zip(lefts, widths, titles or ()):
        text = _fit(str(title), font, width - 4)
        offset = (width - font.getlength(text)) / 2
        draw.text((int(left) + max(2, offset), 3), text, fill=ink, font=font)
    return np.asarray(picture)


def legend_entries(labels: Sequence[LabelInfo], mask: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One entry per label for a legend: ``name``, ``description``, ``value``, ``colour`` (``#rrggbb``), ``present``.

    ``present`` says whether the label occurs in ``mask`` (a slice or a whole volume); with no mask every entry is
    present.
    """
    present: np.ndarray | None = None
    if mask is not None and len(labels):
        flat = np.asarray(mask).reshape(-1)
        top = max(int(l.value) for l in labels)
        flat = flat[(flat > 0) & (flat <= top)].astype(np.intp)
        present = np.bincount(flat, minlength=top + 1) > 0
    return [
        {
            "name": label.name,
            "description": label.description,
            "value": int(label.value),
            "colour": "#{:02x}{:02x}{:02x}".format(*(int(c) for c in label.colour[:3])),
            "present": True if present is None else bool(present[int(label.value)]),
        }
        for label in labels
    ]


def to_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` (or grey ``(H, W)``) uint8 image, for ``st.download_button``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(_as_rgb(rgb))).save(buffer, format="PNG")
    return buffer.getvalue()
