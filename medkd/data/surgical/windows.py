# SPDX-License-Identifier: Apache-2.0
"""Clip windows over 1-fps videos: causal windows of the past ending at ``t`` and future windows after it.

Notation (spec ``surgfutr.md`` §3): analysis at 1 fps; the causal window at anchor ``t`` holds ``past`` seconds
``t - (past - 1) * stride, ..., t - stride, t`` (never anything after ``t``); the future window holds ``future``
seconds starting at ``t + delta``. :class:`WindowSpec` computes both as index arrays, vectorised over anchors, and
lists the anchors of a video where both fit. A causal window that would reach before second 0 repeats second 0
(``pad="edge"``, so every second can be an anchor, as in online use) or makes ``t`` no anchor (``pad="none"``).
A video shorter than the whole span (past + gap + future) is a :class:`~medkd.errors.DataError` naming it.

Example:
    >>> spec = WindowSpec(past=4, stride=2, future=2, delta=3)
    >>> spec.past_indices(7).tolist(), spec.future_indices(7).tolist()
    ([1, 3, 5, 7], [10, 11])
    >>> spec.past_indices([0, 3]).tolist()
    [[0, 0, 0, 0], [0, 0, 1, 3]]
    >>> spec.anchors(12).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7]
    >>> WindowSpec(past=4, stride=2, pad="none").anchors(9).tolist()
    [6, 7, 8]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from medkd.errors import DataError

__all__ = ["PadMode", "WindowSpec", "gather_window", "window_samples"]


class PadMode(StrEnum):
    """How a causal window reaching before second 0 is handled."""

    EDGE = "edge"  # repeat second 0
    NONE = "none"  # such anchors are not listed


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """Causal and future windows at 1 fps.

    Attributes:
        past: seconds in the causal window, ``t`` included (>= 1).
        stride: seconds between the causal window's frames (>= 1).
        future: seconds in the future window (0: none).
        delta: the future window's first second is ``t + delta`` (>= 1).
        future_stride: seconds between the future window's frames (>= 1).
        pad: :class:`PadMode` (``"edge"`` or ``"none"``).
    """

    past: int = 16
    stride: int = 1
    future: int = 0
    delta: int = 1
    future_stride: int = 1
    pad: PadMode | str = PadMode.EDGE

    def __post_init__(self) -> None:
        if min(self.past, self.stride, self.delta, self.future_stride) < 1 or self.future < 0:
            raise ValueError(f"need past, stride, delta, future_stride >= 1 and future >= 0, got {self}")
        try:
            object.__setattr__(self, "pad", PadMode(self.pad))
        except ValueError:
            raise ValueError(f"pad must be one of {[m.value for m in PadMode]}, got {self.pad!r}") from None

    @property
    def past_span(self) -> int:
        """Seconds from the causal window's first frame to ``t``."""
        return (self.past - 1) * self.stride

    @property
    def future_span(self) -> int:
        """Seconds from ``t`` to the future window's last frame (0 without a future window)."""
        return self.delta + (self.future - 1) * self.future_stride if self.future else 0

    @property
    def span(self) -> int:
        """Seconds a video needs at least: the whole window, past through future."""
        return self.past_span + 1 + self.future_span

    def past_indices(self, t: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """Seconds of the causal window ending at ``t``: int64 ``(past,)``, or ``(len(t), past)`` for many anchors;
        indices before 0 become 0."""
        anchors = np.asarray(t, dtype=np.int64)
        offsets = np.arange(-self.past_span, 1, self.stride, dtype=np.int64)
        return np.maximum(anchors[..., None] + offsets, 0)

    def future_indices(self, t: int | Sequence[int] | np.ndarray, num_seconds: int | None = None) -> np.ndarray:
        """Seconds of the future window after ``t``: int64 ``(future,)`` or ``(len(t), future)``; clamped to
        ``num_seconds - 1`` when given."""
        anchors = np.asarray(t, dtype=np.int64)
        offsets = self.delta + np.arange(self.future, dtype=np.int64) * self.future_stride
        out = anchors[..., None] + offsets
        return np.minimum(out, num_seconds - 1) if num_seconds is not None else out

    def check(self, num_seconds: int, source: str | Path = "video") -> None:
        """Raise :class:`~medkd.errors.DataError` naming ``source`` if a video of ``num_seconds`` is shorter than
        :attr:`span`.

        Example:
            >>> WindowSpec(past=8, future=2, delta=5).check(10, "videos/video01.mp4")
            Traceback (most recent call last):
            ...
            medkd.errors.DataError: videos/video01.mp4: the video lasts 10 s at 1 fps, shorter than ... 14 s)
        """
        if num_seconds < self.span:
            future = f", {self.future} future seconds from t + {self.delta}" if self.future else ""
            raise DataError(source, f"the video lasts {num_seconds} s at 1 fps, shorter than the requested window "
                                    f"({self.past} past seconds with stride {self.stride}{future}: {self.span} s)")

    def anchors(self, num_seconds: int, source: str | Path = "video") -> np.ndarray:
        """Every ``t`` whose windows fit a video of ``num_seconds``: int64, ascending.

        Raises:
            DataError: naming ``source``, if the video is shorter than :attr:`span`.
        """
        self.check(num_seconds, source)
        first = self.past_span if self.pad == PadMode.NONE else 0
        return np.arange(first, num_seconds - self.future_span, dtype=np.int64)


def gather_window(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Take the frames or features of ``indices`` (any shape) along ``array``'s first axis.

    Example:
        >>> features = np.arange(10.0)[:, None] * np.ones((1, 3))
        >>> gather_window(features, WindowSpec(past=3).past_indices([1, 5])).shape
        (2, 3, 3)
    """
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= len(array)):
        raise IndexError(f"window indices {int(indices.min())} .. {int(indices.max())} outside 0 .. {len(array) - 1}")
    return np.asarray(array)[indices]


def window_samples(
    lengths: Sequence[int], spec: WindowSpec, sources: Sequence[str | Path] | None = None
) -> np.ndarray:
    """All ``(video, t)`` pairs of a set of videos, for a sampler: int64 ``(S, 2)``.

    Args:
        lengths: seconds of each video.
        spec: the windows.
        sources: the videos' files, named in the error of a video that is too short.

    Raises:
        DataError: naming the first video shorter than ``spec.span``.

    Example:
        >>> window_samples([4, 3], WindowSpec(past=2, future=1)).tolist()
        [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]]
    """
    parts = []
    for v, n in enumerate(lengths):
        anchors = spec.anchors(int(n), sources[v] if sources is not None else f"video {v}")
        parts.append(np.stack([np.full_like(anchors, v), anchors], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
