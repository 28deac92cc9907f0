# SPDX-License-Identifier: Apache-2.0
"""The segmentation view: the chosen bundles' masks over the input, volumes per label, and the files to take away.

Registered as the ``segmentation`` kind's view (:mod:`medkd.app.views`); it takes 2D images and volumes. The input,
model and run widgets are shared (:mod:`medkd.app.study_input`, :mod:`medkd.app.model_choice`,
:mod:`medkd.app.run_models`); every Streamlit rerun (a slider moved) redraws from the session's caches. Drawing and
measuring: :mod:`medkd.viz`.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
import streamlit as st

from medkd.app import DISCLAIMER
from medkd.app.run_models import Result, safe_message
from medkd.app.session import session_cache, session_dir

__all__ = ["Result", "render"]

logger = logging.getLogger("medkd.app")


def render(ctx: Any) -> None:
    """Draw the view for ``ctx`` (a :class:`medkd.app.views.ViewContext`): viewer, tables, downloads."""
    image, image_key = ctx.data, ctx.key
    results = ctx.run(verb="Segmenting")
    _viewer(image, image_key, results)
    _tables_and_downloads(image, image_key, results)


# --------------------------------------------------------------------------------------------- viewer


def _panels(image: Any, results: list[Result], orientation: str, index: int, lo: float, hi: float,
            opacity: float, show_truth: bool) -> tuple[list[np.ndarray], list[str]]:
    from medkd.viz.views import extract_slice, pixel_aspect, render_view

    aspect = pixel_aspect(image.spacing, orientation)
    grey = extract_slice(image.array, orientation, index)
    panels, titles = [], []
    layers = [(r.name, r.mask, r.predictor.labels) for r in results]
    truth = getattr(image, "ground_truth", None)
    if show_truth and truth is not None:
        layers.append(("ground truth", truth, results[0].predictor.labels))
    for title, mask, labels in layers:
        panels.append(render_view(grey, extract_slice(mask, orientation, index), labels, lo=lo, hi=hi,
                                  opacity=opacity, aspect=aspect))
        titles.append(title)
    return panels, titles


def _viewer(image: Any, image_key: str, results: list[Result]) -> None:
    from medkd.viz.views import ORIENTATIONS, default_index, legend_entries, side_by_side, slice_count
    from medkd.viz.window import WINDOW_PRESETS, default_preset, window_limits

    st.sidebar.header("3 · Display")
    presets = list(WINDOW_PRESETS)
    preset = st.sidebar.selectbox("Window / level", presets, index=presets.index(default_preset(image.modality)),
                                  key="window")
    opacity = st.sidebar.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
    truth = getattr(image, "ground_truth", None)
    show_truth = truth is not None and st.sidebar.checkbox(
        "Show the example's ground truth", value=st.query_params.get("truth") == "1", key="truth"
    )
    windows = session_cache("windows")  # percentiles of a large volume: once per input and preset
    if (image_key, preset) not in windows:
        windows[(image_key, preset)] = window_limits(image.array, preset)
    lo, hi = windows[(image_key, preset)]
    n_panels = len(results) + int(bool(show_truth))
    orientations = ORIENTATIONS if image.array.shape[0] > 1 else ORIENTATIONS[:1]
    # one orientation per column for a single mask; full-width rows when panels are compared side by side
    cols = st.columns(len(orientations)) if n_panels == 1 else [st.container() for _ in orientations]
    st.session_state["medkd_current_view"] = {}
    for col, orientation in zip(cols, orientations):
        n = slice_count(image.array.shape, orientation)
        start = default_index(results[0].mask, orientation)
        index = col.slider(f"{orientation} slice", 0, n - 1, start, key=f"slice_{orientation}") if n > 1 else 0
        panels, titles = _panels(image, results, orientation, index, lo, hi, opacity, show_truth)
        picture = side_by_side(panels, titles) if len(panels) > 1 else panels[0]
        st.session_state["medkd_current_view"][orientation] = picture
        col.image(picture, caption=f"{orientation} {index + 1}/{n}", width="stretch")
    views = st.session_state["medkd_current_view"]
    if len(views) > 1:  # the PNG download: the three orientations as shown, side by side
        views["all"] = side_by_side([views[o] for o in orientations], [f"{o} · {DISCLAIMER}" if o == orientations[0]
                                                                         else o for o in orientations])
    legend = legend_entries(results[0].predictor.labels, results[0].mask)
    st.markdown(" &nbsp; ".join(
        f"<span style='color:{e['colour']};font-size:1.3em'>■</span> {e['name']}" for e in legend
    ), unsafe_allow_html=True)


# --------------------------------------------------------------------------------------------- tables, downloads


def _file_bytes(cache_key: tuple, make: Any) -> bytes:
    files = session_cache("downloads")
    if cache_key not in files:
        files[cache_key] = make()
    return files[cache_key]


def _nifti_bytes(image: Any, result: Result) -> bytes:
    from medkd.io.volume_io import write_mask_like

    path = write_mask_like(result.mask, image.reference, session_dir() / "downloads" / f"{result.name}_mask.nii.gz")
    return path.read_bytes()


def _seg_download(image: Any, image_key: str, result: Result) -> bytes | str:
    """The DICOM SEG of ``result``, or (cached too, so a rerun does not retry) why it cannot be written."""
    files = session_cache("downloads")
    key = ("seg", result.name, image_key)
    if key not in files:
        try:
            files[key] = _seg_bytes(image, result)
        except Exception as err:  # noqa: BLE001 - any writer failure: a message, never a traceback or a value
            files[key] = safe_message(err, image)
            logger.warning("DICOM SEG with %s not written: %s", result.name, files[key])
    return files[key]


def _seg_bytes(image: Any, result: Result) -> bytes:
    from medkd.io.dicom_seg import write_seg

    p = result.predictor
    path = write_seg(image.dicom.datasets, result.mask, p.labels, session_dir() / "downloads" / f"{result.name}.dcm",
                     model_name=p.name, model_version=p.version,
                     uid_entropy=[image.dicom.series_uid, p.name, p.version, p.weights_sha256, "binary"])
    return path.read_bytes()


def _tables_and_downloads(image: Any, image_key: str, results: list[Result]) -> None:
    from medkd.viz.measure import label_volumes, volumes_csv
    from medkd.viz.views import to_png

    st.subheader("Volumes per label")
    rows = []
    for result in results:
        for row in label_volumes(result.mask, result.predictor.labels, image.spacing):
            rows.append({"model": result.name, **row})
    st.dataframe(rows, hide_index=True)
    metrics = st.columns(max(1, len(results)))
    for col, result in zip(metrics, results):
        col.metric(f"{result.name}: inference", f"{result.seconds:.2f} s",
                   help=f"{image.array.shape[0]} slices on this machine; cached until the input or model changes")

    st.subheader("Downloads")
    st.caption(DISCLAIMER)
    chosen = results[0]
    if len(results) > 1:
        chosen = next(r for r in results if r.name == st.radio("Mask of", [r.name for r in results],
                                                               horizontal=True, key="download_model"))
    cols = st.columns(4)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in chosen.name)
    cols[0].download_button("Mask (NIfTI)", _file_bytes(("nii", chosen.name, image_key),
                                                        lambda: _nifti_bytes(image, chosen)),
                            file_name=f"{stem}_mask.nii.gz", mime="application/gzip", key="dl_nifti")
    seg = _seg_download(image, image_key, chosen) if image.dicom is not None else None
    if isinstance(seg, bytes):
        cols[1].download_button("Mask (DICOM SEG)", seg, file_name=f"{stem}_seg.dcm", mime="application/dicom",
                                key="dl_seg")
    elif seg is not None:
        cols[1].error(f"DICOM SEG: cannot be written for this series ({seg}). The NIfTI mask has the same labels.")
    else:
        cols[1].caption("DICOM SEG: only for DICOM inputs")
    cols[2].download_button("Volumes (CSV)", volumes_csv(rows, disclaimer=DISCLAIMER), file_name="volumes.csv",
                            mime="text/csv", key="dl_csv")
    views = st.session_state.get("medkd_current_view", {})
    view = views.get("all", views.get("axial"))
    if view is not None:
        cols[3].download_button("Current view (PNG)", io.BytesIO(to_png(view)), file_name="medkd_view.png",
                                mime="image/png", key="dl_png")
