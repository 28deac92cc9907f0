# SPDX-License-Identifier: Apache-2.0
"""The app under hostile input (issue 8): a DICOM SEG download that cannot be written shows a message without
patient values or server paths, and a bundle whose configs hold code is refused for that model only (the others
still run) unless the app was started with ``--trust-bundle``."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pydicom = pytest.importorskip("pydicom")
from streamlit.testing.v1 import AppTest

TRUST_ENV = "MEDKD_TRUST_BUNDLES"  # medkd.app.session.TRUST_ENV

APP = Path(__file__).resolve().parents[2] / "streamlit_app" / "app.py"
#: identifying values of the bundled DICOM examples (medkd.data.synthetic_dicom)
EXAMPLE_PHI = ("Synthetic^Phantom", "SYN0001", "19700101")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:.*(_target_|parsing config).*")


def _texts(at: AppTest) -> str:
    parts = [c.value for c in at.caption] + [m.value for m in at.markdown] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [e.value for e in at.exception]
    parts += [b.label for b in at.download_button]
    return "\n".join(str(p) for p in parts)


def _started(monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.delenv(TRUST_ENV, raising=False)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _labels(at: AppTest) -> set[str]:
    return {b.label for b in at.download_button}


# --------------------------------------------------------------------------------------------- DICOM SEG download
def test_seg_download_with_invalid_patient_values_shows_no_value(app_env, tmp_path, monkeypatch) -> None:
    from medkd.data.synthetic_dicom import write_dicom_series

    series = write_dicom_series(tmp_path / "s", n_slices=4, rows=40, cols=48, modality="MR", seed=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values it is told to write
        for path in series.paths:
            ds = pydicom.dcmread(path)
            ds.PatientBirthDate, ds.PatientSex = "1945-03-17", "Female"
            ds.save_as(path)
            zf.write(path, path.name)
    at = _started(monkeypatch)
    at.radio(key="source").set_value("Upload").run()
    at.file_uploader(key="upload").set_value([("study.zip", buffer.getvalue(), "application/zip")]).run()
    assert not at.exception, [e.value for e in at.exception]
    text = _texts(at)
    assert "1945-03-17" not in text and "Female" not in text and "Synthetic^Phantom" not in text
    assert "Mask (DICOM SEG)" in _labels(at) or "DICOM SEG: cannot be written" in text
    assert {"Mask (NIfTI)", "Volumes (CSV)"} <= _labels(at)


@pytest.mark.parametrize("failure", ["value", "disk"])
def test_seg_writer_failure_is_a_message_without_values_or_paths(failure, app_env, monkeypatch) -> None:
    from medkd.io import dicom_seg

    calls: list[Path] = []

    def failing_writer(datasets, mask, labels, path, **kwargs):
        calls.append(Path(path))
        if failure == "disk":
            raise OSError(28, "No space left on device", str(path))
        raise ValueError(f"Invalid value for VR DA: '{datasets[0].PatientBirthDate}' ({datasets[0].PatientName})")

    monkeypatch.setattr(dicom_seg, "write_seg", failing_writer)
    at = _started(monkeypatch)  # the default example is a DICOM series
    text = _texts(at)
    assert "DICOM SEG: cannot be written" in text and "Mask (DICOM SEG)" not in _labels(at)
    assert not any(value in text for value in EXAMPLE_PHI)
    assert "<redacted>" in text if failure == "value" else "No space left on device" in text
    assert str(calls[0].parent) not in text and at.session_state["medkd_tmp"].name not in text
    assert {"Mask (NIfTI)", "Volumes (CSV)", "Current view (PNG)"} <= _labels(at)
    at.slider(key="opacity").set_value(0.2).run()  # a rerun shows the cached message, without writing again
    assert not at.exception and len(calls) == 1 and "DICOM SEG: cannot be written" in _texts(at)


# --------------------------------------------------------------------------------------------- untrusted bundles
def _untrusted_bundle(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    config = folder / "configs" / "inference.json"
    data = json.loads(config.read_text())
    data["inferer"]["_target_"] = "subprocess.run"
    config.write_text(json.dumps(data))
    return folder


def test_untrusted_bundle_is_refused_and_other_models_still_run(app_env, tmp_path, monkeypatch) -> None:
    ran: list[tuple] = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: ran.append(a))
    evil = _untrusted_bundle(app_env / "tiny_acdc", tmp_path / "gift_bundle")
    at = _started(monkeypatch)
    at.text_input(key="bundle_dir").set_value(str(evil)).run()
    at.multiselect(key="models").set_value(["tiny_acdc", "gift_bundle"]).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = "\n".join(e.value for e in at.error)
    assert "The bundle 'gift_bundle' was not loaded" in errors and "inferer#_target_" in errors
    assert "medkd app --trust-bundle" in errors and str(tmp_path) not in errors
    assert ran == [], "the bundle's code ran"
    assert len(at.image) == 3 and list(at.dataframe[0].value["model"].unique()) == ["tiny_acdc"]
    at.multiselect(key="models").set_value(["gift_bundle"]).run()  # only the refused one: a hint, no crash
    assert not at.exception and "Choose another bundle" in _texts(at) and ran == []


def test_trust_variable_reaches_load_predictor_and_the_cache_key(app_env, monkeypatch) -> None:
    from medkd.app import session
    from medkd.engine import predictor as predictor_module

    assert session.TRUST_ENV == TRUST_ENV
    seen: list[bool] = []
    real = predictor_module.load_predictor

    def recording(folder, device="auto", *, trust=False):
        seen.append(trust)
        return real(folder, device, trust=trust)

    monkeypatch.setattr(predictor_module, "load_predictor", recording)
    at = _started(monkeypatch)
    assert seen == [False] and "Bundles are trusted" not in _texts(at)
    monkeypatch.setenv(TRUST_ENV, "1")
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception and seen == [False, True]  # not served from the untrusted entry of the cache
    assert "Bundles are trusted" in _texts(at)
