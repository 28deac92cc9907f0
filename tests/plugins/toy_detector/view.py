# SPDX-License-Identifier: Apache-2.0
"""The toy detector's app view: the input's slice with each model's boxes drawn, and a table of the detections.

Registered by the plugin (``register_view("detection", "toy_detector.view:render", name="toy_detection")`` in
:mod:`toy_detector`, and named by the ``toy`` method's ``app_view``), so a ``toy`` bundle or run chosen in
``medkd app`` draws this page instead of the segmentation view. It uses only the
:class:`~medkd.app.views.ViewContext` it is given (``ctx.run``, ``ctx.cache``, ``ctx.disclaimer``), nothing else
of ``medkd.app``, and works for any model of the ``detection`` kind:

- sidebar: a score threshold (detections below it are hidden, no new inference) and, for a volume, a slice;
- main page: one picture per model, the slice in grey (1st-99th percentile window) with the boxes crossing it drawn
  in their label's colour, the detections as a table (model, label, score, first and last slice, 1-based, and the
  box corners ``x_min, y_min, x_max, y_max`` in pixels, ``x`` the column, maxima exclusive), a CSV download, and
  the research-use disclaimer.

Example:
    >>> import numpy as np
    >>> out = {"boxes": np.array([[2, 1, 0, 6, 4, 2]], np.float32), "scores": np.array([0.9], np.float32),
    ...        "labels": np.array([1])}
    >>> rows = detection_rows(out, model="toy", names={1: "box"}, threshold=0.5)
    >>> [(r["label"], r["first slice"], r["last slice"], r["x_max"]) for r in rows]
    [('box', 1, 2, 6.0)]
    >>> detection_rows(out, model="toy", names={1: "box"}, threshold=0.95)
    []
    >>> picture = draw_detections(np.zeros((8, 10), np.float32), rows, lo=0.0, hi=1.0, scale=2)
    >>> picture.shape, picture.dtype, picture[2, 4].tolist(), picture[0, 0].tolist()  # a red outline on black
    ((16, 20, 3), dtype('uint8'), [230, 25, 75], [0, 0, 0])
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "detection_rows", "draw_detections", "render", "rows_on_slice"]

logger = logging.getLogger(__name__)

#: the detections table's columns, in order
COLUMNS = ("model", "label", "score", "first slice", "last slice", "x_min", "y_min", "x_max", "y_max")

#: RGB outline colour per label value (cycled)
_COLOURS = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def detection_rows(output: Mapping[str, Any], *, model: str, names: Mapping[int, str], threshold: float
                   ) -> list[dict[str, Any]]:
    """The table rows of one model's detection output (image boxes ``(N, 4)`` or volume boxes ``(N, 6)``) with a
    score at or above ``threshold``, best first; slices are 1-based and inclusive (an image is slice 1), corners
    rounded to 0.1 pixel; ``value`` is the label value (for the outline colour, not shown)."""
    boxes = np.asarray(output["boxes"], np.float64).reshape(len(output["scores"]), -1)
    rows = []
    for box, score, label in zip(boxes, np.asarray(output["scores"], float), np.asarray(output["labels"], int)):
        if score < threshold:
            continue
        if box.shape[0] == 6:
            x0, y0, z0, x1, y1, z1 = box.tolist()
        else:
            (x0, y0, x1, y1), z0, z1 = box.tolist(), 0, 1
        rows.append({"model": model, "label": names.get(int(label), str(int(label))), "score": round(float(score), 3),
                     "first slice": int(z0) + 1, "last slice": max(int(np.ceil(z1)), int(z0) + 1),
                     **{k: round(float(v), 1) for k, v in zip(COLUMNS[5:], (x0, y0, x1, y1))}, "value": int(label)})
    return sorted(rows, key=lambda row: -row["score"])


def rows_on_slice(rows: Sequence[Mapping[str, Any]], index: int) -> list[Mapping[str, Any]]:
    """The rows whose box crosses slice ``index`` (1-based)."""
    return [row for row in rows if row["first slice"] <= index <= row["last slice"]]


def draw_detections(grey: np.ndarray, rows: Sequence[Mapping[str, Any]], *, lo: float, hi: float, scale: int = 1,
                    thickness: int = 2) -> np.ndarray:
    """An RGB ``uint8`` picture ``(H * scale, W * scale, 3)`` of the slice ``grey`` ``(H, W)`` windowed to
    ``[lo, hi]``, each row's box outlined in its label's colour (pixels enlarged ``scale`` times, nearest)."""
    span = hi - lo if hi > lo else 1.0
    grey8 = (np.clip((np.asarray(grey, np.float64) - lo) / span, 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.repeat(np.repeat(grey8, scale, axis=0), scale, axis=1)[..., None].repeat(3, axis=2)
    height, width = rgb.shape[:2]
    for row in rows:
        colour = _COLOURS[(int(row.get("value", 1)) - 1) % len(_COLOURS)]
        c0, r0 = (int(np.floor(row[k] * scale)) for k in ("x_min", "y_min"))
        c1, r1 = (int(np.ceil(row[k] * scale)) for k in ("x_max", "y_max"))
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
        if c1 <= c0 or r1 <= r0:
            continue
        t = max(1, min(thickness, (c1 - c0) // 2, (r1 - r0) // 2))
        for rows_, cols in ((slice(r0, r0 + t), slice(c0, c1)), (slice(r1 - t, r1), slice(c0, c1)),
                            (slice(r0, r1), slice(c0, c0 + t)), (slice(r0, r1), slice(c1 - t, c1))):
            rgb[rows_, cols] = colour
    return rgb


def _call(predictor: Any, data: Any) -> Any:
    """Run a detection model on the input: a 2D image as ``(y, x)`` (its ``(N, 4)`` boxes), a volume as is."""
    array = data.array
    return predictor(array[0] if data.input_kind == "image2d" else array)


def _window(ctx: Any) -> tuple[float, float]:
    cache = ctx.cache("toy_detection_window")
    if ctx.key not in cache:
        lo, hi = np.percentile(ctx.data.array, [1, 99])
        cache[ctx.key] = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
    return cache[ctx.key]


def _csv(rows: Sequence[Mapping[str, Any]], disclaimer: str) -> bytes:
    text = io.StringIO()
    text.write(f"# {disclaimer}\n")
    writer = csv.DictWriter(text, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _default_threshold() -> float:
    from toy_detector.config import DecodeConfig

    return float(DecodeConfig().score_threshold)


def render(ctx: Any) -> None:
    """Draw the detection page for ``ctx`` (a :class:`medkd.app.views.ViewContext` of ``detection`` models)."""
    import pandas as pd
    import streamlit as st

    data = ctx.data
    results = ctx.run(verb="Detecting", call=_call)
    st.sidebar.header("3 · Display")
    threshold = st.sidebar.slider("Score threshold", 0.0, 1.0, _default_threshold(), 0.05, key="toy_det_threshold",
                                  help="Detections scoring below this are hidden (the models are not run again).")
    rows = []
    for result in results:
        names = {label.value: label.name for label in result.predictor.labels}
        rows += detection_rows(result.output, model=result.name, names=names, threshold=threshold)
    n_slices = int(data.array.shape[0])
    index = 1
    if n_slices > 1:
        busiest = max(range(1, n_slices + 1), key=lambda z: (len(rows_on_slice(rows, z)), -abs(z - n_slices // 2)))
        index = st.sidebar.slider("Slice", 1, n_slices, busiest, key="toy_det_slice")

    st.subheader("Detections")
    lo, hi = _window(ctx)
    scale = int(np.clip(256 // max(data.array.shape[1:]), 1, 8))
    columns = st.columns(len(results))
    for column, result in zip(columns, results):
        shown = [row for row in rows_on_slice(rows, index) if row["model"] == result.name]
        with column:
            st.image(draw_detections(data.array[index - 1], shown, lo=lo, hi=hi, scale=scale),
                     caption=f"{result.name} · slice {index}/{n_slices} · {len(shown)} box(es) · "
                             f"{result.seconds:.2f} s")
    st.dataframe(pd.DataFrame([{k: row[k] for k in COLUMNS} for row in rows], columns=list(COLUMNS)),
                 hide_index=True)
    st.caption(f"{len(rows)} detection(s) with a score of at least {threshold:.2f}. {ctx.disclaimer}")
    st.download_button("Detections (CSV)", _csv(rows, ctx.disclaimer), file_name="detections.csv", mime="text/csv",
                       key="toy_det_csv")
