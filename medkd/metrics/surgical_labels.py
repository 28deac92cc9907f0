# SPDX-License-Identifier: Apache-2.0
"""SFPBench label generators and the two simple baselines (SurgFUTR spec, sections 4 and 7).

All generators are pure, vectorised numpy functions of one video's per-frame labels. Frames are indexed by ``t`` at
``fps`` frames per second (1 fps, the CAMMA convention, by default); ``N`` is the video's length. Times are returned
in **minutes**; short-term offsets (``delta_s``, ``horizon_s``) are given in **seconds** and must be a whole number
of frames. Label arrays are ``(N,)`` integer phase or step ids (``>= 0``; mask unlabelled frames before) or
``(N, C)`` 0/1 multi-hot presence (triplets, instruments, events).

=====================  ==========================================================================================
generator              label at ``t``
=====================  ==========================================================================================
:func:`rsd`            ``(N - 1 - t) / (60 fps)``, the remaining surgery duration
:func:`elapsed`        ``t / (60 fps)``
:func:`next_change`    ``min(h, (s* - t) / (60 fps))``, ``s*`` the first ``s > t`` with another phase; ``h`` if none
:func:`tta`            per phase ``p`` (Rivoir et al., MICCAI 2020): 0 while in ``p``, else ``min(h, minutes until p
                       next starts)``, ``h`` if ``p`` never recurs
:func:`future_presence` ``labels[min(t + Δ, N - 1)]`` (``"point"``) or the union over ``(t, t + Δ]`` (``"union"``)
:func:`event_labels`   1 where an onset (0 -> 1) of the event falls in ``(t, t + h]``
:func:`change_mask`    frames whose target (label at ``t + Δ``) differs from the label at ``t``
=====================  ==========================================================================================

:func:`sfpbench_labels` builds every task a video's annotations allow; a task whose labels the dataset lacks is
left out, never filled with a stand-in.

**Baselines** (every results table): :func:`copy_current` assumes that the current state persists (presence at
``t + Δ`` := presence at ``t``; time to the next change := ``h``); :class:`PhasePrior` predicts from training phase
durations (remaining time in the current phase given the time already spent in it, and the remaining surgery).

Example:
    >>> phases = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]   # fps=1/60: one frame per minute
    >>> next_change(phases, horizon=2, fps=1 / 60).tolist()
    [2.0, 2.0, 1.0, 2.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    >>> tta(phases, horizon=3, fps=1 / 60)[:, 2].tolist()
    [3.0, 3.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    >>> rsd(10, fps=1 / 60)[[0, 9]].tolist()
    [9.0, 0.0]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = [
    "TRIPLET_DELTAS_S",
    "EVENT_HORIZONS_S",
    "TRANSITION_HORIZONS_MIN",
    "PresenceMode",
    "CopyTarget",
    "PriorStatistic",
    "RsdMode",
    "rsd",
    "elapsed",
    "next_change",
    "time_in_phase",
    "tta",
    "future_presence",
    "event_labels",
    "change_mask",
    "sfpbench_labels",
    "copy_current",
    "PhasePrior",
]

logger = logging.getLogger(__name__)

TRIPLET_DELTAS_S: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
"""Short-term triplet offsets Δ in seconds (spec section 4)."""

EVENT_HORIZONS_S: tuple[float, ...] = (5.0, 10.0, 30.0)
"""Event horizons h in seconds (spec section 4)."""

TRANSITION_HORIZONS_MIN: tuple[float, ...] = (2.0, 3.0, 5.0)
"""Phase and step transition horizons h in minutes (spec section 4)."""


class PresenceMode(StrEnum):
    """Future presence target: the label at ``t + Δ`` (``point``) or the union over ``(t, t + Δ]`` (``union``)."""

    POINT = "point"
    UNION = "union"


class CopyTarget(StrEnum):
    """What :func:`copy_current` predicts: ``presence`` (triplets, instruments, events), ``next_change`` (time to
    the next phase or step), ``tta`` (per-phase time to arrival) or ``rsd`` (not applicable: raises)."""

    PRESENCE = "presence"
    NEXT_CHANGE = "next_change"
    TTA = "tta"
    RSD = "rsd"


class PriorStatistic(StrEnum):
    """How :class:`PhasePrior` summarises the remaining durations of the training segments still running."""

    MEDIAN = "median"
    MEAN = "mean"


class RsdMode(StrEnum):
    """:meth:`PhasePrior.predict_rsd`: ``elapsed`` (mean duration minus elapsed time, spec section 7) or ``phase``
    (remaining time in the current phase plus the expected time of the phases that usually follow)."""

    ELAPSED = "elapsed"
    PHASE = "phase"


def _option(enum: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(e.value for e in enum)  # type: ignore[attr-defined]
        raise ValueError(f"unknown {what} {value!r}; choose one of {options}") from None


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _positive(value: float, what: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive number, got {value}")
    return value


def _frames(seconds: float, fps: float, what: str) -> int:
    """Seconds to a whole, positive number of frames."""
    frames = _positive(seconds, what) * _positive(fps, "fps")
    if abs(frames - round(frames)) > 1e-6 or round(frames) < 1:
        raise ValueError(f"{what}={seconds} s is not a whole number of frames at {fps} fps")
    return int(round(frames))


def _num_frames(num_frames: int) -> int:
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    return int(num_frames)


def _phases(phases: Any, what: str = "phases") -> np.ndarray:
    """``(N,)`` int64 phase ids, checked: one dimension, at least one frame, whole numbers ``>= 0``."""
    values = _array(phases)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{what} must be a non-empty (N,) sequence of phase ids, got shape {values.shape}")
    if values.dtype.kind not in "iub":
        if values.dtype.kind != "f" or not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError(f"{what} must hold whole-number phase ids, got dtype {values.dtype}")
    values = values.astype(np.int64)
    if values.min() < 0:
        raise ValueError(f"{what} must be >= 0 (mask unlabelled frames first), got {int(values.min())}")
    return values


def _multi_hot(labels: Any, what: str) -> np.ndarray:
    """``(N, C)`` 0/1 presence, checked; the dtype is kept."""
    values = _array(labels)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"{what} must be (N, C) multi-hot presence with N >= 1, got shape {values.shape}")
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"{what} must hold only 0 and 1")
    return values


def _num_classes(phases: np.ndarray, num_classes: int | None, what: str = "phases") -> int:
    top = int(phases.max()) + 1
    if num_classes is None:
        return top
    if int(num_classes) < top:
        raise ValueError(f"{what} holds id {top - 1} but num_classes={num_classes}")
    return int(num_classes)


def rsd(num_frames: int, fps: float = 1.0) -> np.ndarray:
    """Remaining surgery duration in minutes, ``(N - 1 - t) / (60 fps)``: 0 at the last frame.

    Args:
        num_frames: ``N``, the video's length in frames.
        fps: frames per second of the label sequence.

    Returns:
        ``(N,)`` float64.

    Example:
        >>> rsd(4, fps=1 / 30).tolist()
        [1.5, 1.0, 0.5, 0.0]
    """
    n = _num_frames(num_frames)
    return (n - 1 - np.arange(n, dtype=np.float64)) / (60.0 * _positive(fps, "fps"))


def elapsed(num_frames: int, fps: float = 1.0) -> np.ndarray:
    """Elapsed time in minutes, ``t / (60 fps)`` (the RSD heads' extra input).

    Example:
        >>> elapsed(3, fps=1 / 60).tolist()
        [0.0, 1.0, 2.0]
    """
    n = _num_frames(num_frames)
    return np.arange(n, dtype=np.float64) / (60.0 * _positive(fps, "fps"))


def next_change(phases: Any, horizon: float, fps: float = 1.0) -> np.ndarray:
    """Minutes to the next phase (or step) change, capped at the horizon.

    ``next_change[t] = min(h, (s* - t) / (60 fps))`` where ``s*`` is the first ``s > t`` with
    ``phases[s] != phases[t]``; ``h`` when the phase does not change again (the last segment).

    Args:
        phases: ``(N,)`` phase or step ids.
        horizon: ``h`` in minutes.
        fps: frames per second.

    Returns:
        ``(N,)`` float64 in ``(0, h]``.

    Raises:
        ValueError: bad shape or ids, a non-positive horizon or fps.

    Example:
        >>> next_change([0, 0, 0, 1, 1, 2, 2, 2, 2, 2], horizon=3, fps=1 / 60).tolist()
        [3.0, 2.0, 1.0, 2.0, 1.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    """
    p = _phases(phases)
    h = _positive(horizon, "horizon")
    n = p.size
    starts = np.flatnonzero(p[1:] != p[:-1]) + 1  # first frame of every segment but the first
    t = np.arange(n)
    nxt = np.append(starts, n)[np.searchsorted(starts, t, side="right")]
    minutes = (nxt - t) / (60.0 * _positive(fps, "fps"))
    return np.where(nxt == n, h, np.minimum(h, minutes))


def time_in_phase(phases: Any, fps: float = 1.0) -> np.ndarray:
    """Minutes already spent in the current segment (0 at its first frame); causal.

    Example:
        >>> time_in_phase([0, 0, 0, 1, 1, 0], fps=1 / 60).tolist()
        [0.0, 1.0, 2.0, 0.0, 1.0, 0.0]
    """
    p = _phases(phases)
    t = np.arange(p.size)
    is_start = np.r_[True, p[1:] != p[:-1]]
    start = np.maximum.accumulate(np.where(is_start, t, 0))
    return (t - start) / (60.0 * _positive(fps, "fps"))


def tta(phases: Any, horizon: float, fps: float = 1.0, *, num_classes: int | None = None) -> np.ndarray:
    """Per-phase time to arrival (the Rivoir rule, as in Trans-SVNet's anticipation script; h = 5 min on Cholec80).

    ``tta[t, p]`` is 0 while the video is in ``p``; otherwise ``min(h, minutes until p next starts)``, and ``h`` when
    ``p`` does not occur again.

    Args:
        phases: ``(N,)`` phase ids.
        horizon: ``h`` in minutes.
        fps: frames per second.
        num_classes: ``P``; ``None``: 1 + the largest id.

    Returns:
        ``(N, P)`` float64 in ``[0, h]``.

    Raises:
        ValueError: bad shape or ids, an id ``>= num_classes``, a non-positive horizon or fps.

    Example:
        >>> tta([0, 0, 0, 1, 1, 2, 2, 2, 2, 2], horizon=3, fps=1 / 60)[:, 1].tolist()
        [3.0, 2.0, 1.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 3.0]
    """
    p = _phases(phases)
    h = _positive(horizon, "horizon")
    k = _num_classes(p, num_classes)
    n = p.size
    t = np.arange(n)
    here = np.where(p[:, None] == np.arange(k)[None, :], t[:, None], n)  # (N, P): t where in p, else a sentinel
    nxt = np.minimum.accumulate(here[::-1], axis=0)[::-1]  # first s >= t in p
    minutes = (nxt - t[:, None]) / (60.0 * _positive(fps, "fps"))
    return np.where(nxt == n, h, np.minimum(h, minutes))


def future_presence(labels: Any, delta_s: float, fps: float = 1.0, *, mode: PresenceMode | str = "point") -> np.ndarray:
    """Target presence ``Δ`` seconds ahead, with ``t + Δ`` clamped to the last frame.

    ``"point"``: ``labels[min(t + Δ, N - 1)]`` (any ``(N, ...)`` array, phase ids included). ``"union"``: 1 where the
    class is present at any frame of ``[min(t + 1, N - 1), min(t + Δ, N - 1)]``, i.e. ``(t, t + Δ]`` clamped (the
    last frame sees itself); needs ``(N, C)`` multi-hot labels.

    Args:
        labels: ``(N, C)`` 0/1 presence (or ``(N,)`` ids for ``"point"``).
        delta_s: ``Δ`` in seconds, a whole number of frames.
        fps: frames per second.
        mode: ``"point"`` or ``"union"``.

    Returns:
        An array of the input's shape and dtype.

    Raises:
        ValueError: bad shapes or values, ``Δ`` not a whole number of frames, an unknown mode.

    Example:
        >>> y = np.array([[0], [0], [1], [0], [0]])
        >>> future_presence(y, 2)[:, 0].tolist(), future_presence(y, 2, mode="union")[:, 0].tolist()
        ([1, 0, 0, 0, 0], [1, 1, 0, 0, 0])
    """
    rule = _option(PresenceMode, mode, "presence mode")
    d = _frames(delta_s, fps, "delta_s")
    if rule is PresenceMode.POINT:
        values = _array(labels)
        if values.ndim == 0 or values.shape[0] == 0:
            raise ValueError(f"labels must be (N, ...) with N >= 1, got shape {values.shape}")
        n = values.shape[0]
        return values[np.minimum(np.arange(n) + d, n - 1)]
    values = _multi_hot(labels, "labels")
    n = values.shape[0]
    t = np.arange(n)
    cum = np.concatenate([np.zeros((1, values.shape[1]), np.int64), np.cumsum(values, axis=0, dtype=np.int64)])
    lo, hi = np.minimum(t + 1, n - 1), np.minimum(t + d, n - 1)
    return ((cum[hi + 1] - cum[lo]) > 0).astype(values.dtype)


def event_labels(events: Any, horizon_s: float, fps: float = 1.0, *, onsets: bool = False) -> np.ndarray:
    """1 where an onset of event ``e`` falls in ``(t, t + h]`` (frames past the video's end hold no onsets).

    Args:
        events: ``(N, E)`` 0/1 event presence (an onset is a 0 -> 1 step; a frame-0 start counts), or onset
            indicators with ``onsets=True``.
        horizon_s: ``h`` in seconds, a whole number of frames.
        fps: frames per second.
        onsets: ``events`` already marks onsets.

    Returns:
        ``(N, E)`` int64 0/1; the last frame is always 0.

    Example:
        >>> bleed = np.array([[0], [0], [0], [1], [1], [0], [1]])
        >>> event_labels(bleed, 2)[:, 0].tolist()
        [0, 1, 1, 0, 1, 1, 0]
    """
    values = _multi_hot(events, "events").astype(bool)
    h = _frames(horizon_s, fps, "horizon_s")
    start = values if onsets else values & ~np.vstack([np.zeros((1, values.shape[1]), bool), values[:-1]])
    n = values.shape[0]
    t = np.arange(n)
    cum = np.concatenate([np.zeros((1, values.shape[1]), np.int64), np.cumsum(start, axis=0, dtype=np.int64)])
    lo, hi = t + 1, np.minimum(t + h, n - 1)  # lo = N at the last frame: an empty window
    return (np.maximum(cum[hi + 1] - cum[lo], 0) > 0).astype(np.int64)


def change_mask(current: Any, future: Any) -> np.ndarray:
    """Frames whose future target differs from the current label (the change-conditioned metrics' frames).

    Args:
        current: ``(N,)`` ids or ``(N, C)`` presence at ``t``.
        future: the target of the same shape (label at ``t + Δ``, or the union window).

    Returns:
        ``(N,)`` bool: any class differs.

    Raises:
        ValueError: different shapes.

    Example:
        >>> y = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
        >>> change_mask(y, future_presence(y, 1)).tolist()
        [False, True, False, False]
    """
    a, b = _array(current), _array(future)
    if a.shape != b.shape or a.ndim == 0:
        raise ValueError(f"current {a.shape} and future {b.shape} labels must have the same (N, ...) shape")
    diff = a != b
    return diff.reshape(diff.shape[0], -1).any(axis=1)


def _length(values: Any, what: str) -> int:
    shape = _array(values).shape
    if not shape:
        raise ValueError(f"{what} must have a frame axis, got a scalar")
    return int(shape[0])


def sfpbench_labels(
    num_frames: int,
    *,
    phases: Any | None = None,
    steps: Any | None = None,
    triplets: Any | None = None,
    events: Any | None = None,
    fps: float = 1.0,
    triplet_deltas_s: Sequence[float] = TRIPLET_DELTAS_S,
    event_horizons_s: Sequence[float] = EVENT_HORIZONS_S,
    transition_horizons_min: Sequence[float] = TRANSITION_HORIZONS_MIN,
    triplet_mode: PresenceMode | str = "point",
    num_phases: int | None = None,
    num_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """All SFPBench targets one video's annotations allow; tasks without labels are left out (logged), not faked.

    Keys (``{d}``, ``{h}`` formatted with ``:g``): ``elapsed`` and ``rsd`` (always); with ``triplets``
    ``triplets@{d}s`` (target) and ``triplets_change@{d}s`` (bool mask for the change-conditioned metrics); with
    ``events`` ``events@{h}s``; with ``phases`` ``phase_next@{h}min`` and ``phase_tta@{h}min``; with ``steps``
    ``step_next@{h}min`` and ``step_tta@{h}min``.

    Args:
        num_frames: ``N``; every label array must have ``N`` frames.
        phases: ``(N,)`` phase ids, or ``None``.
        steps: ``(N,)`` step ids, or ``None``.
        triplets: ``(N, C)`` triplet (or instrument) presence, or ``None``.
        events: ``(N, E)`` event presence, or ``None``.
        fps: frames per second of all label arrays.
        triplet_deltas_s: ``Δ`` values in seconds.
        event_horizons_s: event horizons in seconds.
        transition_horizons_min: phase/step horizons in minutes.
        triplet_mode: ``"point"`` or ``"union"`` (see :func:`future_presence`).
        num_phases: ``P`` for ``phase_tta``; ``None``: 1 + the largest id of this video.
        num_steps: the same for ``step_tta``.

    Returns:
        ``{task key: (N, ...) array}``.

    Raises:
        ValueError: a label array whose length is not ``num_frames``, or any error of the generators.

    Example:
        >>> sorted(sfpbench_labels(6, phases=[0, 0, 1, 1, 1, 2], transition_horizons_min=(2,)))
        ['elapsed', 'phase_next@2min', 'phase_tta@2min', 'rsd']
    """
    n = _num_frames(num_frames)
    given = {"phases": phases, "steps": steps, "triplets": triplets, "events": events}
    for name, values in given.items():
        if values is not None and _length(values, name) != n:
            raise ValueError(f"{name} has {_length(values, name)} frames, expected num_frames={n}")
    missing = [name for name, values in given.items() if values is None]
    if missing:
        logger.info("SFPBench: no %s labels; those tasks are skipped", ", ".join(missing))
    out: dict[str, np.ndarray] = {"elapsed": elapsed(n, fps), "rsd": rsd(n, fps)}
    if triplets is not None:
        current = _multi_hot(triplets, "triplets")
        for d in triplet_deltas_s:
            target = future_presence(current, d, fps, mode=triplet_mode)
            out[f"triplets@{d:g}s"] = target
            out[f"triplets_change@{d:g}s"] = change_mask(current, target)
    if events is not None:
        for h in event_horizons_s:
            out[f"events@{h:g}s"] = event_labels(events, h, fps)
    for name, values, k in (("phase", phases, num_phases), ("step", steps, num_steps)):
        if values is None:
            continue
        ids = _phases(values, f"{name}s")
        for h in transition_horizons_min:
            out[f"{name}_next@{h:g}min"] = next_change(ids, h, fps)
            out[f"{name}_tta@{h:g}min"] = tta(ids, h, fps, num_classes=k)
    return out


def copy_current(
    labels: Any,
    target: CopyTarget | str = "presence",
    *,
    horizon: float | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The copy-current baseline (mandatory in every table): the current state is assumed to persist.

    * ``presence``: the score for ``t + Δ`` is the label at ``t`` (float64 copy of ``labels``). High dense mAP,
      since labels change slowly; methods must beat it on the change-conditioned metrics.
    * ``next_change``: no change is coming, so ``h`` everywhere (``labels`` are the ``(N,)`` phase ids).
    * ``tta``: 0 for the current phase, ``h`` for every other phase (``(N, P)``).
    * ``rsd``: not applicable (the remaining duration always changes): raises; use :class:`PhasePrior`.

    Args:
        labels: ``(N, ...)`` presence at ``t``, or ``(N,)`` phase ids for the time targets.
        target: one of ``presence``, ``next_change``, ``tta``, ``rsd``.
        horizon: ``h`` in minutes, needed by ``next_change`` and ``tta``.
        num_classes: ``P`` for ``tta``; ``None``: 1 + the largest id.

    Returns:
        float64 predictions.

    Raises:
        ValueError: ``rsd``, an unknown target, a missing horizon, bad labels.

    Example:
        >>> copy_current([[1, 0], [0, 1]]).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        >>> copy_current([0, 1, 1], "tta", horizon=2).tolist()
        [[0.0, 2.0], [2.0, 0.0], [2.0, 0.0]]
    """
    kind = _option(CopyTarget, target, "copy-current target")
    if kind is CopyTarget.RSD:
        raise ValueError("copy-current has no RSD prediction (the remaining duration always changes); "
                         "use PhasePrior.predict_rsd")
    if kind is CopyTarget.PRESENCE:
        values = _array(labels)
        if values.ndim == 0 or values.shape[0] == 0:
            raise ValueError(f"labels must be (N, ...) with N >= 1, got shape {values.shape}")
        return values.astype(np.float64)
    if horizon is None:
        raise ValueError(f"copy-current {kind.value} needs the horizon (minutes)")
    h = _positive(horizon, "horizon")
    p = _phases(labels)
    if kind is CopyTarget.NEXT_CHANGE:
        return np.full(p.shape, h)
    k = _num_classes(p, num_classes)
    return np.where(p[:, None] == np.arange(k)[None, :], 0.0, h)


def _segments(phases: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding: (phase id, start frame, length) of every segment."""
    starts = np.flatnonzero(np.r_[True, phases[1:] != phases[:-1]])
    lengths = np.diff(np.r_[starts, phases.size])
    return phases[starts], starts, lengths


@dataclass(frozen=True, eq=False)
class PhasePrior:
    """The statistical-prior baseline, fit on training phase sequences (spec section 7).

    * **Remaining time in the current phase**: given the phase ``p`` and the minutes ``τ`` already spent in its
      current segment (:func:`time_in_phase`), the median (or mean) of ``d - τ`` over the training segments of
      ``p`` that lasted longer than ``τ`` (``d > τ``); 0 when none did (or ``p`` was never seen).
    * **Time to the next phase**: that remaining time, capped at ``h``.
    * **Per-phase time to arrival**: 0 for ``p``; for a phase ``q`` that usually follows ``p`` (the typical order
      sorts phases by their mean relative start in training videos), the remaining time plus the expected time of
      the phases in between, capped at ``h``; ``h`` for phases that usually come before.
    * **RSD**: ``elapsed`` mode ``max(0, mean duration - elapsed)``; ``phase`` mode the remaining time in the
      phase plus the expected per-video time of the phases that usually follow.

    Predictions at ``t`` use ``phases[: t + 1]`` only (ground-truth or recognised phases).

    Attributes:
        num_classes: ``P``.
        fps: frames per second of the fitted and predicted sequences.
        durations: per phase, the sorted segment durations in minutes.
        mean_duration: the mean video duration, ``(N - 1) / (60 fps)``, in minutes.
        expected_time: ``(P,)`` mean minutes per video spent in each phase (0 for videos without it).
        order: ``(P,)`` rank of each phase in the typical order (unseen phases last).
        statistic: ``median`` or ``mean``.

    Example:
        >>> prior = PhasePrior.fit([[0, 0, 0, 1, 1, 2, 2, 2, 2, 2], [0, 1, 1, 1, 2, 2]], fps=1 / 60)
        >>> prior.durations[1].tolist(), prior.mean_duration
        ([2.0, 3.0], 7.0)
        >>> prior.predict_next_change([0, 1, 1, 1], horizon=5).tolist()  # phase 1: median of (2, 3), then of (3,)
        [2.0, 2.5, 1.5, 1.0]
        >>> prior.predict_rsd([0, 0, 1]).tolist()  # elapsed mode: 7 - t
        [7.0, 6.0, 5.0]
    """

    num_classes: int
    fps: float
    durations: tuple[np.ndarray, ...]
    mean_duration: float
    expected_time: np.ndarray
    order: np.ndarray
    statistic: PriorStatistic = PriorStatistic.MEDIAN

    @classmethod
    def fit(
        cls,
        sequences: Sequence[Any],
        *,
        num_classes: int | None = None,
        fps: float = 1.0,
        statistic: PriorStatistic | str = "median",
    ) -> PhasePrior:
        """Fit on training videos' ``(N_i,)`` phase sequences (the same ``fps`` as the predictions).

        Raises:
            ValueError: no sequences, a bad sequence (named by index), an id ``>= num_classes``, unknown statistic.
        """
        stat = _option(PriorStatistic, statistic, "prior statistic")
        rate = _positive(fps, "fps")
        if isinstance(sequences, (np.ndarray, Mapping)) or len(sequences) == 0:
            raise ValueError("PhasePrior.fit needs a non-empty list of per-video phase sequences")
        videos = [_phases(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
        k = _num_classes(np.array([v.max() for v in videos]), num_classes, "sequences")
        minute = 60.0 * rate
        seg_id, seg_len, totals, first = [], [], np.zeros((len(videos), k)), np.full((len(videos), k), np.nan)
        for i, v in enumerate(videos):  # one pass per video, vectorised within
            ids, starts, lengths = _segments(v)
            seg_id.append(ids)
            seg_len.append(lengths)
            np.add.at(totals[i], ids, lengths / minute)
            present, where = np.unique(ids, return_index=True)  # each phase's first segment
            first[i, present] = starts[where] / max(v.size - 1, 1)
        ids, lengths = np.concatenate(seg_id), np.concatenate(seg_len) / minute
        durations = tuple(np.sort(lengths[ids == q]) for q in range(k))
        seen = ~np.isnan(first).all(axis=0)
        mean_start = np.full(k, np.inf)
        mean_start[seen] = np.nanmean(first[:, seen], axis=0)
        order = np.empty(k, np.int64)
        order[np.lexsort((np.arange(k), mean_start))] = np.arange(k)
        return cls(
            num_classes=k,
            fps=rate,
            durations=durations,
            mean_duration=float(np.mean([(v.size - 1) / minute for v in videos])),
            expected_time=totals.mean(axis=0),
            order=order,
            statistic=stat,
        )

    def _checked(self, phases: Any) -> np.ndarray:
        p = _phases(phases)
        if p.max() >= self.num_classes:
            raise ValueError(f"phases holds id {int(p.max())}; the prior was fit on {self.num_classes} phases")
        return p

    def remaining_in_phase(self, phases: Any) -> np.ndarray:
        """``(N,)`` predicted minutes left in the current phase (see the class docstring)."""
        p = self._checked(phases)
        tau = time_in_phase(p, self.fps)
        out = np.zeros(p.size)
        for q in np.unique(p):  # one vectorised query per phase
            d = self.durations[q]
            rows = p == q
            k = np.searchsorted(d, tau[rows], side="right")  # d[k:] > tau
            count = d.size - k
            ok = count > 0
            if self.statistic is PriorStatistic.MEDIAN:
                lo = np.minimum(k + (count - 1) // 2, max(d.size - 1, 0))
                hi = np.minimum(k + count // 2, max(d.size - 1, 0))
                value = 0.5 * (d[lo] + d[hi]) if d.size else np.zeros(k.shape)
            else:
                cum = np.r_[0.0, np.cumsum(d)]
                value = (cum[-1] - cum[k]) / np.maximum(count, 1)
            out[rows] = np.where(ok, value - tau[rows], 0.0)
        return out

    def predict_next_change(self, phases: Any, horizon: float) -> np.ndarray:
        """``(N,)`` predicted minutes to the next phase change, capped at ``horizon``."""
        return np.minimum(_positive(horizon, "horizon"), self.remaining_in_phase(phases))

    def predict_tta(self, phases: Any, horizon: float) -> np.ndarray:
        """``(N, P)`` predicted per-phase time to arrival, capped at ``horizon`` (see the class docstring)."""
        h = _positive(horizon, "horizon")
        p = self._checked(phases)
        rank = self.order
        between_mask = (rank[None, None, :] > rank[:, None, None]) & (rank[None, None, :] < rank[None, :, None])
        between = (between_mask * self.expected_time[None, None, :]).sum(axis=-1)  # (P, P): strictly between p, q
        between = np.where(rank[None, :] > rank[:, None], between, np.inf)
        out = np.minimum(h, self.remaining_in_phase(p)[:, None] + between[p])
        out[np.arange(p.size), p] = 0.0
        return out

    def predict_rsd(self, phases: Any, mode: RsdMode | str = "elapsed") -> np.ndarray:
        """``(N,)`` predicted remaining surgery duration in minutes.

        Args:
            phases: ``(N,)`` phase ids (``elapsed`` mode only uses their count).
            mode: ``elapsed`` (spec section 7) or ``phase`` (see the class docstring).
        """
        rule = _option(RsdMode, mode, "RSD mode")
        p = self._checked(phases)
        if rule is RsdMode.ELAPSED:
            return np.maximum(0.0, self.mean_duration - elapsed(p.size, self.fps))
        after = ((self.order[None, :] > self.order[:, None]) * self.expected_time[None, :]).sum(axis=1)  # (P,)
        return self.remaining_in_phase(p) + after[p]
