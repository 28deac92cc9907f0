# SPDX-License-Identifier: Apache-2.0
"""The app's page for ``forecasting`` models of SurgFUTR (``Method.app_view``): the video, the forecasts of every
second as a timeline, a table and the CSV of ``medkd surgfutr predict``.

The video is played (``st.video``) when its file is at hand (an upload), else a strip of its frames is shown.
The models get 1-fps frames: the uploaded file decoded again at 1 fps (the app decodes uploads at their own rate,
within a frame budget), else the decoded frames taken one per second. The timeline (Altair, through
``st.altair_chart``; :func:`timeline_chart`) stacks, over the analysed seconds: the current phase as coloured
bands, the minutes to the next phase with its horizon band (the forecast is capped at the horizon ``h``: at ``h``
it means "not within ``h``"), the remaining surgery duration, and heat strips of the upcoming tools (presence at
the first presence horizon; triplet forecasts are reduced to their instrument by the maximum, as CholecT50's
AP_i) and events (at the first event horizon). Below: the now-values at the video's last second, the CSV rows
(:func:`~medkd.methods.surgfutr.predict.forecast_row`) as a table and a download with the research-use line first.

Streamlit and Altair are imported when the page is drawn, not when this module is imported.

Example:
    >>> fc = {"phase": np.array([0, 0, 1, 1, 1]), "rsd": np.linspace(5, 4, 5)}
    >>> phase_segments(fc, ["prep", "dissect"])
    [(0, 2, 'prep'), (2, 5, 'dissect')]
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_SECONDS", "frames_1fps", "phase_segments", "playable_file", "render", "timeline_chart",
           "tool_presence", "view_horizons"]

logger = logging.getLogger("medkd.app")

#: analysed seconds decoded from an upload at most (4 h of surgery)
MAX_SECONDS = 4 * 3600
#: seconds drawn per chart at most (longer videos are thinned for the chart only; the CSV keeps every second)
_CHART_POINTS = 1200
_VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
_KEY = re.compile(r"^(phase_next|presence|events)@([0-9.]+)(min|s)$")


# ---- inputs ---------------------------------------------------------------------------------------------------------
def playable_file(data: Any) -> Path | None:
    """The upload's video file (in ``data.folder``), if there is exactly one."""
    folder = getattr(data, "folder", None)
    if folder is None or not Path(folder).is_dir():
        return None
    found = [p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in _VIDEO_SUFFIXES]
    return found[0] if len(found) == 1 else None


def frames_1fps(data: Any, *, max_seconds: int = MAX_SECONDS) -> Iterable[np.ndarray]:
    """1-fps RGB frames of a :class:`~medkd.io.upload.LoadedVideo`: its file decoded at 1 fps (lazily) when at
    hand, else its frames, one per second (frame ``i`` kept when ``floor(i / fps)`` reaches a new second)."""
    file = playable_file(data)
    if file is not None:
        from medkd.data.surgical.video import iter_video_frames

        return (f.image for f in iter_video_frames(file, fps=1.0, stop=float(max_seconds)))
    frames, fps = np.asarray(data.frames), float(getattr(data, "fps", 1.0) or 1.0)
    seconds = np.floor(np.arange(len(frames)) / fps + 1e-9).astype(np.int64)
    keep = np.flatnonzero(np.diff(seconds, prepend=-1) > 0)
    return frames[keep[:max_seconds]]


# ---- what to draw ---------------------------------------------------------------------------------------------------
def view_horizons(fc: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, ...]]:
    """The horizons of a predictor (``metadata["horizons"]``), else read off the forecast keys, in their order.

    Example:
        >>> view_horizons({"phase_next@2min": 0, "presence@3s": 0, "presence@1s": 0})["presence_deltas_s"]
        (3, 1)
    """
    from medkd.methods.surgfutr.predict import horizons_of

    given = (metadata or {}).get("horizons")
    if isinstance(given, Mapping) and given:
        return horizons_of(given)
    found: dict[str, list[Any]] = {"phase_next": [], "presence": [], "events": []}
    for key in fc:
        m = _KEY.match(key)
        if m:
            value = float(m.group(2))
            found[m.group(1)].append(value if m.group(1) == "phase_next" else int(value))
    return {"transition_horizons_min": tuple(found["phase_next"]), "presence_deltas_s": tuple(found["presence"]),
            "event_horizons_s": tuple(found["events"])}


def _names(classes: Mapping[str, Any], key: str, n: int) -> list[str]:
    names = [str(x) for x in classes.get(key) or ()]
    return names if len(names) == n else [f"{key.split('_')[0]} {i}" for i in range(n)]


def phase_segments(fc: Mapping[str, Any], phase_names: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of the same current phase: ``(first second, end second (exclusive), phase name)``."""
    if "phase" not in fc or not len(fc["phase"]):
        return []
    phase = np.asarray(fc["phase"]).astype(np.int64)
    starts = np.flatnonzero(np.diff(phase, prepend=phase[0] - 1))
    ends = np.append(starts[1:], len(phase))
    names = list(phase_names)
    return [(int(s), int(e), names[phase[s]] if 0 <= phase[s] < len(names) else f"phase {phase[s]}")
            for s, e in zip(starts, ends)]


def tool_presence(fc: Mapping[str, Any], classes: Mapping[str, Any], delta: int) -> tuple[np.ndarray, list[str]]:
    """Presence probabilities at ``delta`` seconds ``(N, C)`` and their names; triplet forecasts (``tool_of``
    given) reduced to instruments by the maximum over each instrument's triplets."""
    values = np.asarray(fc[f"presence@{delta}s"], np.float64)
    tool_of = classes.get("tool_of")
    tools = list(classes.get("tool_names") or ())
    if tool_of is not None and tools and len(tool_of) == values.shape[1]:
        index = np.asarray(tool_of, np.int64)
        out = np.zeros((values.shape[0], len(tools)))
        for k in range(len(tools)):
            if (index == k).any():
                out[:, k] = values[:, index == k].max(axis=1)
        return out, tools
    return values, _names(classes, "presence_names", values.shape[1])


def _long(values: np.ndarray, names: Sequence[str], seconds: np.ndarray, what: str) -> Any:
    import pandas as pd

    return pd.DataFrame({"second": np.repeat(seconds, len(names)), what: np.tile(list(names), len(seconds)),
                         "probability": values.reshape(-1).round(4)})


def timeline_chart(fc: Mapping[str, Any], classes: Mapping[str, Any], horizons: Mapping[str, Sequence[Any]],
                   *, width: int = 700) -> Any:
    """The forecasts over the analysed seconds as stacked Altair charts sharing the time axis (module docstring).

    Args:
        fc: a predictor's forecasts (keys of :mod:`medkd.methods.surgfutr.forecast`).
        classes: ``phase_names``, ``presence_names``, ``event_names``, ``tool_names``, ``tool_of``.
        horizons: :func:`view_horizons`.
        width: chart width in pixels.

    Returns:
        An ``altair.VConcatChart``.
    """
    import altair as alt
    import pandas as pd

    n = len(fc["rsd"]) if "rsd" in fc else len(next(iter(fc.values())))
    step = max(1, math.ceil(n / _CHART_POINTS))
    sub = np.arange(0, n, step)
    x = alt.X("second:Q", title="second of video", scale=alt.Scale(domain=[0, max(n, 1)]))
    charts = []
    segments = phase_segments(fc, _names(classes, "phase_names", len(classes.get("phase_names") or ())))
    if segments:
        bands = pd.DataFrame(segments, columns=["second", "end", "phase"])
        charts.append(alt.Chart(bands, title="Current phase").mark_rect().encode(
            x=x, x2="end:Q", color=alt.Color("phase:N", sort=list(dict.fromkeys(bands["phase"]))),
            tooltip=["phase", "second", "end"]).properties(width=width, height=28))
    hs = horizons.get("transition_horizons_min") or ()
    if hs and f"phase_next@{hs[0]:g}min" in fc:
        h = float(hs[0])
        line = pd.DataFrame({"second": sub, "minutes": np.asarray(fc[f"phase_next@{h:g}min"])[sub].round(3)})
        band = pd.DataFrame({"second": [0], "end": [max(n, 1)], "low": [0.9 * h], "high": [h]})
        charts.append(alt.layer(
            alt.Chart(band).mark_rect(opacity=0.15, color="grey").encode(x=x, x2="end:Q", y="low:Q", y2="high:Q"),
            alt.Chart(line).mark_line().encode(
                x=x, y=alt.Y("minutes:Q", title="min", scale=alt.Scale(domain=[0, h])), tooltip=["second", "minutes"]),
        ).properties(title=f"Minutes to the next phase (horizon {h:g} min: grey band = not within it)", width=width,
                     height=90))
    if "rsd" in fc:
        rsd = pd.DataFrame({"second": sub, "minutes": np.asarray(fc["rsd"])[sub].round(3)})
        charts.append(alt.Chart(rsd, title="Remaining surgery duration").mark_line(color="#d62728").encode(
            x=x, y=alt.Y("minutes:Q", title="min"), tooltip=["second", "minutes"]).properties(width=width, height=90))
    heat = alt.Scale(domain=[0, 1], scheme="blues")
    ds = horizons.get("presence_deltas_s") or ()
    if ds and f"presence@{ds[0]}s" in fc:
        values, names = tool_presence(fc, classes, int(ds[0]))
        charts.append(alt.Chart(_long(values[sub], names, sub, "tool"),
                                title=f"Tools in {ds[0]} s").mark_rect().encode(
            x=x, y=alt.Y("tool:N", sort=names, title=None), color=alt.Color("probability:Q", scale=heat),
            tooltip=["second", "tool", "probability"]).properties(width=width, height=14 * len(names)))
    es = horizons.get("event_horizons_s") or ()
    if es and f"events@{es[0]}s" in fc:
        values = np.asarray(fc[f"events@{es[0]}s"], np.float64)
        names = _names(classes, "event_names", values.shape[1])
        charts.append(alt.Chart(_long(values[sub], names, sub, "event"),
                                title=f"Events within {es[0]} s").mark_rect().encode(
            x=x, y=alt.Y("event:N", sort=names, title=None), color=alt.Color("probability:Q", scale=heat),
            tooltip=["second", "event", "probability"]).properties(width=width, height=14 * len(names)))
    return alt.vconcat(*charts).resolve_scale(color="independent")


# ---- the page -------------------------------------------------------------------------------------------------------
def _thumbnails(frames: np.ndarray, fps: float, count: int = 8) -> tuple[list[np.ndarray], list[str]]:
    index = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    return [frames[i] for i in index], [f"{i / fps:.0f} s" for i in index]


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(name).stem) or "video"


def _now(st: Any, fc: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> None:
    """The forecasts at the last analysed second as metrics."""
    last = rows[-1]
    cols = st.columns(3)
    cols[0].metric(f"Phase at {last['time']}", str(last["phase"] or "n/a"),
                   help=f"confidence {last['phase_confidence']}" if last["phase_confidence"] != "" else None)
    nxt = next((k for k in last if k.startswith("next_phase_min@")), None)
    cols[1].metric("Next phase in", f"{last[nxt]} min" if nxt and last[nxt] != "" else "n/a",
                   help=f"capped at the horizon ({nxt.split('@')[1]})" if nxt else None)
    cols[2].metric("Remaining", f"{last['rsd_min']} min" if last["rsd_min"] != "" else "n/a")


def render(ctx: Any) -> None:
    """Draw the forecasting page for ``ctx`` (a :class:`medkd.app.views.ViewContext` of ``forecasting`` models on a
    video)."""
    import pandas as pd
    import streamlit as st

    from medkd.methods.surgfutr.predict import forecast_csv, forecast_columns, forecast_row

    data = ctx.data
    st.subheader("Video")
    file = playable_file(data)
    if file is not None:
        st.video(file.read_bytes(), format="video/mp4" if file.suffix.lower() != ".webm" else "video/webm")
    else:
        pictures, captions = _thumbnails(np.asarray(data.frames), float(getattr(data, "fps", 1.0) or 1.0))
        st.image(pictures, caption=captions, width=120)
    st.caption(f"{getattr(data, 'name', 'video')}: forecasts for every second (1 fps), each from the video up to "
               "that second only.")

    results = ctx.run(verb="Forecasting", call=lambda predictor, d: predictor(frames_1fps(d)))
    for i, result in enumerate(results):
        fc, meta = result.output, dict(getattr(result.predictor, "metadata", None) or {})
        classes = dict(meta.get("classes") or {})
        horizons = view_horizons(fc, meta)
        steps = len(fc["rsd"]) if "rsd" in fc else len(next(iter(fc.values())))
        st.subheader(f"{result.name} · {steps} s analysed · {result.seconds:.1f} s")
        if steps == 0:
            st.warning("No second was analysed (an empty video).")
            continue
        rows = [forecast_row(fc, t, classes, horizons) for t in range(steps)]
        _now(st, fc, rows)
        st.altair_chart(timeline_chart(fc, classes, horizons), width="stretch", key=f"sf_timeline_{i}")
        st.dataframe(pd.DataFrame(rows, columns=forecast_columns(classes, horizons)), hide_index=True,
                     key=f"sf_table_{i}")
        st.download_button(f"Forecasts of {result.name} (CSV)",
                           forecast_csv(fc, classes, horizons, comment=ctx.disclaimer).encode("utf-8"),
                           file_name=f"{_stem(getattr(data, 'name', 'video'))}_{_stem(result.name)}_forecasts.csv",
                           mime="text/csv", key=f"sf_csv_{i}")
    st.caption(ctx.disclaimer)

