# SPDX-License-Identifier: Apache-2.0
"""The app's model widget (sidebar "2 · Model"): bundles of the zoo that are present, or any folder, one or two.

Each chosen model is loaded once per process (:func:`medkd.app.session.cached_predictor`) and described in the
sidebar: its kind, task, intended use and labels. A bundle whose configs hold code outside medkd's allowlist is
refused for that model only, with the reason and the way to trust it (``medkd app --trust-bundle``); a folder that
is no model shows why. Models compared side by side must be of one kind (the kind picks the page's view).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import streamlit as st

from medkd.app import DISCLAIMER
from medkd.app.session import cached_predictor, trust_bundles
from medkd.errors import MedkdError, UntrustedBundleError

__all__ = ["available_bundles", "choose_models", "load_model"]

logger = logging.getLogger("medkd.app")


def available_bundles() -> dict[str, str]:
    """Name -> folder of the zoo's bundles present on this machine (a bad zoo file is a sidebar warning)."""
    from medkd.bundle.zoo import load_zoo

    try:
        return {e.name: str(e.folder) for e in load_zoo() if e.present}
    except MedkdError as err:
        st.sidebar.warning(f"models/zoo.yaml: {err}")
        return {}


def choose_models() -> list[tuple[str, Any]]:
    """Draw the model choice; returns the loaded ``(name, predictor)`` pairs, all of one kind (stops the page
    until at least one loads)."""
    st.sidebar.header("2 · Model")
    options = available_bundles()
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
    loaded: list[tuple[str, Any]] = []
    for name in chosen:
        predictor = load_model(name, options[name], trust)
        if predictor is None:
            continue
        if loaded and predictor.kind != loaded[0][1].kind:
            first, other = loaded[0]
            st.error(f"'{name}' is a {predictor.kind} model and '{first}' a {other.kind} model; "
                     "models compared side by side must be of one kind.")
            continue
        loaded.append((name, predictor))
        _describe(name, predictor)
    if not loaded:
        st.info("Choose another bundle in the sidebar.")
        st.stop()
    return loaded


def _describe(name: str, predictor: Any) -> None:
    with st.sidebar.expander(f"About {name}", expanded=False):
        meta = predictor.metadata
        st.markdown(f"**Kind.** {predictor.kind}\n\n**Task.** {meta.get('task') or '—'}\n\n"
                    f"{meta.get('description') or ''}")
        st.markdown(f"**Intended use.** {meta.get('intended_use') or DISCLAIMER}")
        st.markdown("**Labels.** " + (", ".join(f"{l.value} {l.name}" for l in predictor.labels) or "—"))
        st.caption(f"version {predictor.version} · weights {predictor.weights_sha256[:12]}… · {DISCLAIMER}")


def load_model(name: str, folder: str, trust: bool) -> Any | None:
    """The loaded model, or ``None`` after showing why not (the other chosen models still run)."""
    try:
        return cached_predictor(folder, "auto", trust)
    except UntrustedBundleError as err:
        logger.warning("bundle %s refused (untrusted code): %s", name, err.problem)
        st.error(f"The bundle '{name}' was not loaded: its configs hold code outside medkd's allowlist "
                 f"(`{err.key}` in {Path(err.path).name}), and none of it was run. Choose another bundle; if you "
                 "trust whoever made this one, restart the app with `medkd app --trust-bundle`.")
        return None
    except MedkdError as err:
        st.error(f"Cannot load the bundle '{name}'. {err}")
        return None
