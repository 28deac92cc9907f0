# SPDX-License-Identifier: Apache-2.0
"""Detections drawn on a 2D image: a windowed grey picture with each box outlined in its label's colour and a
``name 0.87`` tag, for ``medkd gt predict``, the app's detection view and reports.

Boxes are the ``detection`` kind's ``(x_min, y_min, x_max, y_max)`` in pixels, ``x`` the column, pixel ``i``
spanning ``[i, i + 1)``: a box ``(2, 1, 6, 4)`` covers columns 2..5 and rows 1..3, and its outline is drawn on
those pixels. Labels are label values (1..K, as :class:`~medkd.io.labels.LabelInfo` numbers them); colours come
from the labels (or :data:`medkd.io.labels.LABEL_COLOURS` by value). Higher scores are drawn last, on top.

Example:
    >>> import numpy as np
    >>> image, box = np.zeros((40, 60), np.float32), np.array([[20.0, 20.0, 30.0, 28.0]])
    >>> rgb = draw_boxes(image, box, np.array([0.9]), np.array([1]), {1: "mass"}, window=(0.0, 1.0))
    >>> rgb.shape, rgb.dtype, rgb[20, 20].tolist(), rgb[35, 5].tolist()
    ((40, 60, 3), dtype('uint8'), [230, 25, 75], [0, 0, 0])
    >>> draw_boxes(image, box, np.array([0.3]), np.array([1]), {1: "mass"}, min_score=0.5, window=(0.0, 1.0))[20, 20]
    array([0, 0, 0], dtype=uint8)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
import numpy as np

from medkd.io.labels import LABEL_COLOURS, LabelInfo

__all__ = ["box_pixels", "draw_boxes", "label_colours", "save_png"]

logger = logging.getLogger(__name__)

Names = Mapping[int, str] | Sequence[LabelInfo]


def _names_and_colours(names: Names) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}, {}
    found = {int(label.value): str(label.name) for label in names}
    return found, {int(label.value): tuple(int(c) for c in label.colour[:3]) for label in names}  # type: ignore[misc]


def label_colours(values: np.ndarray) -> np.ndarray:
    """RGB ``uint8`` ``(N, 3)`` of label values by :data:`~medkd.io.labels.LABEL_COLOURS` (background skipped).

    Example:
        >>> label_colours(np.array([1, 2, 10])).tolist()
        [[230, 25, 75], [60, 180, 75], [230, 25, 75]]
    """
    values = np.asarray(values, np.int64).reshape(-1)
    return LABEL_COLOURS[1 + (values - 1) % (len(LABEL_COLOURS) - 1)]


def box_pixels(boxes: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last pixel ``(col, row)`` of each box, inclusive, inside a ``(height, width)`` image, and whether
    anything of the box is inside it.

    Args:
        boxes: ``(N, 4)`` ``x_min, y_min, x_max, y_max`` (``x`` the column; maxima exclusive, pixel ``i`` spans
            ``[i, i + 1)``).
        height, width: the image size in pixels.

    Returns:
        ``(corners (N, 4) int64 c0, r0, c1, r1, visible (N,) bool)``.

    Example:
        >>> corners, visible = box_pixels(np.array([[2.0, 1.0, 6.0, 4.0], [-5.0, 0.0, -1.0, 3.0]]), 10, 10)
        >>> corners.tolist(), visible.tolist()
        ([[2, 1, 5, 3], [0, 0, 0, 2]], [True, False])
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lo = np.floor(b[:, :2])
    hi = np.maximum(np.ceil(b[:, 2:]) - 1, lo)  # a box thinner than a pixel still covers the pixel it starts in
    limit = np.array([width - 1, height - 1], np.float64)
    visible = (hi >= 0).all(axis=1) & (lo <= limit).all(axis=1) & np.isfinite(b).all(axis=1)
    lo = np.clip(np.nan_to_num(lo), 0, limit)
    hi = np.clip(np.nan_to_num(hi), 0, limit)
    return np.concatenate([lo, hi], axis=1).astype(np.int64), visible


def _grey(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    from medkd.viz.window import AUTO, apply_window, window_limits

    lo, hi = window if window is not None else window_limits(image, AUTO)
    return apply_window(image, lo, hi)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    names: Names,
    *,
    min_score: float = 0.0,
    colours: Mapping[int, Sequence[int]] | None = None,
    window: tuple[float, float] | None = None,
    scale: int = 1,
    thickness: int | None = None,
    show_text: bool = True,
) -> np.ndarray:
    """An RGB picture of ``image`` with the boxes scoring at least ``min_score`` outlined and tagged.

    Args:
        image: ``(H, W)`` intensities, any range (windowed to the 1st..99th percentiles unless ``window`` is given).
        boxes: ``(N, 4)`` ``x_min, y_min, x_max, y_max`` in pixels of ``image`` (``x`` the column).
        scores: ``(N,)`` scores in ``[0, 1]``.
        labels: ``(N,)`` label values (1..K).
        names: label value -> name, or the predictor's :class:`~medkd.io.labels.LabelInfo` list (names and
            colours); a value without a name is tagged with its number.
        min_score: boxes scoring below it are not drawn.
        colours: label value -> RGB, overriding the labels' colours.
        window: ``(lo, hi)`` intensity window; default the image's 1st..99th percentiles.
        scale: pixels enlarged this many times (nearest) before drawing, so that tags stay legible on small images.
        thickness: outline width in output pixels; default from the picture's size.
        show_text: draw the ``name 0.87`` tags.

    Returns:
        ``(H * scale, W * scale, 3)`` ``uint8`` RGB.

    Raises:
        ValueError: ``image`` is not 2D, ``boxes`` not ``(N, 4)``, scores or labels not ``(N,)``, or ``scale < 1``.
    """
    import cv2

    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a 2D image (y, x), got shape {array.shape}")
    b = np.asarray(boxes, np.float64)
    b = b.reshape(0, 4) if b.size == 0 else b
    s = np.asarray(scores, np.float64).reshape(-1)
    lab = np.asarray(labels, np.int64).reshape(-1)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) x_min, y_min, x_max, y_max, got shape {b.shape}")
    if s.shape != (len(b),) or lab.shape != (len(b),):
        raise ValueError(f"scores and labels must be ({len(b)},) like the boxes, got {s.shape} and {lab.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    grey = _grey(array, window)
    if scale > 1:
        grey = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)
    rgb = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    height, width = rgb.shape[:2]

    keep = np.flatnonzero(s >= min_score)
    keep = keep[np.argsort(s[keep], kind="stable")]  # best last: drawn on top
    corners, visible = box_pixels(b[keep] * scale, height, width)
    keep, corners = keep[visible], corners[visible]
    if not len(keep):
        return rgb
    known, label_rgb = _names_and_colours(names)
    if colours:
        label_rgb.update({int(k): tuple(int(c) for c in v[:3]) for k, v in colours.items()})  # type: ignore[misc]
    fallback = label_colours(lab[keep])
    line = thickness or max(1, min(height, width) // 200)
    font_scale = max(0.3, min(height, width) / 800)
    font, text_line = cv2.FONT_HERSHEY_SIMPLEX, max(1, line // 2)
    for i, (c0, r0, c1, r1), default in zip(keep, corners, fallback):
        value = int(lab[i])
        colour = tuple(int(c) for c in label_rgb.get(value, default))
        cv2.rectangle(rgb, (int(c0), int(r0)), (int(c1), int(r1)), colour, line, lineType=cv2.LINE_8)
        if not show_text:
            continue
        text = f"{known.get(value, str(value))} {s[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, font_scale, text_line)
        tag_h = th + base + 2
        top = int(r0 - tag_h - 1 if r0 - tag_h - 1 >= 0 else max(0, min(r1 + 1, height - tag_h - 1)))
        left = int(np.clip(c0, 0, max(0, width - tw - 3)))  # above the box (below it at the top edge)
        cv2.rectangle(rgb, (left, top), (left + tw + 2, top + tag_h), colour, cv2.FILLED)
        ink = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        cv2.putText(rgb, text, (left + 1, top + th + 1), font, font_scale, ink, text_line, cv2.LINE_AA)
    return rgb


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an ``(H, W, 3)`` (or grey ``(H, W)``) ``uint8`` picture as a PNG, atomically; returns the path.

    Example:
        >>> import tempfile
        >>> out = save_png(Path(tempfile.mkdtemp()) / "boxes.png", np.zeros((4, 6, 3), np.uint8))
        >>> out.read_bytes()[:4]
        b'\\x89PNG'
    """
    from medkd.io.atomic import atomic_path
    from medkd.viz.views import to_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_png(np.asarray(rgb, np.uint8))
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return path
