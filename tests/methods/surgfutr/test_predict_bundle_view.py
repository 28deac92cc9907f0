# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's deployment paths on one tiny trained run: the ``forecasting`` predictor, ``medkd surgfutr predict``'s
CSV (an MP4 shorter than the student's window, a folder of 1-fps PNGs, a bad video), the MONAI bundle (export,
``medkd bundle verify``, MONAI's own ``verify_net_in_out`` and ``monai.bundle run``, the bundle predictor) and the
app's video view driven through the real app with ``AppTest``.

The run: 3 synthetic Cholec80-layout videos of 40-50 s, a small student (width 8, D 32, d 16), 10 iterations.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),
    pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning"),
]

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "streamlit_app" / "app.py"
OVERRIDES = ["train.iterations=10", "train.val_interval=10", "train.batch_size=8", "train.warmup=2",
             "model.width=8", "model.feature_dim=32", "model.state_dim=16", "data.train=1-2", "data.val=3",
             "data.test=3"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The data root, the trained run and a 5-second MP4 (shorter than the 32-second window)."""
    import cv2

    from medkd.config import load_config
    from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, write_synthetic_cholec80
    from medkd.methods.surgfutr.config import SurgFUTRConfig
    from medkd.methods.surgfutr.trainer import train_surgfutr

    root = tmp_path_factory.mktemp("surgfutr")
    write_synthetic_cholec80(root / "data" / "cholec80", SyntheticSurgicalConfig(n_videos=3, duration=(40, 50)))
    cfg = load_config(SurgFUTRConfig, REPO / "apps" / "surgfutr" / "cpu_synthetic.yaml",
                      [*OVERRIDES, f"data.cache_dir={root / 'cache'}"])
    train_surgfutr(cfg, root / "data", root / "run", progress=False)
    short = root / "short.mp4"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for i in range(5 * 25):
        writer.write(np.full((48, 64, 3), (3 * i) % 255, np.uint8))
    writer.release()
    return {"data": root / "data", "run": root / "run", "short": short,
            "video": root / "data" / "cholec80" / "videos" / "video03.mp4"}


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_run_predictor_is_a_forecasting_predictor(tiny):
    from medkd.inference import check_output, load_predictor
    from medkd.methods.surgfutr.runs import read_classes

    predictor = load_predictor(tiny["run"], "cpu")
    classes = read_classes(tiny["run"])
    assert predictor.kind == "forecasting" and predictor.metadata["method"] == "surgfutr"
    assert [label.name for label in predictor.labels] == classes["phase_names"]
    assert predictor.metadata["horizons"]["presence_deltas_s"] == [3, 1, 5]
    frames = np.random.default_rng(0).integers(0, 255, (7, 48, 64, 3), dtype=np.uint8)  # any size: resized
    out = predictor(frames)
    check_output("forecasting", out, frames)
    assert out["phase_prob"].shape == (7, len(classes["phase_names"])) and out["presence@3s"].shape == (7, 7)
    streamed = predictor(iter(list(frames)))  # an iterable of frames gives the same forecasts
    assert all(np.allclose(out[k], streamed[k]) for k in out)


@pytest.mark.parametrize("source", ["short_mp4", "png_folder"])
def test_predict_video_writes_one_row_per_analysed_second(tiny, tmp_path, source):
    import cv2

    from medkd.methods.surgfutr.predict import forecast_columns, predict_video
    from medkd.methods.surgfutr.runs import load_run_config, read_classes

    if source == "short_mp4":
        video, seconds = tiny["short"], 5  # shorter than one window: padded with the first frame
    else:
        video, seconds = tmp_path / "VID01", 6
        video.mkdir()
        for t in range(seconds):
            cv2.imwrite(str(video / f"{t:06d}.png"), np.full((40, 56, 3), 20 * t, np.uint8))
    summary = predict_video(tiny["run"], video, tmp_path / "out" / "forecast.csv")
    assert summary["seconds"] == seconds and summary["wall_s"] > 0
    rows = _csv(Path(summary["output"]))
    assert len(rows) == seconds and [int(r["second"]) for r in rows] == list(range(seconds))
    classes, cfg = read_classes(tiny["run"]), load_run_config(tiny["run"])
    assert list(rows[0]) == forecast_columns(classes, cfg)
    assert list(rows[0])[:6] == ["second", "time", "phase", "phase_confidence", "next_phase_min@0.5min", "rsd_min"]
    assert "Grasper@3s" in rows[0] and "clipping@10s" in rows[0] and rows[-1]["time"] == f"00:00:0{seconds - 1}"
    assert rows[0]["phase"] in classes["phase_names"] and 0 <= float(rows[0]["Grasper@3s"]) <= 1


def test_a_bad_video_is_a_data_error_naming_it(tiny, tmp_path):
    from medkd.errors import DataError
    from medkd.methods.surgfutr.predict import predict_video

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad in (broken, tmp_path / "missing.mp4", empty):
        with pytest.raises(DataError, match=bad.name):
            predict_video(tiny["run"], bad, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


def test_bundle_exports_verifies_and_runs_like_the_run(tiny, tmp_path):
    import json

    import torch
    from monai.bundle import run as monai_run
    from monai.bundle import verify_net_in_out

    from medkd.bundle import export_bundle, verify_bundle
    from medkd.bundle.predictor import load_weights, parse_bundle
    from medkd.inference import load_predictor
    from medkd.methods.surgfutr.bundle import vector_from_forecasts
    from medkd.methods.surgfutr.predict import predict_video, read_video_input

    bundle = export_bundle(tiny["run"], tmp_path / "models" / "surgfutr_tiny")
    results = verify_bundle(bundle)
    assert all(r.ok for r in results), [str(r) for r in results if not r.ok]
    assert {"metadata_schema", "properties", "net_in_out", "weights"} <= {r.name for r in results}
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["medkd"]["kind"] == "forecasting" and meta["network_data_format"]["inputs"]["image"]["type"] == "series"
    assert "CC BY-NC-SA 4.0" in (bundle / "docs" / "data_license.txt").read_text()
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu")  # MONAI's own check

    frames = read_video_input(tiny["video"], (32, 32))
    from_run = load_predictor(tiny["run"], "cpu")(frames)
    from_bundle = load_predictor(bundle, "cpu")(frames)
    assert sorted(from_bundle) == sorted(from_run)
    assert all(np.allclose(from_bundle[k], from_run[k], atol=1e-6) for k in from_run)
    network = parse_bundle(bundle, ("network_def",))["network_def"]  # the net_in_out network, one window
    load_weights(bundle, network)
    t, s = 40, network.eval().past_seconds
    with torch.no_grad():
        vector = network(torch.from_numpy(frames[t - s + 1:t + 1]).permute(3, 0, 1, 2)[None], torch.tensor([t / 60]))
    assert np.allclose(vector[0].numpy(), vector_from_forecasts(from_run, network.layout)[t], atol=1e-5)

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "video03.mp4").write_bytes(tiny["video"].read_bytes())
    monai_run(config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" /
              "metadata.json"), bundle_root=str(bundle), dataset_dir=str(tmp_path / "in"),
              output_dir=str(tmp_path / "eval"))
    predict_video(tiny["run"], tiny["video"], tmp_path / "predict.csv")
    assert (tmp_path / "eval" / "video03_forecasts.csv").read_text() == (tmp_path / "predict.csv").read_text()


def test_forecast_vector_round_trip(tiny):
    from medkd.inference import load_predictor
    from medkd.methods.surgfutr.bundle import forecasts_from_vector, vector_channels, vector_from_forecasts
    from medkd.methods.surgfutr.runs import read_classes

    classes = read_classes(tiny["run"])
    fc = load_predictor(tiny["run"], "cpu")(np.zeros((4, 32, 32, 3), np.uint8))
    vector = vector_from_forecasts(fc, classes.layout)
    assert vector.shape == (4, len(vector_channels(classes.layout, classes)))
    back = forecasts_from_vector(vector, classes.layout)
    assert sorted(back) == sorted(fc) and all(np.allclose(back[k], fc[k]) for k in fc)


def test_app_video_view_shows_forecasts_and_the_csv(tiny, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    pytest.importorskip("altair")
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "zoo.yaml").write_text("bundles: []\n")
    monkeypatch.setenv("MEDKD_MODELS", str(tmp_path / "models"))
    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(APP), default_timeout=120).run()
        at.text_input(key="bundle_dir").set_value(str(tiny["run"])).run()
        at.radio(key="source").set_value("Upload").run()
        at.file_uploader(key="upload").set_value([("case.mp4", tiny["video"].read_bytes(), "video/mp4")]).run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        table = at.dataframe[0].value
        assert len(table) == 45 and table["second"].tolist() == list(range(45))  # 45 s decoded again at 1 fps
        assert [m.label for m in at.metric][:3] == ["Phase at 00:00:44", "Next phase in", "Remaining"]
        assert [b.label for b in at.download_button] == ["Forecasts of run (CSV)"]
        assert any("forecasts for every second" in c.value for c in at.caption)
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
