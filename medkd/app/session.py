# SPDX-License-Identifier: Apache-2.0
"""Per-session state of the app: a private temporary folder and the session's caches.

Uploaded files are written only under the session's folder, a :class:`tempfile.TemporaryDirectory` kept in
``st.session_state``: when Streamlit drops an ended session's state, the object is collected and its folder
removed (``weakref.finalize``, also at interpreter exit). Decoded inputs and model outputs are cached in the
session (they are the user's data); loaded models are shared by all sessions (``st.cache_resource``), read-only.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

__all__ = ["session_dir", "session_cache", "digest", "cached_predictor"]


def session_dir() -> Path:
    """This session's private temporary folder (created on first use, removed with the session)."""
    state = st.session_state
    if "medkd_tmp" not in state:
        state["medkd_tmp"] = tempfile.TemporaryDirectory(prefix="medkd-app-")
    return Path(state["medkd_tmp"].name)


def session_cache(name: str) -> dict[Any, Any]:
    """A dict cache that lives as long as the session (decoded inputs, masks)."""
    state = st.session_state
    key = f"medkd_cache_{name}"
    if key not in state:
        state[key] = {}
    return state[key]


def digest(files: Sequence[tuple[str, bytes]]) -> str:
    """Content key of an upload (names and bytes), so re-runs of the script find the decoded volume."""
    h = hashlib.sha256()
    for name, data in files:
        h.update(name.encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_predictor(folder: str, device: str = "auto") -> Any:
    """The model in ``folder`` (bundle or run), loaded once per process and shared, never mutated."""
    from medkd.engine.predictor import load_predictor

    return load_predictor(folder, device)
