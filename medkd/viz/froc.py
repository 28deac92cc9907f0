# SPDX-License-Identifier: Apache-2.0
"""FROC curves as a PNG (matplotlib, Agg backend: no display needed), for ``medkd gt eval`` and the benchmark README.

Each curve is drawn against a logarithmic false-positives-per-image axis, as the :class:`~medkd.metrics.froc.FrocResult`
reads it (a staircase for the lesion-level curve, straight segments for the reference's image-level variant), with
a marker at each of its reporting points (FP/image 0.025 .. 4).

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from medkd.metrics.froc import lesion_froc
    >>> truths = [{"boxes": np.array([[10, 10, 20, 20]]), "labels": np.array([0])}]
    >>> dets = [{"boxes": np.array([[10, 10, 20, 20], [40, 40, 50, 50]]), "scores": np.array([0.9, 0.5]),
    ...          "labels": np.array([0, 0])}]
    >>> out = plot_froc({"GT clean": lesion_froc(dets, truths)}, pathlib.Path(tempfile.mkdtemp()) / "froc.png")
    >>> out.read_bytes()[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import numpy as np

from medkd.metrics.froc import FPI_POINTS, FrocResult

__all__ = ["plot_froc"]

logger = logging.getLogger(__name__)


def _drawn_curve(result: FrocResult, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve sampled densely on ``[lo, hi]`` (log spacing) plus its own points, read as the result reads it."""
    grid = np.geomspace(lo, hi, 400)
    inside = result.fpi[(result.fpi >= lo) & (result.fpi <= hi)]
    x = np.unique(np.concatenate([grid, inside]))
    return x, np.asarray(result.sensitivity_at(x), dtype=np.float64)


def _spaced(points: list[float], ratio: float = 1.3) -> list[float]:
    """Tick values at least ``ratio`` apart on the log axis (the first of a crowded run is kept)."""
    ticks: list[float] = []
    for p in points:
        if not ticks or p / ticks[-1] >= ratio:
            ticks.append(p)
    return ticks


def plot_froc(
    curves: Mapping[str, FrocResult],
    path: str | PathLike[str],
    *,
    title: str = "Lesion-level FROC",
    dpi: int = 110,
) -> Path:
    """Save FROC curves (one per method or arm) in one figure.

    Args:
        curves: legend label -> :class:`~medkd.metrics.froc.FrocResult`, drawn in this order.
        path: the PNG to write (its folder is created).
        title: the figure's title.
        dpi: resolution.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: no curves.
    """
    if not curves:
        raise ValueError("plot_froc needs at least one curve")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted({p for r in curves.values() for p in r.fpi_points} or {0.025, 4.0})
    lo, hi = min(points) / 1.5, max(points) * 1.5
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        for label, result in curves.items():
            x, y = _drawn_curve(result, lo, hi)
            (line,) = ax.plot(x, y, lw=1.6, label=f"{label} (R@0.3 {result.r_at_0_3:.3f}, CPM {result.cpm:.3f})")
            marks = np.asarray(result.fpi_points, dtype=np.float64)
            ax.plot(marks, result.sensitivity_at(marks), "o", ms=4, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(0.0, 1.02)
        ticks = _spaced(sorted({p for p in FPI_POINTS if lo <= p <= hi} or set(points)))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{p:g}" for p in ticks], rotation=45)
        ax.minorticks_off()
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("sensitivity")
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    logger.info("FROC plot written to %s", out)
    return out
