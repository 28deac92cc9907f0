# SPDX-License-Identifier: Apache-2.0
"""The detection view: the chosen models' boxes on a 2D image, a score threshold, a table and the files to take away.

Registered as the ``detection`` kind's built-in view (:mod:`medkd.app.views`); it takes a 2D image (PNG/JPEG, one
DICOM image such as a mammogram) or a volume, shown one slice at a time (a slice slider; each slice is detected
when shown). Sidebar: the score threshold (default the model's ``report_threshold``, else 0.5; moving it hides
boxes, it does not run the model again) and, for a volume, the slice. Main page: one picture per model with the
boxes in their label's colour and ``name score`` tags (:func:`medkd.viz.boxes.draw_boxes`), the detections as a
table, and downloads: CSV, the picture as PNG, and a DICOM Comprehensive SR (TID 1500, 2D regions referencing the
image) when the input came from DICOM. Every message is scrubbed of the input's patient values
(``ctx.safe_message``); the research-use disclaimer is on the page and in every file.

Example:
    >>> import numpy as np
    >>> out = {"boxes": np.array([[2.0, 1.0, 6.0, 4.0], [0, 0, 3, 3]]), "scores": np.array([0.9, 0.2]),
    ...        "labels": np.array([1, 2])}
    >>> rows = detection_rows(out, model="gt", names={1: "mass", 2: "spiculated"}, threshold=0.5)
    >>> [(r["label"], r["score"], r["x_min"], r["y_max"]) for r in rows]
    [('mass', 0.9, 2.0, 4.0)]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["COLUMNS", "default_threshold", "detection_csv", "detection_rows", "render"]

logger = logging.getLogger("medkd.app")

#: the detections table's columns, in order (boxes in pixels, x the column, maxima exclusive)
COLUMNS = ("model", "slice", "label", "score", "x_min", "y_min", "x_max", "y_max")
_DEFAULT_THRESHOLD = 0.5


def detection_rows(output: Mapping[str, Any], *, model: str, names: Mapping[int, str], threshold: float,
                   slice_index: int = 1) -> list[dict[str, Any]]:
    """Table rows of one model's 2D detections scoring at least ``threshold``, best first (``slice`` 1-based;
    ``value`` is the label value, for colours, not shown)."""
    boxes = np.asarray(output["boxes"], np.float64).reshape(-1, 4)
    scores = np.asarray(output["scores"], np.float64).reshape(-1)
    labels = np.asarray(output["labels"], np.int64).reshape(-1)
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    return [{"model": model, "slice": int(slice_index), "label": names.get(int(labels[i]), str(int(labels[i]))),
             "score": round(float(scores[i]), 3),
             **{k: round(float(v), 1) for k, v in zip(COLUMNS[4:], boxes[i])}, "value": int(labels[i])}
            for i in keep]


def detection_csv(rows: Sequence[Mapping[str, Any]], disclaimer: str) -> bytes:
    """The rows as CSV bytes, the disclaimer as a first ``#`` line."""
    text = io.StringIO()
    text.write(f"# {disclaimer}\n")
    writer = csv.DictWriter(text, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def default_threshold(predictors: Sequence[Any]) -> float:
    """The first model's ``metadata["report_threshold"]`` (clipped to [0, 1]), else 0.5."""
    for predictor in predictors:
        value = (getattr(predictor, "metadata", None) or {}).get("report_threshold")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            return float(np.clip(value, 0.0, 1.0))
    return _DEFAULT_THRESHOLD


def _slice_context(ctx: Any, index: int) -> Any:
    """``ctx`` whose run cache is keyed by the slice too (each slice of a volume is detected on its own)."""
    if ctx.data.array.shape[0] == 1 or not dataclasses.is_dataclass(ctx):
        return ctx
    return dataclasses.replace(ctx, key=f"{ctx.key}#slice{index}")


def _names(predictor: Any) -> dict[int, str]:
    return {int(label.value): str(label.name) for label in predictor.labels}


def _sr_bytes(ctx: Any, result: Any, index: int, rows: Sequence[Mapping[str, Any]], threshold: float) -> bytes:
    from medkd.io.dicom_sr2d import Detection2D, write_detection_sr_2d

    dataset = ctx.data.dicom.datasets[index]
    found = [Detection2D(label=str(r["label"]), score=float(r["score"]),
                         box=tuple(float(r[k]) for k in ("x_min", "y_min", "x_max", "y_max")))
             for r in rows if r["model"] == result.name]
    p = result.predictor
    path = ctx.workdir / "downloads" / f"{_stem(result.name)}_sr.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_detection_sr_2d(dataset, found, path, model_name=p.name, model_version=p.version,
                          uid_entropy=[str(dataset.get("SOPInstanceUID", "")), p.name, p.version, p.weights_sha256,
                                       f"{threshold:.3f}"])
    return path.read_bytes()


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "model"


def _sr_download(ctx: Any, result: Any, index: int, rows: Sequence[Mapping[str, Any]], threshold: float
                 ) -> bytes | str:
    """The SR's bytes, or (cached too, so a rerun does not retry) why it cannot be written, without patient values."""
    files = ctx.cache("detection_downloads")
    key = ("sr", result.name, result.predictor.weights_sha256, ctx.key, index, round(threshold, 3))
    if key not in files:
        try:
            files[key] = _sr_bytes(ctx, result, index, rows, threshold)
        except Exception as err:  # noqa: BLE001 - any writer failure: a message, never a traceback or a value
            files[key] = ctx.safe_message(err)
            logger.warning("DICOM SR with %s not written: %s", result.name, files[key])
    return files[key]


def render(ctx: Any) -> None:
    """Draw the detection page for ``ctx`` (a :class:`medkd.app.views.ViewContext` of ``detection`` models)."""
    import pandas as pd
    import streamlit as st

    from medkd.viz.boxes import draw_boxes
    from medkd.viz.views import side_by_side, to_png
    from medkd.viz.window import AUTO, window_limits

    data = ctx.data
    n_slices = int(data.array.shape[0])
    st.sidebar.header("3 · Display")
    threshold = st.sidebar.slider(
        "Score threshold", 0.0, 1.0, default_threshold([p for _, p in ctx.models]), 0.01, key="det_threshold",
        help="Boxes scoring below this are hidden (the models are not run again).",
    )
    index = 0
    if n_slices > 1:
        index = st.sidebar.slider("Slice", 1, n_slices, n_slices // 2 + 1, key="det_slice") - 1
    image = data.array[index]
    results = _slice_context(ctx, index).run(verb="Detecting", call=lambda predictor, _: predictor(image))

    windows = ctx.cache("detection_windows")
    if (ctx.key, index) not in windows:
        windows[(ctx.key, index)] = window_limits(image, AUTO)
    window = windows[(ctx.key, index)]
    scale = int(np.clip(512 // max(image.shape), 1, 8))
    rows: list[dict[str, Any]] = []
    pictures = []
    st.subheader("Detections")
    for column, result in zip(st.columns(len(results)), results):
        out = result.output
        mine = detection_rows(out, model=result.name, names=_names(result.predictor), threshold=threshold,
                              slice_index=index + 1)
        rows += mine
        picture = draw_boxes(image, out["boxes"], out["scores"], out["labels"], result.predictor.labels,
                             min_score=threshold, window=window, scale=scale)
        pictures.append(picture)
        where = f" · slice {index + 1}/{n_slices}" if n_slices > 1 else ""
        with column:
            st.image(picture, caption=f"{result.name}{where} · {len(mine)} box(es) · {result.seconds:.2f} s",
                     width="stretch")
    st.dataframe(pd.DataFrame([{k: row[k] for k in COLUMNS} for row in rows], columns=list(COLUMNS)),
                 hide_index=True)
    st.caption(f"{len(rows)} detection(s) with a score of at least {threshold:.2f}. {ctx.disclaimer}")

    st.subheader("Downloads")
    st.caption(ctx.disclaimer)
    chosen = results[0]
    if len(results) > 1:
        name = st.radio("Detections of", [r.name for r in results], horizontal=True, key="det_download_model")
        chosen = next(r for r in results if r.name == name)
    picture = pictures[results.index(chosen)]
    cols = st.columns(3)
    cols[0].download_button("Detections (CSV)", detection_csv(rows, ctx.disclaimer), file_name="detections.csv",
                            mime="text/csv", key="det_csv")
    png = side_by_side([picture], [f"{chosen.name} · {ctx.disclaimer}"])
    cols[1].download_button("Boxes (PNG)", to_png(png), file_name=f"{_stem(chosen.name)}_boxes.png",
                            mime="image/png", key="det_png")
    if getattr(data, "dicom", None) is None:
        cols[2].caption("DICOM SR: needs a DICOM input (this one is not); the CSV holds the same detections.")
        return
    sr = _sr_download(ctx, chosen, index, rows, threshold)
    if isinstance(sr, bytes):
        cols[2].download_button("Detections (DICOM SR)", sr, file_name=f"{_stem(chosen.name)}_sr.dcm",
                                mime="application/dicom", key="det_sr")
    else:
        cols[2].error(f"DICOM SR: cannot be written for this image ({sr}). The CSV holds the same detections.")
