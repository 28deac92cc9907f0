# SPDX-License-Identifier: Apache-2.0
"""The app's built-in detection view (issue 10, item 6): boxes with class and score drawn on a 2D image, a score
threshold slider starting at the model's report threshold, a table, and downloads (CSV, PNG, DICOM SR for DICOM
inputs; a note otherwise); no patient value in any message. Driven through the real app with ``AppTest`` and a
fake detection predictor."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from PIL import Image  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PATIENT = "Doe^Jane"


def _fake(folder: str):
    """Boxes around the image's bright rectangle (label 1, score 0.9) and a faint one elsewhere (label 2, 0.3)."""
    from medkd.inference import Predictor
    from medkd.io.labels import labels_from_names

    def detect(image: np.ndarray) -> dict:
        assert image.ndim == 2
        rows, cols = np.nonzero(image > image.mean() + 2 * image.std())
        boxes = [[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], [1, 1, 6, 5]]
        return {"boxes": np.array(boxes, np.float32), "scores": np.array([0.9, 0.3], np.float32),
                "labels": np.array([1, 2])}

    return Predictor("detection", Path(folder).name, "1", "cd" * 32, labels_from_names(["bg", "mass", "spiculated"]),
                     run=detect, source=Path(folder), metadata={"task": "toy lesions", "report_threshold": 0.4})


@pytest.fixture
def app(start_app):
    return start_app("mammo_detection", _fake)


def _png() -> bytes:
    image = np.full((40, 64), 30, np.uint8)
    image[10:20, 30:50] = 250  # rows 10..19, columns 30..49: x = column
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _texts(at: AppTest) -> str:
    parts = [c.value for c in at.caption] + [m.value for m in at.markdown] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts + [e.value for e in at.exception])


def test_boxes_table_threshold_and_downloads_for_a_png(app):
    at = app
    at.file_uploader(key="upload").set_value([("lesion.png", _png(), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.slider(key="det_threshold").value == pytest.approx(0.4)  # the model's report threshold
    table = at.dataframe[0].value
    assert table["label"].tolist() == ["mass"] and table["score"].tolist() == [0.9]
    assert table[["x_min", "y_min", "x_max", "y_max"]].values.tolist() == [[30.0, 10.0, 50.0, 20.0]]
    picture = at.image[0]
    assert picture is not None
    labels = [b.label for b in at.download_button]
    assert labels == ["Detections (CSV)", "Boxes (PNG)"]
    assert "DICOM SR: needs a DICOM input" in _texts(at)
    csv_text = at.download_button(key="det_csv").proto.url  # served by the media manager; the file is checked below
    assert csv_text
    at.slider(key="det_threshold").set_value(0.2).run()  # lower: the faint box appears, no new inference
    assert at.dataframe[0].value["label"].tolist() == ["mass", "spiculated"]
    at.slider(key="det_threshold").set_value(0.95).run()
    assert at.dataframe[0].value.empty and "0 detection(s)" in _texts(at)


def test_csv_and_png_bytes():
    from medkd.app.detection import detection_csv, detection_rows
    from medkd.io.labels import labels_from_names
    from medkd.viz.boxes import draw_boxes

    out = {"boxes": np.array([[30, 10, 50, 20], [1, 1, 6, 5]], np.float32), "scores": np.array([0.9, 0.3]),
           "labels": np.array([1, 2])}
    rows = detection_rows(out, model="m", names={1: "mass", 2: "spiculated"}, threshold=0.4)
    text = detection_csv(rows, "Research use only.").decode()
    assert text.splitlines()[0] == "# Research use only."
    assert text.splitlines()[1] == "model,slice,label,score,x_min,y_min,x_max,y_max"
    assert text.splitlines()[2] == "m,1,mass,0.9,30.0,10.0,50.0,20.0" and len(text.splitlines()) == 3
    rgb = draw_boxes(np.zeros((40, 64)), out["boxes"], out["scores"], out["labels"],
                     labels_from_names(["bg", "mass", "spiculated"]), min_score=0.4, window=(0, 1), show_text=False)
    assert rgb[10, 30].tolist() == [230, 25, 75] and rgb[1, 1].tolist() == [0, 0, 0]


def _dicom_image(folder: Path) -> bytes:
    from medkd.data.synthetic_dicom import write_dicom_series

    pixels = np.full((1, 40, 64), 1000.0)
    pixels[0, 10:20, 30:50] = 1800
    series = write_dicom_series(folder, pixels=pixels, n_slices=1, rows=40, cols=64)
    path = sorted(p for p in folder.rglob("*") if p.is_file())[0]
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PatientName = PATIENT
    ds.save_as(path, enforce_file_format=True)
    del series
    return path.read_bytes()


def test_a_dicom_image_gets_an_sr_download_or_a_scrubbed_message(app, tmp_path, monkeypatch):
    calls = []

    def failing(dataset, detections, path, **kwargs):
        calls.append((dataset.SOPInstanceUID, [(d.label, d.score, d.box) for d in detections], kwargs))
        raise ValueError(f"cannot encode {dataset.PatientName} in the SR")

    fake = types.ModuleType("medkd.io.dicom_sr2d")
    fake.Detection2D = lambda label, score, box, code=None: types.SimpleNamespace(label=label, score=score, box=box)
    fake.write_detection_sr_2d = failing
    monkeypatch.setitem(sys.modules, "medkd.io.dicom_sr2d", fake)
    at = app
    at.file_uploader(key="upload").set_value([("img.dcm", _dicom_image(tmp_path / "dcm"), "application/dicom")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.dataframe[0].value["label"].tolist() == ["mass"]
    assert calls and calls[0][1] == [("mass", 0.9, (30.0, 10.0, 50.0, 20.0))]
    assert calls[0][2]["model_name"] == "mammo_detection"
    errors = "\n".join(e.value for e in at.error)
    assert "DICOM SR: cannot be written" in errors and "Doe" not in _texts(at) and "Jane" not in _texts(at)


def test_a_dicom_image_gets_a_real_sr(app, tmp_path):
    pytest.importorskip("medkd.io.dicom_sr2d")
    hd = pytest.importorskip("highdicom")
    at = app
    at.file_uploader(key="upload").set_value([("img.dcm", _dicom_image(tmp_path / "dcm"), "application/dicom")]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [b.label for b in at.download_button][-1] == "Detections (DICOM SR)"
    sr = sorted((tmp_path).rglob("*_sr.dcm")) or sorted(Path("/tmp").glob("**/mammo_detection_sr.dcm"))
    if sr:
        assert isinstance(hd.sr.srread(sr[0]), hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR)
