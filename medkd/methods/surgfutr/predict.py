# SPDX-License-Identifier: Apache-2.0
"""Forecast with a SurgFUTR run: the ``forecasting`` predictor, CSV rows per analysed second, ``surgfutr predict``.

Every path (``medkd surgfutr predict``, the run and bundle predictors, the app's video view, the bundle's CSV
writer) goes through :func:`~medkd.methods.surgfutr.forecast.forecast_frames` on 1-fps RGB frames resized to the
run's ``data.frame_size``, and through :func:`forecast_row` for the CSV.

**Input.** 1-fps RGB frames, second 0 first: a uint8 array ``(T, H, W, 3)`` or an iterable of frames (arrays, or
:class:`~medkd.data.surgical.video.VideoFrame` tuples as :func:`~medkd.data.surgical.video.iter_video_frames`
yields them). Frames of any size are resized to ``data.frame_size``; greyscale ``(H, W)`` frames are repeated to
RGB, an alpha channel is dropped, float frames in [0, 1] are scaled to 0..255. A video shorter than the student's
window (``cfg.past_seconds``) still works: like every second before the window is full, its windows are padded
with the first frame (:func:`~medkd.methods.surgfutr.forecast.clip_index`), so the first seconds' forecasts see
less history and are less reliable.

**CSV columns** (:func:`forecast_columns`; stable names, one row per analysed second):

=================================  ===================================================================================
``second``                         the analysed second (0 = the video's first frame)
``time``                           the same as ``hh:mm:ss``
``phase``                          the current phase's name (empty when the run has no phase task)
``phase_confidence``               its softmax probability
``next_phase_min@<h>min``          minutes to the next phase at the first transition horizon ``h`` (capped at ``h``)
``rsd_min``                        remaining surgery duration, minutes
``<class>@<Δ>s``                   probability that presence class ``<class>`` (a tool, instrument or triplet) is
                                   present ``Δ`` seconds ahead, at the first presence horizon ``Δ``
``<event>@<h>s``                   probability that event ``<event>`` starts within ``h`` seconds, for every event
                                   horizon (in the run's order) and event
=================================  ===================================================================================

Example:
    >>> fc = {"phase": np.array([1]), "phase_prob": np.array([[0.2, 0.8]]), "phase_next@2min": np.array([1.5]),
    ...       "rsd": np.array([30.25]), "presence@1s": np.array([[0.9, 0.1]]), "events@5s": np.array([[0.3]])}
    >>> classes = {"phase_names": ["prep", "dissect"], "presence_names": ["Grasper", "Hook"], "event_names": ["clip"]}
    >>> horizons = {"transition_horizons_min": [2.0], "presence_deltas_s": [1], "event_horizons_s": [5]}
    >>> forecast_row(fc, 0, classes, horizons)
    {'second': 0, 'time': '00:00:00', 'phase': 'dissect', 'phase_confidence': 0.8, 'next_phase_min@2min': 1.5, \
'rsd_min': 30.25, 'Grasper@1s': 0.9, 'Hook@1s': 0.1, 'clip@5s': 0.3}
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medkd.errors import DataError

__all__ = [
    "FRAME_SUFFIXES",
    "VIDEO_SUFFIXES",
    "forecast_columns",
    "forecast_csv",
    "forecast_row",
    "horizons_of",
    "load_run_predictor",
    "predict_video",
    "read_video_input",
    "to_frames",
]

logger = logging.getLogger(__name__)

#: frame images of a CholecT50-style folder (``000000.png``, ``000001.png``, ... one per second)
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
#: video files the bundle workflow picks up (any file OpenCV decodes works with :func:`predict_video`)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")


# ---- frames ---------------------------------------------------------------------------------------------------------
def _rgb_uint8(frame: Any) -> np.ndarray:
    """One frame as uint8 ``(H, W, 3)`` RGB (greyscale repeated, alpha dropped, floats in [0, 1] scaled)."""
    frame = getattr(frame, "image", frame)  # a VideoFrame tuple
    array = np.asarray(frame)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"a frame must be (H, W, 3) RGB or (H, W) greyscale, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if array.size and np.nanmax(array) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).round().astype(np.uint8)
    return array


def to_frames(data: np.ndarray | Iterable[Any], size: Sequence[int]) -> np.ndarray:
    """1-fps frames as the student takes them: uint8 ``(T, height, width, 3)`` with ``size = (height, width)``.

    Args:
        data: an array ``(T, H, W[, C])`` or an iterable of frames (see the module docstring).
        size: ``(height, width)`` (the run's ``data.frame_size``).

    Raises:
        ValueError: no frame, or a frame that is not RGB or greyscale.

    Example:
        >>> to_frames(np.zeros((5, 48, 64, 3), np.uint8), (32, 32)).shape
        (5, 32, 32, 3)
    """
    from medkd.data.surgical.video import resize_frame

    height, width = (int(s) for s in size)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4 and data.shape[1:] == (
            height, width, 3):
        return np.ascontiguousarray(data)
    frames = [resize_frame(_rgb_uint8(frame), (height, width)) for frame in data]
    if not frames:
        raise ValueError("no frames to forecast from (an empty video)")
    return np.stack(frames)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def read_video_input(video: str | Path, size: Sequence[int]) -> np.ndarray:
    """A video file decoded at 1 fps, or a folder of 1-fps frame images (CholecT50's ``000000.png``, ... in name
    order), as uint8 ``(T, height, width, 3)`` RGB.

    Raises:
        DataError: naming the file or folder: missing, not decodable, or a folder without frame images.
    """
    from medkd.data.surgical.video import read_frame_image, read_video_frames

    path = Path(video)
    size = (int(size[0]), int(size[1]))
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise DataError(path, f"holds no frame images ({', '.join(FRAME_SUFFIXES)}); pass a video file or a "
                                  "folder of 1-fps frames (000000.png, 000001.png, ...)")
        return np.stack([read_frame_image(f, size) for f in files])
    if not path.exists():
        raise DataError(path, "video not found (a video file or a folder of 1-fps frame images)")
    return read_video_frames(path, fps=1.0, size=size)


# ---- the predictor --------------------------------------------------------------------------------------------------
def _layout_dict(layout: Any) -> dict[str, Any]:
    return layout.to_dict()


def _class_names(classes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(classes[k]) if isinstance(classes.get(k), (list, tuple)) else classes.get(k))
            for k in ("phase_names", "presence_names", "event_names", "tool_names", "tool_of", "presence_key")}


def load_run_predictor(run: str | Path, device: Any = None, *, trust: bool = False) -> Any:
    """The ``Method.load_predictor`` of ``surgfutr``: the run's student as a ``forecasting`` predictor.

    ``predictor(frames)`` takes 1-fps RGB frames (module docstring) and returns
    :func:`~medkd.methods.surgfutr.forecast.forecast_frames`'s dict (first axis: the analysed second). ``labels``
    are the phases (label value = phase id + 1); ``metadata`` holds ``classes`` (phase, presence, event and tool
    names), ``horizons`` (the head layout), ``frame_size``, ``fps`` (1.0) and ``past_seconds`` (the window).

    Raises:
        DataError: not a SurgFUTR run, or no checkpoint.
    """
    from medkd.inference import Predictor, file_sha256, resolve_device
    from medkd.io.labels import labels_from_names
    from medkd.methods.surgfutr.forecast import forecast_frames, forecast_keys
    from medkd.methods.surgfutr.runs import METHOD, load_run_config, load_student

    del trust  # a run folder holds no code
    cfg = load_run_config(run)
    target = resolve_device(device if device is not None else cfg.device)
    student, cfg, classes, path = load_student(run, target)
    size = tuple(int(s) for s in cfg.data.frame_size)
    layout = classes.layout

    def forecast(data: Any) -> dict[str, np.ndarray]:
        return forecast_frames(student, to_frames(data, size), device=target)

    return Predictor(
        kind="forecasting", name=Path(run).resolve().name, version=f"run:{path.parent.name}/{path.stem}",
        weights_sha256=file_sha256(path), labels=labels_from_names(["none", *classes["phase_names"]]),
        run=forecast, source=Path(run),
        metadata={"method": METHOD, "variant": cfg.variant.value, "task": "surgical future-state forecasting",
                  "frame_size": list(size), "fps": 1.0, "past_seconds": cfg.past_seconds,
                  "classes": _class_names(classes), "horizons": _layout_dict(layout),
                  "forecast_keys": forecast_keys(layout)},
    )


# ---- CSV rows -------------------------------------------------------------------------------------------------------
def horizons_of(source: Any) -> dict[str, tuple[Any, ...]]:
    """``transition_horizons_min``, ``presence_deltas_s`` and ``event_horizons_s`` of a
    :class:`~medkd.methods.surgfutr.config.SurgFUTRConfig` (its ``tasks``), a ``TasksConfig``, a ``HeadLayout`` or a
    mapping with those keys (a run's ``classes["layout"]``, a predictor's ``metadata["horizons"]``).

    Example:
        >>> horizons_of({"transition_horizons_min": [2], "presence_deltas_s": [3, 1], "event_horizons_s": []})
        {'transition_horizons_min': (2.0,), 'presence_deltas_s': (3, 1), 'event_horizons_s': ()}
    """
    source = getattr(source, "tasks", source)
    get = source.get if isinstance(source, Mapping) else (lambda key, default=(): getattr(source, key, default))
    return {"transition_horizons_min": tuple(float(h) for h in get("transition_horizons_min", ())),
            "presence_deltas_s": tuple(int(d) for d in get("presence_deltas_s", ())),
            "event_horizons_s": tuple(int(h) for h in get("event_horizons_s", ()))}


def _resolve(classes: Mapping[str, Any], cfg: Any) -> dict[str, tuple[Any, ...]]:
    if cfg is None:
        if "layout" not in classes:
            raise ValueError("forecast rows need the horizons: pass cfg, or classes with a 'layout'")
        cfg = classes["layout"]
    return horizons_of(cfg)


def forecast_columns(classes: Mapping[str, Any], cfg: Any = None) -> list[str]:
    """The CSV header (module docstring) for a run's ``classes`` (``classes.json``, or a predictor's
    ``metadata["classes"]``) and horizons (``cfg``: see :func:`horizons_of`; None: ``classes["layout"]``)."""
    hz = _resolve(classes, cfg)
    columns = ["second", "time", "phase", "phase_confidence"]
    if hz["transition_horizons_min"]:
        columns.append(f"next_phase_min@{hz['transition_horizons_min'][0]:g}min")
    columns.append("rsd_min")
    if hz["presence_deltas_s"]:
        columns += [f"{name}@{hz['presence_deltas_s'][0]}s" for name in classes.get("presence_names") or ()]
    for h in hz["event_horizons_s"]:
        columns += [f"{name}@{h}s" for name in classes.get("event_names") or ()]
    return columns


def _hms(second: int) -> str:
    minutes, s = divmod(int(second), 60)
    h, m = divmod(minutes, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def forecast_row(fc: Mapping[str, Any], t: int, classes: Mapping[str, Any], cfg: Any = None, *,
                 second: int | None = None) -> dict[str, Any]:
    """One CSV row: the forecasts at analysed second ``t`` (the columns of :func:`forecast_columns`).

    Args:
        fc: :func:`~medkd.methods.surgfutr.forecast.forecast_frames`'s dict (first axis: the analysed second).
        t: index into ``fc``'s first axis (the second, for forecasts of a whole video from its start).
        classes: ``phase_names``, ``presence_names``, ``event_names`` (a run's ``classes.json``).
        cfg: the horizons (see :func:`horizons_of`); None: ``classes["layout"]``.
        second: the video second the row is labelled with (default ``t``; a live stream passes one step's
            forecasts, ``t = 0``, and the second it analysed).

    Returns:
        Column -> value; probabilities rounded to 4 decimals, minutes to 3; an empty string for a forecast the run
        does not make (no phase task).
    """
    hz = _resolve(classes, cfg)
    label = int(t if second is None else second)
    row: dict[str, Any] = {"second": label, "time": _hms(label), "phase": "", "phase_confidence": ""}
    phases = list(classes.get("phase_names") or ())
    if "phase_prob" in fc and phases:
        prob = np.asarray(fc["phase_prob"][t], np.float64)
        k = int(np.asarray(fc["phase"][t])) if "phase" in fc else int(prob.argmax())
        row["phase"] = phases[k] if 0 <= k < len(phases) else str(k)
        row["phase_confidence"] = round(float(prob[k]), 4)
    if hz["transition_horizons_min"]:
        h = hz["transition_horizons_min"][0]
        value = fc.get(f"phase_next@{h:g}min")
        row[f"next_phase_min@{h:g}min"] = round(float(value[t]), 3) if value is not None else ""
    row["rsd_min"] = round(float(fc["rsd"][t]), 3) if "rsd" in fc else ""
    if hz["presence_deltas_s"]:
        d = hz["presence_deltas_s"][0]
        values = fc.get(f"presence@{d}s")
        for i, name in enumerate(classes.get("presence_names") or ()):
            row[f"{name}@{d}s"] = round(float(values[t][i]), 4) if values is not None else ""
    for h in hz["event_horizons_s"]:
        values = fc.get(f"events@{h}s")
        for i, name in enumerate(classes.get("event_names") or ()):
            row[f"{name}@{h}s"] = round(float(values[t][i]), 4) if values is not None else ""
    return row


def forecast_csv(fc: Mapping[str, Any], classes: Mapping[str, Any], cfg: Any = None, *,
                 comment: str | None = None) -> str:
    """Every analysed second of ``fc`` as CSV text (header :func:`forecast_columns`), ``comment`` as a first ``#``
    line when given (the app's research-use disclaimer)."""
    columns = forecast_columns(classes, cfg)
    steps = len(next(iter(fc.values()))) if fc else 0
    buffer = io.StringIO()
    if comment:
        buffer.write(f"# {comment}\n")
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(forecast_row(fc, t, classes, cfg) for t in range(steps))
    return buffer.getvalue()


def predict_video(run: str | Path, video: str | Path, out_csv: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Forecast every analysed second of a video file (or a folder of 1-fps frame images) into a CSV.

    The video is decoded at 1 fps (second ``t`` is the first frame at or after ``t`` s) and resized to the run's
    ``data.frame_size``; the forecasts are offline but causal (second ``t`` sees frames ``<= t`` only). A video
    shorter than the student's window works: its windows are padded with the first frame (module docstring).
    The CSV (columns: module docstring) is written atomically: an interrupted run leaves no partial file.

    Args:
        run: a SurgFUTR run folder.
        video: a video file OpenCV decodes (MP4, AVI, ...) or a folder of frame images, one per second.
        out_csv: the CSV file to write.
        device: ``cpu`` (default), ``cuda``, ``auto``, ...

    Returns:
        ``{"seconds": analysed seconds, "output": the CSV path, "wall_s": seconds taken}``.

    Raises:
        DataError: not a SurgFUTR run or no checkpoint; the video is missing or cannot be decoded (the message
            names it); a folder without frame images.
    """
    from medkd.inference import resolve_device
    from medkd.io.atomic import write_text_atomic
    from medkd.methods.surgfutr.forecast import forecast_frames
    from medkd.methods.surgfutr.runs import load_student

    start = time.perf_counter()
    student, cfg, classes, _ = load_student(run, resolve_device(device))
    frames = read_video_input(video, cfg.data.frame_size)
    fc = forecast_frames(student, frames)
    out = Path(out_csv)
    write_text_atomic(out, forecast_csv(fc, classes, cfg))
    wall = time.perf_counter() - start
    logger.info("%s: %d analysed second(s) forecast in %.2f s -> %s", video, len(frames), wall, out)
    return {"seconds": int(len(frames)), "output": str(out), "wall_s": round(wall, 3)}
