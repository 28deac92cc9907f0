# SPDX-License-Identifier: Apache-2.0
"""Per-session state of the app: a private temporary folder and the session's caches.

Bundles are loaded without running code from their configs (``$`` expressions, ``_target_`` outside medkd's
allowlist) unless the app was started with ``medkd app --trust-bundle``, which sets ``MEDKD_TRUST_BUNDLES=1`` for
the Streamlit process (:func:`trust_bundles`; set it yourself for ``streamlit run streamlit_app/app.py``).

Uploaded files are written only under the session's folder, a :class:`tempfile.TemporaryDirectory` kept in
``st.session_state``: when Streamlit drops an ended session's state, the object is collected and its folder
removed (``weakref.finalize``, also at interpreter exit). Decoded inputs and model outputs are cached in the
session (they are the user's data); loaded models are shared by all sessions (``st.cache_resource``), read-only.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

__all__ = ["TRUST_ENV", "cached_predictor", "digest", "session_cache", "session_dir", "trust_bundles"]

#: ``1`` (or ``true``/``yes``) lets the app run code in bundle configs; ``medkd app --trust-bundle`` sets it
TRUST_ENV = "MEDKD_TRUST_BUNDLES"


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


def trust_bundles() -> bool:
    """Whether this app process may run code in bundle configs (``$MEDKD_TRUST_BUNDLES``, read on every call)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes"}


@st.cache_resource(show_spinner=False, max_entries=8)
def cached_predictor(folder: str, device: str = "auto", trust: bool = False) -> Any:
    """The model in ``folder`` (bundle or run), loaded once per process and shared, never mutated.

    ``trust`` is part of the cache key: a bundle refused without it is checked again, not served from the cache.

    Raises:
        UntrustedBundleError: the bundle's configs hold code outside medkd's allowlist and ``trust`` is false.
        MedkdError: any other reason the folder is not a model (not cached: the next call tries again).
    """
    from medkd.engine.predictor import load_predictor

    return load_predictor(folder, device, trust=trust)
