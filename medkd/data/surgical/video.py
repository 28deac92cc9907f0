# SPDX-License-Identifier: Apache-2.0
"""Surgical video decoding with OpenCV at a target frame rate, and :class:`SurgicalVideo`, one video at 1 fps.

Analysis runs at 1 fps (CAMMA convention, spec ``surgfutr.md`` §3). :func:`iter_video_frames` decodes a file (or a
capture device) lazily, frame by frame, keeping frame ``i`` of a ``F``-fps source when ``floor(i * fps / F)``
reaches a new whole number: at 1 fps from 25 fps that is frames 0, 25, 50, ..., exactly the frames that Cholec80's
``frame % 25 == 0`` rule aligns with the annotations. It yields :class:`VideoFrame` tuples, so the same iterator feeds
offline decoding (:func:`read_video_frames`) and streaming. :func:`probe_video` reads the header (rate, frame count,
size) without decoding.

:class:`SurgicalVideo` is what the Cholec80 and CholecT50 readers return: the frame source (an MP4 file, or a folder
of 1-fps PNGs), the number of labelled seconds ``N`` and per-second label arrays whose first axis is ``N``.

Example:
    >>> import tempfile, pathlib, cv2
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "clip.mp4"
    >>> writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (32, 24))
    >>> for i in range(60):
    ...     _ = writer.write(np.full((24, 32, 3), 4 * i, np.uint8))
    >>> writer.release()
    >>> info = probe_video(path)
    >>> info.fps, info.frame_count, info.num_seconds, (info.height, info.width)
    (25.0, 60, 3, (24, 32))
    >>> [(f.index, f.source_index) for f in iter_video_frames(path, fps=1.0)]
    [(0, 0), (1, 25), (2, 50)]
    >>> read_video_frames(path, fps=1.0, size=(12, 16)).shape
    (3, 12, 16, 3)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medkd.errors import DataError

__all__ = [
    "SurgicalKeys",
    "VideoInfo",
    "VideoFrame",
    "SurgicalVideo",
    "probe_video",
    "frames_at_rate",
    "iter_video_frames",
    "read_video_frames",
    "read_frame_image",
    "resize_frame",
    "is_live",
]

logger = logging.getLogger(__name__)

#: frame rate assumed for a capture device that does not state one
_DEFAULT_DEVICE_FPS = 25.0


class SurgicalKeys(StrEnum):
    """Keys of :attr:`SurgicalVideo.labels` (per-second arrays, first axis ``N``)."""

    PHASE = "phase"  # int64 (N,), index into class_names["phase"]
    TOOL = "tool"  # uint8 (N, 7), Cholec80 tool presence
    TRIPLET = "triplet"  # uint8 (N, K_ivt), CholecT50 multi-hot
    INSTRUMENT = "instrument"  # uint8 (N, 6)
    VERB = "verb"  # uint8 (N, 10)
    TARGET = "target"  # uint8 (N, 15)


@dataclass(frozen=True)
class VideoInfo:
    """A video file's header.

    Attributes:
        path: the file.
        fps: frames per second the file states.
        frame_count: frames the file states (OpenCV's ``CAP_PROP_FRAME_COUNT``).
        height: rows of a frame.
        width: columns of a frame.
    """

    path: Path
    fps: float
    frame_count: int
    height: int
    width: int

    @property
    def duration(self) -> float:
        """Length in seconds (``frame_count / fps``)."""
        return self.frame_count / self.fps

    @property
    def num_seconds(self) -> int:
        """Frames at 1 fps: the frames at 0, 1, 2, ... s, the last (possibly partial) second included."""
        return frames_at_rate(self.frame_count, self.fps, 1.0)


class VideoFrame(NamedTuple):
    """One decoded frame.

    Attributes:
        index: the frame's slot at the target rate (at 1 fps: its second ``t``).
        source_index: the frame's index in the file.
        time: ``source_index / source fps``, in seconds.
        image: uint8 ``(H, W, 3)``, RGB (BGR with ``rgb=False``).
    """

    index: int
    source_index: int
    time: float
    image: np.ndarray


def frames_at_rate(frame_count: int, source_fps: float, fps: float) -> int:
    """Frames that :func:`iter_video_frames` keeps from ``frame_count`` frames at ``source_fps`` when asked for ``fps``.

    Example:
        >>> frames_at_rate(60, 25.0, 1.0), frames_at_rate(50, 25.0, 1.0), frames_at_rate(10, 25.0, 50.0)
        (3, 2, 10)
    """
    if frame_count <= 0:
        return 0
    if fps >= source_fps:
        return frame_count
    return int((frame_count - 1) * fps / source_fps + 1e-9) + 1


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:  # a core dependency; a broken install still gets a message, not a traceback
        raise DataError("opencv", "OpenCV is missing: pip install opencv-python-headless") from None
    return cv2


def is_live(source: str | Path | int) -> bool:
    """Whether ``source`` is a capture device (an index) or a stream URL (``rtsp://``, ``http://``, ...), not a file.

    Example:
        >>> is_live(0), is_live("rtsp://camera.local/stream"), is_live("video01.mp4")
        (True, True, False)
    """
    return isinstance(source, int) or (isinstance(source, str) and "://" in source)


def _open(cv2: Any, source: str | Path | int) -> Any:
    if not is_live(source):
        path = Path(source)
        if not path.is_file():
            raise DataError(path, "video file not found")
        source = str(path)
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise DataError(str(source), "OpenCV cannot open this video (damaged, not a video, or an unsupported codec)")
    return capture


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame rate, frame count and size from its header (nothing is decoded).

    Args:
        path: the video file.

    Returns:
        The :class:`VideoInfo`.

    Raises:
        DataError: naming the file, if it is missing, cannot be opened, or states no frame rate, frames or size.

    Example:
        >>> probe_video("missing.mp4")
        Traceback (most recent call last):
        ...
        medkd.errors.DataError: missing.mp4: video file not found
    """
    cv2 = _cv2()
    path = Path(path)
    capture = _open(cv2, path)
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    if not (math.isfinite(fps) and 0 < fps <= 1000):
        raise DataError(path, f"the video states no usable frame rate ({fps!r}); re-encode it with a fixed rate")
    if count <= 0 or width <= 0 or height <= 0:
        raise DataError(path, f"OpenCV cannot decode this video (it reports {count} frames of {width} x {height})")
    return VideoInfo(path, fps, count, height, width)


def resize_frame(image: np.ndarray, size: int | tuple[int, int] | None) -> np.ndarray:
    """Resize an ``(H, W[, C])`` image to ``size`` = ``(height, width)`` (an int: square); area averaging when
    shrinking, bilinear when enlarging; ``None`` or the same size returns ``image`` unchanged.

    Example:
        >>> resize_frame(np.zeros((48, 64, 3), np.uint8), (24, 32)).shape, resize_frame(np.zeros((8, 8)), 16).shape
        ((24, 32, 3), (16, 16))
    """
    if size is None:
        return image
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    if image.shape[:2] == (height, width):
        return image
    cv2 = _cv2()
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def iter_video_frames(
    source: str | Path | int,
    *,
    fps: float | None = 1.0,
    size: int | tuple[int, int] | None = None,
    start: float = 0.0,
    stop: float | None = None,
    rgb: bool = True,
) -> Iterator[VideoFrame]:
    """Decode a video lazily, one frame at a time, at ``fps`` (frames dropped evenly).

    Frame ``i`` is kept when ``floor(i * fps / F)`` reaches a new whole number (``F`` the file's rate), so at 1 fps
    second ``t`` is the first frame at or after ``t`` s (frame ``25 t`` at 25 fps). Frames before ``start`` are
    grabbed without conversion (OpenCV has no exact seek for every codec).

    Args:
        source: a video file, or an OpenCV device index for live streaming (a device that states no rate is taken
            as 25 fps).
        fps: the rate to decode at; ``None`` or a rate above the file's keeps every frame.
        size: resize each kept frame to ``(height, width)`` (an int: square); ``None`` keeps the file's size.
        start: first time (seconds) to yield.
        stop: stop before this time (seconds); ``None``: the end.
        rgb: RGB (default) or OpenCV's BGR.

    Yields:
        :class:`VideoFrame` ``(index, source_index, time, image)``; ``index`` counts slots at ``fps`` from the file's
        start (at 1 fps: the second).

    Raises:
        DataError: naming the file, if it is missing or cannot be opened, decodes to no frame, or its frames change
            size mid-way.
    """
    cv2 = _cv2()
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    capture = _open(cv2, source)
    name = str(source)
    try:
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(source_fps) and 0 < source_fps <= 1000):
            if not is_live(source):
                raise DataError(name, f"the video states no usable frame rate ({source_fps!r})")
            logger.warning("%s states no frame rate; %g fps assumed", source, _DEFAULT_DEVICE_FPS)
            source_fps = _DEFAULT_DEVICE_FPS
        keep = 1.0 if fps is None else min(fps / source_fps, 1.0)
        first_shape: tuple[int, ...] | None = None
        last_slot, i, yielded = -1, -1, 0
        while capture.grab():
            i += 1
            time = i / source_fps
            if stop is not None and time >= stop - 1e-9:
                break
            slot = int(i * keep + 1e-9)
            if slot == last_slot or time < start - 1e-9:
                last_slot = slot
                continue
            last_slot = slot
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                raise DataError(name, f"OpenCV cannot decode frame {i} (damaged video or unsupported codec)")
            if frame.ndim != 3 or frame.shape[2] != 3 or (first_shape is not None and frame.shape != first_shape):
                raise DataError(name, f"the video's frames change size or colour layout (frame {i}: {frame.shape})")
            first_shape = frame.shape
            if rgb:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            yielded += 1
            yield VideoFrame(slot, i, time, resize_frame(frame, size))
        if i < 0:
            raise DataError(name, "OpenCV decodes no frame from this video (damaged, or an unsupported codec)")
    finally:
        capture.release()


def read_video_frames(
    path: str | Path,
    *,
    fps: float | None = 1.0,
    size: int | tuple[int, int] | None = None,
    start: float = 0.0,
    stop: float | None = None,
) -> np.ndarray:
    """Decode a video file into one array: uint8 ``(T, H, W, 3)`` RGB at ``fps`` (see :func:`iter_video_frames`).

    Raises:
        DataError: as :func:`iter_video_frames`, and if no frame falls in ``[start, stop)``.

    Example:
        >>> read_video_frames("missing.mp4")
        Traceback (most recent call last):
        ...
        medkd.errors.DataError: missing.mp4: video file not found
    """
    frames = [f.image for f in iter_video_frames(path, fps=fps, size=size, start=start, stop=stop)]
    if not frames:
        raise DataError(path, f"no frame between {start:g} s and {stop if stop is not None else 'the end'} s")
    return np.stack(frames)


def read_frame_image(path: str | Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """Read one frame image (PNG, JPEG) as uint8 ``(H, W, 3)`` RGB, resized to ``size`` when given.

    Raises:
        DataError: naming the file, if it is missing or cannot be decoded.

    Example:
        >>> read_frame_image("000000.png")
        Traceback (most recent call last):
        ...
        medkd.errors.DataError: 000000.png: frame image not found
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "frame image not found")
    cv2 = _cv2()
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "OpenCV cannot decode this frame image (damaged or not an image)")
    return resize_frame(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size)


@dataclass(frozen=True)
class SurgicalVideo:
    """One surgical video at 1 fps and its per-second labels.

    Attributes:
        name: the video's id in its dataset (``video01``, ``VID01``).
        source: the frame source: a video file (Cholec80) or a folder of 1-fps frame images (CholecT50).
        num_seconds: ``N``, the labelled seconds; frame ``t`` of :meth:`frames` is second ``t``.
        labels: per-second arrays keyed by :class:`SurgicalKeys` values, first axis ``N``.
        class_names: class names per label key (index = position).
        dataset: ``cholec80``, ``cholect50``, ...
        frame_files: the 1-fps frame images, in time order (empty for a video file).
        source_fps: the frame rate of ``source`` (25 for Cholec80 videos, 1 for frame folders).
    """

    name: str
    source: Path
    num_seconds: int
    labels: Mapping[str, np.ndarray]
    class_names: Mapping[str, tuple[str, ...]]
    dataset: str = ""
    frame_files: tuple[Path, ...] = field(default=(), repr=False)
    source_fps: float = 1.0

    def __len__(self) -> int:
        return self.num_seconds

    def frames(
        self, *, size: int | tuple[int, int] | None = None, start: int = 0, stop: int | None = None
    ) -> Iterator[np.ndarray]:
        """Yield the RGB uint8 ``(H, W, 3)`` frames of seconds ``start .. stop - 1`` (default all ``N``), in order.

        Raises:
            DataError: naming the file, if the source cannot be decoded or ends before ``stop``.
        """
        stop = self.num_seconds if stop is None else min(int(stop), self.num_seconds)
        start = max(int(start), 0)
        if start >= stop:
            return
        if self.frame_files:
            for path in self.frame_files[start:stop]:
                yield read_frame_image(path, size)
            return
        expected = start
        for frame in iter_video_frames(self.source, fps=1.0, size=size, start=float(start), stop=float(stop)):
            expected = frame.index + 1
            yield frame.image
        if expected < stop:
            raise DataError(self.source, f"the video decodes to {expected} s at 1 fps, but its annotations cover "
                                         f"{self.num_seconds} s (truncated or damaged video)")  # fmt: skip

    def read_frames(
        self, *, size: int | tuple[int, int] | None = None, start: int = 0, stop: int | None = None
    ) -> np.ndarray:
        """:meth:`frames` stacked into uint8 ``(T, H, W, 3)``."""
        frames = list(self.frames(size=size, start=start, stop=stop))
        if not frames:
            raise DataError(self.source, f"no frame between second {start} and {stop}")
        return np.stack(frames)
