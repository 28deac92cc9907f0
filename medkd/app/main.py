# SPDX-License-Identifier: Apache-2.0
"""Entry point of the Streamlit app: page set-up, the disclaimer, the input and model widgets, then the view of the
chosen model's kind (:func:`medkd.app.views.get_view`)."""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from medkd.app import DISCLAIMER
from medkd.app.model_choice import choose_models
from medkd.app.study_input import choose_input
from medkd.app.views import View, ViewContext, get_view, register_builtin_views

__all__ = ["input_mismatch", "main"]

logger = logging.getLogger("medkd.app")


def input_mismatch(view: View, data: Any, model: str) -> str:
    """What to tell the user when ``data`` is not an input ``view``'s models take (``""`` when it is).

    Example:
        >>> from types import SimpleNamespace
        >>> seg = View("segmentation", "segmentation", print, ("image2d", "volume"), "Segmentation")
        >>> input_mismatch(seg, SimpleNamespace(input_kind="video", name="clip.mp4"), "unet")[:52]
        "The upload 'clip.mp4' is a video, but 'unet' is a se"
    """
    from medkd.io.upload import INPUT_KINDS

    kind = getattr(data, "input_kind", "volume")
    if view.takes(kind):
        return ""
    takes = " or ".join(INPUT_KINDS.get(k, k) for k in view.inputs)
    hint = {
        "video": "upload a DICOM series, a NIfTI volume or a PNG/JPEG image",
        "image2d": "upload a volume (a DICOM series or a 3D NIfTI file)",
        "volume": "upload a single image",
    }.get(kind, "upload another input")
    return (f"The upload '{data.name}' is {INPUT_KINDS.get(kind, kind)}, but '{model}' is a {view.kind} model, "
            f"which takes {takes}. To use it, {hint}; or choose a model that takes {INPUT_KINDS.get(kind, kind)}.")


def main() -> None:
    """Draw the app (called on every rerun by ``streamlit_app/app.py``)."""
    st.set_page_config(page_title="medkd", page_icon=":material/biotech:", layout="wide")
    st.title("medkd viewer")
    st.caption(DISCLAIMER)
    register_builtin_views()
    data, key = choose_input()
    models = choose_models()
    name, first = models[0]
    try:
        view = get_view(first.kind, first.metadata.get("method"))
    except KeyError as err:
        st.error(f"'{name}' is a {first.kind} model, and this app has no view for {first.kind} models yet "
                 f"({err.args[0]}).")
        st.stop()
    problem = input_mismatch(view, data, name)
    if problem:
        st.error(problem)
        st.stop()
    view(ViewContext(data, key, models, view, DISCLAIMER))


if __name__ == "__main__":  # ``streamlit run`` executes this file as __main__ (what ``medkd app`` does)
    main()
