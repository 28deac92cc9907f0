# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's :class:`~medkd.methods.registry.Method` record: ``medkd surgfutr ...``, run folders, bundles, app view.

Parts are ``"module:attribute"`` references imported on first use, so registering it (and ``medkd --help``) imports
no torch. Sharma et al., "SurgFUTR", arXiv 2510.12904.

Example:
    >>> from medkd.methods import get_method
    >>> get_method("surgfutr").kind
    'forecasting'
"""

from __future__ import annotations

from medkd.methods.registry import Method, register_method

__all__ = ["SURGFUTR"]

SURGFUTR = register_method(
    Method(
        name="surgfutr",
        kind="forecasting",
        config_class="medkd.methods.surgfutr.config:SurgFUTRConfig",
        train="medkd.methods.surgfutr.trainer:train_surgfutr",
        evaluate="medkd.methods.surgfutr.evaluate:evaluate_run",
        load_predictor="medkd.methods.surgfutr.predict:load_run_predictor",
        cli="medkd.cli.surgfutr:add_parser",
        bundle_spec="medkd.methods.surgfutr.bundle:SURGFUTR_BUNDLE_SPEC",
        app_view="medkd.methods.surgfutr.view:render",
        description="SurgFUTR surgical future-state forecasting from endoscopic video (arXiv 2510.12904)",
    )
)
