# SPDX-License-Identifier: Apache-2.0
"""``configs/metadata.json`` of a BCP bundle: versions, task, labels, ``network_data_format`` and a medkd block.

``network_data_format`` describes the **network's** tensors, as ``verify_net_in_out`` tests them: ``image`` is a
``(1, *spatial)`` patch or slice (``"16*n"`` per axis for networks that need sizes divisible by 16) and ``pred`` the
logits, one channel per class. The bundle's workflow around the network (normalisation, slices or sliding window,
argmax, largest component) is the ``inferer`` of ``configs/inference.json``.

Example:
    >>> nd = network_data_format(SegmentationSpec("slices_2d", 4, (64, 64)), ["background", "RV", "Myo", "LV"],
    ...                          modality="MR", divisor=16)
    >>> nd["inputs"]["image"]["spatial_shape"], nd["outputs"]["pred"]["channel_def"]["3"]
    (['16*n', '16*n'], 'LV')
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medkd.bundle.layout import BCP_REFERENCE, INTENDED_USE, SCHEMA_URL
from medkd.engine.predictor import SegmentationSpec
from medkd.io.labels import LabelInfo

__all__ = ["DatasetCard", "DATASET_CARDS", "network_data_format", "environment_versions", "build_metadata"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetCard:
    """What a bundle says about the data layout a run was trained on.

    Attributes:
        title: human name of the dataset.
        modality: DICOM-style modality of the inputs (``MR``, ``CT``, ``n/a``).
        source: where the data come from (``data_source`` in the metadata).
        data_type: formats of the training data and of the bundle's inputs.
        terms: text of ``docs/data_license.txt``; None when the data carry no terms of their own.
        reference: the dataset paper, cited in the README.
    """

    title: str
    modality: str
    source: str
    data_type: str
    terms: str | None = None
    reference: str | None = None


_ACDC_REF = (
    "Bernard O. et al. Deep Learning Techniques for Automatic MRI Cardiac Multi-Structures Segmentation and "
    "Diagnosis: Is the Problem Solved? IEEE Transactions on Medical Imaging 37(11), 2018."
)
_LA_REF = (
    "Xiong Z. et al. A global benchmark of algorithms for segmenting the left atrium from late gadolinium-enhanced "
    "cardiac magnetic resonance imaging. Medical Image Analysis 67, 2021."
)

#: dataset layout of a BCP run (``BCPConfig.dataset``) -> its card
DATASET_CARDS: dict[str, DatasetCard] = {
    "acdc": DatasetCard(
        title="ACDC (Automated Cardiac Diagnosis Challenge, MICCAI 2017), cine cardiac MRI",
        modality="MR",
        source="ACDC cine MRI in the SSL4MIS h5 slice layout (or data prepared the same way, e.g. medkd's synthetic "
        "demo data)",
        data_type="hdf5 slices (training); NIfTI volumes (bundle inference)",
        terms=(
            "If these weights were trained on the ACDC data, the ACDC terms apply: the data are provided by the "
            "CREATIS laboratory (Université de Lyon) for research; see "
            "https://www.creatis.insa-lyon.fr/Challenge/acdc/ and cite:\n" + _ACDC_REF
        ),
        reference=_ACDC_REF,
    ),
    "la": DatasetCard(
        title="Left atrium (2018 Atrial Segmentation Challenge), 3D LGE cardiac MRI",
        modality="MR",
        source="2018 Atrial Segmentation Challenge LGE-MRI in the UA-MT h5 volume layout (or data prepared the same "
        "way, e.g. medkd's synthetic demo data)",
        data_type="hdf5 volumes (training); NIfTI volumes (bundle inference)",
        terms=(
            "If these weights were trained on the 2018 Atrial Segmentation Challenge data, the challenge's terms "
            "apply (see https://www.cardiacatlas.org/atriaseg2018-challenge/) and publications must cite:\n" + _LA_REF
        ),
        reference=_LA_REF,
    ),
    "nifti": DatasetCard(
        title="a user NIfTI datalist (MSD dataset.json or imagesTr/labelsTr)",
        modality="n/a",
        source="user-provided NIfTI volumes and labels",
        data_type="NIfTI volumes",
    ),
}


def _channel_def(names: Sequence[str]) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(names)}


def network_data_format(
    spec: SegmentationSpec, class_names: Sequence[str], *, modality: str, divisor: int | None
) -> dict[str, Any]:
    """``network_data_format`` of a segmentation network run by ``spec``.

    Args:
        spec: the inference recipe (its mode fixes 2D or 3D; its intensity the input range).
        class_names: names per label value, background first.
        modality: input modality (``MR``, ``CT``, ``n/a``).
        divisor: every spatial size the network accepts is a multiple of this (``"16*n"``); None: the patch.

    Returns:
        ``{"inputs": {"image": ...}, "outputs": {"pred": ...}}``.
    """
    dims = spec.spatial_dims
    spatial: list[int | str] = [f"{divisor}*n"] * dims if divisor else list(spec.patch)
    image = {
        "type": "image",
        "format": "magnitude",
        "modality": modality,
        "num_channels": 1,
        "spatial_shape": spatial,
        "dtype": "float32",
        "value_range": [0, 1] if spec.intensity == "minmax" else [],
        "is_patch_data": True,
        "channel_def": {"0": "image"},
    }
    pred = {
        "type": "image",
        "format": "segmentation",
        "num_channels": spec.num_classes,
        "spatial_shape": spatial,
        "dtype": "float32",
        "value_range": [],
        "is_patch_data": True,
        "channel_def": _channel_def(class_names),
    }
    return {"inputs": {"image": image}, "outputs": {"pred": pred}}


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
    spec: SegmentationSpec,
    labels: Sequence[LabelInfo],
    class_names: Sequence[str],
    card: DatasetCard,
    divisor: int | None,
    medkd_block: dict[str, Any],
) -> dict[str, Any]:
    """The whole ``metadata.json`` (see the module docstring); versions are read from this environment."""
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
        "intended_use": INTENDED_USE,
        "data_source": card.source,
        "data_type": card.data_type,
        "references": [BCP_REFERENCE] + ([card.reference] if card.reference else []),
        "label_classes": [label.to_dict() for label in labels],
        "network_data_format": network_data_format(spec, class_names, modality=card.modality, divisor=divisor),
        "medkd": medkd_block,
    }
