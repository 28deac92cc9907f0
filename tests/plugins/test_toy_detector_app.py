# SPDX-License-Identifier: Apache-2.0
"""Issue 9's last "done when" item: the toy detection plugin's model shows in the app, with no edit to medkd.

A module fixture trains a tiny toy run and exports it as a bundle into a models folder whose ``zoo.yaml`` lists it
with ``kind: detection``; then each test installs the plugin afresh (nothing of it imported or registered) and
drives ``streamlit_app/app.py`` with ``AppTest``. Loading the bundle inside the script run finds the plugin through
the ``medkd.plugins`` entry point, and the plugin's view (:mod:`toy_detector.view`, named by the ``toy`` method's
``app_view``) draws the page: the image with the boxes, a table of detections, the threshold and slice sliders and
the disclaimer. The segmentation view is never called.
"""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from medkd.app import DISCLAIMER
from medkd.cli import main
from plugins.dist import install_plugin

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(_target_|parsing config).*",
                                        "ignore:No hash value provided:UserWarning")

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
ENTRY_POINTS = {"toy_detector": "toy_detector"}
CONFIG = "iterations: 120\nval_interval: 60\nbatch_size: 16\nseed: 0\n"
#: (z0, z1, row0, row1, col0, col1) of the bright boxes in the synthetic CT, z1/row1/col1 exclusive
CT_BOXES = [(1, 4, 6, 16, 8, 20), (2, 6, 22, 34, 26, 38)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def _best_iou(table, row0: float, col0: float, row1: float, col1: float) -> float:
    truth = np.array([col0, row0, col1, row1], float)
    boxes = table[["x_min", "y_min", "x_max", "y_max"]].to_numpy(float)
    return max((_iou(box, truth) for box in boxes), default=0.0)


def _captions(at: AppTest) -> list[str]:
    return [str(c.value) for c in at.caption] + [c for img in at.image for c in img.captions]


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory) -> Path:
    """A models folder with a trained toy bundle ``toy_boxes`` and a ``zoo.yaml`` entry of kind ``detection``."""
    # medkd's own registrations (app views, the bundle and run predictor sources) come first: install_plugin undoes
    # every registration made while it is installed, and these modules register only when first imported
    for module in ("medkd.app.views", "medkd.bundle", "medkd.methods"):
        importlib.import_module(module)

    root = tmp_path_factory.mktemp("toy_app")
    models = root / "models"
    with pytest.MonkeyPatch.context() as mp:
        install_plugin(root / "site", mp, "toy-detector", ENTRY_POINTS)
        from toy_detector.data import write_toy_dataset

        data, run, config = write_toy_dataset(root / "data"), root / "run", root / "toy.yaml"
        config.write_text(CONFIG)
        assert main(["-q", "toy", "train", "--config", str(config), "--data-root", str(data), "--out", str(run)]) == 0
        assert main(["-q", "bundle", "export", "--run", str(run), "-o", str(models / "toy_boxes")]) == 0
    (models / "zoo.yaml").write_text("bundles:\n  - name: toy_boxes\n    path: toy_boxes\n    kind: detection\n"
                                     "    method: toy\n    task: bright boxes (test plugin)\n    get: tests\n")
    return models  # the plugin is uninstalled again: its registrations are undone


@pytest.fixture
def app(toy_models, tmp_path, monkeypatch):
    """The app over ``toy_models`` with the plugin installed but not loaded; yields the calls of the segmentation
    view (which must stay empty) and of the models."""
    import streamlit as st

    import medkd.app.segmentation
    import medkd.plugins
    from medkd.app.views import VIEWS
    from medkd.inference.predictor import Predictor
    from medkd.methods.registry import METHODS

    install_plugin(tmp_path / "site", monkeypatch, "toy-detector", ENTRY_POINTS)
    VIEWS._items.pop("toy_detection", None)  # left by an earlier install that began before the view registry existed
    assert "toy_detector" not in sys.modules and not medkd.plugins.loaded_plugins()
    assert "toy" not in METHODS._items and "toy_detection" not in VIEWS._items  # (no lookup: it would discover)
    calls: dict[str, list] = {"segmentation": [], "model": []}
    monkeypatch.setattr(medkd.app.segmentation, "render", lambda ctx: calls["segmentation"].append(ctx))
    original = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, a: calls["model"].append(np.shape(a)) or original(self, a))
    monkeypatch.setenv("MEDKD_MODELS", str(toy_models))
    monkeypatch.delenv("MEDKD_TRUST_BUNDLES", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield calls
    st.cache_data.clear()
    st.cache_resource.clear()


def _upload(files: list[tuple[str, bytes, str]]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()  # the bundled example first
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value(files).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _assert_detection_view(at: AppTest, calls: dict[str, list]) -> None:
    import medkd.plugins

    status = {s.name: s for s in medkd.plugins.loaded_plugins()}.get("toy_detector")
    assert status is not None and status.loaded and status.distribution == "toy-detector"  # found in the run
    assert calls["segmentation"] == [], "the segmentation view was used"
    assert [s.value for s in at.subheader] == ["Detections"]  # not the segmentation page's subheaders
    assert any(m.value.startswith("**Kind.** detection") for m in at.markdown)  # the model widget's kind
    view_caption = [c for c in _captions(at) if "detection(s) with a score of at least" in c]
    assert len(view_caption) == 1 and DISCLAIMER in view_caption[0]  # the view repeats the disclaimer
    assert [b.label for b in at.download_button] == ["Detections (CSV)"]


def test_a_png_upload_shows_the_toy_models_boxes(app):
    from PIL import Image
    from toy_detector.data import draw_boxes  # (imported by the script run, through the entry point)

    image, truth = draw_boxes(np.random.default_rng(11), (44, 52), 2)  # truth: (row0, col0, row1, col1)
    png = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(png, format="PNG")
    at = _upload([("boxes.png", png.getvalue(), "image/png")])
    _assert_detection_view(at, app)
    assert len(at.image) == 1 and "slice 1/1" in at.image[0].captions[0]
    assert [s.key for s in at.sidebar.slider] == ["toy_det_threshold"]  # no slice slider for a 2D image
    table = at.dataframe[0].value
    assert len(table) >= 1 and set(table["label"]) == {"box"} and set(table["model"]) == {"toy_boxes"}
    assert (table["first slice"] == 1).all() and (table["last slice"] == 1).all()
    for row0, col0, row1, col1 in truth:
        assert _best_iou(table, row0, col0, row1, col1) >= 0.5, table
    assert app["model"][-1] == image.shape  # the 2D image went in as (y, x)
    assert f"{len(table)} box(es)" in at.image[0].captions[0]

    runs = len(app["model"])
    at.slider(key="toy_det_threshold").set_value(1.0).run()  # above every score: nothing left, no new inference
    assert not at.exception and at.dataframe[0].value.empty and len(app["model"]) == runs
    assert "0 box(es)" in at.image[0].captions[0]


def test_a_dicom_series_shows_boxes_per_slice(app, tmp_path):
    from medkd.data.synthetic_dicom import write_dicom_series

    rng = np.random.default_rng(1)
    stored = 1024 + rng.normal(0, 20, (6, 40, 48))
    for z0, z1, r0, r1, c0, c1 in CT_BOXES:
        stored[z0:z1, r0:r1, c0:c1] += 600
    series = write_dicom_series(tmp_path / "ct", pixels=stored, origin=(0, 0, 0), pixel_spacing=(1, 1),
                                slice_spacing=2)
    at = _upload([(p.name, p.read_bytes(), "application/dicom") for p in series.paths])
    _assert_detection_view(at, app)
    assert app["model"][-1] == stored.shape
    table = at.dataframe[0].value
    assert len(table) == len(CT_BOXES), table
    for z0, z1, r0, r1, c0, c1 in CT_BOXES:
        assert _best_iou(table, r0, c0, r1, c1) >= 0.5, table
        assert ((table["first slice"] == z0 + 1) & (table["last slice"] == z1)).any(), table  # 1-based, inclusive
    slider = at.slider(key="toy_det_slice")
    assert (slider.min, slider.max) == (1, 6) and slider.value == 3  # the slice with the most boxes
    assert "slice 3/6 · 2 box(es)" in at.image[0].captions[0]
    at.slider(key="toy_det_slice").set_value(1).run()  # no box crosses the first slice
    assert not at.exception and "slice 1/6 · 0 box(es)" in at.image[0].captions[0]
    at.slider(key="toy_det_slice").set_value(6).run()
    assert "slice 6/6 · 1 box(es)" in at.image[0].captions[0]
