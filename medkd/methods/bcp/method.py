# SPDX-License-Identifier: Apache-2.0
"""BCP's :class:`~medkd.methods.registry.Method` record: ``medkd bcp train|eval|predict``, run folders, bundles.

Parts are ``"module:attribute"`` references, imported on first use, so registering BCP (and ``medkd --help``)
imports no torch. Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.

Example:
    >>> from medkd.methods import get_method
    >>> get_method("bcp").kind
    'segmentation'
    >>> get_method("bcp").resolve("config_class").__name__
    'BCPConfig'
"""

from __future__ import annotations

from medkd.methods.registry import Method, register_method

__all__ = ["BCP"]

BCP = register_method(
    Method(
        name="bcp",
        kind="segmentation",
        config_class="medkd.methods.bcp.config:BCPConfig",
        train="medkd.methods.bcp.trainer:train_bcp",
        evaluate="medkd.methods.bcp.eval_run:evaluate_run",
        load_predictor="medkd.methods.bcp.predict:load_run_predictor",
        cli="medkd.cli.bcp:add_parser",
        bundle_spec="medkd.methods.bcp.bundle:BCP_BUNDLE_SPEC",
        app_view=None,
        description="Bidirectional Copy-Paste semi-supervised segmentation (CVPR 2023)",
    )
)
