# SPDX-License-Identifier: Apache-2.0
"""The app picks its view from the chosen model's kind (item 8 of issue 9): a view registered from outside
``medkd/app`` draws a detection model's page, models of two kinds are not mixed, a kind without a view and a video
given to a segmentation model get clear messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
cv2 = pytest.importorskip("cv2")
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
TRUST_ENV = "MEDKD_TRUST_BUNDLES"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(_target_|parsing config).*")


def _texts(at: AppTest) -> str:
    parts = [c.value for c in at.caption] + [m.value for m in at.markdown] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [e.value for e in at.exception]
    return "\n".join(str(p) for p in parts)


def _fake(kind: str, folder: str):
    """A loaded model of ``kind`` that runs no network (boxes around the brightest pixel, or one forecast)."""
    from medkd.inference import Predictor

    def detect(volume: np.ndarray) -> dict:
        z, y, x = np.unravel_index(int(np.argmax(volume)), volume.shape)
        return {"boxes": np.array([[x, y, z, x + 1, y + 1, z + 1]], float), "scores": np.array([0.9]),
                "labels": np.array([0])}

    def forecast(frames):
        return {"time_to_next_phase": np.zeros(len(frames))}

    return Predictor(kind, Path(folder).name, "1", "ab" * 32, [], run=detect if kind == "detection" else forecast,
                     source=Path(folder), metadata={"task": f"toy {kind}"})


@pytest.fixture
def fake_models(app_env, monkeypatch) -> Iterator[list[str]]:
    """Folders named ``*_detection`` / ``*_forecasting`` load as fake models; the rest as usual. Registers a
    detection view the way a plugin would (``register_view``), and removes it afterwards."""
    from medkd.app.views import VIEWS, register_view
    from medkd.engine import predictor as predictor_module

    real, loads = predictor_module.load_predictor, []

    def loading(folder, device="auto", *, trust=False):
        kind = str(folder).rsplit("_", 1)[-1]
        if kind in ("detection", "forecasting"):
            loads.append(kind)
            return _fake(kind, folder)
        return real(folder, device, trust=trust)

    def boxes_view(ctx) -> None:
        import streamlit as st

        results = ctx.run(verb="Detecting")
        st.subheader("Detections")
        rows = [{"model": r.name, "score": float(s), "box": [float(v) for v in b]}
                for r in results for b, s in zip(r.output["boxes"], r.output["scores"])]
        st.dataframe(rows)
        st.markdown(f"toy view of {len(ctx.models)} {ctx.view.kind} model(s) on {ctx.data.input_kind}")

    monkeypatch.setattr(predictor_module, "load_predictor", loading)
    monkeypatch.delenv(TRUST_ENV, raising=False)
    saved = dict(VIEWS._items), dict(VIEWS._meta)
    register_view("detection", boxes_view, inputs=("image2d", "volume"))
    try:
        yield loads
    finally:
        VIEWS._items.clear()
        VIEWS._items.update(saved[0])
        VIEWS._meta.clear()
        VIEWS._meta.update(saved[1])


def _choose(at: AppTest, folder: Path, *names: str) -> AppTest:
    at.text_input(key="bundle_dir").set_value(str(folder)).run()
    return at.multiselect(key="models").set_value(list(names)).run()


def test_the_chosen_models_kind_picks_the_view(fake_models, tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    _choose(at, tmp_path / "polyp_detection", "polyp_detection")
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    text = _texts(at)
    assert "toy view of 1 detection model(s) on volume" in text and fake_models == ["detection"]
    assert [s.value for s in at.subheader] == ["Detections"] and not at.image  # not the segmentation page
    assert "**Kind.** detection" in text  # the model widget shows the kind
    box = at.dataframe[0].value["box"][0]
    assert len(box) == 6 and at.dataframe[0].value["score"][0] == pytest.approx(0.9)
    at.multiselect(key="models").set_value(["tiny_acdc"]).run()  # back to a segmentation bundle: its view
    assert not at.exception and len(at.image) == 3 and "Volumes per label" in [s.value for s in at.subheader]
    assert "**Kind.** segmentation" in _texts(at)


def test_models_of_two_kinds_are_not_compared(fake_models, tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    _choose(at, tmp_path / "polyp_detection", "tiny_acdc", "polyp_detection")
    assert not at.exception, [e.value for e in at.exception]
    errors = "\n".join(e.value for e in at.error)
    assert "'polyp_detection' is a detection model and 'tiny_acdc' a segmentation model" in errors
    assert len(at.image) == 3 and list(at.dataframe[0].value["model"].unique()) == ["tiny_acdc"]  # the first runs


def test_a_kind_without_a_view_says_so(fake_models, tmp_path):
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    _choose(at, tmp_path / "phase_forecasting", "phase_forecasting")
    assert not at.exception, [e.value for e in at.exception]
    errors = "\n".join(e.value for e in at.error)
    assert "'phase_forecasting' is a forecasting model, and this app has no view for forecasting models yet" in errors
    assert not at.image and not at.dataframe


def _clip(path: Path) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (48, 32))
    for i in range(6):
        frame = np.full((32, 48, 3), 40 * i, np.uint8)
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def test_video_for_a_segmentation_model_is_a_clear_message(app_env, tmp_path, monkeypatch):
    from medkd.engine.predictor import Predictor

    calls = []
    original = Predictor.__call__
    monkeypatch.setattr(Predictor, "__call__", lambda self, a: calls.append(a.shape) or original(self, a))
    monkeypatch.delenv(TRUST_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    calls.clear()
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value([("endoscopy.avi", _clip(tmp_path / "c.avi"), "video/x-msvideo")]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = "\n".join(e.value for e in at.error)
    assert "The upload 'endoscopy.avi' is a video, but 'tiny_acdc' is a segmentation model" in errors
    assert "a 2D image or a volume" in errors and "NIfTI" in errors
    assert not at.image and not at.download_button and calls == []  # the model never saw the frames
    table = at.table[0].value  # the sidebar's information on the input: a video
    assert "video" in table.to_string() and "6" in table.to_string()
