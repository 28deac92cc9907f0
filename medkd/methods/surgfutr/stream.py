# SPDX-License-Identifier: Apache-2.0
"""Causal streaming forecasts with the SurgFUTR student (spec ``surgfutr.md`` §8): one frame in, one forecast out.

:class:`StreamForecaster` keeps what the student needs of the past and nothing of the future:

* each analysed frame is encoded **once** (:meth:`~medkd.methods.surgfutr.model.Student.frame_features`) into a ring
  buffer of the last T frame features;
* the clip feature of the T frames ending now (:meth:`~medkd.methods.surgfutr.model.Student.clip_features`) goes
  into a ring of the last ``(L - 1) * s + 1`` clip features;
* the window of L clips (stride s) ending now is gathered as :func:`~medkd.methods.surgfutr.forecast.window_index`
  does (clips before the start repeat the first one, frames before the start repeat the first frame) and
  :meth:`~medkd.methods.surgfutr.model.Student.forward_window` runs at batch 1.

So the forecast at second ``t`` equals :func:`~medkd.methods.surgfutr.forecast.forecast_frames` at ``t`` (to float
rounding), and frame ``t + 1`` is not even decoded yet when it is computed. ActDyn's GRU is re-run over the L
window nodes at every step rather than advanced by one step with a kept hidden state: the trained GRU starts every
window from zero, and a kept state would drift from the offline output (L = 8 nodes cost microseconds).

Analysis rates (:class:`Analysis`): ``1fps`` (default; CAMMA convention, what the student is trained on) pushes the
1-fps frames (frame ``25 t`` of a 25-fps video); ``frame`` pushes every decoded frame and updates at the video's
rate, each update using the frames 1, 2, ... s before it (its forecasts at whole seconds equal the 1-fps ones).

:func:`stream_forecasts` drives it from a video file or a capture device, printing or writing one CSV row per
analysed second as it goes (:func:`~medkd.methods.surgfutr.predict.forecast_row`, the CSV columns of
``medkd surgfutr predict``); ``medkd surgfutr stream`` is its command line.

Example:
    >>> import torch
    >>> from medkd.config import config_from_dict
    >>> from medkd.methods.surgfutr.config import SurgFUTRConfig
    >>> from medkd.methods.surgfutr.modules import HeadLayout
    >>> from medkd.methods.surgfutr.model import Student
    >>> cfg = config_from_dict(SurgFUTRConfig, {"model": {"feature_dim": 32, "state_dim": 16, "width": 8}})
    >>> stream = StreamForecaster(Student(cfg, HeadLayout(3, 2, 1, (1,), (5,), (2.0,))).eval(), (32, 32))
    >>> fc = stream.push(np.zeros((32, 32, 3), np.uint8))
    >>> fc["phase_prob"].shape, fc["rsd"].shape, stream.steps
    ((1, 3), (1,), 1)
"""

from __future__ import annotations

import csv
import difflib
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from medkd.methods.surgfutr.forecast import to_forecasts

__all__ = ["Analysis", "StreamForecaster", "stream_forecasts"]

logger = logging.getLogger(__name__)


class Analysis(StrEnum):
    """How often :func:`stream_forecasts` forecasts: every 1-fps second, or every decoded frame."""

    ONE_FPS = "1fps"
    FRAME = "frame"


def _analysis(value: str | Analysis) -> Analysis:
    try:
        return Analysis(value)
    except ValueError:
        options = [a.value for a in Analysis]
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"analysis must be one of {options}, got {value!r}{hint}") from None


class StreamForecaster:
    """Causal, frame-by-frame forecasts of a :class:`~medkd.methods.surgfutr.model.Student` (module docstring).

    Each :meth:`push` takes the next analysed frame, RGB uint8 ``(H, W, 3)`` already resized to the run's
    ``data.frame_size``, and returns the forecasts at that step as :func:`~medkd.methods.surgfutr.forecast.to_forecasts`
    names them, **each array with a leading axis of 1** (``rsd`` ``(1,)``, ``phase_prob`` ``(1, P)``, ...), so
    concatenating the pushes of a video along axis 0 gives :func:`~medkd.methods.surgfutr.forecast.forecast_frames`'s
    arrays.

    Args:
        student: the student, in ``eval()`` mode (BatchNorm and dropout must not depend on the batch).
        frame_size: ``(height, width)`` every pushed frame must have; ``None``: whatever the first frame has.
        rate: analysed frames per second of video: 1 (1-fps analysis) or the video's frame rate (per-frame mode;
            a clip is then the frame now and the frames 1, 2, ... s before it).
        start_second: the elapsed seconds of the first pushed frame (0: the video's start).
        device: where to run (default: the student's device).

    Raises:
        ValueError: a student in training mode, or a rate below 1.
    """

    def __init__(self, student: Any, frame_size: tuple[int, int] | None = None, *, rate: int = 1,
                 start_second: float = 0.0, device: torch.device | str | None = None) -> None:
        if student.training:
            raise ValueError("the student must be in eval() mode (BatchNorm would use the batch's statistics)")
        if int(rate) < 1:
            raise ValueError(f"rate must be a positive whole number of frames per second, got {rate!r}")
        self.student = student
        self.frame_size = None if frame_size is None else (int(frame_size[0]), int(frame_size[1]))
        self.rate = int(rate)
        self.start_second = float(start_second)
        self.device = torch.device(device) if device is not None else next(student.parameters()).device
        t, window, stride = student.clip_frames, student.window, student.clip_stride
        # ring lengths in analysed frames: the T frames of a clip, and the clips of a window
        self._frame_slots = (t - 1) * self.rate + 1
        self._clip_slots = (window - 1) * stride * self.rate + 1
        self._frame_offsets = [(t - 1 - k) * self.rate for k in range(t)]  # oldest first
        self._clip_offsets = [(window - 1 - k) * stride * self.rate for k in range(window)]
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next push is the video's first analysed frame."""
        self.steps = 0
        self._frames: torch.Tensor | None = None  # (frame slots, D) ring of frame features
        self._clips: torch.Tensor | None = None  # (clip slots, D) ring of clip features

    @property
    def past_seconds(self) -> int:
        """Seconds of video the window covers (``(L - 1) * s + T``); earlier steps see padded windows."""
        return (self.student.window - 1) * self.student.clip_stride + self.student.clip_frames

    def _check(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frame)
        if x.ndim != 3 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"push takes one RGB uint8 frame (H, W, 3), got {tuple(x.shape)} {x.dtype}")
        if self.frame_size is None:
            self.frame_size = (int(x.shape[0]), int(x.shape[1]))
        elif tuple(x.shape[:2]) != self.frame_size:
            raise ValueError(f"frames must be resized to {self.frame_size} (the run's data.frame_size), "
                             f"got {tuple(x.shape[:2])}")
        return x

    @torch.inference_mode()
    def push(self, frame: np.ndarray | torch.Tensor, elapsed_s: float | None = None) -> dict[str, np.ndarray]:
        """Add the next analysed frame and forecast at it.

        Args:
            frame: RGB uint8 ``(H, W, 3)``, resized to ``frame_size``.
            elapsed_s: the frame's elapsed seconds since the start of surgery (default: ``start_second`` +
                pushes so far / ``rate``).

        Returns:
            The forecasts at this step (class docstring), every array with a leading axis of 1.

        Raises:
            ValueError: a frame that is not RGB uint8 ``(H, W, 3)`` of ``frame_size``.
        """
        x = self._check(frame).to(self.device).permute(2, 0, 1)  # (3, H, W)
        step = self.steps
        feat = self.student.frame_features(x[None, None])[0]  # (1, D)
        if self._frames is None:  # before the start: every past slot holds the first frame (clamp at frame 0)
            self._frames = feat.expand(self._frame_slots, -1).clone()
        self._frames[step % self._frame_slots] = feat[0]
        slots = [(step - o) % self._frame_slots for o in self._frame_offsets]
        clip = self.student.clip_features(self._frames[slots][None])  # (1, D)
        if self._clips is None:  # before the start: every past clip is the first one (clamp at clip 0)
            self._clips = clip.expand(self._clip_slots, -1).clone()
        self._clips[step % self._clip_slots] = clip[0]
        slots = [(step - o) % self._clip_slots for o in self._clip_offsets]
        seconds = self.start_second + step / self.rate if elapsed_s is None else float(elapsed_s)
        elapsed = torch.tensor([seconds], dtype=torch.float32, device=self.device) / 60.0
        out = self.student.forward_window(self._clips[slots][None], elapsed)
        self.steps = step + 1
        return to_forecasts(out, self.student.layout, elapsed)


def _source(source: str | Path | int) -> str | Path | int:
    """A string of digits is a capture-device index."""
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return source


def stream_forecasts(
    run: str | Path,
    source: str | Path | int,
    *,
    out: str | Path | None = None,
    device: str = "cpu",
    analysis: str | Analysis = Analysis.ONE_FPS,
    max_seconds: float | None = None,
    on_forecast: Callable[[float, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Stream a video file, capture device or stream through a run's student, one forecast per analysed second.

    Frames are decoded lazily with :func:`~medkd.data.surgical.video.iter_video_frames` (at 1 fps, or every frame
    with ``analysis="frame"``), resized to the run's ``data.frame_size`` and pushed to a :class:`StreamForecaster`;
    each forecast becomes a :func:`~medkd.methods.surgfutr.predict.forecast_row` (``predict``'s CSV columns), handed to ``on_forecast(second, row)`` and appended to the CSV
    ``out`` (flushed per row, so it can be followed while the video plays).

    Args:
        run: a trained SurgFUTR run folder.
        source: a video file, a capture-device index (an int, or a string of digits) or a stream URL.
        out: CSV file to write (``None``: none).
        device: torch device.
        analysis: ``1fps`` (default) or ``frame`` (:class:`Analysis`).
        max_seconds: stop before this video time (seconds); ``None``: the end of the video.
        on_forecast: called with ``(second, row)`` for every forecast.

    Returns:
        ``{"source", "analysis", "seconds" (forecasts made), "frames_decoded" (video frames read, up to the last
        analysed one), "wall_s" (from opening the video to the last row, model loading excluded), "fps" (decoded
        video frames per wall second), "latency_ms": {"p50", "p95", "max"} (per forecast, from the decoded, resized
        frame to its row), "csv"}``.

    Raises:
        DataError: naming the run or the video, when the run cannot be loaded or the video cannot be opened or
            decoded.
        ValueError: an unknown ``analysis``.
    """
    from medkd.data.surgical.video import iter_video_frames
    from medkd.methods.surgfutr.predict import forecast_row
    from medkd.methods.surgfutr.runs import load_student

    mode = _analysis(analysis)
    student, cfg, classes, _ = load_student(run, device)
    source = _source(source)
    size = tuple(int(v) for v in cfg.data.frame_size)
    rate_fps = 1.0 if mode is Analysis.ONE_FPS else None
    frames: Iterator[Any] = iter_video_frames(source, fps=rate_fps, size=size, stop=max_seconds)
    latencies: list[float] = []
    decoded, stream = 0, None
    handle: IO[str] | None = None
    writer: csv.DictWriter | None = None
    t0 = time.perf_counter()
    try:
        rate = 1
        if mode is Analysis.FRAME:  # updates per second = the video's rate, from its first two time stamps
            head = list(itertools.islice(frames, 2))
            rate = max(1, round(1.0 / (head[1].time - head[0].time))) if len(head) == 2 else 1
            frames = itertools.chain(head, frames)
        for frame in frames:
            tick = time.perf_counter()
            if stream is None:
                stream = StreamForecaster(student, size, rate=rate, device=device)
            second: float = frame.index if mode is Analysis.ONE_FPS else round(frame.time, 6)
            fc = stream.push(frame.image, elapsed_s=second)
            row = forecast_row(fc, 0, classes, cfg, second=second)
            latencies.append(time.perf_counter() - tick)
            decoded = frame.source_index + 1
            if out is not None:
                if writer is None:
                    Path(out).parent.mkdir(parents=True, exist_ok=True)
                    handle = open(out, "w", newline="", encoding="utf-8")  # noqa: SIM115  (closed below)
                    writer = csv.DictWriter(handle, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                handle.flush()  # type: ignore[union-attr]
            if on_forecast is not None:
                on_forecast(second, row)
    finally:
        if handle is not None:
            handle.close()
    wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000.0
    summary = {
        "source": str(source), "analysis": mode.value, "seconds": len(latencies), "frames_decoded": decoded,
        "wall_s": round(wall, 4), "fps": round(decoded / wall, 2) if wall > 0 else None,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
                       "p95": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
                       "max": round(float(lat.max()), 3) if lat.size else None},
        "csv": str(out) if out is not None else None,
    }
    logger.debug("streamed %d forecasts from %s: %.0f frames/s, latency p50 %.1f ms", summary["seconds"], source,
                summary["fps"] or 0.0, summary["latency_ms"]["p50"] or 0.0)
    return summary
