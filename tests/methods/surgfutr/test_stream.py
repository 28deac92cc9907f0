# SPDX-License-Identifier: Apache-2.0
"""Streaming forecasts (spec §10.9 and §10.3): streamed = offline at every second, causality, the file driver."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.config import config_from_dict, config_to_dict
from medkd.errors import DataError
from medkd.methods.surgfutr.config import SurgFUTRConfig
from medkd.methods.surgfutr.forecast import forecast_frames
from medkd.methods.surgfutr.model import Student
from medkd.methods.surgfutr.modules import HeadLayout
from medkd.methods.surgfutr.predict import forecast_row
from medkd.methods.surgfutr.stream import StreamForecaster, stream_forecasts

SIZE = 16
# window span (L - 1) * s + T = 3 * 3 + 3 = 12 s: the first 12 seconds see padded windows and clips
MODEL = {"feature_dim": 32, "state_dim": 16, "width": 8, "prototypes": 8, "window": 4, "clip_stride": 3,
         "clip_frames": 3, "heads": 2}
LAYOUT = HeadLayout(3, 2, 1, (2, 1), (5,), (0.5, 1.0))


def _cfg() -> SurgFUTRConfig:
    return config_from_dict(SurgFUTRConfig, {"model": MODEL, "data": {"frame_size": [SIZE, SIZE]},
                                             "tasks": {"presence_deltas_s": [2, 1], "event_horizons_s": [5],
                                                       "transition_horizons_min": [0.5, 1.0]}})


@pytest.fixture(scope="module")
def student() -> Student:
    torch.manual_seed(0)
    net = Student(_cfg(), LAYOUT)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def _stream(stream: StreamForecaster, frames: np.ndarray) -> dict[str, np.ndarray]:
    outs = [stream.push(f) for f in frames]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _assert_close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], upto: int | None = None) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k][:upto].astype(np.float64), b[k][:upto].astype(np.float64), atol=1e-5,
                                   rtol=0, err_msg=k)


def test_streamed_equals_offline_at_every_second(student: Student) -> None:
    frames = _frames(40)
    stream = StreamForecaster(student, (SIZE, SIZE))
    outs = [stream.push(f) for f in frames]
    assert all(o["rsd"].shape == (1,) and o["phase_prob"].shape == (1, 3) for o in outs)
    _assert_close(forecast_frames(student, frames), {k: np.concatenate([o[k] for o in outs]) for k in outs[0]})
    assert stream.steps == 40
    stream.reset()
    _assert_close(forecast_frames(student, frames[:5]), _stream(stream, frames[:5]))


def test_per_frame_mode_matches_1fps_at_whole_seconds(student: Student) -> None:
    rate, n = 3, 20
    frames = _frames(n * rate, seed=1)  # frame 3 t is second t
    streamed = _stream(StreamForecaster(student, (SIZE, SIZE), rate=rate), frames)
    _assert_close(forecast_frames(student, frames[::rate]), {k: v[::rate] for k, v in streamed.items()})


def test_causal_future_frames_change_nothing_and_are_never_seen(student: Student) -> None:
    t = 15
    frames = _frames(30)
    perturbed = frames.copy()
    perturbed[t + 1:] = _frames(30 - t - 1, seed=7)
    _assert_close(forecast_frames(student, frames), forecast_frames(student, perturbed), upto=t + 1)

    seen: list[torch.Tensor] = []
    hook = student.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    try:
        stream = StreamForecaster(student, (SIZE, SIZE))
        outs = []
        for i, frame in enumerate(perturbed):
            outs.append(stream.push(frame))
            # the push for second i encodes exactly frame i: nothing after it, nothing twice
            assert len(seen) == i + 1 and seen[-1].shape[:2] == (1, 1)
            assert torch.equal(seen[-1][0, 0], torch.from_numpy(frame).permute(2, 0, 1))
    finally:
        hook.remove()
    streamed = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    _assert_close(forecast_frames(student, frames), streamed, upto=t + 1)


def test_bad_pushes_and_training_mode(student: Student) -> None:
    stream = StreamForecaster(student, (SIZE, SIZE))
    with pytest.raises(ValueError, match="resized to"):
        stream.push(np.zeros((SIZE + 1, SIZE, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        stream.push(np.zeros((SIZE, SIZE, 3), np.float32))
    student.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            StreamForecaster(student)
    finally:
        student.eval()


def _write_video(path: Path, seconds: int, fps: int = 25) -> np.ndarray:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (32, 24))
    rng = np.random.default_rng(3)
    colours = rng.integers(0, 256, (seconds, 3))
    for i in range(seconds * fps):
        img = np.zeros((24, 32, 3), np.uint8)
        img[:, : 4 + i % 28] = colours[i // fps]
        writer.write(img)
    writer.release()
    return colours


def _save_run(run: Path, student: Student) -> None:
    from medkd.engine.checkpoint import save_checkpoint
    from medkd.methods.surgfutr.runs import save_run

    cfg = _cfg()
    classes = {"phase_names": ["Prep", "Dissect", "Close"], "presence_names": ["Grasper", "Hook"],
               "presence_key": "tool", "event_names": ["clipping"], "tool_names": ["Grasper", "Hook"],
               "tool_of": None, "layout": dataclasses.asdict(LAYOUT)}
    save_run(run, cfg, classes)
    save_checkpoint(run / "train" / "best.pt", student=student, teacher=None, optimizer=None,
                    config=config_to_dict(cfg), iteration=1)


def test_stream_forecasts_file_to_csv(student: Student, tmp_path: Path) -> None:
    from medkd.data.surgical.video import read_video_frames

    video, run, out = tmp_path / "case.mp4", tmp_path / "run", tmp_path / "rows" / "case.csv"
    _write_video(video, 6)
    _save_run(run, student)
    calls: list[tuple[float, dict]] = []
    summary = stream_forecasts(run, str(video), out=out, on_forecast=lambda s, row: calls.append((s, row)))
    assert summary["seconds"] == 6 and summary["frames_decoded"] == 5 * 25 + 1 and summary["fps"] > 0
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"]
    assert [s for s, _ in calls] == list(range(6))

    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["second"]) for r in rows] == list(range(6))
    assert rows[5]["time"] == "00:00:05"
    assert list(rows[0])[:6] == ["second", "time", "phase", "phase_confidence", "next_phase_min@0.5min", "rsd_min"]
    assert {"Grasper@2s", "Hook@2s"} <= set(rows[0])  # predict's columns: one file format for both commands
    offline = forecast_frames(student, read_video_frames(video, fps=1.0, size=(SIZE, SIZE)))
    np.testing.assert_allclose([float(r["rsd_min"]) for r in rows], offline["rsd"], atol=1e-3)  # CSV rounding
    np.testing.assert_allclose([float(r["Hook@2s"]) for r in rows], offline["presence@2s"][:, 1], atol=1e-3)
    assert [r["phase"] for r in rows] == [["Prep", "Dissect", "Close"][p] for p in offline["phase"]]

    short = stream_forecasts(run, video, max_seconds=3)
    assert short["seconds"] == 3 and short["csv"] is None
    per_frame = stream_forecasts(run, video, analysis="frame", max_seconds=2)
    assert per_frame["seconds"] == 50 and per_frame["frames_decoded"] == 50
    with pytest.raises(ValueError, match="did you mean 'frame'"):
        stream_forecasts(run, video, analysis="frames")


def test_unreadable_video_names_the_file(student: Student, tmp_path: Path) -> None:
    run, bad = tmp_path / "run", tmp_path / "broken_case.mp4"
    _save_run(run, student)
    bad.write_bytes(b"not a video at all" * 64)
    with pytest.raises(DataError, match="broken_case.mp4"):
        stream_forecasts(run, bad, out=tmp_path / "x.csv")
    with pytest.raises(DataError, match="missing.mp4"):
        stream_forecasts(run, tmp_path / "missing.mp4")


def test_stream_rows_use_predicts_columns_with_the_streamed_second() -> None:
    cfg = _cfg()
    fc = {"rsd": np.array([3.0]), "presence@2s": np.array([[0.1, 0.7]])}  # one streamed step
    classes = {"presence_names": ["grasper", "hook"], "phase_names": [], "event_names": []}
    row = forecast_row(fc, 0, classes, cfg, second=3725)
    assert row["second"] == 3725 and row["time"] == "01:02:05" and row["rsd_min"] == 3.0
    assert row["hook@2s"] == 0.7 and row["grasper@2s"] == 0.1
