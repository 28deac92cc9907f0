# SPDX-License-Identifier: Apache-2.0
"""``configs/inference.json`` of a segmentation bundle: a MONAI ``SupervisedEvaluator`` workflow over NIfTI files.

Ids (``ConfigWorkflow(..., workflow_type="inference").check_properties() == []``): ``imports``, ``bundle_root``,
``device``, ``network_def`` (``medkd.nets.create_net``), ``network``, ``output_dir``, ``dataset_dir``,
``datalist`` (``*.nii``/``*.nii.gz`` under ``dataset_dir``), ``preprocessing`` (``LoadImaged`` first),
``dataset``, ``dataloader``, ``inferer`` (:class:`medkd.bundle.components.SegmentationInferer` holding the
:class:`~medkd.engine.predictor.SegmentationSpec`), ``postprocessing`` (``SaveImaged`` last), ``checkpointloader``,
``handlers``, ``evaluator``, ``initialize`` and ``run``.

Preprocessing does no resampling or intensity scaling: the inferer segments raw volumes with the run's recipe,
exactly as ``medkd bcp predict`` does, and masks are written as uint8 on the input's grid (``<case>_seg.nii.gz``,
the name ``medkd bcp predict`` uses).

Example:
    >>> cfg = inference_config("bcp_unet2d_half", 1, SegmentationSpec("slices_2d", 4, (64, 64)))
    >>> cfg["run"], cfg["preprocessing"]["transforms"][0]["_target_"]
    (['$@evaluator.run()'], 'LoadImaged')
"""

from __future__ import annotations

from typing import Any

from medkd.bundle.layout import WEIGHTS
from medkd.engine.predictor import SegmentationSpec

__all__ = ["inference_config", "MASK_POSTFIX"]

#: masks are written as ``<case>_<postfix>.nii.gz``, as ``medkd bcp predict`` names them
MASK_POSTFIX = "seg"


def inference_config(
    net: str, in_channels: int, spec: SegmentationSpec, net_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``inference.json`` content for a registered network run by ``spec``.

    Args:
        net: registry name (``medkd.nets.list_nets()``).
        in_channels: network input channels (the recipe segments single-channel volumes).
        spec: the inference recipe (``SegmentationSpec.to_dict()`` is stored on the inferer).
        net_kwargs: further ``create_net`` arguments.

    Returns:
        A JSON-ready dict.
    """
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch", "$import medkd"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii.gz')) + "
        "glob.glob(os.path.join(@dataset_dir, '*.nii')))",
        "network_def": {
            "_target_": "medkd.nets.create_net",
            "name": net,
            "in_channels": in_channels,
            "out_channels": spec.num_classes,
            **(net_kwargs or {}),
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True,
                 "dtype": "$numpy.float32"},
                {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
            ],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False, "num_workers": 0,
        },
        "inferer": {"_target_": "medkd.bundle.components.SegmentationInferer", "spec": spec.to_dict()},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                    "output_postfix": MASK_POSTFIX, "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8",
                    "resample": False, "separate_folder": False, "writer": "NibabelWriter", "print_log": False,
                },
            ],
        },
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
