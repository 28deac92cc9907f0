# SPDX-License-Identifier: Apache-2.0
"""Shared set-up of the app tests that drive the real app with ``AppTest`` and a stand-in predictor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"


@pytest.fixture
def start_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """``start_app(folder_name, fake)``: the app with an empty zoo, ``fake(folder)`` loaded for model folders named
    like ``folder_name`` (others load for real), that folder chosen and the upload source selected."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from medkd.engine import predictor as predictor_module

    def start(folder_name: str, fake: Callable[[str], Any]) -> AppTest:
        real = predictor_module.load_predictor
        monkeypatch.setattr(predictor_module, "load_predictor",
                            lambda folder, device="auto", *, trust=False: fake(folder) if str(folder).endswith(
                                folder_name) else real(folder, device, trust=trust))
        (tmp_path / "models").mkdir(exist_ok=True)
        (tmp_path / "models" / "zoo.yaml").write_text("bundles: []\n")
        monkeypatch.setenv("MEDKD_MODELS", str(tmp_path / "models"))
        st.cache_data.clear()
        st.cache_resource.clear()
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        at.text_input(key="bundle_dir").set_value(str(tmp_path / folder_name)).run()
        at.radio(key="source").set_value("Upload").run()
        return at

    yield start
    st.cache_data.clear()
    st.cache_resource.clear()
