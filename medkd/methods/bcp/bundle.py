# SPDX-License-Identifier: Apache-2.0
"""BCP's :class:`~medkd.methods.bundle_spec.BundleSpec`: what a MONAI bundle of a BCP (or supervised-baseline) run
says and does.

The generic writer (:func:`medkd.bundle.export_bundle`) asks this spec for the student's network and weights, the
class names and dataset card (ACDC, LA, a NIfTI datalist), the model card's prose, and the segmentation workflow of
``configs/inference.json``: ``LoadImaged`` (NIfTI) -> :class:`medkd.bundle.components.SegmentationInferer` holding
the run's :class:`~medkd.engine.predictor.SegmentationSpec` -> ``SaveImaged`` (``<case>_seg.nii.gz``, as
``medkd bcp predict`` names its masks), so ``python -m monai.bundle run`` writes the masks ``medkd bcp predict``
writes, voxel for voxel.

Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.

Example:
    >>> from medkd.methods.bundle_spec import get_bundle_spec
    >>> spec = get_bundle_spec("bcp", "runs/acdc_bcp")
    >>> spec.kind, spec.stages
    ('segmentation', ('pretrain', 'selftrain', 'supervised'))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medkd.methods.bundle_spec import (
    BundleSpec,
    DatasetCard,
    ExportModel,
    ModelCardText,
    image_tensor,
    network_data_format,
    register_bundle_spec,
    segmentation_pred,
)

__all__ = ["BCP_BUNDLE_SPEC", "BCP_REFERENCE", "DATASET_CARDS", "MASK_POSTFIX", "SEGMENTATION_INFERER"]

BCP_REFERENCE = (
    "Bai Y., Chen D., Li Q., Shen W., Wang Y. Bidirectional Copy-Paste for Semi-Supervised Medical Image "
    "Segmentation. CVPR 2023. https://arxiv.org/abs/2305.00673"
)
#: masks are written as ``<case>_<postfix>.nii.gz``, as ``medkd bcp predict`` names them
MASK_POSTFIX = "seg"
#: the bundle's inferer: runs the run's SegmentationSpec (a component medkd's trust check allowlists)
SEGMENTATION_INFERER = "medkd.bundle.components.SegmentationInferer"

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

_METHOD_LONG = {
    "bcp": "BCP, Bidirectional Copy-Paste semi-supervised segmentation (Bai et al., CVPR 2023): a mean-teacher "
    "student trained on labelled and unlabelled images mixed by copy-paste in both directions",
    "supervised": "labelled-only supervised baseline of the BCP paper (same network, loop and loss, no mixing)",
}
_RECIPE = {
    "slices_2d": "slice by slice: each axial slice (SimpleITK z) is nearest-resized to {patch}, softmax + argmax, "
    "and the labels nearest-resized back; {intensity} intensity normalisation per volume",
    "sliding_3d": "sliding window {patch} with stride {stride}, softmax averaged over windows, {rule}, largest "
    "connected component per class: {keep}; {intensity} intensity normalisation per volume",
}
_TRAINING_KEYS = (
    "method", "dataset", "faithful", "net", "in_channels", "num_classes", "labeled", "patch", "batch_size",
    "labeled_batch_size", "pretrain_iterations", "selftrain_iterations", "lr", "momentum", "weight_decay", "lr_step",
    "ema_decay", "mask_ratio", "u_weight", "seed", "val_interval", "sliding_stride",
)
_METRICS = (("dice", "Dice"), ("jaccard", "Jaccard"), ("hd95", "HD95"), ("asd", "ASD"))
_HOW_TO_RUN = """With medkd (NIfTI, MHA/NRRD or DICOM series in; masks, DICOM SEG and a report out):

```bash
pip install "medkd[bundle,dicom]"
medkd pipeline run pipelines/<pipeline>.yaml -i DICOM_DIR -o OUT_DIR --model {bundle_path}
medkd bundle info {bundle_path}
medkd bundle verify {bundle_path}
```

In Python:

```python
from medkd.engine.predictor import load_predictor

predictor = load_predictor("{bundle_path}", device="auto")
mask = predictor(volume)  # float32 (z, y, x) as SimpleITK reads it -> uint8 (z, y, x)
```"""


def _segmentation_spec(model: ExportModel) -> Any:
    from medkd.methods.bcp.predict import segmentation_spec

    return segmentation_spec(model.config)


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    """The student of a BCP run's ``stage`` (default the final one), ``best`` (falling back to ``last``) or ``last``."""
    from medkd.config import config_to_dict
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.errors import DataError
    from medkd.methods.bcp.predict import checkpoint_path, load_run_config
    from medkd.methods.bcp.trainer import build_student

    cfg = load_run_config(run)
    ckpt_file = checkpoint_path(run, cfg, checkpoint, stage)
    ckpt = load_checkpoint(ckpt_file)
    net = build_student(cfg, channels_last=False)
    try:
        net.load_state_dict(ckpt["student"])
    except RuntimeError as err:
        raise DataError(ckpt_file, f"student weights do not fit {cfg.net!r} of config.yaml: {err}") from err
    best = ckpt.get("best_score")
    return ExportModel(
        run=Path(run), config=cfg, config_dict=config_to_dict(cfg), net=cfg.net, network=net, state=ckpt["student"],
        checkpoint_file=ckpt_file, stage=ckpt_file.parent.name, iteration=int(ckpt.get("iteration", 0)),
        best_score=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
    )


def _label_names(model: ExportModel) -> list[str]:
    from medkd.methods.bcp.evaluate import class_names

    return list(class_names(model.config))


def _dataset_card(model: ExportModel) -> DatasetCard:
    return DATASET_CARDS.get(model.config.dataset.value, DATASET_CARDS["nifti"])


def _describe(model: ExportModel, names: Sequence[str], card: DatasetCard) -> tuple[str, str]:
    cfg = model.config
    structures = ", ".join(names[1:])
    dims = "2D slice-wise" if cfg.spatial_dims == 2 else "3D"
    method = "BCP semi-supervised" if cfg.method.value == "bcp" else "supervised-baseline"
    task = f"{dims} segmentation of {structures} ({card.title})"
    description = (
        f"{method} {dims} segmentation of {structures} with the {cfg.net} network, trained with {cfg.labeled} "
        f"labelled case(s) in the {cfg.dataset.value} data layout; exported by medkd from run "
        f"{model.run.resolve().name!r}."
    )
    return task, description


def _network_def(model: ExportModel) -> dict[str, Any]:
    return {"name": model.net, "in_channels": model.config.in_channels, "out_channels": model.config.num_classes}


def _spatial_shape(spec: Any, divisor: int | None) -> list[int | str]:
    return [f"{divisor}*n"] * spec.spatial_dims if divisor else list(spec.patch)


def _network_data_format(
    model: ExportModel, names: Sequence[str], card: DatasetCard, divisor: int | None
) -> dict[str, Any]:
    """``image`` a ``(1, *spatial)`` patch or slice (``"16*n"`` per axis for nets needing multiples of 16), ``pred``
    the logits, one channel per class; the workflow around the network is the inferer's."""
    spec = _segmentation_spec(model)
    spatial = _spatial_shape(spec, divisor)
    image = image_tensor(spatial_shape=spatial, modality=card.modality,
                         value_range=[0, 1] if spec.intensity == "minmax" else [])
    return network_data_format(image, segmentation_pred(names, spatial_shape=spatial))


def _inferer(model: ExportModel) -> dict[str, Any]:
    return {"_target_": SEGMENTATION_INFERER, "spec": _segmentation_spec(model).to_dict()}


def _preprocessing(model: ExportModel) -> list[dict[str, Any]]:
    """Raw NIfTI volumes, no resampling or scaling: the inferer normalises them with the run's recipe."""
    return [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True,
         "dtype": "$numpy.float32"},
        {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
    ]


def _postprocessing(model: ExportModel) -> list[dict[str, Any]]:
    """uint8 masks on the input's grid, ``<case>_seg.nii.gz``."""
    return [
        {
            "_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": MASK_POSTFIX,
            "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False,
            "writer": "NibabelWriter", "print_log": False,
        },
    ]


def _recipe_text(spec: Any) -> str:
    rule = "foreground probability > 0.5" if spec.num_classes == 2 else "argmax over classes"
    return _RECIPE[spec.mode].format(
        patch="x".join(map(str, spec.patch)), stride="x".join(map(str, spec.stride or ())), rule=rule,
        keep="yes" if spec.keep_largest else "no", intensity=spec.intensity,
    ) + (" (the network sees the volume as (x, y, z), the LA h5 layout)" if spec.axes == "xyz" else "")


def _limitations(cfg: Any, spec: Any) -> list[str]:
    unlabelled = " plus unlabelled ones" if cfg.method.value == "bcp" else " only"
    items = [
        (f"Trained from {cfg.labeled} labelled case(s){unlabelled}: expect errors on images unlike the training "
         "data (other scanners, sequences, fields of view, pathologies, paediatric patients)."),
        ("No resampling or reorientation: the network sees voxels as stored on disk. Inputs must follow the "
         "training data's orientation and through-plane axis (SimpleITK z), and roughly its resolution."),
        ("Intensities are normalised per volume; volumes with implants, strong artefacts or large empty margins "
         "shift the normalisation."),
        "The output is not checked for anatomical plausibility and carries no uncertainty estimate.",
        "If the run was trained on synthetic data (medkd's demo), the weights are meaningless on real images.",
        "`monai.bundle run` reads NIfTI only; DICOM series go through `medkd pipeline run`.",
    ]
    if spec.mode == "slices_2d":
        items.insert(2, "Slice-by-slice 2D model: no through-plane context; slices are nearest-resized to the patch.")
    return items


def _model_card(model: ExportModel) -> ModelCardText:
    from medkd.nets import count_parameters

    cfg, spec = model.config, _segmentation_spec(model)
    dims_word = "3D" if cfg.spatial_dims == 3 else "3D (or 2D)"
    image_shape = ", ".join(map(str, _spatial_shape(spec, getattr(model.network, "size_divisor", None))))
    return ModelCardText(
        method_long=_METHOD_LONG.get(cfg.method.value, cfg.method.value),
        network=f"`{cfg.net}` ({count_parameters(model.network):,} parameters), {cfg.spatial_dims}-D, "
        f"{cfg.in_channels} input channel(s), {cfg.num_classes} output channels",
        inference=_recipe_text(spec),
        input_output=(
            f"- Input: a single-channel {dims_word} volume (NIfTI, `*.nii` / `*.nii.gz`), any size, as stored on disk "
            f"(no resampling,\n  no reorientation). Intensities are normalised inside the model ({spec.intensity}).\n"
            f"- Output: a uint8 label map on the input's grid (same shape and affine), written as "
            f"`<case>_{MASK_POSTFIX}.nii.gz`.\n"
            f"- `network_data_format` in `configs/metadata.json` describes the network itself: `image` "
            f"`(1, {image_shape})` -> `pred`\n  ({cfg.num_classes} channels of logits)."
        ),
        limitations=_limitations(cfg, spec),
        how_to_run=_HOW_TO_RUN,
        equivalence="The masks of `monai.bundle run` are voxel-for-voxel those of `medkd bcp predict` on the run: "
        "both call the same\n`SegmentationSpec.segment`.",
        training_keys=_TRAINING_KEYS,
        metrics=_METRICS,
        validation_score="mean foreground Dice",
        validation_split=cfg.resolved_val_split(),
        eval_command="`medkd bcp eval --json RUN/test.json`",
    )


def _provenance(model: ExportModel) -> dict[str, Any]:
    return {"method": model.config.method.value, "dataset": model.config.dataset.value}


def _recipe(model: ExportModel) -> dict[str, Any]:
    return {"segmentation_spec": _segmentation_spec(model).to_dict()}


#: BCP and its supervised baseline (same network and loop) export through this spec
BCP_BUNDLE_SPEC = register_bundle_spec(
    BundleSpec(
        method="bcp",
        kind="segmentation",
        stages=("pretrain", "selftrain", "supervised"),
        load=_load,
        label_names=_label_names,
        dataset_card=_dataset_card,
        describe=_describe,
        network_def=_network_def,
        network_data_format=_network_data_format,
        inferer=_inferer,
        preprocessing=_preprocessing,
        postprocessing=_postprocessing,
        model_card=_model_card,
        references=(BCP_REFERENCE,),
        provenance=_provenance,
        recipe=_recipe,
    ),
    "supervised",
)
