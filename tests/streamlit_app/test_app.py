# SPDX-License-Identifier: Apache-2.0
"""The Streamlit app driven by ``streamlit.testing.v1.AppTest``: example, inference, sliders, tables, errors."""

from __future__ import annotations

import gc
import io
import zipfile

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from pathlib import Path  # noqa: E402

from medkd.app import DISCLAIMER  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(_target_|parsing config).*")


def _texts(at) -> str:
    parts = [c.value for c in at.caption] + [m.value for m in at.markdown] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [i.value for i in at.info]
    return "\n".join(str(p) for p in parts)


def _started(app_env) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_example_runs_model_and_shows_viewer(app_env, monkeypatch):
    from medkd.engine.predictor import Predictor

    calls = []
    original = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, a: calls.append(a.shape) or original(self, a))
    at = _started(app_env)
    assert DISCLAIMER in _texts(at)
    assert len(calls) == 1  # the default example through the default bundle
    assert at.multiselect(key="models").value == ["tiny_acdc"]  # the absent zoo entry is not offered
    assert len(at.image) == 3  # axial, coronal, sagittal
    table = at.dataframe[0].value
    assert list(table["label"]) == ["RV", "Myo", "LV"] and (table["volume_ml"] >= 0).all()
    assert table["voxels"].sum() > 0
    labels = {b.label for b in at.download_button}
    assert {"Mask (NIfTI)", "Mask (DICOM SEG)", "Volumes (CSV)", "Current view (PNG)"} <= labels

    # the overlay is drawn in the label colours; opacity 0 leaves the grey image alone
    view = at.session_state["medkd_current_view"]["axial"]
    assert view.ndim == 3 and view.shape[2] == 3 and min(view.shape[:2]) >= 256
    assert (view[..., 0] != view[..., 1]).any()
    at.slider(key="opacity").set_value(0.0).run()
    grey = at.session_state["medkd_current_view"]["axial"]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    both = at.session_state["medkd_current_view"]["all"]  # the PNG download: three orientations side by side
    assert both.shape[1] > 3 * min(grey.shape[:2])

    # moving sliders and the opacity redraws from the cache: no new inference
    at.slider(key="slice_axial").set_value(2).run()
    at.slider(key="opacity").set_value(0.9).run()
    at.selectbox(key="window").set_value("CT bone").run()
    assert not at.exception and len(calls) == 1
    assert "axial 3/10" in [c for img in at.image for c in img.captions]


def test_two_models_side_by_side(app_env):
    at = _started(app_env)
    at.multiselect(key="models").set_value(["tiny_acdc", "tiny_acdc_v2"]).run()
    at.checkbox(key="truth").check().run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[0].value
    assert list(table["model"]) == ["tiny_acdc"] * 3 + ["tiny_acdc_v2"] * 3
    # the same weights: the same volumes
    np.testing.assert_array_equal(table["voxels"][:3].to_numpy(), table["voxels"][3:].to_numpy())
    assert len(at.metric) == 2 and at.radio(key="download_model").options == ["tiny_acdc", "tiny_acdc_v2"]
    at.text_input(key="bundle_dir").set_value(str(app_env / "missing")).run()
    at.multiselect(key="models").set_value(["missing"]).run()
    assert "Cannot load the bundle 'missing'" in _texts(at)


def test_broken_upload_gives_a_clear_error(app_env):
    at = _started(app_env)
    at.radio(key="source").set_value("Upload").run()
    assert "Upload a study" in _texts(at)
    at.file_uploader(key="upload").set_value([("scan.dcm", b"this is not an image", "application/dicom")]).run()
    assert not at.exception
    assert "Cannot read the upload" in _texts(at) and "scan.dcm" in _texts(at)
    assert "Traceback" not in _texts(at)


def test_zip_of_dicom_upload_segments(app_env, tmp_path):
    from medkd.data.synthetic_dicom import write_dicom_series

    series = write_dicom_series(tmp_path / "s", n_slices=4, rows=40, cols=48, modality="MR", seed=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in series.paths:
            zf.write(p, p.name)
    at = _started(app_env)
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value([("study.zip", buffer.getvalue(), "application/zip")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.image) == 3
    text = _texts(at)
    assert "Synthetic^Phantom" not in text and "SYN0001" not in text  # no PHI on the page

    # the upload was written only inside the session's temporary folder, which goes with the session
    session_tmp = Path(at.session_state["medkd_tmp"].name)
    assert len(list(session_tmp.rglob("*.dcm"))) >= len(series.paths)
    del at
    gc.collect()
    assert not session_tmp.exists()
