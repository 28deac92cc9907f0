# SPDX-License-Identifier: Apache-2.0
"""``medkd surgfutr eval``: SFPBench metrics of a run and of the two training-free baselines on one split.

The JSON holds one object per arm with the same metric keys (:data:`~medkd.methods.surgfutr.scoring.METRIC_KEYS`):
``surgfutr`` (the run's student; ``variant`` says which arm was trained: ``surgfutr``, ``no_teacher`` or
``feature_regression``), ``copy_current`` and ``prior`` (fit on the run's training split). Times are minutes at the
preset's first transition horizon; presence metrics at its first Δ; ``per_horizon`` has the others.

Example:
    >>> sorted(ARMS)
    ['copy_current', 'prior', 'surgfutr']
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from medkd.io.atomic import write_text_atomic

__all__ = ["ARMS", "evaluate_run"]

logger = logging.getLogger(__name__)

ARMS = ("surgfutr", "copy_current", "prior")


def evaluate_run(run: str | Path, data_root: str | Path, *, split: str = "test", json_path: str | Path | None = None,
                 device: str = "cpu", checkpoint: str = "best") -> dict[str, Any]:
    """Evaluate ``run`` and the baselines on ``split`` of ``data_root``; write ``json_path`` when given.

    Videos that cannot be read are skipped and listed under ``skipped`` with the reason.

    Raises:
        DataError: not a SurgFUTR run, or no usable video in the split.
    """
    from medkd.methods.surgfutr.data import load_split
    from medkd.methods.surgfutr.forecast import forecast_frames
    from medkd.methods.surgfutr.runs import load_student
    from medkd.methods.surgfutr.scoring import PriorBaseline, copy_current_forecasts, score_arm

    student, cfg, classes, ckpt = load_student(run, device, checkpoint)
    data = load_split(cfg, data_root, split, skip_bad=True)
    train = load_split(cfg, data_root, "train", skip_bad=True, decode=False)  # the prior needs labels only
    start = time.perf_counter()
    forecasts = [forecast_frames(student, v.frames, device=device) for v in data.videos]
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "run": str(run), "checkpoint": str(ckpt), "split": split, "dataset": cfg.data.dataset,
        "layout": cfg.data.layout.value, "videos": [v.name for v in data.videos], "skipped": data.skipped,
        "horizons": {"transition_min": cfg.tasks.transition_horizons_min[0], "presence_s": cfg.tasks.presence_deltas_s[0],
                     "event_s": cfg.tasks.event_horizons_s[0] if cfg.tasks.event_horizons_s else None},
        "surgfutr": {"variant": cfg.variant.value, **score_arm(forecasts, data, cfg),
                     "forecast_seconds_per_video_second": seconds / max(1, data.seconds)},
        "copy_current": score_arm(copy_current_forecasts(data, cfg), data, cfg),
        "prior": score_arm(PriorBaseline(train, cfg).forecasts(data), data, cfg),
    }
    report["copy_current"]["note"] = "no RSD prediction (the remaining time always changes)"
    report["prior"]["note"] = "mean training durations given the ground-truth current phase"
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(json_path), json.dumps(report, indent=2))
    return report
