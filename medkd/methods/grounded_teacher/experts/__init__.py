# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher's experts: the :class:`Expert` interface, the ``sam``, ``csv`` and ``none`` experts and the class
policies (spec section 7).

Example:
    >>> sorted(EXPERTS.list())
    ['csv', 'none', 'sam']
"""

from __future__ import annotations

from medkd.methods.grounded_teacher.experts.base import EXPERTS, Expert, ExpertBoxes, NoExpert, create_expert
from medkd.methods.grounded_teacher.experts.classes import CLASS_POLICIES, assign_classes
from medkd.methods.grounded_teacher.experts.csv_expert import CSV_COLUMNS, CsvExpert, read_expert_csv
from medkd.methods.grounded_teacher.experts.sam_build import SAM_DIMS, SamDims, build_sam, load_sam
from medkd.methods.grounded_teacher.experts.sam_expert import SamExpert, SamMode

__all__ = [
    "EXPERTS",
    "Expert",
    "ExpertBoxes",
    "NoExpert",
    "create_expert",
    "CLASS_POLICIES",
    "assign_classes",
    "CSV_COLUMNS",
    "CsvExpert",
    "read_expert_csv",
    "SAM_DIMS",
    "SamDims",
    "build_sam",
    "load_sam",
    "SamExpert",
    "SamMode",
]
