# SPDX-License-Identifier: Apache-2.0
"""Entry point of the Streamlit app: page set-up, the disclaimer, then the chosen view."""

from __future__ import annotations

import logging

import streamlit as st

from medkd.app import DISCLAIMER
from medkd.app.views import VIEWS, register_builtin_views

__all__ = ["main"]

logger = logging.getLogger("medkd.app")


def main() -> None:
    """Draw the app (called on every rerun by ``streamlit_app/app.py``)."""
    st.set_page_config(page_title="medkd", page_icon=":material/biotech:", layout="wide")
    st.title("medkd viewer")
    st.caption(DISCLAIMER)
    register_builtin_views()
    names = VIEWS.list()
    name = st.sidebar.radio("View", names, key="view") if len(names) > 1 else names[0]
    VIEWS.get(name)()


if __name__ == "__main__":  # ``streamlit run`` executes this file as __main__ (what ``medkd app`` does)
    main()
