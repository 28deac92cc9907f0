# SPDX-License-Identifier: Apache-2.0
"""``configs/inference.json`` of a medkd bundle: a MONAI ``SupervisedEvaluator`` workflow over the files of
``dataset_dir``.

Ids (``ConfigWorkflow(..., workflow_type="inference").check_properties() == []``): ``imports``, ``bundle_root``,
``device``, ``network_def`` (``medkd.nets.create_net``), ``network``, ``output_dir``, ``dataset_dir``,
``datalist`` (the files matching the method's input patterns), ``preprocessing``, ``dataset``, ``dataloader``,
``inferer``, ``postprocessing``, ``checkpointloader``, ``handlers``, ``evaluator``, ``initialize`` and ``run``.
The method's :class:`~medkd.methods.bundle_spec.BundleSpec` gives the network's arguments, the inferer and the
transforms (a reader first and a writer last: MONAI Deploy strips them); the rest is the same for every method.

Example:
    >>> cfg = inference_config({"name": "monai_basicunet", "in_channels": 1, "out_channels": 4},
    ...                        inferer={"_target_": "SimpleInferer"}, preprocessing=[], postprocessing=[])
    >>> cfg["run"], cfg["network_def"]["_target_"], cfg["datalist"][:30]
    (['$@evaluator.run()'], 'medkd.nets.create_net', '$sorted(glob.glob(os.path.join')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medkd.bundle.layout import WEIGHTS
from medkd.methods.bundle_spec import NIFTI_PATTERNS

__all__ = ["datalist_expression", "inference_config"]


def __getattr__(name: str) -> Any:
    """Names that moved to the method that owns them (old import paths keep working)."""
    if name == "MASK_POSTFIX":
        from medkd.methods.bcp import bundle

        return bundle.MASK_POSTFIX
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def datalist_expression(patterns: Sequence[str]) -> str:
    """The ``datalist`` id: the sorted files of ``dataset_dir`` matching ``patterns`` (glob patterns, in order).

    Raises:
        ValueError: no pattern, or a pattern with a quote or backslash (it is written into a ``$`` expression).

    Example:
        >>> datalist_expression(["*.png"])
        "$sorted(glob.glob(os.path.join(@dataset_dir, '*.png')))"
    """
    if not patterns or any(set(p) & {"'", '"', "\\"} for p in patterns):
        raise ValueError(f"input patterns must be plain glob patterns, got {list(patterns)!r}")
    globs = " + ".join(f"glob.glob(os.path.join(@dataset_dir, '{p}'))" for p in patterns)
    return f"$sorted({globs})"


def inference_config(
    network_def: dict[str, Any],
    *,
    inferer: dict[str, Any],
    preprocessing: Sequence[dict[str, Any]],
    postprocessing: Sequence[dict[str, Any]],
    input_patterns: Sequence[str] = NIFTI_PATTERNS,
) -> dict[str, Any]:
    """The ``inference.json`` content for a registered network.

    Args:
        network_def: ``medkd.nets.create_net`` arguments (``name`` and the network's own, e.g. ``in_channels``).
        inferer: the ``inferer`` component.
        preprocessing: transforms of ``preprocessing`` (applied to ``{"image": file}``).
        postprocessing: transforms of ``postprocessing`` (applied to the evaluator's output, ``pred``).
        input_patterns: files of ``dataset_dir`` to run on.

    Returns:
        A JSON-ready dict.
    """
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch", "$import medkd"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": datalist_expression(input_patterns),
        "network_def": {"_target_": "medkd.nets.create_net", **network_def},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": list(preprocessing)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0,
        },
        "inferer": dict(inferer),
        "postprocessing": {"_target_": "Compose", "transforms": list(postprocessing)},
        "checkpointloader": {
            "_target_": "CheckpointLoader", "load_path": f"$@bundle_root + '/{WEIGHTS}'",
            "load_dict": {"model": "@network"}, "map_location": "@device",
        },
        "handlers": ["@checkpointloader", {"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {
            "_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
            "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
            "val_handlers": "@handlers", "amp": False,
        },
        "initialize": ["$setattr(torch.backends.cudnn, 'benchmark', False)"],
        "run": ["$@evaluator.run()"],
    }
