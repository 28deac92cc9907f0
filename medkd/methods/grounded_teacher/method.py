# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher's :class:`~medkd.methods.registry.Method` record: ``medkd gt ...``, run folders, bundles.

Parts are ``"module:attribute"`` references imported on first use, so registering it (and ``medkd --help``) imports
no torch. Ashraf et al., "Context Aware Grounded Teacher for Source Free Object Detection", arXiv 2504.15404.

Example:
    >>> from medkd.methods import get_method
    >>> get_method("gt").kind
    'detection'
"""

from __future__ import annotations

from medkd.methods.registry import Method, register_method

__all__ = ["GT"]

GT = register_method(
    Method(
        name="gt",
        kind="detection",
        config_class="medkd.methods.grounded_teacher.config:GTConfig",
        train="medkd.methods.grounded_teacher.trainer:train_gt",
        evaluate="medkd.methods.grounded_teacher.evaluate:evaluate_run",
        load_predictor="medkd.methods.grounded_teacher.predict:load_run_predictor",
        cli="medkd.cli.gt:add_parser",
        bundle_spec="medkd.methods.grounded_teacher.bundle:GT_BUNDLE_SPEC",
        app_view=None,
        description="Grounded Teacher source-free lesion detection adaptation (arXiv 2504.15404)",
    )
)
