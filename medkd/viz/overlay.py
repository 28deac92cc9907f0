# SPDX-License-Identifier: Apache-2.0
"""Segmentation overlays as RGB arrays and PNG figures (demo, reports, BCP snapshots, the Streamlit app).

:func:`overlay_rgb` draws one label map over a greyscale image with :func:`medkd.viz.views.render_view` (as the app
does), at the image's own size; :func:`save_overlay_png` puts several such panels side by side with a colour legend.

Example:
    >>> img = np.linspace(0, 1, 64 * 64).reshape(64, 64); mask = np.zeros((64, 64), np.uint8); mask[10:20, 10:20] = 1
    >>> overlay_rgb(img, mask).shape
    (64, 64, 3)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medkd.io.labels import LABEL_COLOURS
from medkd.viz.views import render_view

__all__ = ["overlay_rgb", "save_overlay_png"]


def overlay_rgb(
    image: np.ndarray, mask: np.ndarray | None, *, opacity: float = 0.45, window: tuple[float, float] | None = None
) -> np.ndarray:
    """Blend a label map over a greyscale 2D image, at its own size, in the default label colours.

    Args:
        image: ``(H, W)`` intensities; scaled by ``window`` (low, high) or by its 0.5-99.5 percentiles.
        mask: ``(H, W)`` integer labels (0 = background, left transparent) or None.
        opacity: weight of the label colour where a label is present.
        window: display window ``(low, high)``; default the image's 0.5 and 99.5 percentiles.

    Returns:
        ``(H, W, 3)`` uint8 RGB (drawn by :func:`medkd.viz.views.render_view`, as in the app).

    Raises:
        ValueError: a mask whose shape is not the image's.
    """
    image = np.asarray(image, dtype=np.float32)
    if mask is not None and np.shape(mask) != image.shape:
        raise ValueError(f"mask shape {np.shape(mask)} does not match image shape {image.shape}")
    lo, hi = window if window is not None else (float(np.percentile(image, 0.5)), float(np.percentile(image, 99.5)))
    return render_view(image, mask, (), lo=lo, hi=hi if hi > lo else lo + 1.0, opacity=opacity, scale=1)


def save_overlay_png(
    image: np.ndarray,
    masks: Mapping[str, np.ndarray | None],
    path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Save panels ``image + mask`` side by side (e.g. ground truth, BCP, supervised) with a colour legend.

    Args:
        image: ``(H, W)`` intensities, shared by every panel.
        masks: panel title -> ``(H, W)`` integer labels (or None for the bare image), in panel order.
        path: the PNG to write (its folder is created).
        class_names: names by label value (``("background", "RV", ...)``); a legend of values 1.. when given.
        title: the figure's title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = len(masks)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (name, mask) in zip(axes[0], masks.items()):
        ax.imshow(overlay_rgb(image, mask))
        ax.set_title(name)
        ax.axis("off")
    if class_names:
        handles = [Patch(color=LABEL_COLOURS[i] / 255.0, label=c) for i, c in enumerate(class_names) if i > 0]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 if class_names else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
