# SPDX-License-Identifier: Apache-2.0
"""Capacity-gap teacher choice: pick the teacher whose size suits a given student.

A teacher much larger than its student teaches it worse than a moderately larger one (the capacity gap). MiniMA
(Zhang et al., "Towards the Law of Capacity Gap in Distilling Language Models", ACL 2025, arXiv 2311.07052)
measured the best teacher at about 2.5x the student's parameters on language models; medkd uses that as a prior:
among the candidates, the one nearest to ``ratio x student`` in log-parameter space, with each candidate's ratio
logged.

Example:
    >>> choice = choose_teacher(300_000, {"small": 500_000, "mid": 800_000, "big": 11_000_000})
    >>> choice.name, round(choice.ratio, 2)
    ('mid', 2.67)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from typing import Any

from medkd.distill.registry import register_utility
from medkd.distill.tools import ToolContext, Utility

__all__ = ["CapacityGap", "TeacherChoice", "choose_teacher", "DEFAULT_RATIO"]

logger = logging.getLogger(__name__)

#: the teacher-to-student parameter ratio MiniMA found best (a prior, measured on language models)
DEFAULT_RATIO = 2.5


@dataclass(frozen=True)
class TeacherChoice:
    """The chosen teacher: ``name``, its ``params``, ``ratio`` = params / student params, and every candidate's
    ratio (``ratios``) for the log."""

    name: str
    params: int
    ratio: float
    ratios: dict[str, float]


def choose_teacher(student_params: int, candidates: Mapping[str, int], *,
                   ratio: float = DEFAULT_RATIO) -> TeacherChoice:
    """Choose the teacher nearest to ``ratio`` times the student's size, in log-ratio (ties: the smaller teacher).

    Args:
        student_params: the student's parameter count (> 0).
        candidates: teacher name -> parameter count (> 0), e.g. from ``medkd.nets.count_parameters``.
        ratio: the target teacher/student ratio (> 0; 2.5 from MiniMA).

    Raises:
        ValueError: no candidates, or a non-positive count or ratio.
    """
    if student_params <= 0 or ratio <= 0:
        raise ValueError(f"student_params and ratio must be > 0, got {student_params} and {ratio}")
    if not candidates:
        raise ValueError("capacity_gap needs at least one candidate teacher")
    bad = [name for name, n in candidates.items() if n <= 0]
    if bad:
        raise ValueError(f"candidate teachers with no parameters: {bad}")
    ratios = {name: n / student_params for name, n in candidates.items()}
    target = math.log(ratio)
    name = min(ratios, key=lambda k: (round(abs(math.log(ratios[k]) - target), 12), candidates[k]))
    for cand, r in sorted(ratios.items(), key=lambda kv: kv[1]):
        logger.info("capacity gap: %s is %.2fx the student%s", cand, r, " (chosen)" if cand == name else "")
    return TeacherChoice(name, int(candidates[name]), ratios[name], ratios)


@register_utility("capacity_gap")
class CapacityGap(Utility):
    """Capacity-gap teacher choice: the candidate teacher nearest to 2.5x the student's parameters (MiniMA).

    ``medkd distill tool capacity_gap --config EXP.yaml --data-root DIR --out OUT --param
    candidates=[kd_cnn_wide, monai_resnet10, monai_resnet18]``: builds the experiment's student and each
    candidate network (for the experiment's data) and counts their parameters.

    Args:
        candidates: the candidate teachers: registered network names, or ``{name, net, net_params}`` mappings
            (``{name: wide32, net: kd_cnn_wide, net_params: {width: 32}}``).
        ratio: the target teacher/student parameter ratio.
    """

    command = "tool"

    def __init__(self, candidates: list[Any] | tuple[Any, ...] = (), ratio: float = DEFAULT_RATIO) -> None:
        if not candidates:
            raise ValueError("give the candidate teachers, e.g. --param candidates=[kd_cnn_wide, monai_resnet18]")
        self.candidates: dict[str, tuple[str, dict[str, Any]]] = {}
        for cand in candidates:
            if isinstance(cand, str):
                self.candidates[cand] = (cand, {})
            elif isinstance(cand, dict) and "net" in cand:
                self.candidates[str(cand.get("name", cand["net"]))] = (cand["net"], dict(cand.get("net_params", {})))
            else:
                raise ValueError(f"candidate {cand!r}: expected a network name or {{name, net, net_params}}")
        self.ratio = float(ratio)

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        from medkd.nets import count_parameters

        student = count_parameters(ctx.build_student())
        sizes = {name: count_parameters(ctx.build_student(net, params))
                 for name, (net, params) in self.candidates.items()}
        choice = choose_teacher(student, sizes, ratio=self.ratio)
        return {"student": ctx.cfg.student.net, "student_params": student, "candidates": sizes,
                "target_ratio": self.ratio, "chosen": choice.name, "chosen_params": choice.params,
                "ratio": round(choice.ratio, 4), "ratios": {k: round(v, 4) for k, v in choice.ratios.items()}}
