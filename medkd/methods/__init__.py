# SPDX-License-Identifier: Apache-2.0
"""One package per method; each registers a :class:`~medkd.methods.registry.Method` in :data:`METHODS`.

Importing this package registers the built-in methods (BCP, Grounded Teacher, SurgFUTR) and the ``run`` predictor source of
:func:`medkd.inference.load_predictor`; methods of other packages register through the ``medkd.plugins`` entry
points. Nothing here imports torch: a method's heavy parts load on first use.

Example:
    >>> from medkd.methods import get_method, list_methods
    >>> "bcp" in list_methods(kind="segmentation")
    True
    >>> get_method("bpc")
    Traceback (most recent call last):
    ...
    KeyError: "unknown method 'bpc'. Did you mean 'bcp'? Known methods: ..."
"""

from __future__ import annotations

from medkd.methods import bcp  # registers BCP
from medkd.methods import distilled  # registers distill (students of medkd.distill)
from medkd.methods import grounded_teacher  # registers Grounded Teacher (gt)
from medkd.methods import surgfutr  # registers SurgFUTR
from medkd.methods.registry import (
    METHODS,
    Method,
    get_method,
    list_methods,
    load_run_predictor,
    register_method,
    resolve_ref,
)

__all__ = [
    "METHODS", "Method", "get_method", "list_methods", "load_run_predictor", "register_method", "resolve_ref", "bcp",
    "distilled", "grounded_teacher", "surgfutr",
]
