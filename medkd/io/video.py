# SPDX-License-Identifier: Apache-2.0
"""Video uploads: :class:`LoadedVideo` and decoding an MP4/MOV/AVI file with OpenCV into RGB frames.

:func:`read_video` decodes at the file's frame rate or a lower ``fps`` (frames dropped evenly), within the upload's
frame budget (:attr:`~medkd.io.upload_limits.UploadLimits.max_video_frames`, and the decoding memory of
:attr:`~medkd.io.upload_limits.UploadLimits.max_decode_bytes`): the first frames are kept and the note says so.
:func:`medkd.io.upload.load_upload` calls it for an upload sniffed as video.

Example:
    >>> clip = LoadedVideo(np.zeros((4, 8, 8, 3), np.uint8), fps=25.0, source_fps=25.0, name="clip.mp4")
    >>> clip.input_kind, clip.info()["duration"], clip.array is clip.frames
    ('video', '0.16 s', True)
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkd.errors import DataError
from medkd.io.upload_limits import check_decode, limit_hint
from medkd.io.upload_sniff import video_container
from medkd.io.zip_extract import UploadFolder

__all__ = ["LoadedVideo", "read_video"]

logger = logging.getLogger(__name__)


@dataclass
class LoadedVideo:
    """A decoded video upload: RGB frames at a known rate.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB.
        fps: frames per second of ``frames`` (the file's rate, or the rate asked for when frames were dropped).
        source_fps: the file's own frame rate.
        name: the uploaded file's name.
        note: what the user should know (frames beyond the budget not read, files ignored), ``""`` if nothing.
        n_files: files the video was read from (1).
        folder: the fresh folder under ``workdir`` that holds the upload's files.
        kind: ``"video"`` (the file kind, as :attr:`medkd.io.upload.LoadedImage.kind`).
    """

    frames: np.ndarray
    fps: float
    source_fps: float
    name: str
    note: str = ""
    n_files: int = 1
    folder: Path | None = None
    kind: str = "video"
    modality: str = ""
    dicom: None = field(default=None, repr=False)
    ground_truth: None = field(default=None, repr=False)

    @property
    def input_kind(self) -> str:
        """``"video"``."""
        return "video"

    @property
    def array(self) -> np.ndarray:
        """The frames (the same array as :attr:`frames`)."""
        return self.frames

    def info(self) -> dict[str, str]:
        """Technical metadata for display: ``kind``, ``input``, ``frames``, ``size``, ``frame rate``, ``duration``,
        ``files`` and ``note`` when there is one."""
        t, h, w = self.frames.shape[:3]
        out = {
            "kind": "video",
            "input": self.input_kind,
            "frames": str(t),
            "size": f"{h} × {w} (RGB)",
            "frame rate": f"{self.fps:.4g} fps (file: {self.source_fps:.4g} fps)",
            "duration": f"{t / self.fps:.4g} s" if self.fps > 0 else "unknown",
            "files": str(self.n_files),
        }
        if self.note:
            out["note"] = self.note
        return out


def read_video(
    path: Path, shown: str, name: str, notes: list[str], upload: UploadFolder, *, fps: float | None = None
) -> LoadedVideo:
    """Decode a video with OpenCV: RGB frames at ``fps`` (default the file's rate), at most the frame budget.

    Args:
        path: the uploaded file (renamed here with its container's suffix, for OpenCV).
        shown: the file's name as the user called it, for messages.
        name: the upload's display name (:attr:`LoadedVideo.name`).
        notes: what the user should know so far; the video's own notes are appended.
        upload: the upload's folder and budgets.
        fps: frame rate to decode at (frames dropped evenly; never above the file's); default the file's.

    Returns:
        The frames ``(T, H, W, 3)`` uint8 RGB, with ``note`` joined from ``notes``.

    Raises:
        DataError: naming ``shown``: OpenCV missing, a bad ``fps``, a video that cannot be opened or holds no
            decodable frame, frames beyond the decoding limits or changing size.
    """
    try:
        import cv2
    except ImportError:  # a core dependency; a broken install still gets a message, not a traceback
        raise DataError(shown, "this server cannot decode video (OpenCV is missing: pip install "
                               "opencv-python-headless)") from None  # fmt: skip
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise DataError(shown, f"the frame rate to decode at must be positive, got {fps!r}")
    with path.open("rb") as f:
        container = video_container(f.read(16)) or "mp4"
    target = path.with_name(path.name + f".{container}")
    path.rename(target)
    upload.shown[str(target)] = shown
    capture = cv2.VideoCapture(str(target))
    try:
        if not capture.isOpened():
            raise DataError(shown, "the video cannot be opened (damaged, or a codec this server cannot decode)")
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(source_fps) and 0 < source_fps <= 1000):
            notes.append("the video does not state its frame rate; 25 fps assumed")
            source_fps = 25.0
        rate = min(fps, source_fps) if fps is not None else source_fps
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_decode(shown, "video frame", (height, width), 3, upload.limits)
        per_frame = max(width * height * 3, 1)
        budget = min(upload.limits.max_video_frames, max(upload.limits.max_decode_bytes // (2 * per_frame), 1))
        frames, index, more = _read_frames(cv2, capture, shown, (height, width), rate / source_fps, budget)
    finally:
        capture.release()
    if not frames:
        raise DataError(shown, "the video holds no frame that can be decoded (damaged, or an unsupported codec)")
    if more:
        seconds = index / source_fps
        notes.append(f"only the first {len(frames):,} frames ({seconds:.1f} s) were read; "
                     f"{limit_hint('max_video_frames', f'{upload.limits.max_video_frames:,} frames')}")  # fmt: skip
    logger.info("video upload: %d frames of %d read at %.3g fps", len(frames), index, rate)
    return LoadedVideo(np.stack(frames), rate, source_fps, name, note="; ".join(notes), folder=upload.folder)


def _read_frames(
    cv2: Any, capture: Any, name: str, size: tuple[int, int], keep: float, budget: int
) -> tuple[list[np.ndarray], int, bool]:
    """Grab every frame, keep (decode) those where ``index * keep`` reaches a new whole number; stop at ``budget``.

    Returns:
        ``(frames, frames grabbed, whether a frame to keep was left unread)``.
    """
    frames: list[np.ndarray] = []
    slot, index = -1, 0
    while capture.grab():
        now = int(index * keep + 1e-9)
        index += 1
        if now == slot:
            continue
        if len(frames) >= budget:
            return frames, index - 1, True
        ok, frame = capture.retrieve()
        if not ok or frame is None:
            break
        if frame.ndim != 3 or frame.shape[:2] != size or frame.shape[2] != 3:
            raise DataError(name, f"the video's frames change size or colour layout (frame {index}: {frame.shape})")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        slot = now
    return frames, index, False

