# SPDX-License-Identifier: Apache-2.0
"""Synthetic laparoscopic videos whose future is predictable from the present, in the Cholec80 and CholecT50 layouts.

Spec ``surgfutr.md`` §6. Each video is a pure function of ``(config, seed, number)``; labels are drawn first
(:func:`make_surgical_case`, cheap) and pixels are rendered lazily (:meth:`SyntheticSurgicalCase.render`, vectorised
over frames and pixels).

* **Phases:** ``n_phases`` ordered phases (default the 7 of Cholec80) with log-normal durations (cv 0.3, at least
  ``min_phase`` s) around Cholec80-like proportions; a phase after the first is skipped with ``skip_p``; with
  ``revisit_p`` a video goes back once to the previous phase in the middle of a phase. Each phase has 2-4 steps
  (per dataset), whose boundaries vary per video.
* **Appearance:** a hue and a grating texture per phase (oriented per step); a target region (the "gallbladder")
  that shrinks as the phase progresses, so the time left in a phase is visible; a liver band at the top.
* **Tools and triplets:** 6 coloured shafts from the border (Cholec80's first six tools), present by a two-state
  Markov chain with phase-dependent rates; each presence episode has a verb = motion pattern (``static``,
  ``translate``, ``oscillate``), and the target is the region under the tip at that second.
* **Events:** ``clip`` (a bright mark, 1-3 in ClippingCutting; the clipper is in during the lead-up), ``bleed``
  (a growing red blob, Poisson with a phase-dependent rate) and ``bag`` (the specimen bag, early in
  GallbladderPackaging), each preceded by a 2-5 s lead-up cue (a ring, a pulsing spot, an outline) at its site.

:func:`write_synthetic_cholec80` writes ``videos/videoNN.mp4`` (25 fps, codec ``mp4v``), per-frame phase and
per-second tool text files; :func:`write_synthetic_cholect50` writes ``videos/VIDNN/000000.png`` at 1 fps and
``labels/VIDNN.json``; :func:`write_synthetic_surgical` writes both from the same videos, rendering once. Every
writer also writes the oracle (``oracle/<id>.json``: per-second phases, steps, tools, verbs, targets, true phase and
step transition times, event onsets and cue starts). The default 12 videos (numbered 1-12; :data:`DEFAULT_SPLITS`
takes 1-8 / 9-10 / 11-12) of 60-300 s at 48 x 64 pixels take a few seconds to write.

Example:
    >>> cfg = SyntheticSurgicalConfig(n_videos=1, duration=(40, 40), height=24, width=32)
    >>> case = make_surgical_case(1, cfg)
    >>> case.num_seconds, int(case.phase[0]), case.render([0.0, 12.5]).shape
    (40, 0, (2, 24, 32, 3))
    >>> bool((np.diff(case.phase_transitions) > 0).all()), case.tool.shape
    (True, (40, 7))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkd.data.surgical.cholec80 import (
    CHOLEC80_FPS,
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    cholec80_files,
    cholec80_name,
    write_phase_annotation,
    write_tool_annotation,
)
from medkd.data.surgical.cholect50 import cholect50_files, cholect50_name, write_cholect50_labels
from medkd.io.atomic import atomic_path, write_text_atomic

__all__ = [
    "SYNTHETIC_INSTRUMENTS",
    "SYNTHETIC_VERBS",
    "SYNTHETIC_TARGETS",
    "SYNTHETIC_EVENTS",
    "DEFAULT_SPLITS",
    "SyntheticSurgicalConfig",
    "SyntheticSurgicalCase",
    "dataset_steps",
    "make_surgical_case",
    "make_surgical_cases",
    "synthetic_triplet_names",
    "write_synthetic_cholec80",
    "write_synthetic_cholect50",
    "write_synthetic_surgical",
    "read_oracle",
]

logger = logging.getLogger(__name__)

#: the six shafts, CholecT50 instrument names (Cholec80's first six tools, same order)
SYNTHETIC_INSTRUMENTS: tuple[str, ...] = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
#: verbs are motion patterns of a tool's tip
SYNTHETIC_VERBS: tuple[str, ...] = ("static", "translate", "oscillate")
#: the region under a tool's tip
SYNTHETIC_TARGETS: tuple[str, ...] = ("gallbladder", "liver", "omentum")
SYNTHETIC_EVENTS: tuple[str, ...] = ("clip", "bleed", "bag")
#: video numbers of the default 12 videos per split
DEFAULT_SPLITS: dict[str, tuple[int, ...]] = {"train": (1, 2, 3, 4, 5, 6, 7, 8), "val": (9, 10), "test": (11, 12)}

# mean share of each Cholec80 phase in a case (roughly the real ones)
_PHASE_WEIGHTS = np.array([0.06, 0.36, 0.08, 0.30, 0.05, 0.10, 0.05])
# stationary presence probability of each shaft (columns: SYNTHETIC_INSTRUMENTS) per phase (rows)
_TOOL_AFFINITY = np.array([
    [0.60, 0.05, 0.30, 0.02, 0.02, 0.05],
    [0.90, 0.05, 0.85, 0.02, 0.02, 0.05],
    [0.90, 0.05, 0.10, 0.50, 0.60, 0.05],
    [0.90, 0.10, 0.85, 0.02, 0.02, 0.10],
    [0.70, 0.02, 0.05, 0.02, 0.02, 0.05],
    [0.50, 0.60, 0.10, 0.05, 0.05, 0.60],
    [0.80, 0.05, 0.05, 0.02, 0.02, 0.20],
])  # fmt: skip
_DISSECTION = (1, 3)  # phases with the full bleed rate
_CLIPPING, _PACKAGING, _CLIPPER, _BAG = 2, 4, 4, 6
_PHASE_COLOURS = np.array([
    [0.75, 0.45, 0.40], [0.70, 0.33, 0.25], [0.55, 0.40, 0.58], [0.80, 0.56, 0.35],
    [0.42, 0.50, 0.62], [0.60, 0.62, 0.38], [0.50, 0.33, 0.36],
])  # fmt: skip
_TOOL_COLOURS = np.array([
    [0.88, 0.88, 0.88], [0.15, 0.30, 0.95], [0.98, 0.88, 0.15],
    [0.15, 0.90, 0.90], [0.90, 0.15, 0.90], [0.98, 0.55, 0.05],
])  # fmt: skip
_LIVER = np.array([0.42, 0.16, 0.12])
_GALLBLADDER = np.array([0.62, 0.68, 0.30])
_CLIP_CUE, _CLIP_MARK = np.array([1.0, 0.95, 0.2]), np.array([1.0, 1.0, 1.0])
_BLEED_CUE, _BLOOD = np.array([0.35, 0.0, 0.05]), np.array([0.85, 0.02, 0.04])
_BAG_CUE, _BAG_COLOUR = np.array([0.3, 0.8, 0.3]), np.array([0.30, 0.72, 0.35])


@dataclass(frozen=True, kw_only=True)
class SyntheticSurgicalConfig:
    """Sizes and rates of the synthetic videos (spec ``surgfutr.md`` §6); ``(lo, hi)`` ranges are inclusive.

    Attributes:
        n_videos: videos, numbered 1 .. n_videos.
        duration: length in seconds, drawn uniformly per video (at least ``min_phase`` per phase kept; a revisit
            adds its seconds).
        height: frame rows.
        width: frame columns.
        n_phases: ordered phases, 2-7 (the first ``n_phases`` of Cholec80's).
        duration_cv: coefficient of variation of the log-normal phase durations.
        min_phase: shortest phase, in seconds.
        skip_p: probability that a phase after the first is skipped.
        revisit_p: probability that a video returns once to the previous phase.
        steps_per_phase: steps per phase, drawn once per dataset.
        tool_episode: mean seconds a tool stays in view (the grasper: twice as long).
        lead_up: seconds of the cue before each event.
        bleed_rate: bleeds per minute in the dissection phases (a tenth of it in the others).
        clips: clip events per ClippingCutting phase.
        video_fps: frame rate of the MP4 (Cholec80: 25).
        motion_fps: distinct frames rendered per second of MP4 (each held ``video_fps // motion_fps`` frames).
        tail_frames: extra frames after the last annotated second of the MP4 (and one more unlabelled PNG), as when
            the real annotations lack the last partial second; 0 to ``video_fps - 1``.
    """

    n_videos: int = 12
    duration: tuple[int, int] = (60, 300)
    height: int = 48
    width: int = 64
    n_phases: int = 7
    duration_cv: float = 0.3
    min_phase: int = 5
    skip_p: float = 0.1
    revisit_p: float = 0.05
    steps_per_phase: tuple[int, int] = (2, 4)
    tool_episode: float = 10.0
    lead_up: tuple[int, int] = (2, 5)
    bleed_rate: float = 0.5
    clips: tuple[int, int] = (1, 3)
    video_fps: int = CHOLEC80_FPS
    motion_fps: int = 1
    tail_frames: int = 0

    def __post_init__(self) -> None:
        checks = {
            "n_videos >= 1": self.n_videos >= 1,
            "1 <= duration[0] <= duration[1]": 1 <= self.duration[0] <= self.duration[1],
            "height, width >= 8": min(self.height, self.width) >= 8,
            "2 <= n_phases <= 7": 2 <= self.n_phases <= len(CHOLEC80_PHASES),
            "duration_cv >= 0": self.duration_cv >= 0,
            "min_phase >= 1": self.min_phase >= 1,
            "0 <= skip_p, revisit_p <= 1": 0 <= self.skip_p <= 1 and 0 <= self.revisit_p <= 1,
            "1 <= steps_per_phase[0] <= steps_per_phase[1]": 1 <= self.steps_per_phase[0] <= self.steps_per_phase[1],
            "tool_episode >= 1": self.tool_episode >= 1,
            "1 <= lead_up[0] <= lead_up[1]": 1 <= self.lead_up[0] <= self.lead_up[1],
            "bleed_rate >= 0": self.bleed_rate >= 0,
            "0 <= clips[0] <= clips[1]": 0 <= self.clips[0] <= self.clips[1],
            "motion_fps divides video_fps": self.motion_fps >= 1 and self.video_fps % self.motion_fps == 0,
            "0 <= tail_frames < video_fps": 0 <= self.tail_frames < self.video_fps,
        }
        failed = [rule for rule, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SyntheticSurgicalConfig: need {'; '.join(failed)}")

    @property
    def phase_names(self) -> tuple[str, ...]:
        """The first ``n_phases`` Cholec80 phase names."""
        return CHOLEC80_PHASES[: self.n_phases]


def synthetic_triplet_names() -> tuple[str, ...]:
    """``instrument,verb,target`` for every combination; id = ``(i * 3 + v) * 3 + t``.

    Example:
        >>> names = synthetic_triplet_names()
        >>> len(names), names[0], names[-1]
        (54, 'grasper,static,gallbladder', 'irrigator,oscillate,omentum')
    """
    return tuple(f"{i},{v},{t}" for i in SYNTHETIC_INSTRUMENTS for v in SYNTHETIC_VERBS for t in SYNTHETIC_TARGETS)


def dataset_steps(cfg: SyntheticSurgicalConfig, seed: int = 0) -> tuple[int, ...]:
    """Steps of each phase, drawn once per dataset (so step ids mean the same in every video).

    Example:
        >>> steps = dataset_steps(SyntheticSurgicalConfig())
        >>> len(steps), all(2 <= k <= 4 for k in steps)
        (7, True)
    """
    lo, hi = cfg.steps_per_phase
    return tuple(int(k) for k in np.random.default_rng([seed, 0]).integers(lo, hi + 1, cfg.n_phases))


@dataclass(frozen=True, eq=False)
class SyntheticSurgicalCase:
    """One synthetic video: its per-second labels (the oracle) and what it takes to render its frames.

    Attributes:
        number: the video number (1 ..).
        height: frame rows.
        width: frame columns.
        phase: int64 ``(N,)`` phase per second.
        step: int64 ``(N,)`` global step id per second (phase ``p``'s steps follow those of phases ``< p``).
        progress: float64 ``(N,)`` share of the current phase's seconds done at the start of each second.
        tool: uint8 ``(N, 7)`` Cholec80 tool presence (six shafts, then SpecimenBag = the bag is in view).
        verb: int64 ``(N, 6)`` verb of each shaft (index into :data:`SYNTHETIC_VERBS`), -1 when absent.
        target: int64 ``(N, 6)`` region under each shaft's tip (:data:`SYNTHETIC_TARGETS`), -1 when absent.
        events: onset seconds per event name (:data:`SYNTHETIC_EVENTS`), int64, ascending.
        cues: first second of each onset's lead-up cue, aligned with ``events``.
        phase_names: names of the phases.
        step_names: names of the global steps (``<phase>.<k>``).
    """

    number: int
    height: int
    width: int
    phase: np.ndarray
    step: np.ndarray
    progress: np.ndarray
    tool: np.ndarray
    verb: np.ndarray
    target: np.ndarray
    events: dict[str, np.ndarray]
    cues: dict[str, np.ndarray]
    phase_names: tuple[str, ...]
    step_names: tuple[str, ...]
    _scene: dict[str, Any] = field(repr=False)

    @property
    def num_seconds(self) -> int:
        """``N``."""
        return len(self.phase)

    @property
    def phase_transitions(self) -> np.ndarray:
        """Seconds ``s`` where ``phase[s] != phase[s - 1]`` (the true transition times), int64."""
        return np.flatnonzero(np.diff(self.phase) != 0).astype(np.int64) + 1

    @property
    def step_transitions(self) -> np.ndarray:
        """Seconds ``s`` where ``step[s] != step[s - 1]``, int64."""
        return np.flatnonzero(np.diff(self.step) != 0).astype(np.int64) + 1

    @property
    def triplets(self) -> list[list[int]]:
        """Triplet ids in view at each second (``(i * 3 + v) * 3 + t``, :func:`synthetic_triplet_names`)."""
        present = self.verb >= 0
        ids = (np.arange(len(SYNTHETIC_INSTRUMENTS))[None] * 3 + self.verb) * 3 + self.target
        return [ids[s][present[s]].tolist() for s in range(self.num_seconds)]

    def oracle(self) -> dict[str, Any]:
        """The labels and true transition and event times, JSON-ready (what ``oracle/<id>.json`` holds)."""
        return {
            "number": self.number,
            "num_seconds": self.num_seconds,
            "phase_names": list(self.phase_names),
            "step_names": list(self.step_names),
            "tool_names": list(CHOLEC80_TOOLS),
            "verb_names": list(SYNTHETIC_VERBS),
            "target_names": list(SYNTHETIC_TARGETS),
            "phase": self.phase.tolist(),
            "step": self.step.tolist(),
            "progress": np.round(self.progress, 6).tolist(),
            "tool": self.tool.tolist(),
            "verb": self.verb.tolist(),
            "target": self.target.tolist(),
            "phase_transitions": [{"time": int(s), "from": int(self.phase[s - 1]), "to": int(self.phase[s])}
                                  for s in self.phase_transitions],
            "step_transitions": [{"time": int(s), "from": int(self.step[s - 1]), "to": int(self.step[s])}
                                 for s in self.step_transitions],
            "events": {name: {"onsets": self.events[name].tolist(), "cues": self.cues[name].tolist()}
                       for name in SYNTHETIC_EVENTS},
        }

    # --- rendering ------------------------------------------------------------------------------------------------

    def tips(self, times: np.ndarray) -> np.ndarray:
        """Tip position (row, column) of each shaft at ``times`` (seconds): float ``(T, 6, 2)``."""
        sc = self._scene
        t = np.asarray(times, dtype=np.float64)
        s = np.clip(np.floor(t + 1e-9).astype(np.int64), 0, self.num_seconds - 1)
        frac = np.clip((t[:, None] - sc["ep_start"][s]) / sc["ep_len"][s], 0.0, 1.0)[..., None]
        verb = self.verb[s][..., None]
        a, b = sc["tip_a"][s], sc["tip_b"][s]
        wobble = np.sin(2 * np.pi * sc["freq"][s] * t[:, None] + sc["osc_phase"][s])[..., None]
        pos = a + np.where(verb == 1, (b - a) * frac, 0.0) + np.where(verb == 2, sc["amp"][s][..., None] * wobble
                                                                        * sc["osc_dir"][s], 0.0)
        return pos

    def render(self, times: Sequence[float] | np.ndarray) -> np.ndarray:
        """Frames at ``times`` (seconds; second ``s`` covers ``[s, s + 1)``): uint8 RGB ``(T, H, W, 3)``.

        The labels of second ``floor(t)`` hold for the frame at ``t``; motion (tips, growing blobs, shrinking
        region) is continuous in ``t``.
        """
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        out = np.empty((len(times), self.height, self.width, 3), dtype=np.uint8)
        for lo in range(0, len(times), 128):
            out[lo : lo + 128] = self._render_chunk(times[lo : lo + 128])
        return out

    def _render_chunk(self, t: np.ndarray) -> np.ndarray:
        sc, h, w = self._scene, self.height, self.width
        s = np.clip(np.floor(t + 1e-9).astype(np.int64), 0, self.num_seconds - 1)
        yy, xx = (g.astype(np.float32) for g in np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
        phase = self.phase[s]
        local_step = (self.step[s] - sc["step_offset"][phase]).astype(np.float32)
        # phase hue and grating texture (oriented per step), camera shake as a drifting phase offset
        angle = (sc["tex_angle"][phase] + 0.5 * local_step).astype(np.float32)[:, None, None]
        k = sc["tex_freq"][phase].astype(np.float32)[:, None, None]
        shake = (0.6 * np.sin(0.7 * t) + 0.4 * np.sin(1.9 * t + 1.0)).astype(np.float32)[:, None, None]
        grating = np.sin(k * (xx * np.cos(angle) + yy * np.sin(angle)) + shake)
        img = _PHASE_COLOURS[phase].astype(np.float32)[:, None, None, :] * (
            1.0 + 0.12 * grating[..., None] + sc["noise"][None, ..., None])
        # liver band at the top (fixed in the image)
        img[:, sc["liver"]] = 0.35 * img[:, sc["liver"]] + 0.65 * _LIVER.astype(np.float32)
        # target region: an ellipse shrinking with the phase's progress; shaded by step
        progress = np.clip(self.progress[s] + (t - s) / sc["phase_seconds"][phase], 0.0, 1.0)
        radius = (sc["r0"] * (1.0 - 0.7 * progress)).astype(np.float32)[:, None, None]
        centre = (sc["centre"] + sc["drift"] * np.sin(0.05 * t)[:, None]).astype(np.float32)
        ell = ((yy - centre[:, 0, None, None]) / (0.8 * radius)) ** 2 + ((xx - centre[:, 1, None, None]) / radius) ** 2
        colour = _GALLBLADDER.astype(np.float32) * (0.75 + 0.25 * local_step / 3.0)[:, None]
        _blend(img, slice(None), np.clip(4.0 * (1.0 - ell), 0.0, 1.0), colour[:, None, None, :])
        self._draw_events(img, t, yy, xx)
        self._draw_tools(img, t, s, yy, xx)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _draw_events(self, img: np.ndarray, t: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> None:
        sc, unit = self._scene, min(self.height, self.width)
        for name in SYNTHETIC_EVENTS:
            for onset, cue, (cy, cx) in zip(self.events[name], self.cues[name], sc["sites"][name]):
                dist = np.hypot(yy - cy, xx - cx)
                lead = np.flatnonzero((t >= cue) & (t < onset))
                ramp = np.clip((t[lead] - cue) / max(onset - cue, 1), 0.0, 1.0).astype(np.float32)[:, None, None]
                if name == "clip":  # cue: a yellow ring; event: a white mark that stays
                    _blend(img, lead, ramp * (np.abs(dist - 0.08 * unit) < 0.9), _CLIP_CUE)
                    after = np.flatnonzero(t >= onset)
                    mark = (np.maximum(np.abs(yy - cy), np.abs(xx - cx)) <= 1.0)[None]
                    _blend(img, after, np.broadcast_to(mark, (len(after),) + mark.shape[1:]), _CLIP_MARK)
                elif name == "bleed":  # cue: a pulsing dark-red spot; event: a red blob growing, then fading
                    pulse = ramp * (0.5 + 0.5 * np.sin(4 * np.pi * t[lead]))[:, None, None] * (dist < 0.06 * unit)
                    _blend(img, lead, pulse, _BLEED_CUE)
                    live = np.flatnonzero((t >= onset) & (t < onset + 22.0))
                    grow = np.clip((t[live] - onset) / 8.0, 0.0, 1.0)[:, None, None]
                    fade = np.clip(1.0 - (t[live] - onset - 14.0) / 8.0, 0.0, 1.0)[:, None, None]
                    _blend(img, live, (dist < 0.02 * unit + 0.16 * unit * grow) * fade * 0.9, _BLOOD)
                else:  # bag: cue a faint green outline; event: the bag, in view until its phase ends
                    _blend(img, lead, ramp * (np.abs(dist - 0.12 * unit) < 0.8) * 0.7, _BAG_CUE)
                    live = np.flatnonzero((t >= onset) & (t < sc["bag_end"]))
                    bag = np.broadcast_to((dist < 0.12 * unit)[None] * 0.95, (len(live),) + dist.shape)
                    _blend(img, live, bag, _BAG_COLOUR)

    def _draw_tools(self, img: np.ndarray, t: np.ndarray, s: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> None:
        sc = self._scene
        tips = self.tips(t).astype(np.float32)  # (T, 6, 2)
        present = self.verb[s] >= 0  # (T, 6)
        width = max(1.0, 0.035 * min(self.height, self.width))
        for j in range(len(SYNTHETIC_INSTRUMENTS)):
            idx = np.flatnonzero(present[:, j])
            if not len(idx):
                continue
            e = sc["entry"][j].astype(np.float32)
            tip = tips[idx, j][:, :, None, None]  # (T', 2, 1, 1)
            d = tip - e[:, None, None]
            length2 = np.maximum(d[:, 0] ** 2 + d[:, 1] ** 2, 1e-6)
            u = np.clip(((yy - e[0]) * d[:, 0] + (xx - e[1]) * d[:, 1]) / length2, 0.0, 1.0)
            dist = np.hypot(yy - (e[0] + u * d[:, 0]), xx - (e[1] + u * d[:, 1]))
            _blend(img, idx, np.clip(width + 0.5 - dist, 0.0, 1.0), _TOOL_COLOURS[j].astype(np.float32))
            _blend(img, idx, np.hypot(yy - tip[:, 0], xx - tip[:, 1]) < width + 1.0,
                   0.45 * _TOOL_COLOURS[j].astype(np.float32))


def _blend(img: np.ndarray, frames: np.ndarray | slice, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In place: ``img[frames] += alpha * (colour - img[frames])``; alpha ``(T', H, W)``, colour ``(3,)`` or
    broadcastable to ``(T', H, W, 3)``."""
    if isinstance(frames, np.ndarray) and not len(frames):
        return
    a = np.asarray(alpha, dtype=np.float32)[..., None]
    part = img[frames]
    part += a * (np.asarray(colour, dtype=np.float32) - part)
    img[frames] = part


# --- drawing the labels -----------------------------------------------------------------------------------------


def _phase_segments(rng: np.random.Generator, cfg: SyntheticSurgicalConfig) -> list[tuple[int, int]]:
    """``[(phase, seconds), ...]`` in time order: skips, log-normal durations, at most one revisit."""
    total = int(rng.integers(cfg.duration[0], cfg.duration[1] + 1))
    p = cfg.n_phases
    keep = np.concatenate([[True], rng.random(p - 1) >= cfg.skip_p])
    if keep.sum() < 2:
        keep[1] = True
    phases = np.flatnonzero(keep)
    sigma = np.sqrt(np.log1p(cfg.duration_cv**2))
    weights = _PHASE_WEIGHTS[phases] * rng.lognormal(-sigma**2 / 2, sigma, len(phases))
    # every phase gets min_phase, the rest is shared by weight (largest remainders), so the total is exact
    extra = max(total - cfg.min_phase * len(phases), 0)
    share = extra * weights / weights.sum()
    seconds = cfg.min_phase + np.floor(share).astype(np.int64)
    seconds[np.argsort(np.floor(share) - share)[: extra - int(np.floor(share).sum())]] += 1
    segments = [(int(a), int(b)) for a, b in zip(phases, seconds)]
    if len(segments) >= 3 and rng.random() < cfg.revisit_p:
        i = int(rng.integers(1, len(segments)))
        phase, length = segments[i]
        if length >= 2:
            cut = int(rng.integers(1, length))
            back = int(rng.integers(cfg.min_phase, 2 * cfg.min_phase + 1))
            segments[i : i + 1] = [(phase, cut), (segments[i - 1][0], back), (phase, length - cut)]
    return segments


def _markov_tools(rng: np.random.Generator, cfg: SyntheticSurgicalConfig, phase: np.ndarray) -> np.ndarray:
    """Presence (N, 6) of the shafts: two-state Markov chains with phase-dependent switch-on rates."""
    pi = _TOOL_AFFINITY[phase]  # (N, 6)
    mean = np.full(len(SYNTHETIC_INSTRUMENTS), cfg.tool_episode)
    mean[0] *= 2.0
    p_off = 1.0 / mean
    p_on = np.clip(pi * p_off / (1.0 - pi), 0.0, 1.0)
    draws = rng.random((len(phase), len(mean)))
    state = np.empty(pi.shape, dtype=bool)
    state[0] = draws[0] < pi[0]
    for s in range(1, len(phase)):  # a loop over seconds (not pixels): N <= a few hundred
        state[s] = np.where(state[s - 1], draws[s] >= p_off, draws[s] < p_on[s])
    return state


def _episodes(present: np.ndarray) -> list[tuple[int, int, int]]:
    """``(tool, start, stop)`` of every run of presence."""
    out = []
    padded = np.pad(present.astype(np.int8), ((1, 1), (0, 0)))
    for j in range(present.shape[1]):
        edges = np.diff(padded[:, j])
        out += [(j, int(a), int(b)) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    return out


def _events(rng: np.random.Generator, cfg: SyntheticSurgicalConfig, phase: np.ndarray,
            segments: list[tuple[int, int]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    n = len(phase)
    lo, hi = cfg.lead_up
    onsets: dict[str, list[int]] = {name: [] for name in SYNTHETIC_EVENTS}
    starts = np.cumsum([0] + [length for _, length in segments])
    for (p, length), start in zip(segments, starts[:-1]):
        if p == _CLIPPING and cfg.n_phases > _CLIPPING:
            count = int(rng.integers(cfg.clips[0], cfg.clips[1] + 1))
            slots = np.arange(start + 1, start + length)
            slots = slots[slots >= hi]
            if count and len(slots):
                onsets["clip"] += sorted(rng.choice(slots, min(count, len(slots)), replace=False).tolist())
        if p == _PACKAGING and cfg.n_phases > _PACKAGING and not onsets["bag"] and length > 1:
            onsets["bag"].append(int(min(start + rng.integers(1, 4), start + length - 1)))
    rate = np.where(np.isin(phase, _DISSECTION), cfg.bleed_rate, 0.1 * cfg.bleed_rate) / 60.0
    last = -(10**9)
    for s in np.flatnonzero(rng.random(n) < rate):
        if s >= hi and s - last >= 10:
            onsets["bleed"].append(int(s))
            last = int(s)
    events = {name: np.asarray(sorted(set(v)), dtype=np.int64) for name, v in onsets.items()}
    cues = {name: np.maximum(v - rng.integers(lo, hi + 1, len(v)), 0).astype(np.int64) for name, v in events.items()}
    return events, cues


def make_surgical_case(number: int, cfg: SyntheticSurgicalConfig | None = None, seed: int = 0) -> SyntheticSurgicalCase:
    """Draw one video's labels and scene (no pixels yet): a pure function of ``(cfg, seed, number)``.

    Args:
        number: the video number (1 ..).
        cfg: the configuration (default :class:`SyntheticSurgicalConfig()`).
        seed: the dataset seed.

    Returns:
        The :class:`SyntheticSurgicalCase`.

    Example:
        >>> case = make_surgical_case(3)
        >>> 60 <= case.num_seconds <= 320, case.phase_names[case.phase[0]]
        (True, 'Preparation')
    """
    cfg = cfg or SyntheticSurgicalConfig()
    rng = np.random.default_rng([seed, int(number)])
    h, w = cfg.height, cfg.width
    unit = float(min(h, w))
    segments = _phase_segments(rng, cfg)
    phase = np.repeat([p for p, _ in segments], [length for _, length in segments]).astype(np.int64)
    n = len(phase)

    # progress within each phase (over all its seconds, revisits included) and steps
    onehot = np.eye(cfg.n_phases, dtype=np.int64)[phase]
    done = np.cumsum(onehot, axis=0)[np.arange(n), phase] - 1
    phase_seconds = np.maximum(onehot.sum(0), 1).astype(np.float64)
    progress = done / phase_seconds[phase]
    steps = dataset_steps(cfg, seed)
    step_offset = np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(np.int64)
    bounds = [np.sort(rng.uniform(0.15, 0.85, k - 1)) for k in steps]
    local = np.zeros(n, dtype=np.int64)
    for p in range(cfg.n_phases):
        local[phase == p] = np.searchsorted(bounds[p], progress[phase == p], side="right")
    step = step_offset[phase] + local

    # tools, episodes, verbs and tip paths
    events, cues = _events(rng, cfg, phase, segments)
    shafts = _markov_tools(rng, cfg, phase)
    for onset, cue in zip(events["clip"], cues["clip"]):
        shafts[cue : onset + 2, _CLIPPER] = True  # the clipper comes in during the lead-up
    centre = np.array([0.58 * h, 0.5 * w]) + rng.normal(0.0, 0.04 * unit, 2)
    r0 = 0.3 * unit
    n_tools = len(SYNTHETIC_INSTRUMENTS)
    angles = rng.uniform(-np.pi, np.pi, n_tools)
    entry = np.stack([np.clip(centre[0] - 0.9 * h * np.cos(angles), -1, h), np.clip(centre[1] + 0.9 * w
                      * np.sin(angles), -1, w)], axis=1)  # fmt: skip
    verb = np.full((n, n_tools), -1, dtype=np.int64)
    scene_shape = (n, n_tools)
    tip_a, tip_b = np.zeros(scene_shape + (2,)), np.zeros(scene_shape + (2,))
    ep_start, ep_len = np.zeros(scene_shape), np.ones(scene_shape)
    amp, freq, osc_phase = np.zeros(scene_shape), np.ones(scene_shape), np.zeros(scene_shape)
    osc_dir = np.zeros(scene_shape + (2,))
    liver_y = rng.uniform(0.15, 0.25) * h
    liver = np.arange(h)[:, None] < liver_y + 0.06 * h * np.sin(np.arange(w)[None] * 2 * np.pi / w + 0.3)
    for j, a, b in _episodes(shafts):
        verb[a:b, j] = rng.integers(0, len(SYNTHETIC_VERBS))
        start = centre + rng.normal(0.0, 0.45 * r0, 2)
        if rng.random() < 0.2:  # now and then a tool works on (retracts) the liver
            start = np.array([rng.uniform(0.2, 0.8) * liver_y, rng.uniform(0.15, 0.85) * w])
        tip_a[a:b, j] = start
        tip_b[a:b, j] = np.clip(start + rng.normal(0.0, 0.25 * unit, 2), 1, [h - 2, w - 2])
        ep_start[a:b, j], ep_len[a:b, j] = a, max(b - a, 1)
        amp[a:b, j] = rng.uniform(0.05, 0.1) * unit
        freq[a:b, j] = rng.uniform(0.4, 1.2)
        osc_phase[a:b, j] = rng.uniform(0, 2 * np.pi)
        theta = rng.uniform(0, np.pi)
        osc_dir[a:b, j] = (np.sin(theta), np.cos(theta))

    bag_end = float(n)
    if len(events["bag"]):
        after = np.flatnonzero((np.arange(n) > events["bag"][0]) & (phase != _PACKAGING))
        bag_end = float(after[0]) if len(after) else float(n)
    sites = {
        "clip": centre + rng.normal(0.0, 0.2 * r0, (len(events["clip"]), 2)),
        "bleed": np.stack([rng.uniform(0.3 * h, 0.9 * h, len(events["bleed"])),
                           rng.uniform(0.1 * w, 0.9 * w, len(events["bleed"]))], axis=1).reshape(-1, 2),
        "bag": np.array([[0.8 * h, rng.uniform(0.2, 0.8) * w]] * len(events["bag"])).reshape(-1, 2),
    }
    scene = {
        "centre": centre, "drift": rng.normal(0.0, 0.03 * unit, 2), "r0": r0, "entry": entry,
        "liver": liver,
        "tex_freq": 2 * np.pi / (rng.uniform(5.0, 14.0, cfg.n_phases) * unit / 48.0),
        "tex_angle": rng.uniform(0, np.pi, cfg.n_phases), "step_offset": step_offset,
        "phase_seconds": phase_seconds, "noise": (0.06 * _smooth_noise(rng, h, w)).astype(np.float32),
        "tip_a": tip_a, "tip_b": tip_b, "ep_start": ep_start, "ep_len": ep_len, "amp": amp, "freq": freq,
        "osc_phase": osc_phase, "osc_dir": osc_dir, "sites": sites, "bag_end": bag_end,
    }  # fmt: skip

    tool = np.zeros((n, len(CHOLEC80_TOOLS)), dtype=np.uint8)
    tool[:, :n_tools] = shafts
    if len(events["bag"]):
        tool[int(events["bag"][0]) : int(np.ceil(bag_end)), _BAG] = 1
    names = cfg.phase_names
    step_names = tuple(f"{names[p]}.{k + 1}" for p in range(cfg.n_phases) for k in range(steps[p]))
    case = SyntheticSurgicalCase(number=int(number), height=h, width=w, phase=phase, step=step, progress=progress,
                                 tool=tool, verb=verb, target=np.full((n, n_tools), -1, dtype=np.int64),
                                 events=events, cues=cues, phase_names=names, step_names=step_names, _scene=scene)
    # the target is the region under each tip at the start of the second (the ellipse where it is drawn at least
    # half opaque, else the liver band, else the omentum)
    tips = case.tips(np.arange(n, dtype=np.float64))
    radius = r0 * (1.0 - 0.7 * progress)
    centre_t = centre + scene["drift"] * np.sin(0.05 * np.arange(n))[:, None]
    inside = (((tips[..., 0] - centre_t[:, None, 0]) / (0.8 * radius[:, None])) ** 2
              + ((tips[..., 1] - centre_t[:, None, 1]) / radius[:, None]) ** 2) <= 0.875  # fmt: skip
    rows = np.clip(np.round(tips[..., 0]).astype(np.int64), 0, h - 1)
    cols = np.clip(np.round(tips[..., 1]).astype(np.int64), 0, w - 1)
    region = np.where(inside, 0, np.where(liver[rows, cols], 1, 2))
    case.target[...] = np.where(verb >= 0, region, -1)
    return case


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Unit-std low-pass noise ``(h, w)`` (FFT), the per-video tissue texture."""
    f2 = np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((h, w))) * np.exp(-f2 * 200.0), s=(h, w))
    return field / (field.std() + 1e-8)


def make_surgical_cases(cfg: SyntheticSurgicalConfig | None = None, seed: int = 0) -> list[SyntheticSurgicalCase]:
    """Every video of a dataset, numbered 1 .. ``cfg.n_videos``.

    Example:
        >>> [c.number for c in make_surgical_cases(SyntheticSurgicalConfig(n_videos=3))]
        [1, 2, 3]
    """
    cfg = cfg or SyntheticSurgicalConfig()
    return [make_surgical_case(number, cfg, seed) for number in range(1, cfg.n_videos + 1)]


# --- writing the layouts ------------------------------------------------------------------------------------------


def _t50_annotations(case: SyntheticSurgicalCase) -> dict[int, list[list[float]]]:
    tips = case.tips(np.arange(case.num_seconds, dtype=np.float64))
    half = 2.0
    out: dict[int, list[list[float]]] = {}
    for s in range(case.num_seconds):
        p = int(case.phase[s])
        vectors = []
        for j in np.flatnonzero(case.verb[s] >= 0):
            v, t = int(case.verb[s, j]), int(case.target[s, j])
            y, x = tips[s, j]
            box = [round(float((x - half) / case.width), 4), round(float((y - half) / case.height), 4),
                   round(2 * half / case.width, 4), round(2 * half / case.height, 4)]
            vectors.append([(int(j) * 3 + v) * 3 + t, int(j), 1.0, *box, v, t, 1.0, -1.0, -1.0, -1.0, -1.0, p])
        out[s] = vectors or [[-1, -1, -1.0, -1.0, -1.0, -1.0, -1.0, -1, -1, -1.0, -1.0, -1.0, -1.0, -1.0, p]]
    return out


def _write_case(case: SyntheticSurgicalCase, cfg: SyntheticSurgicalConfig, c80: Path | None,
                t50: Path | None) -> None:  # fmt: skip
    """Render ``case`` once (chunks of seconds) into the Cholec80 MP4 and/or the CholecT50 PNGs, then the labels."""
    import cv2

    n, hold = case.num_seconds, cfg.video_fps // cfg.motion_fps
    frames_dir = None
    if t50 is not None:
        frames_dir, label_path = cholect50_files(t50, case.number)
        frames_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        writer = None
        if c80 is not None:
            video_path, phase_path, tool_path = cholec80_files(c80, case.number)
            tmp = stack.enter_context(atomic_path(video_path, suffix=".mp4"))
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(cfg.video_fps),
                                     (case.width, case.height))
            stack.callback(writer.release)  # runs before atomic_path moves the file into place
            if not writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {video_path} with the mp4v codec")
        tail = 1 if cfg.tail_frames else 0
        chunk = max(1, 256 // cfg.motion_fps)
        for lo in range(0, n + tail, chunk):
            seconds = np.arange(lo, min(lo + chunk, n + tail))
            times = (seconds[:, None] + np.arange(cfg.motion_fps)[None] / cfg.motion_fps).reshape(-1)
            bgr = case.render(times).reshape(len(seconds), cfg.motion_fps, case.height, case.width, 3)[..., ::-1]
            for i, second in enumerate(seconds):
                if frames_dir is not None:
                    cv2.imwrite(str(frames_dir / f"{second:06d}.png"), np.ascontiguousarray(bgr[i, 0]))
                if writer is not None:
                    for f in range(cfg.video_fps if second < n else cfg.tail_frames):
                        writer.write(np.ascontiguousarray(bgr[i, f // hold]))
    oracle = json.dumps(case.oracle(), separators=(",", ":"))
    if c80 is not None:
        write_phase_annotation(phase_path, np.repeat(case.phase, CHOLEC80_FPS), CHOLEC80_PHASES)
        write_tool_annotation(tool_path, case.tool)
        write_text_atomic(c80 / "oracle" / f"{cholec80_name(case.number)}.json", oracle)
    if t50 is not None:
        categories = {"triplet": synthetic_triplet_names(), "instrument": SYNTHETIC_INSTRUMENTS,
                      "verb": SYNTHETIC_VERBS, "target": SYNTHETIC_TARGETS, "phase": case.phase_names}
        write_cholect50_labels(label_path, video=case.number, annotations=_t50_annotations(case),
                               categories=categories)
        write_text_atomic(t50 / "oracle" / f"{cholect50_name(case.number)}.json", oracle)


def _write(root: str | Path, cfg: SyntheticSurgicalConfig | None, seed: int, layouts: Sequence[str]) -> dict[str, Path]:
    cfg = cfg or SyntheticSurgicalConfig()
    root = Path(root)
    paths = {layout: (root / layout if len(layouts) > 1 else root) for layout in layouts}
    for case in make_surgical_cases(cfg, seed):
        _write_case(case, cfg, paths.get("cholec80"), paths.get("cholect50"))
    logger.info("wrote %d synthetic surgical videos (%s) of %d x %d px to %s", cfg.n_videos, ", ".join(layouts),
                cfg.height, cfg.width, root)
    return paths


def write_synthetic_cholec80(root: str | Path, cfg: SyntheticSurgicalConfig | None = None, *, seed: int = 0) -> Path:
    """Write synthetic videos in the Cholec80 layout under ``root`` (plus ``oracle/videoNN.json``).

    ``videos/videoNN.mp4`` (``cfg.video_fps``, mp4v; ``cfg.tail_frames`` unannotated frames at the end),
    ``phase_annotations/videoNN-phase.txt`` (one row per frame) and ``tool_annotations/videoNN-tool.txt`` (one row
    per second, the seven Cholec80 tools).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> cfg = SyntheticSurgicalConfig(n_videos=1, duration=(36, 36), height=16, width=16, motion_fps=1)
        >>> root = write_synthetic_cholec80(tempfile.mkdtemp(), cfg)
        >>> sorted(p.name for p in root.iterdir())
        ['oracle', 'phase_annotations', 'tool_annotations', 'videos']
    """
    return _write(root, cfg, seed, ("cholec80",))["cholec80"]


def write_synthetic_cholect50(root: str | Path, cfg: SyntheticSurgicalConfig | None = None, *, seed: int = 0) -> Path:
    """Write synthetic videos in the CholecT50 layout under ``root`` (plus ``oracle/VIDNN.json``).

    ``videos/VIDNN/000000.png ...`` at 1 fps (one unlabelled frame more when ``cfg.tail_frames``) and
    ``labels/VIDNN.json`` with 54 triplets (:func:`synthetic_triplet_names`), 6 instruments, 3 verbs, 3 targets and
    the phases.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    return _write(root, cfg, seed, ("cholect50",))["cholect50"]


def write_synthetic_surgical(
    root: str | Path, cfg: SyntheticSurgicalConfig | None = None, *, seed: int = 0
) -> dict[str, Path]:
    """Write the same videos in both layouts, ``root/cholec80`` and ``root/cholect50``, rendering each frame once.

    Returns:
        ``{"cholec80": path, "cholect50": path}``.
    """
    return _write(root, cfg, seed, ("cholec80", "cholect50"))


def read_oracle(path: str | Path) -> dict[str, Any]:
    """Read an ``oracle/<id>.json`` written by the generator; per-second lists become numpy arrays.

    Example:
        >>> import tempfile
        >>> cfg = SyntheticSurgicalConfig(n_videos=1, duration=(36, 36), height=16, width=16)
        >>> root = write_synthetic_cholect50(tempfile.mkdtemp(), cfg)
        >>> oracle = read_oracle(root / "oracle" / "VID01.json")
        >>> oracle["phase"].shape, sorted(oracle["events"])
        ((36,), ['bag', 'bleed', 'clip'])
    """
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("phase", "step", "progress", "tool", "verb", "target"):
        doc[key] = np.asarray(doc[key])
    doc["events"] = {name: {k: np.asarray(v, dtype=np.int64) for k, v in entry.items()}
                     for name, entry in doc["events"].items()}  # fmt: skip
    return doc

