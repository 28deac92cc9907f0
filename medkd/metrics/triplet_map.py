# SPDX-License-Identifier: Apache-2.0
"""Multi-label ranking metrics of SFPBench's short-term tasks: per-class average precision (AP) and AUROC, their
class means, video-wise and global, dense and change-conditioned (SurgFUTR spec, section 4).

* **AP** is scikit-learn's ``average_precision_score`` (``sum_n (R_n - R_{n-1}) P_n`` over the distinct score
  thresholds, tied scores entering together, no interpolation), re-implemented vectorised over classes so that
  neither scikit-learn nor ``ivtmetrics`` (which breaks on NumPy >= 1.24) is needed. A class without positives
  has no AP (NaN) and is left out of the mean. **AUROC** is the Mann-Whitney statistic with average ranks for ties
  (``roc_auc_score``); NaN without positives or without negatives.
* **Video-wise** (``reduction="video"``, the official CholecT50 protocol of ``ivtmetrics``'
  ``compute_video_AP``): per video, per-class AP; per class, the mean over the videos where it is defined; mAP is
  the mean over classes. **Global** pools every frame of every video first.
* **Change-conditioned**: pass ``current`` (the labels at ``t``) and only frames whose target differs from it
  (:func:`medkd.metrics.surgical_labels.change_mask`) are scored; ``mask`` selects frames in general.
* **Components** (AP_i, AP_v, AP_t): :func:`triplet_components` maps triplet scores and labels to a component by
  the maximum over the triplets that share it (``ivtmetrics.Disentangle``).

Inputs are ``(N, C)`` arrays (0/1 labels, real scores) or torch tensors; a list or tuple of arrays is read as one
array per video.

Example:
    >>> y = np.array([[1, 0], [0, 0], [1, 1], [0, 0]])
    >>> s = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.3]])
    >>> average_precision(y, s).tolist()        # class 0: hits at ranks 1 and 3 -> (1 + 2/3) / 2
    [0.8333333333333333, 1.0]
    >>> res = mean_average_precision([y, y], [s, s])
    >>> round(res.mean, 4), res.per_video.shape
    (0.9167, (2, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from medkd.metrics.anticipation import Reduction, _json, _nanmean, _reduction
from medkd.metrics.surgical_labels import change_mask

__all__ = [
    "ClassScores",
    "average_precision",
    "roc_auc",
    "mean_average_precision",
    "mean_auroc",
    "triplet_components",
]


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _is_video_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, np.ndarray) or hasattr(v, "detach") for v in value)


def _videos(value: Any) -> list[np.ndarray]:
    return [_array(v) for v in value] if _is_video_list(value) else [_array(value)]


def _check(y_true: Any, y_score: Any, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(N, C)`` bool labels and float64 scores (``(N,)`` is one class)."""
    y, s = _array(y_true), _array(y_score)
    if y.shape != s.shape:
        raise ValueError(f"{what}labels {y.shape} and scores {s.shape} must have the same shape")
    if y.ndim not in (1, 2):
        raise ValueError(f"{what}expected (N, C) labels and scores, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"{what}labels must be 0 or 1")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{what}scores hold NaN or infinite values")
    return (y if y.ndim == 2 else y[:, None]).astype(bool), s if s.ndim == 2 else s[:, None]


def average_precision(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class average precision, scikit-learn's definition (module docstring), vectorised over classes.

    Args:
        y_true: ``(N, C)`` 0/1 labels (``(N,)``: one class).
        y_score: ``(N, C)`` scores, higher = more likely.

    Returns:
        ``(C,)`` float64; NaN for classes without positives (and for every class when ``N = 0``).

    Raises:
        ValueError: different shapes, labels other than 0/1, NaN scores.

    Example:
        >>> average_precision([1, 0, 1, 0], [0.5, 0.5, 0.5, 0.1]).tolist()  # one tie group of 3 with 2 hits
        [0.6666666666666666]
    """
    y, s = _check(y_true, y_score)
    n, c = y.shape
    if n == 0:
        return np.full(c, np.nan)
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    tp = np.cumsum(np.take_along_axis(y, order, axis=0), axis=0, dtype=np.float64)
    group_end = np.ones((n, c), bool)  # the last frame of each run of tied scores is a threshold
    group_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    reached = np.maximum.accumulate(np.where(group_end, tp, 0.0), axis=0)
    before = np.vstack([np.zeros((1, c)), reached[:-1]])  # true positives at the previous threshold
    precision = tp / np.arange(1, n + 1, dtype=np.float64)[:, None]
    gained = np.where(group_end, (tp - before) * precision, 0.0).sum(axis=0)
    positives = tp[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(positives > 0, gained / np.maximum(positives, 1), np.nan)


def roc_auc(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class area under the ROC curve (Mann-Whitney with average ranks for ties, as ``roc_auc_score``).

    Returns:
        ``(C,)`` float64; NaN for classes without positives or without negatives.

    Example:
        >>> roc_auc([[1], [0], [1], [0]], [[0.9], [0.5], [0.5], [0.1]]).tolist()
        [0.875]
    """
    y, s = _check(y_true, y_score)
    n, c = y.shape
    if n == 0:
        return np.full(c, np.nan)
    ranks = rankdata(s, axis=0)
    pos = y.sum(axis=0).astype(np.float64)
    neg = n - pos
    rank_sum = np.where(y, ranks, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


@dataclass(frozen=True, eq=False)
class ClassScores:
    """Per-class scores and their class mean.

    Attributes:
        metric: ``"AP"`` or ``"AUROC"``.
        per_class: ``(C,)`` the per-class value (video-wise: the mean over videos where it is defined); NaN for
            classes never scored.
        mean: the mean over non-NaN classes (mAP, mean AUROC); NaN when none is.
        reduction: ``"video"`` or ``"global"``.
        per_video: ``(V, C)`` per-video values (video-wise only).
        num_frames: frames scored (after the mask).
    """

    metric: str
    per_class: np.ndarray
    mean: float
    reduction: str
    per_video: np.ndarray | None = None
    num_frames: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes_scored(self) -> int:
        """Classes with a defined value (that enter :attr:`mean`)."""
        return int(np.isfinite(self.per_class).sum())

    @property
    def per_video_mean(self) -> np.ndarray | None:
        """``(V,)`` each video's own class mean (the "per video, then mean over videos" reading), or ``None``."""
        return None if self.per_video is None else _nanmean(self.per_video, axis=1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; NaN becomes ``None``."""
        out = {
            "metric": self.metric,
            "mean": _json(self.mean),
            "per_class": [_json(v) for v in self.per_class],
            "reduction": self.reduction,
            "num_frames": self.num_frames,
            "num_classes_scored": self.num_classes_scored,
            **self.info,
        }
        if self.per_video is not None:
            out["per_video_mean"] = [_json(v) for v in self.per_video_mean]  # type: ignore[union-attr]
        return out


def _class_metric(
    fn: Callable[[Any, Any], np.ndarray],
    metric: str,
    y_true: Any,
    y_score: Any,
    reduction: Reduction | str,
    mask: Any | None,
    current: Any | None,
) -> ClassScores:
    rule = _reduction(reduction)
    labels, scores = _videos(y_true), _videos(y_score)
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} label arrays for {len(scores)} score arrays (one per video)")
    pairs = [_check(y, s, f"video {i}: ") for i, (y, s) in enumerate(zip(labels, scores))]
    if len({y.shape[1] for y, _ in pairs}) > 1:
        raise ValueError(f"videos have different numbers of classes: {sorted({y.shape[1] for y, _ in pairs})}")
    keep = [np.ones(y.shape[0], bool) for y, _ in pairs]
    if mask is not None:
        masks = _videos(mask)
        if len(masks) != len(pairs):
            raise ValueError(f"{len(masks)} masks for {len(pairs)} videos")
        for i, (m, (y, _)) in enumerate(zip(masks, pairs)):
            if m.shape != (y.shape[0],):
                raise ValueError(f"video {i}: mask must have shape ({y.shape[0]},), got {m.shape}")
            keep[i] &= m.astype(bool)
    if current is not None:
        currents = _videos(current)
        if len(currents) != len(pairs):
            raise ValueError(f"{len(currents)} current-label arrays for {len(pairs)} videos")
        for i, (now, y_raw) in enumerate(zip(currents, labels)):
            try:
                keep[i] &= change_mask(now, y_raw)
            except ValueError as err:
                raise ValueError(f"video {i}: {err}") from None
    kept = [(y[k], s[k]) for (y, s), k in zip(pairs, keep)]
    frames = int(sum(k.sum() for k in keep))
    info = {"change_conditioned": current is not None}
    if rule is Reduction.GLOBAL:
        per_class = fn(np.concatenate([y for y, _ in kept]), np.concatenate([s for _, s in kept]))
        return ClassScores(metric, per_class, float(_nanmean(per_class)), rule.value, None, frames, info)
    per_video = np.stack([fn(y, s) for y, s in kept])
    per_class = _nanmean(per_video, axis=0)
    return ClassScores(metric, per_class, float(_nanmean(per_class)), rule.value, per_video, frames, info)


def mean_average_precision(
    y_true: Any,
    y_score: Any,
    *,
    reduction: Reduction | str = "video",
    mask: Any | None = None,
    current: Any | None = None,
) -> ClassScores:
    """mAP over classes with positives, video-wise (default) or global, dense or change-conditioned.

    Args:
        y_true: ``(N, C)`` 0/1 targets (e.g. triplets at ``t + Δ``), or one array per video.
        y_score: ``(N, C)`` scores, same structure.
        reduction: ``video`` (per-class AP per video, mean over videos, then over classes) or ``global``.
        mask: ``(N,)`` bool frames to score (per video), or ``None`` for all.
        current: the labels at ``t`` (same shapes as ``y_true``): only frames whose target differs are scored.

    Returns:
        :class:`ClassScores` with ``metric="AP"``.

    Raises:
        ValueError: shape mismatches (named by video), labels other than 0/1, NaN scores, unknown reduction.

    Example:
        >>> now = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0], [1, 0]])
        >>> future = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0], [1, 0]])   # labels 1 s later
        >>> dense = mean_average_precision(future, now.astype(float))           # copy-current scores
        >>> changed = mean_average_precision(future, now.astype(float), current=now)
        >>> round(dense.mean, 4), changed.mean, changed.num_frames             # on the changes: chance
        (0.5729, 0.5, 2)
    """
    return _class_metric(average_precision, "AP", y_true, y_score, reduction, mask, current)


def mean_auroc(
    y_true: Any,
    y_score: Any,
    *,
    reduction: Reduction | str = "video",
    mask: Any | None = None,
    current: Any | None = None,
) -> ClassScores:
    """Mean AUROC over classes with positives and negatives (events); arguments as :func:`mean_average_precision`.

    Example:
        >>> y = np.array([[1], [0], [0], [1]])
        >>> mean_auroc(y, np.array([[0.8], [0.2], [0.4], [0.3]]), reduction="global").mean
        0.75
    """
    return _class_metric(roc_auc, "AUROC", y_true, y_score, reduction, mask, current)


def triplet_components(values: Any, component_of: Any, num_components: int | None = None) -> np.ndarray:
    """Triplet labels or scores to one component (instrument, verb or target) by the maximum over its triplets.

    Args:
        values: ``(N, T)`` triplet labels or scores.
        component_of: ``(T,)`` the component id of each triplet (a column of CholecT50's ``maps.txt``).
        num_components: ``K``; ``None``: 1 + the largest id. Components without triplets get 0.

    Returns:
        ``(N, K)`` of the input's dtype.

    Raises:
        ValueError: shape mismatches or ids outside ``[0, K)``.

    Example:
        >>> triplet_components(np.array([[0.2, 0.9, 0.4]]), [0, 1, 0]).tolist()
        [[0.4, 0.9]]
    """
    v = _array(values)
    ids = _array(component_of).astype(np.int64).reshape(-1)
    if v.ndim != 2 or v.shape[1] != ids.size:
        raise ValueError(f"values must be (N, T) with T = {ids.size} triplets, got shape {v.shape}")
    k = int(ids.max()) + 1 if num_components is None else int(num_components)
    if ids.size and (ids.min() < 0 or ids.max() >= k):
        raise ValueError(f"component ids must lie in [0, {k}), got [{ids.min()}, {ids.max()}]")
    out = np.zeros((v.shape[0], k), dtype=v.dtype)
    for j in range(k):  # a loop over components (<= 15), not over frames
        cols = ids == j
        if cols.any():
            out[:, j] = v[:, cols].max(axis=1)
    return out
