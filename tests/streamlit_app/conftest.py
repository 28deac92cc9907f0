# SPDX-License-Identifier: Apache-2.0
"""App test set-up: a models folder with a zoo.yaml and one tiny exported bundle, and clean Streamlit caches."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, run_2d) -> Path:
    from medkd.bundle import export_bundle

    folder = tmp_path_factory.mktemp("models")
    export_bundle(run_2d, folder / "tiny_acdc")
    export_bundle(run_2d, folder / "tiny_acdc_v2", version="0.2.0")
    (folder / "zoo.yaml").write_text(
        "bundles:\n"
        "  - name: tiny_acdc\n    path: tiny_acdc\n    task: untrained test bundle\n    get: tests\n"
        "  - name: tiny_acdc_v2\n    path: tiny_acdc_v2\n    task: the same weights again\n    get: tests\n"
        "  - name: absent_bundle\n    path: absent_bundle\n    task: not exported\n    get: nothing\n"
    )
    return folder


@pytest.fixture
def app_env(models_dir, monkeypatch):
    """MEDKD_MODELS pointing at the test models; Streamlit's caches empty before and after."""
    import streamlit as st

    monkeypatch.setenv("MEDKD_MODELS", str(models_dir))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield models_dir
    st.cache_data.clear()
    st.cache_resource.clear()
