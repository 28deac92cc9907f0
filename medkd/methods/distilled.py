# SPDX-License-Identifier: Apache-2.0
"""The ``distill`` method record: students distilled by :mod:`medkd.distill` are normal runs.

``medkd distill run|list|list-modules|eval|predict``; a distilled segmentation student (``run.json`` kind
``segmentation``, BCP run format) loads for prediction, pipelines, the app and bundle export through the
segmentation tools; a classification student (kind ``classification``, registered here:
:mod:`medkd.methods.classification_kind`), and a ``partition_students`` run routed by its metadata key, load as
``classification`` predictors and export as classification bundles. Parts are ``"module:attribute"`` references,
so registering imports no torch.

Example:
    >>> from medkd.methods import get_method
    >>> get_method("distill").kind
    'segmentation'
"""

from __future__ import annotations

from medkd.methods import classification_kind  # noqa: F401  # registers the classification kind
from medkd.methods.registry import Method, register_method

__all__ = ["DISTILL"]

DISTILL = register_method(
    Method(
        name="distill",
        kind="segmentation",
        config_class="medkd.distill.config:DistillConfig",
        train="medkd.distill.runner:run_experiment",
        evaluate="medkd.distill.evaluate:evaluate_run",
        other_kinds=("classification",),
        load_predictor="medkd.distill.predict:load_run_predictor",
        cli="medkd.cli.distill:add_parser",
        bundle_spec="medkd.distill.bundle:DISTILL_BUNDLE_SPEC",
        app_view={"classification": "medkd.distill.app_view:render"},  # segmentation students: the default view
        description="knowledge distillation plugins (KD, DKD, BPKD, ...): a student from a teacher, one YAML",
    )
)
