# SPDX-License-Identifier: Apache-2.0
"""The segmentation view: load a study, run one or two bundles, look at the masks, take the results away.

Every Streamlit rerun (a slider moved) redraws from the session's caches: decoding and inference run once per
input and model. Decoding: :mod:`medkd.io.upload`; drawing and measuring: :mod:`medkd.viz`.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medkd.app import DISCLAIMER
from medkd.app.session import cached_predictor, digest, session_cache, session_dir, trust_bundles
from medkd.errors import MedkdError, UntrustedBundleError

__all__ = ["Result", "render"]

logger = logging.getLogger("medkd.app")

UPLOAD_HELP = (
    "A DICOM series (several files, or one zip), a NIfTI volume (.nii / .nii.gz) or a PNG/JPEG image. "
    "Files stay in this session's temporary folder and are deleted when the session ends."
)


@dataclass
class Result:
    """One model's output on the current input."""

    name: str
    predictor: Any
    mask: np.ndarray
    seconds: float


def render() -> None:
    """Draw the whole view (sidebar inputs, viewer, tables, downloads)."""
    image, image_key = _input()
    predictors = _models()
    results = _run(image, image_key, predictors)
    _viewer(image, image_key, results)
    _tables_and_downloads(image, image_key, results)


# --------------------------------------------------------------------------------------------- input


def _input() -> tuple[Any, str]:
    from medkd.io.examples import example_names, load_example
    from medkd.io.upload import load_upload

    demo = st.query_params.get("demo") == "1"
    st.sidebar.header("1 · Study")
    source = st.sidebar.radio("Input", ["Example", "Upload"], index=0, key="source", horizontal=True,
                              disabled=demo)
    decoded = session_cache("inputs")
    if source == "Example" or demo:
        name = st.sidebar.selectbox("Bundled synthetic example", example_names(), key="example")
        key = f"example:{name}"
        if key not in decoded:
            decoded[key] = load_example(name, session_dir() / "examples")
    else:
        files = st.sidebar.file_uploader("Upload", accept_multiple_files=True, key="upload", help=UPLOAD_HELP)
        if not files:
            st.info("Upload a study in the sidebar, or choose **Example** to try a bundled synthetic one.")
            st.stop()
        pairs = [(f.name, f.getvalue()) for f in files]
        key = digest(pairs)
        if key not in decoded:
            try:
                with st.spinner("Reading the upload…"):
                    decoded[key] = load_upload(pairs, session_dir() / key[:16])
            except MedkdError as err:  # names the file as uploaded; no patient value, no server path
                st.error(f"Cannot read the upload. {err}")
                st.stop()
            except Exception as err:  # never a traceback on the page; the log keeps it
                logger.exception("reading an upload failed")
                st.error(f"Cannot read the upload: an internal error ({type(err).__name__}); the server log has it.")
                st.stop()
    image = decoded[key]
    with st.sidebar.expander("Image information", expanded=False):
        st.table({k: [v] for k, v in image.info().items()})
    return image, key


# --------------------------------------------------------------------------------------------- models


def _available_bundles() -> dict[str, str]:
    from medkd.bundle.zoo import load_zoo

    try:
        return {e.name: str(e.folder) for e in load_zoo() if e.present}
    except MedkdError as err:
        st.sidebar.warning(f"models/zoo.yaml: {err}")
        return {}


def _models() -> list[tuple[str, Any]]:
    st.sidebar.header("2 · Model")
    options = _available_bundles()
    custom = st.sidebar.text_input("Other bundle folder", key="bundle_dir",
                                   help="A folder written by `medkd bundle export` (or a medkd run folder).")
    if custom.strip():
        options[Path(custom.strip()).name or custom.strip()] = custom.strip()
    if not options:
        st.warning("No model found. Run `make demo` (it exports `models/demo_acdc_bcp`), export one with "
                   "`medkd bundle export --run RUN -o models/NAME`, or enter a bundle folder in the sidebar.")
        st.stop()
    names = list(options)
    wanted = [n for n in st.query_params.get("models", "").split(",") if n in options][:2]  # ?models=a,b links
    default = wanted or [custom.strip() and Path(custom.strip()).name or names[0]]
    chosen = st.sidebar.multiselect("Bundles (choose two to compare)", names, default=default, max_selections=2,
                                    key="models")
    if not chosen:
        st.info("Choose a bundle in the sidebar.")
        st.stop()
    trust = trust_bundles()
    if trust:
        st.sidebar.caption("Bundles are trusted (`--trust-bundle`): code in their configs runs.")
    loaded = []
    for name in chosen:
        predictor = _load_model(name, options[name], trust)
        if predictor is None:
            continue
        loaded.append((name, predictor))
        with st.sidebar.expander(f"About {name}", expanded=False):
            meta = predictor.metadata
            st.markdown(f"**Task.** {meta.get('task') or '—'}\n\n{meta.get('description') or ''}")
            st.markdown(f"**Intended use.** {meta.get('intended_use') or DISCLAIMER}")
            st.markdown("**Labels.** " + ", ".join(f"{l.value} {l.name}" for l in predictor.labels))
            st.caption(f"version {predictor.version} · weights {predictor.weights_sha256[:12]}… · {DISCLAIMER}")
    if not loaded:
        st.info("Choose another bundle in the sidebar.")
        st.stop()
    return loaded


def _load_model(name: str, folder: str, trust: bool) -> Any | None:
    """The loaded segmentation model, or ``None`` after showing why not (the other chosen models still run)."""
    try:
        predictor = cached_predictor(folder, "auto", trust)
    except UntrustedBundleError as err:
        logger.warning("bundle %s refused (untrusted code): %s", name, err.problem)
        st.error(f"The bundle '{name}' was not loaded: its configs hold code outside medkd's allowlist "
                 f"(`{err.key}` in {Path(err.path).name}), and none of it was run. Choose another bundle; if you "
                 "trust whoever made this one, restart the app with `medkd app --trust-bundle`.")
        return None
    except MedkdError as err:
        st.error(f"Cannot load the bundle '{name}'. {err}")
        return None
    if predictor.kind != "segmentation":
        st.error(f"'{name}' is a {predictor.kind} model; this view shows segmentation models.")
        return None
    return predictor


# --------------------------------------------------------------------------------------------- inference


def _run(image: Any, image_key: str, predictors: list[tuple[str, Any]]) -> list[Result]:
    masks = session_cache("masks")
    todo = [(n, p) for n, p in predictors if (n, p.weights_sha256, image_key) not in masks]
    if todo:
        bar = st.progress(0.0, text="Segmenting…")
        for i, (name, predictor) in enumerate(todo):
            bar.progress(i / len(todo), text=f"Segmenting with {name} ({i + 1}/{len(todo)})…")
            start = time.perf_counter()
            try:
                mask = predictor(image.array)
            except Exception as err:  # show the user a message, keep the traceback in the log
                logger.exception("inference failed with %s", name)
                st.error(f"The model '{name}' failed on this input: {_safe_message(err, image)}")
                st.stop()
            masks[(name, predictor.weights_sha256, image_key)] = (mask, time.perf_counter() - start)
        bar.empty()
    return [Result(n, p, *masks[(n, p.weights_sha256, image_key)]) for n, p in predictors]


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


def _safe_message(err: BaseException, image: Any) -> str:
    """``Type: message`` of ``err`` without the input's patient values or the session's server folder."""
    from medkd.io.phi import phi_values, redact, safe_error

    datasets = image.dicom.datasets if getattr(image, "dicom", None) is not None else []
    text = redact(str(err), phi_values(datasets)) if isinstance(err, MedkdError) else safe_error(err, datasets)
    return text.replace(str(session_dir()), "…")


def _seg_download(image: Any, image_key: str, result: Result) -> bytes | str:
    """The DICOM SEG of ``result``, or (cached too, so a rerun does not retry) why it cannot be written."""
    files = session_cache("downloads")
    key = ("seg", result.name, image_key)
    if key not in files:
        try:
            files[key] = _seg_bytes(image, result)
        except Exception as err:  # noqa: BLE001 - any writer failure: a message, never a traceback or a value
            files[key] = _safe_message(err, image)
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
