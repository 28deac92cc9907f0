# SPDX-License-Identifier: Apache-2.0
"""The app's input widget (sidebar "1 · Study"): a bundled synthetic example or an upload, decoded once per session.

Uploads are decoded by :func:`medkd.io.upload.load_upload` (a DICOM series, a NIfTI volume, a PNG/JPEG image or a
video) under the session's private folder; the result says its input kind (``image2d``, ``volume``, ``video``),
which the chosen model's view checks. Errors are shown with the file's name as uploaded, never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from medkd.app.session import digest, session_cache, session_dir
from medkd.errors import MedkdError

__all__ = ["UPLOAD_HELP", "choose_input"]

logger = logging.getLogger("medkd.app")

UPLOAD_HELP = (
    "A DICOM series (several files, or one zip), a NIfTI volume (.nii / .nii.gz), a PNG/JPEG image or a video "
    "(MP4/AVI). Files stay in this session's temporary folder and are deleted when the session ends."
)


def choose_input() -> tuple[Any, str]:
    """Draw the input choice; returns the decoded input and its content key (stops the page until there is one)."""
    from medkd.data.examples import example_names, load_example
    from medkd.io.upload import load_upload

    demo = st.query_params.get("demo") == "1"
    st.sidebar.header("1 · Study")
    source = st.sidebar.radio("Input", ["Example", "Upload"], index=0, key="source", horizontal=True,
                              disabled=demo)  # fmt: skip
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
    data = decoded[key]
    with st.sidebar.expander("Image information", expanded=False):
        st.table({k: [v] for k, v in data.info().items()})
    return data, key
