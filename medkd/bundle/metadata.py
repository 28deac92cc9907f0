"""``configs/metadata.json`` of a medkd bundle: versions, task, labels, ``network_data_format`` and a medkd block.

The method's :class:`~medkd.methods.bundle_spec.BundleSpec` supplies the task, description, references, dataset card
and ``network_data_format``; this module adds what every medkd bundle carries: the schema URL, version and
changelog, the environment's versions, authors, intended use and the label classes. ``network_data_format``
describes the **network's** tensors, as ``verify_net_in_out`` tests them; the workflow around the network is the
``inferer`` of ``configs/inference.json``.

Example:
    >>> from medkd.methods.bundle_spec import image_tensor, network_data_format, segmentation_pred
    >>> nd = network_data_format(image_tensor(spatial_shape=["16*n", "16*n"], modality="MR"),
    ...                          segmentation_pred(["background", "RV", "Myo", "LV"], spatial_shape=["16*n", "16*n"]))
    >>> meta = build_metadata(name="x", version="0.1.0", description="d", task="t", references=["a paper"],
    ...                       labels=[], card=DatasetCard("data", "MR", "somewhere", "NIfTI"),
    ...                       network_data_format=nd, medkd_block={"run": "r"})
    >>> meta["network_data_format"]["outputs"]["pred"]["channel_def"]["3"], meta["changelog"]
    ('LV', {'0.1.0': "exported by medkd from run 'r'"})
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from typing import Any

from medkd.bundle.layout import INTENDED_USE, SCHEMA_URL
from medkd.io.labels import LabelInfo
from medkd.methods.bundle_spec import DatasetCard

__all__ = ["DatasetCard", "build_metadata", "environment_versions"]

logger = logging.getLogger(__name__)


def __getattr__(name: str) -> Any:
    """Names that moved to the method that owns them (old import paths keep working)."""
    if name == "DATASET_CARDS":
        from medkd.methods.bcp import bundle

        return bundle.DATASET_CARDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _release(version: str) -> str:
    """``2.15.0+cu132`` -> ``2.15.0``: the build tag says how this machine's wheel was built, not what is needed."""
    return version.split("+", 1)[0]


def environment_versions() -> dict[str, Any]:
    """``monai_version``, ``pytorch_version``, ``numpy_version`` and ``required_packages_version`` of this process.

    ``required_packages_version`` lists medkd and the packages ``monai.bundle run`` needs beyond MONAI (nibabel
    for ``LoadImaged``, pytorch-ignite for the evaluator, fire for the command line) at their installed versions.
    """
    import monai
    import numpy
    import torch

    import medkd

    packages = {"medkd": medkd.__version__}
    for dist in ("nibabel", "pytorch-ignite", "fire"):
        try:
            packages[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            logger.warning("%s is not installed: 'python -m monai.bundle run' needs it (pip install %s)", dist, dist)
    return {
        "monai_version": _release(monai.__version__),
        "pytorch_version": _release(torch.__version__),
        "numpy_version": numpy.__version__,
        "required_packages_version": packages,
    }


def build_metadata(
    *,
    name: str,
    version: str,
    description: str,
    task: str,
    references: Sequence[str],
    labels: Sequence[LabelInfo],
    card: DatasetCard,
    network_data_format: dict[str, Any],
    medkd_block: dict[str, Any],
    intended_use: str = INTENDED_USE,
) -> dict[str, Any]:
    """The whole ``metadata.json`` (see the module docstring); versions are read from this environment.

    ``references`` are the method's papers; the dataset card's reference, if any, follows them.
    """
    return {
        "schema": SCHEMA_URL,
        "version": version,
        "changelog": {version: f"exported by medkd from run {medkd_block.get('run', '?')!r}"},
        **environment_versions(),
        "name": name,
        "task": task,
        "description": description,
        "authors": "medkd contributors",
        "copyright": "Copyright (c) medkd contributors",
        "intended_use": intended_use,
        "data_source": card.source,
        "data_type": card.data_type,
        "references": list(references) + ([card.reference] if card.reference else []),
        "label_classes": [label.to_dict() for label in labels],
        "network_data_format": network_data_format,
        "medkd": medkd_block,
    }
