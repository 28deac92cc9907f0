# SPDX-License-Identifier: Apache-2.0
"""SFPBench scores of per-video forecasts, and the two training-free baselines (spec §7).

:func:`score_arm` turns one arm's forecasts (one dict per video, keys of :mod:`medkd.methods.surgfutr.forecast`)
into the metric keys every arm shares: ``rsd_mae`` (+ ``rsd_mae_10/5/2``), ``phase_wmae``, ``phase_inmae``,
``phase_outmae``, ``phase_next_mae`` (minutes, at the first transition horizon), ``tool_map`` and
``tool_map_change`` (tool presence at the first Δ, video-wise, dense and change-conditioned), ``triplet_map`` and
``triplet_map_change`` (when the presence classes are triplets), ``event_map``, ``event_map_change`` and
``event_auroc`` (first event horizon), and ``per_horizon`` for every horizon. A metric whose labels a dataset lacks is
``None``, never faked.

Baselines: :func:`copy_current_forecasts` (the state at t persists: presence at t+Δ := presence at t, no transition
within the horizon) and :class:`PriorBaseline` (mean training durations: :class:`~medkd.metrics.surgical_labels.
PhasePrior` on the current phase, class frequencies per current phase for presence and events).

Example:
    >>> score = _map([np.array([[1], [0]])], [np.array([[0.9], [0.1]])])
    >>> score
    1.0
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medkd.metrics.anticipation import anticipation_mae, rsd_mae
from medkd.metrics.surgical_labels import PhasePrior, copy_current, future_presence
from medkd.metrics.triplet_map import mean_auroc, mean_average_precision, triplet_components

__all__ = ["PriorBaseline", "copy_current_forecasts", "score_arm", "METRIC_KEYS"]

#: the metric keys every arm's object holds (``None`` where the data lack the labels)
METRIC_KEYS = ("rsd_mae", "phase_wmae", "phase_inmae", "phase_outmae", "phase_next_mae", "tool_map",
               "tool_map_change", "triplet_map", "triplet_map_change", "event_map", "event_map_change", "event_auroc")


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _map(target: list[np.ndarray], score: list[np.ndarray], current: list[np.ndarray] | None = None) -> float | None:
    try:
        return _num(mean_average_precision(target, score, current=current).mean)
    except ValueError:
        return None


def _tools(data: Any, values: np.ndarray) -> np.ndarray:
    """Presence values -> tool-level values (the maximum over each tool's triplets)."""
    if data.tool_of is None:
        return values
    keep = data.tool_of >= 0
    return triplet_components(values[:, keep], data.tool_of[keep], len(data.tool_names))


def score_arm(forecasts: list[dict[str, np.ndarray]], data: Any, cfg: Any) -> dict[str, Any]:
    """The shared metric keys (module docstring) of one arm on a :class:`~medkd.methods.surgfutr.data.SplitData`."""
    videos, t = data.videos, cfg.tasks
    out: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    per_h: dict[str, Any] = {}
    if all("rsd" in f for f in forecasts):
        r = rsd_mae([f["rsd"] for f in forecasts], [v.targets["rsd"] for v in videos])
        out["rsd_mae"] = _num(r["MAE-ALL"])
        out.update({f"rsd_mae_{w}": _num(r.get(f"MAE-{w}", float("nan"))) for w in (10, 5, 2)})
    if videos[0].phase is not None and all("phase_tta@%gmin" % t.transition_horizons_min[0] in f for f in forecasts):
        for i, h in enumerate(t.transition_horizons_min):
            res = anticipation_mae([f[f"phase_tta@{h:g}min"] for f in forecasts],
                                   [v.targets[f"phase_tta@{h:g}min"] for v in videos], h)
            nxt = anticipation_mae([f[f"phase_next@{h:g}min"] for f in forecasts],
                                   [v.targets[f"phase_next@{h:g}min"] for v in videos], h)
            vals = {"wmae": _num(res["wMAE"]), "inmae": _num(res["inMAE"]), "outmae": _num(res["outMAE"]),
                    "emae": _num(res["eMAE"]), "next_mae": _num(nxt["MAE"])}
            per_h[f"phase@{h:g}min"] = vals
            if i == 0:
                out.update(phase_wmae=vals["wmae"], phase_inmae=vals["inmae"], phase_outmae=vals["outmae"],
                           phase_next_mae=vals["next_mae"])
    if videos[0].presence is not None and all("presence@%gs" % t.presence_deltas_s[0] in f for f in forecasts):
        for i, d in enumerate(t.presence_deltas_s):
            scores = [f[f"presence@{d:g}s"] for f in forecasts]
            vals: dict[str, Any] = {}
            if videos[0].tools is not None:
                tool_now = [v.tools for v in videos]
                tool_target = [future_presence(v.tools, d, mode=t.presence_mode) for v in videos]
                tool_score = [_tools(data, s) for s in scores]
                vals.update(tool_map=_map(tool_target, tool_score), tool_map_change=_map(tool_target, tool_score,
                                                                                         tool_now))
            if data.tool_of is not None:
                target = [v.targets[f"triplets@{d:g}s"] for v in videos]
                vals.update(triplet_map=_map(target, scores),
                            triplet_map_change=_map(target, scores, [v.presence for v in videos]))
            per_h[f"presence@{d:g}s"] = vals
            if i == 0:
                out.update(vals)
    if videos[0].events is not None and data.event_names and all(
            "events@%gs" % t.event_horizons_s[0] in f for f in forecasts):
        for i, h in enumerate(t.event_horizons_s):
            target = [v.targets[f"events@{h:g}s"] for v in videos]
            scores = [f[f"events@{h:g}s"] for f in forecasts]
            try:
                auroc = _num(mean_auroc(target, scores).mean)
            except ValueError:
                auroc = None
            vals = {"event_map": _map(target, scores), "event_auroc": auroc,
                    "event_map_change": _map(target, scores, [v.events for v in videos])}
            per_h[f"events@{h:g}s"] = vals
            if i == 0:
                out.update(vals)
    out["per_horizon"] = per_h
    out["videos"] = len(videos)
    out["seconds"] = int(sum(v.num_seconds for v in videos))
    return out


def copy_current_forecasts(data: Any, cfg: Any) -> list[dict[str, np.ndarray]]:
    """Copy-current forecasts per video: presence and events keep their state at t; transitions say ``h`` (no
    change within the horizon); no RSD (the remaining duration always changes)."""
    t = cfg.tasks
    out = []
    for v in data.videos:
        fc: dict[str, np.ndarray] = {}
        if v.phase is not None:
            k = len(data.phase_names) or None
            for h in t.transition_horizons_min:
                fc[f"phase_next@{h:g}min"] = copy_current(v.phase, "next_change", horizon=h)
                fc[f"phase_tta@{h:g}min"] = copy_current(v.phase, "tta", horizon=h, num_classes=k)
        if v.presence is not None:
            for d in t.presence_deltas_s:
                fc[f"presence@{d:g}s"] = v.presence.astype(np.float64)
        if v.events is not None:
            for h in t.event_horizons_s:
                fc[f"events@{h:g}s"] = v.events.astype(np.float64)
        out.append(fc)
    return out


class PriorBaseline:
    """The statistical prior, fit on the training split: :class:`PhasePrior` (median remaining time in the current
    phase given the time spent in it; RSD = max(0, mean duration - elapsed)) on the ground-truth current phase, and
    per current phase the training frequency of each presence and event target."""

    def __init__(self, train: Any, cfg: Any) -> None:
        self.cfg = cfg
        p = len(train.phase_names)
        self.prior = PhasePrior.fit([v.phase for v in train.videos], num_classes=p or None) if train.videos[
            0].phase is not None else None
        self.freq: dict[str, np.ndarray] = {}
        if self.prior is None:
            return
        phases = np.concatenate([v.phase for v in train.videos])
        keys = [k for k in train.videos[0].targets if k.startswith(("triplets@", "events@"))]
        for key in keys:
            values = np.concatenate([v.targets[key] for v in train.videos]).astype(np.float64)
            table = np.zeros((self.prior.num_classes, values.shape[1]))
            counts = np.bincount(phases, minlength=self.prior.num_classes)[:, None]
            np.add.at(table, phases, values)
            self.freq[key] = table / np.maximum(counts, 1)

    def forecasts(self, data: Any) -> list[dict[str, np.ndarray]]:
        """The prior's forecasts for every video of ``data``."""
        t = self.cfg.tasks
        out = []
        for v in data.videos:
            fc: dict[str, np.ndarray] = {}
            if self.prior is not None and v.phase is not None:
                fc["rsd"] = self.prior.predict_rsd(v.phase)
                for h in t.transition_horizons_min:
                    fc[f"phase_next@{h:g}min"] = self.prior.predict_next_change(v.phase, h)
                    fc[f"phase_tta@{h:g}min"] = self.prior.predict_tta(v.phase, h)
                for d in t.presence_deltas_s:
                    if f"triplets@{d:g}s" in self.freq:
                        fc[f"presence@{d:g}s"] = self.freq[f"triplets@{d:g}s"][v.phase]
                for h in t.event_horizons_s:
                    if f"events@{h:g}s" in self.freq:
                        fc[f"events@{h:g}s"] = self.freq[f"events@{h:g}s"][v.phase]
            out.append(fc)
        return out
