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

from medkd.distill.registry import register_utility

__all__ = ["TeacherChoice", "choose_teacher", "DEFAULT_RATIO"]

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


@register_utility("capacity_gap")
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
