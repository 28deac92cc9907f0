# SPDX-License-Identifier: Apache-2.0
"""The bundle spec of distilled segmentation students: BCP's segmentation bundle with distillation's card.

A distilled segmentation student is stored in BCP's run format (:mod:`medkd.distill.students`), so its bundle is
written by BCP's spec with the ``student`` stage, the distillation references and a model card naming the
teacher and the terms. Importing this module also registers the ``distill`` spec for classification runs, routed
``partition_students`` runs included (:mod:`medkd.distill.classifier_bundle`).

Example:
    >>> DISTILL_BUNDLE_SPEC.method, DISTILL_BUNDLE_SPEC.stages
    ('distill', ('student',))
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from medkd.distill.classifier_bundle import DISTILL_CLASSIFIER_BUNDLE_SPEC, DISTILL_REFERENCE
from medkd.methods.bcp.bundle import BCP_BUNDLE_SPEC
from medkd.methods.bundle_spec import ExportModel, ModelCardText

__all__ = ["DISTILL_BUNDLE_SPEC", "DISTILL_CLASSIFIER_BUNDLE_SPEC", "DISTILL_REFERENCE"]


def _experiment(model: ExportModel) -> dict[str, Any]:
    import yaml

    path = model.run / "experiment.yaml"
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _model_card(model: ExportModel) -> ModelCardText:
    card = BCP_BUNDLE_SPEC.model_card(model)
    exp = _experiment(model)
    terms = ", ".join(f"{t.get('name')} ({t.get('plugin')}, weight {t.get('weight', 1)})"
                      for t in (exp.get("distill") or {}).get("terms", []))
    teacher = (exp.get("teacher") or {})
    source = teacher.get("checkpoint") or f"{teacher.get('net')} trained first"
    return replace(
        card,
        method_long=f"knowledge distillation into `{model.net}` from the teacher {source}; terms: {terms or '?'}",
        eval_command="`medkd distill eval RUN --data-root DATA --json RUN/test.json`",
        equivalence=card.equivalence.replace("medkd bcp predict", "the run's segmentation predictor"),
    )


def _provenance(model: ExportModel) -> dict[str, Any]:
    exp = _experiment(model)
    return {"method": "distill", "dataset": model.config.dataset.value,
            "terms": [t.get("plugin") for t in (exp.get("distill") or {}).get("terms", [])]}


DISTILL_BUNDLE_SPEC = replace(
    BCP_BUNDLE_SPEC,
    method="distill",
    stages=("student",),
    model_card=_model_card,
    references=(DISTILL_REFERENCE,),
    provenance=_provenance,
)
