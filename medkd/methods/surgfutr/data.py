# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's data: a split's videos decoded once at 1 fps (cached on disk), their SFPBench targets, and batches
of causal windows with change-aware sampling.

* :func:`load_split` reads a split's videos with the layout's reader (Cholec80 or CholecT50), decodes each once
  into ``(N, H, W, 3)`` uint8 frames through :class:`~medkd.data.surgical.FeatureCache` (keyed by the video file,
  the frame size and the decoder version, so later epochs and runs reuse it) and builds every target
  (:func:`~medkd.metrics.surgical_labels.sfpbench_labels`). Events are onsets of presence classes
  (``data.events``: Cholec80's clipping is a Clipper onset); tasks a dataset lacks are left out.
* :func:`window_indices` / :func:`future_indices` give the 1-fps frame indices of the window and of the future
  clip at anchors ``t`` (vectorised; before second 0 the first frame repeats).
* :class:`BatchSampler` draws anchors, ``train.change_fraction`` of them where the labels change between ``t`` and
  ``t + Δ`` (change is rare: about 90 % of adjacent seconds are identical).

Example:
    >>> from medkd.methods.surgfutr.config import SurgFUTRConfig
    >>> cfg = SurgFUTRConfig()
    >>> window_indices(cfg, np.array([0, 40]))[1, :, -1].tolist()  # clip ends of the window at t=40
    [12, 16, 20, 24, 28, 32, 36, 40]
    >>> future_indices(cfg, np.array([40]), num_seconds=42).tolist()
    [[38, 39, 40, 41]]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medkd.data.surgical import FeatureCache, SurgicalVideo
from medkd.errors import DataError
from medkd.methods.surgfutr.config import Layout, SurgFUTRConfig, split_numbers
from medkd.methods.surgfutr.modules import HeadLayout
from medkd.metrics.surgical_labels import sfpbench_labels

__all__ = [
    "BatchSampler",
    "SplitData",
    "VideoData",
    "decode_frames",
    "future_indices",
    "head_layout",
    "load_split",
    "read_split_videos",
    "window_indices",
]

logger = logging.getLogger(__name__)

#: bump when decoding changes, so cached frames are rebuilt
DECODER_VERSION = "opencv-1fps-rgb-v1"


@dataclass
class VideoData:
    """One decoded video and its targets.

    Attributes:
        name: video id; source: its file or frame folder.
        frames: ``(N, H, W, 3)`` uint8 1-fps frames (possibly memory-mapped).
        phase: ``(N,)`` int64 current phase (None without phase labels).
        presence: ``(N, C)`` current presence of ``data.presence`` classes (None without).
        tools: ``(N, I)`` current tool-level presence (Cholec80 tools, CholecT50 instruments; None without).
        events: ``(N, E)`` event presence (the event tools' presence; None without).
        targets: :func:`~medkd.metrics.surgical_labels.sfpbench_labels` keys -> ``(N, ...)`` arrays.
        change: ``(N,)`` bool, the labels at ``t + Δ`` differ from those at ``t``.
    """

    name: str
    source: Path
    frames: np.ndarray
    phase: np.ndarray | None
    presence: np.ndarray | None
    tools: np.ndarray | None
    events: np.ndarray | None
    targets: dict[str, np.ndarray]
    change: np.ndarray

    @property
    def num_seconds(self) -> int:
        """N."""
        return int(self.frames.shape[0])


@dataclass
class SplitData:
    """A split's videos and class names; ``tool_of`` maps each presence class to its tool (None: the presence
    classes are the tools)."""

    videos: list[VideoData]
    phase_names: tuple[str, ...]
    presence_names: tuple[str, ...]
    event_names: tuple[str, ...]
    tool_names: tuple[str, ...] = ()
    tool_of: np.ndarray | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def seconds(self) -> int:
        """Analysed seconds over all videos."""
        return sum(v.num_seconds for v in self.videos)

    @property
    def mean_duration_min(self) -> float:
        """The mean video length in minutes."""
        return float(np.mean([v.num_seconds / 60.0 for v in self.videos]))

    def layout(self, cfg: SurgFUTRConfig) -> HeadLayout:
        """The head layout of a student trained on this split."""
        return head_layout(cfg, len(self.phase_names), len(self.presence_names), len(self.event_names),
                           self.mean_duration_min)


def head_layout(cfg: SurgFUTRConfig, phases: int, presence: int, events: int,
                duration_min: float = 60.0) -> HeadLayout:
    """The :class:`HeadLayout` of ``cfg`` for the given class counts and mean video duration (minutes)."""
    t = cfg.tasks
    return HeadLayout(phases, presence, events, tuple(t.presence_deltas_s), tuple(t.event_horizons_s) if events else (),
                      tuple(t.transition_horizons_min), float(duration_min))


def read_split_videos(cfg: SurgFUTRConfig, data_root: str | Path, split: str, *,
                      skipped: list[dict[str, str]] | None = None) -> list[SurgicalVideo]:
    """The split's videos (``data.<split>`` numbers; numbers without files are skipped, logged). With a ``skipped``
    list, a video that cannot be read is left out and recorded there (file, reason) instead of raising.

    Raises:
        DataError: no dataset folder, no video of the split, or a bad file (naming it).
    """
    from medkd.data.surgical import cholec80_files, cholect50_files, read_cholec80_video, read_cholect50_video

    root = Path(data_root) / cfg.data.dataset
    if not root.is_dir():
        raise DataError(root, f"dataset folder not found (data.dataset={cfg.data.dataset!r} under --data-root)")
    if split not in ("train", "val", "test"):
        raise DataError(root, f"unknown split {split!r}; splits: train, val, test")
    numbers = split_numbers(getattr(cfg.data, split))
    c80 = cfg.data.layout is Layout.CHOLEC80
    present = [n for n in numbers if (cholec80_files(root, n)[0] if c80 else cholect50_files(root, n)[1]).exists()]
    if len(present) < len(numbers):
        logger.info("%s split %s: %d of %d video numbers have files", root, split, len(present), len(numbers))
    if not present:
        raise DataError(root, f"no video of split {split!r} ({getattr(cfg.data, split)}) in the {cfg.data.layout.value} "
                              "layout")
    reader = read_cholec80_video if c80 else read_cholect50_video
    videos = []
    for n in present:
        try:
            videos.append(reader(root, n))
        except DataError as err:
            if skipped is None:
                raise
            logger.warning("skipped %s", err)
            skipped.append({"file": str(err.path), "reason": err.problem})
    if not videos:
        raise DataError(root, f"no usable video in split {split!r}")
    return videos


def _cache_root(cfg: SurgFUTRConfig) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir)
    base = os.environ.get("MEDKD_CACHE") or str(Path.home() / ".cache" / "medkd")
    return Path(base) / "surgical_frames"


def decode_frames(video: SurgicalVideo, size: tuple[int, int], cache_dir: str | Path | None = None) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 1-fps frames of ``video`` at ``size``, from the cache or decoded once and cached.

    Raises:
        DataError: naming the file, if it cannot be decoded or is shorter than its annotations.
    """
    def compute() -> np.ndarray:
        return video.read_frames(size=tuple(size))

    if cache_dir is None:
        return compute()
    cache = FeatureCache(cache_dir, encoder=DECODER_VERSION, settings={"size": list(size), "fps": 1,
                                                                       "seconds": video.num_seconds})
    frames = cache.get_or_compute(video.source, compute)
    if frames.shape[0] != video.num_seconds or frames.dtype != np.uint8:
        raise DataError(cache.path(video.source), f"cached frames {frames.shape} {frames.dtype} do not fit "
                                                  f"{video.num_seconds} s; delete the file")
    return frames


def _binary(values: Any) -> np.ndarray | None:
    return None if values is None else (np.asarray(values) > 0).astype(np.uint8)


def _video_targets(cfg: SurgFUTRConfig, video: SurgicalVideo,
                   event_columns: list[int]) -> tuple[Any, Any, Any, Any, dict[str, np.ndarray]]:
    phase = video.labels.get("phase")
    presence = _binary(video.labels.get(cfg.data.presence_key()))
    tools = _binary(video.labels.get(cfg.data.tool_key()))
    if phase is not None:
        phase = np.asarray(phase, np.int64)
        if (phase < 0).any():
            raise DataError(video.source, f"{int((phase < 0).sum())} second(s) without a phase label")
    events = tools[:, event_columns] if tools is not None and event_columns else None
    t = cfg.tasks
    targets = sfpbench_labels(
        video.num_seconds, phases=phase, triplets=presence, events=events,
        triplet_deltas_s=t.presence_deltas_s, event_horizons_s=t.event_horizons_s,
        transition_horizons_min=t.transition_horizons_min, triplet_mode=t.presence_mode,
        num_phases=len(video.class_names.get("phase", ())) or None,
    )
    return phase, presence, tools, events, targets


def _change(cfg: SurgFUTRConfig, n: int, phase: Any, presence: Any) -> np.ndarray:
    """Anchors whose phase or presence differs anywhere in ``(t, t + Δ]``."""
    t = np.arange(n)
    change = np.zeros(n, bool)
    for values in (phase, presence):
        if values is None:
            continue
        v = values.reshape(n, -1)
        step = np.r_[False, (v[1:] != v[:-1]).any(axis=1)]  # a change arriving at second s
        cum = np.cumsum(step)
        change |= cum[np.minimum(t + cfg.model.delta, n - 1)] > cum[t]
    return change


def load_split(cfg: SurgFUTRConfig, data_root: str | Path, split: str, *, cache: bool = True,
               skip_bad: bool = False, decode: bool = True) -> SplitData:
    """Read, decode and label a split (see the module docstring).

    Args:
        decode: decode the frames; ``False`` gives labels only (``frames`` is an empty ``(N, 0, 0, 3)`` array), for
            what needs no pixels (the prior baseline).
        skip_bad: skip a video that fails (logged, listed in :attr:`SplitData.skipped`) instead of raising.

    Raises:
        DataError: naming the file: a bad video or annotation, unknown event classes, a video shorter than one
            window (``(L - 1) * stride + T`` seconds), or no usable video.
    """
    skipped: list[dict[str, str]] = []
    videos = read_split_videos(cfg, data_root, split, skipped=skipped if skip_bad else None)
    key, tool_key = cfg.data.presence_key(), cfg.data.tool_key()
    names = videos[0].class_names
    presence_names, tool_names = tuple(names.get(key, ())), tuple(names.get(tool_key, ()))
    if key not in videos[0].labels:
        raise DataError(videos[0].source, f"no {key!r} labels (data.presence); labels: {', '.join(videos[0].labels)}")
    lower = [n.lower() for n in tool_names]
    pairs = cfg.data.event_pairs()
    missing = [c for _, c in pairs if c.lower() not in lower]
    if tool_names and missing:
        raise DataError(videos[0].source, f"data.events names tool(s) {missing} that {tool_key!r} labels do not "
                                          f"have (tools: {', '.join(tool_names)})")
    event_columns = [lower.index(c.lower()) for _, c in pairs] if tool_names else []
    tool_of = None
    if key != tool_key and tool_names:
        tool_of = np.array([lower.index(n.split(",")[0].strip().lower()) if n.split(",")[0].strip().lower() in lower
                            else -1 for n in presence_names])
        if (tool_of < 0).any():
            logger.info("%d %s classes name no known tool; tool metrics ignore them", int((tool_of < 0).sum()), key)
    out: list[VideoData] = []
    cache_dir = _cache_root(cfg) if cache else None
    for video in videos:
        try:
            if video.num_seconds < cfg.past_seconds:
                raise DataError(video.source, f"{video.num_seconds} s is shorter than one window "
                                              f"({cfg.past_seconds} s: model.window x model.clip_stride)")
            frames = (decode_frames(video, tuple(cfg.data.frame_size), cache_dir) if decode
                      else np.empty((video.num_seconds, 0, 0, 3), np.uint8))
            phase, presence, tools, events, targets = _video_targets(cfg, video, event_columns)
        except DataError as err:
            if not skip_bad:
                raise
            logger.warning("skipped %s", err)
            skipped.append({"file": str(err.path), "reason": err.problem})
            continue
        out.append(VideoData(video.name, video.source, frames, phase, presence, tools, events, targets,
                             _change(cfg, video.num_seconds, phase, presence)))
    if not out:
        raise DataError(Path(data_root) / cfg.data.dataset, f"no usable video in split {split!r}")
    return SplitData(out, tuple(names.get("phase", ())), presence_names,
                     tuple(n for n, _ in pairs) if event_columns else (), tool_names, tool_of, skipped)


def window_indices(cfg: SurgFUTRConfig, t: np.ndarray) -> np.ndarray:
    """``(B, L, T)`` 1-fps frame indices of the causal window at anchors ``t`` (clip j ends at
    ``t - (L - 1 - j) * stride``; indices before 0 repeat frame 0)."""
    m = cfg.model
    ends = np.asarray(t)[:, None] - (m.window - 1 - np.arange(m.window))[None, :] * m.clip_stride
    return np.maximum(ends[..., None] - (m.clip_frames - 1) + np.arange(m.clip_frames), 0)


def future_indices(cfg: SurgFUTRConfig, t: np.ndarray, num_seconds: int | np.ndarray) -> np.ndarray:
    """``(B, T)`` indices of the future clip ``c_{t+Δ}`` (ending at ``min(t + Δ, N - 1)``)."""
    m = cfg.model
    end = np.minimum(np.asarray(t) + m.delta, np.asarray(num_seconds) - 1)
    return np.maximum(end[:, None] - (m.clip_frames - 1) + np.arange(m.clip_frames), 0)


def _frames_tensor(frames: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    """Gather ``frames[idx]`` -> uint8 tensor ``(*idx.shape, 3, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(frames[idx]))
    return x.movedim(-1, -3)


class BatchSampler:
    """Random training batches from a split, ``change_fraction`` of them at anchors where the labels change.

    Each batch is a dict: ``frames`` ``(B, L, T, 3, H, W)`` uint8, ``future`` ``(B, T, 3, H, W)``, ``elapsed``
    ``(B,)`` minutes, ``change`` ``(B,)`` and every target (``phase``, ``presence``, ``events``, the SFPBench keys)
    at the anchors.
    """

    def __init__(self, cfg: SurgFUTRConfig, data: SplitData, seed: int = 0) -> None:
        self.cfg, self.data = cfg, data
        self.rng = np.random.default_rng(seed)
        self.lengths = np.array([v.num_seconds for v in data.videos])
        self.change_pool = [(i, np.flatnonzero(v.change)) for i, v in enumerate(data.videos) if v.change.any()]

    def state(self) -> dict[str, Any]:
        """The RNG state (for exact resume)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rng.bit_generator.state = state

    def anchors(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(video index, t)`` pairs of one batch."""
        n_change = int(round(self.cfg.train.change_fraction * batch_size)) if self.change_pool else 0
        weights = self.lengths / self.lengths.sum()
        vids = self.rng.choice(len(self.lengths), size=batch_size - n_change, p=weights)
        ts = (self.rng.random(len(vids)) * self.lengths[vids]).astype(np.int64)
        if n_change:
            pool = self.rng.integers(len(self.change_pool), size=n_change)
            cv = np.array([self.change_pool[k][0] for k in pool])
            ct = np.array([self.rng.choice(self.change_pool[k][1]) for k in pool])
            vids, ts = np.r_[vids, cv], np.r_[ts, ct]
        return vids, ts

    def batch(self, vids: np.ndarray, ts: np.ndarray) -> dict[str, torch.Tensor]:
        """The batch at the given anchors."""
        cfg, videos = self.cfg, self.data.videos
        w_idx, f_idx = window_indices(cfg, ts), future_indices(cfg, ts, self.lengths[vids])
        frames = torch.stack([_frames_tensor(videos[v].frames, w_idx[i]) for i, v in enumerate(vids)])
        future = torch.stack([_frames_tensor(videos[v].frames, f_idx[i]) for i, v in enumerate(vids)])
        out: dict[str, torch.Tensor] = {"frames": frames, "future": future,
                                        "elapsed": torch.as_tensor(ts / 60.0, dtype=torch.float32)}
        first = videos[0]
        keys = [k for k in first.targets if all(k in v.targets for v in videos)]
        for key in keys:
            value = np.stack([videos[v].targets[key][t] for v, t in zip(vids, ts)])
            out[key] = torch.as_tensor(value.astype(np.float32) if value.dtype == np.float64 else value)
        for name in ("phase", "presence", "events", "change"):
            if all(getattr(v, name) is not None for v in videos):
                out[name] = torch.as_tensor(np.stack([getattr(videos[v], name)[t] for v, t in zip(vids, ts)]))
        return out

    def __iter__(self):  # noqa: ANN204
        while True:
            yield self.batch(*self.anchors(self.cfg.train.batch_size))
