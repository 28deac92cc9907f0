# SPDX-License-Identifier: Apache-2.0
"""Evaluate a distill run's student on a split (``medkd distill eval``, the ``distill`` method's ``evaluate``).

Segmentation students go through BCP's protocol (Dice, Jaccard, HD95, ASD; per-case CSV in the run);
classification students get accuracy, balanced accuracy, macro F1, per-class recall and the confusion matrix.

Example:
    >>> summary = evaluate_run("runs/kd", "data/synth", split="test")  # doctest: +SKIP
    >>> summary["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

__all__ = ["evaluate_run", "read_experiment"]


def read_experiment(run: str | Path) -> Any:
    """The :class:`~medkd.distill.config.DistillConfig` a run was trained with (``RUN/experiment.yaml``).

    Raises:
        DataError: not a distill run, or an unreadable experiment file.
    """
    import yaml

    from medkd.config import config_from_dict
    from medkd.distill.config import DistillConfig
    from medkd.errors import ConfigError, DataError

    path = Path(run) / "experiment.yaml"
    if not path.is_file():
        raise DataError(run, "not a medkd distill run (experiment.yaml is missing)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        raw.pop("plugins", None)
        return config_from_dict(DistillConfig, raw, source=str(path))
    except (yaml.YAMLError, AttributeError, ConfigError) as err:
        raise DataError(path, f"unreadable experiment ({err})") from None


def _evaluate_routed(run: str | Path, data: Any, split: str, checkpoint: str) -> dict[str, Any]:
    """The metrics of a ``partition_students`` run's routed model (each case through its key's student)."""
    from medkd.distill.data import classification_metrics
    from medkd.distill.routing import load_partitioned, routed_predictions

    model = load_partitioned(run, checkpoint)
    pred, labels, _ = routed_predictions(model, data, split)
    summary = classification_metrics(pred, labels, data.num_classes)
    summary.update(class_names=list(data.class_names), routed_by=model.key, partitions=list(model.values))
    return summary


def evaluate_run(run: str | Path, data_root: str | Path, *, split: str = "test", json: str | Path | None = None,
                 checkpoint: str = "best", progress: bool = True) -> dict[str, Any]:
    """Evaluate the run's ``best`` (or ``last``) student on ``split`` and write ``json`` if given; a
    ``partition_students`` run is evaluated routed (each case through the student of its key value).

    Raises:
        DataError: not a distill run, a missing checkpoint, unreadable data.
    """
    from medkd.runs import read_run_info

    info = read_run_info(run)
    if info.get("format") == "bcp":
        from medkd.methods.bcp.eval_run import evaluate_run as bcp_evaluate

        summary = bcp_evaluate(run, data_root, split=split, json=None, checkpoint=checkpoint, progress=progress)
        summary["method"] = "distill"
    else:
        import torch

        from medkd.distill.data import ClassificationData
        from medkd.distill.students import load_classifier, student_checkpoint

        from medkd.distill.routing import ROUTING_FILE

        cfg = read_experiment(run)
        data = ClassificationData(cfg, data_root)
        if (Path(run) / ROUTING_FILE).is_file():
            summary = _evaluate_routed(run, data, split, checkpoint)
        else:
            _, net = load_classifier(run, checkpoint)
            with torch.inference_mode():
                summary = data.evaluate(net, split, torch.device("cpu"))
        summary.update(run=str(run), split=split, checkpoint=str(student_checkpoint(run, checkpoint)),
                       method="distill")
    if json is not None:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        Path(json).write_text(jsonlib.dumps(summary, indent=2))
    return summary
