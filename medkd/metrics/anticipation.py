# SPDX-License-Identifier: Apache-2.0
"""Anticipation metrics of SFPBench: the in/out-of-horizon MAE family for times to the next phase, step or
instrument, and the remaining-surgery-duration (RSD) MAE (SurgFUTR spec, section 4). All values are in minutes.

**In/out-of-horizon family** (Rivoir et al., MICCAI 2020; Yuan et al., MICCAI 2021, ``test_scores.py``). Targets are
times capped at the horizon ``h`` (:func:`medkd.metrics.surgical_labels.next_change`, ``tta``). Per class, over all
frames of all videos pooled (the reference's convention), with ``e = |pred - target|``:

=========  ===================================================================
``MAE``    mean ``e`` over all frames
``outMAE`` frames with ``target == h`` (nothing happens within the horizon)
``inMAE``  frames with ``0 < target < h``
``wMAE``   ``(inMAE + outMAE) / 2``
``eMAE``   frames with ``0 < target < 0.1 h`` (the event is imminent)
``pMAE``   frames whose **prediction** is in ``(0.1 h, 0.9 h)``
=========  ===================================================================

A class without frames of a kind gets NaN for that metric (its ``wMAE`` too, when ``inMAE`` or ``outMAE`` is NaN);
the reported value is the mean over the classes that are not NaN, and NaN (no warning) when none is. Predictions
are used as given (clip them to ``[0, h]`` first if the model is unbounded).

**RSD** (:func:`rsd_mae`): MAE over all frames (``MAE-ALL``) and over each video's last 10, 5 and 2 minutes
(``MAE-10`` ..., frames with ``target < w``; RSDNet, Twinanda et al., TMI 2019). ``reduction="video"`` (default)
averages each video's MAE, ``"global"`` pools the frames.

Inputs are numpy arrays or torch tensors; a list or tuple of arrays is read as one array per video.

Example:
    >>> target = np.array([2.0, 2.0, 1.0, 2.0, 1.0, 2.0])     # next_change at h = 2
    >>> pred = np.array([2.0, 1.5, 1.5, 2.0, 0.5, 2.0])
    >>> res = anticipation_mae(pred, target, horizon=2)
    >>> res["inMAE"], res["outMAE"], res["wMAE"]
    (0.5, 0.125, 0.3125)
    >>> rsd_mae([np.array([3.0, 2.0, 0.0])], [np.array([4.0, 1.0, 0.0])], windows=(2,))
    {'MAE-ALL': 0.6666666666666666, 'MAE-2': 0.5}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

__all__ = ["ANTICIPATION_METRICS", "RSD_WINDOWS_MIN", "Reduction", "AnticipationResult", "anticipation_mae", "rsd_mae"]

ANTICIPATION_METRICS: tuple[str, ...] = ("MAE", "wMAE", "inMAE", "outMAE", "eMAE", "pMAE")
"""Keys of :attr:`AnticipationResult.per_class` and :attr:`AnticipationResult.scores`."""

RSD_WINDOWS_MIN: tuple[float, ...] = (10.0, 5.0, 2.0)
"""The RSD MAE is also reported over each video's last 10, 5 and 2 minutes."""


class Reduction(StrEnum):
    """How videos are combined: ``video`` (one value per video, then their mean) or ``global`` (frames pooled)."""

    VIDEO = "video"
    GLOBAL = "global"


def _reduction(value: Reduction | str) -> Reduction:
    try:
        return Reduction(value)
    except ValueError:
        raise ValueError(f"unknown reduction {value!r}; choose one of video, global") from None


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _is_video_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, np.ndarray) or hasattr(v, "detach") for v in value)


def _videos(value: Any, what: str) -> list[np.ndarray]:
    """One float64 array per video (a single array is one video)."""
    arrays = [_array(v) for v in value] if _is_video_list(value) else [_array(value)]
    for i, a in enumerate(arrays):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{what}[{i}] holds NaN or infinite values")
    return arrays


def _nanmean(values: np.ndarray, axis: int | None = None) -> Any:
    with warnings.catch_warnings():  # all-NaN slices give NaN, silently
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _json(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _masked_mean(err: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(axis=0)
    total = np.where(mask, err, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count


@dataclass(frozen=True, eq=False)
class AnticipationResult:
    """In/out-of-horizon MAE family per class and averaged over classes.

    Attributes:
        horizon: ``h`` in minutes.
        per_class: ``{metric: (C,) float64}`` for the keys of :data:`ANTICIPATION_METRICS`; NaN where a class has
            no frames of that kind.
        counts: ``{metric: (C,) int}`` frames behind each value (``wMAE``: in + out frames).
        class_names: optional names of the ``C`` classes.
    """

    horizon: float
    per_class: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    class_names: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        """``{metric: mean over non-NaN classes}`` (NaN when every class is NaN)."""
        return {k: float(_nanmean(v)) for k, v in self.per_class.items()}

    def __getitem__(self, metric: str) -> float:
        if metric not in self.per_class:
            raise KeyError(f"unknown anticipation metric {metric!r}; choose one of {', '.join(ANTICIPATION_METRICS)}")
        return float(_nanmean(self.per_class[metric]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: class-averaged ``scores``, ``per_class`` lists (keyed by class name when given), counts;
        NaN becomes ``None``."""
        names = self.class_names or tuple(str(i) for i in range(len(self.per_class["MAE"])))
        return {
            "horizon": self.horizon,
            "scores": {k: _json(v) for k, v in self.scores.items()},
            "per_class": {k: dict(zip(names, (_json(x) for x in v))) for k, v in self.per_class.items()},
            "counts": {k: dict(zip(names, (int(x) for x in v))) for k, v in self.counts.items()},
            **self.info,
        }


def _pair_2d(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    preds, targets = _videos(pred, "pred"), _videos(target, "target")
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction arrays for {len(targets)} target arrays (one per video)")
    for i, (p, t) in enumerate(zip(preds, targets)):
        if p.shape != t.shape:
            raise ValueError(f"video {i}: pred shape {p.shape} does not match target shape {t.shape}")
        if t.ndim not in (1, 2):
            raise ValueError(f"video {i}: expected (N,) or (N, C) times, got shape {t.shape}")
    if len({t.shape[1:] for t in targets}) > 1:
        raise ValueError(f"videos have different numbers of classes: {sorted({t.shape[1:] for t in targets})}")
    p, t = np.concatenate(preds), np.concatenate(targets)
    if t.shape[0] == 0:
        raise ValueError("anticipation metrics need at least one frame")
    return (p, t) if t.ndim == 2 else (p[:, None], t[:, None])


def anticipation_mae(
    pred: Any,
    target: Any,
    horizon: float,
    *,
    class_names: Sequence[str] | None = None,
    atol: float = 1e-6,
) -> AnticipationResult:
    """The in/out-of-horizon MAE family (module docstring), per class then averaged.

    Args:
        pred: ``(N,)`` or ``(N, C)`` predicted minutes, or one such array per video.
        target: the capped ground truth, same shapes, in ``[0, h]``.
        horizon: ``h`` in minutes, the cap used for ``target``.
        class_names: ``C`` names for :meth:`AnticipationResult.to_dict`.
        atol: targets within ``atol`` of ``h`` count as ``h`` (floating-point slack).

    Returns:
        An :class:`AnticipationResult`.

    Raises:
        ValueError: shape mismatches, no frames, NaN or infinite values, targets outside ``[0, h]``, a
            non-positive horizon, a wrong number of class names.
    """
    h = float(horizon)
    if not (math.isfinite(h) and h > 0):
        raise ValueError(f"horizon must be a positive number of minutes, got {horizon}")
    p, t = _pair_2d(pred, target)
    if t.min() < 0 or t.max() > h + atol:
        raise ValueError(f"targets must lie in [0, h={h:g}] (times capped at the horizon), "
                         f"got [{t.min():g}, {t.max():g}]")
    if class_names is not None and len(class_names) != t.shape[1]:
        raise ValueError(f"{len(class_names)} class names for {t.shape[1]} classes")
    err = np.abs(p - t)
    out = t >= h - atol
    masks = {
        "MAE": np.ones_like(out),
        "inMAE": (t > 0) & ~out,
        "outMAE": out,
        "eMAE": (t > 0) & (t < 0.1 * h),
        "pMAE": (p > 0.1 * h) & (p < 0.9 * h),
    }
    per_class, counts = {}, {}
    for name, mask in masks.items():
        per_class[name], counts[name] = _masked_mean(err, mask)
    per_class["wMAE"] = 0.5 * (per_class["inMAE"] + per_class["outMAE"])  # NaN when either is
    counts["wMAE"] = counts["inMAE"] + counts["outMAE"]
    order = {k: per_class[k] for k in ANTICIPATION_METRICS}
    return AnticipationResult(
        horizon=h,
        per_class=order,
        counts={k: counts[k] for k in ANTICIPATION_METRICS},
        class_names=tuple(class_names) if class_names is not None else None,
    )


def rsd_mae(
    pred: Any,
    target: Any,
    *,
    windows: Sequence[float] = RSD_WINDOWS_MIN,
    reduction: Reduction | str = "video",
) -> dict[str, float]:
    """Remaining-surgery-duration MAE in minutes, over all frames and over each video's last minutes.

    Args:
        pred: ``(N,)`` predicted RSD in minutes, or one array per video.
        target: the ground truth (:func:`medkd.metrics.surgical_labels.rsd`), same shapes, ``>= 0``.
        windows: ``w`` values; ``MAE-{w:g}`` uses the frames with ``target < w`` (the last ``w`` minutes).
        reduction: ``video`` (mean of per-video MAEs; videos without frames in a window are left out) or
            ``global`` (frames pooled).

    Returns:
        ``{"MAE-ALL": ..., "MAE-10": ..., ...}``; NaN where no frame qualifies.

    Raises:
        ValueError: shape mismatches, empty videos, NaN values, negative targets, bad windows, unknown reduction.
    """
    rule = _reduction(reduction)
    preds, targets = _videos(pred, "pred"), _videos(target, "target")
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} prediction arrays for {len(targets)} target arrays (one per video)")
    for i, (p, t) in enumerate(zip(preds, targets)):
        if t.ndim != 1 or p.shape != t.shape or t.size == 0:
            raise ValueError(f"video {i}: pred {p.shape} and target {t.shape} must be the same non-empty (N,)")
        if t.min() < 0:
            raise ValueError(f"video {i}: RSD targets must be >= 0, got {t.min():g}")
    bounds = [float(w) for w in windows]
    if any(not (math.isfinite(w) and w > 0) for w in bounds):
        raise ValueError(f"windows must be positive minutes, got {list(windows)}")
    keys = ["MAE-ALL"] + [f"MAE-{w:g}" for w in bounds]
    limits = [math.inf] + bounds
    if rule is Reduction.GLOBAL:
        preds, targets = [np.concatenate(preds)], [np.concatenate(targets)]
    values = np.full((len(preds), len(keys)), np.nan)
    for i, (p, t) in enumerate(zip(preds, targets)):  # one vectorised pass per video
        mask = t[:, None] < np.asarray(limits)[None, :]
        values[i] = _masked_mean(np.abs(p - t)[:, None], mask)[0]
    return {k: float(v) for k, v in zip(keys, _nanmean(values, axis=0))}
