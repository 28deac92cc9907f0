# SPDX-License-Identifier: Apache-2.0
"""Offline forecasts of a whole video with the student: every frame encoded once, every second forecast causally.

:func:`forecast_frames` runs the three steps of :class:`~medkd.methods.surgfutr.model.Student` over a video's 1-fps
frames ``(N, H, W, 3)``: per-frame features (in chunks), clip features at every second (the T frames ending there),
windows of L clip features (stride s) ending at every second; second ``t`` only ever uses frames ``<= t``, so its
output equals what :mod:`medkd.methods.surgfutr.stream` computes live. :func:`to_forecasts` names the outputs.

Forecast keys (first axis: analysed second): ``elapsed``, ``rsd`` (minutes), ``phase`` (current phase id),
``phase_prob`` ``(N, P)``, ``phase_next@{h}min``, ``phase_tta@{h}min`` ``(N, P)``, ``presence@{Δ}s`` ``(N, C)``,
``events@{h}s`` ``(N, E)`` (probabilities), ``change`` (probability that the state changes within Δ).

Example:
    >>> import torch
    >>> from medkd.config import config_from_dict
    >>> from medkd.methods.surgfutr.config import SurgFUTRConfig
    >>> from medkd.methods.surgfutr.modules import HeadLayout
    >>> from medkd.methods.surgfutr.model import Student
    >>> cfg = config_from_dict(SurgFUTRConfig, {"model": {"feature_dim": 32, "state_dim": 16, "width": 8}})
    >>> student = Student(cfg, HeadLayout(3, 2, 0, (1,), (), (2.0,))).eval()
    >>> fc = forecast_frames(student, np.zeros((20, 32, 32, 3), np.uint8))
    >>> fc["phase_tta@2min"].shape, fc["rsd"].shape
    ((20, 3), (20,))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["clip_index", "forecast_frames", "forecast_keys", "to_forecasts", "window_index"]


def clip_index(t: torch.Tensor, clip_frames: int) -> torch.Tensor:
    """``(n, T)`` frame indices of the clips ending at seconds ``t`` (before 0: frame 0)."""
    return (t[:, None] - (clip_frames - 1) + torch.arange(clip_frames, device=t.device)).clamp_min(0)


def window_index(t: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """``(n, L)`` clip indices (= their last seconds) of the windows ending at seconds ``t``."""
    return (t[:, None] - (window - 1 - torch.arange(window, device=t.device)) * stride).clamp_min(0)


def forecast_keys(layout: Any) -> list[str]:
    """The forecast names a student with ``layout`` (:class:`~medkd.methods.surgfutr.modules.HeadLayout`) gives."""
    keys = ["elapsed", "rsd", "change"]
    if layout.phases:
        keys += ["phase", "phase_prob"]
        keys += [f"phase_next@{h:g}min" for h in layout.transition_horizons_min]
        keys += [f"phase_tta@{h:g}min" for h in layout.transition_horizons_min]
    if layout.presence:
        keys += [f"presence@{d:g}s" for d in layout.presence_deltas_s]
    if layout.events:
        keys += [f"events@{h:g}s" for h in layout.event_horizons_s]
    return keys


def to_forecasts(out: dict[str, torch.Tensor], layout: Any, elapsed_min: torch.Tensor) -> dict[str, np.ndarray]:
    """A :class:`~medkd.methods.surgfutr.model.Student` output dict -> named numpy forecasts (module docstring)."""
    fc: dict[str, np.ndarray] = {"elapsed": elapsed_min.float().cpu().numpy(),
                                 "rsd": out["rsd"].float().cpu().numpy(),
                                 "change": torch.sigmoid(out["change"]).float().cpu().numpy()}
    if layout.phases:
        prob = torch.softmax(out["phase_now"].float(), dim=-1)
        fc["phase"] = prob.argmax(-1).cpu().numpy()
        fc["phase_prob"] = prob.cpu().numpy()
        for i, h in enumerate(layout.transition_horizons_min):
            fc[f"phase_next@{h:g}min"] = out["phase_next"][:, i].float().cpu().numpy()
            fc[f"phase_tta@{h:g}min"] = out["phase_tta"][:, i].float().cpu().numpy()
    if layout.presence:
        for i, d in enumerate(layout.presence_deltas_s):
            fc[f"presence@{d:g}s"] = torch.sigmoid(out["presence"][:, i].float()).cpu().numpy()
    if layout.events:
        for i, h in enumerate(layout.event_horizons_s):
            fc[f"events@{h:g}s"] = torch.sigmoid(out["events"][:, i].float()).cpu().numpy()
    return fc


@torch.inference_mode()
def forecast_frames(student: Any, frames: np.ndarray | torch.Tensor, *, start_second: int = 0,
                    device: torch.device | str | None = None, chunk: int = 512) -> dict[str, np.ndarray]:
    """Forecasts at every second of a video's 1-fps frames ``(N, H, W, 3)`` uint8 (module docstring).

    Args:
        student: a :class:`~medkd.methods.surgfutr.model.Student` in ``eval()`` mode.
        frames: the frames, second 0 first.
        start_second: the elapsed seconds of frame 0 (0: the video's start).
        device: where to run (default: the student's).
        chunk: frames or windows per forward.
    """
    device = torch.device(device) if device is not None else next(student.parameters()).device
    x = torch.as_tensor(np.asarray(frames)).movedim(-1, -3)  # (N, 3, H, W)
    n = x.shape[0]
    feats = torch.cat([student.frame_features(x[i:i + chunk][None].to(device))[0] for i in range(0, n, chunk)])
    t = torch.arange(n, device=device)
    clips = torch.cat([student.clip_features(feats[clip_index(t[i:i + chunk], student.clip_frames)])
                       for i in range(0, n, chunk)])
    outs: list[dict[str, np.ndarray]] = []
    for i in range(0, n, chunk):
        tt = t[i:i + chunk]
        elapsed = (tt + start_second).float() / 60.0
        out = student.forward_window(clips[window_index(tt, student.window, student.clip_stride)], elapsed)
        outs.append(to_forecasts(out, student.layout, elapsed))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
