# SPDX-License-Identifier: Apache-2.0
"""The toy detector's :class:`~medkd.methods.bundle_spec.BundleSpec`: what ``medkd bundle export`` writes for it.

``network_def`` builds the registered ``toy_centernet`` (found in a fresh process through the ``medkd.plugins``
entry point). ``network_data_format`` describes the network itself, as MONAI's ``verify_net_in_out`` tests it: a
single-channel image of any size in, a dense map out (``type: image``, one heatmap channel per class, then log
height and log width), not the decoded ``boxes``/``scores``/``labels`` dict of
:func:`~medkd.methods.bundle_spec.detection_pred`, which ``verify_net_in_out`` cannot check. The decoding lives in
the ``inferer`` (:class:`toy_detector.components.ToyDetectionInferer`), which the bundle predictor uses.
"""

from __future__ import annotations

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
)

__all__ = ["INFERER", "TOY_BUNDLE_SPEC", "TOY_CARD", "bundle_predictor"]

INFERER = "toy_detector.components.ToyDetectionInferer"
TOY_CARD = DatasetCard(title="toy bright boxes (synthetic)", modality="n/a", source="toy_detector.data, synthetic",
                       data_type="npy images with a COCO-style index (training); NIfTI (bundle inference)")


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    from toy_detector.train import NET, checkpoint_path, load_run_config

    from medkd.config import config_to_dict
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.nets import create_net

    cfg = load_run_config(run)
    ckpt_file = checkpoint_path(run, checkpoint)
    ckpt = load_checkpoint(ckpt_file)
    net = create_net(NET, **cfg.net_kwargs())
    net.load_state_dict(ckpt["student"])
    best = ckpt.get("best_score")
    return ExportModel(run=Path(run), config=cfg, config_dict=config_to_dict(cfg), net=NET, network=net,
                       state=ckpt["student"], checkpoint_file=ckpt_file, stage=ckpt_file.parent.name,
                       iteration=int(ckpt.get("iteration", 0)),
                       best_score=float(best) if isinstance(best, float) and best > float("-inf") else None)


def _describe(model: ExportModel, names: Sequence[str], card: DatasetCard) -> tuple[str, str]:
    return (f"2D detection of {', '.join(names[1:])} (slice by slice in volumes)",
            f"Toy CenterNet-like detector exported by medkd from run {model.run.resolve().name!r}.")


def _network_data_format(model: ExportModel, names: Sequence[str], card: DatasetCard, divisor: int | None
                         ) -> dict[str, Any]:
    k = len(names) - 1
    channels = {**{str(i): f"heatmap logit: {name}" for i, name in enumerate(names[1:])},
                str(k): "log box height (rows)", str(k + 1): "log box width (columns)"}
    pred = {"type": "image", "format": "heatmaps and log box sizes", "num_channels": k + 2,
            "spatial_shape": ["*", "*"], "dtype": "float32", "value_range": [], "is_patch_data": False,
            "channel_def": channels}
    return network_data_format(image_tensor(spatial_shape=["*", "*"], modality=card.modality, value_range=[0, 1],
                                            is_patch_data=False), pred)


def _preprocessing(model: ExportModel) -> list[dict[str, Any]]:
    return [{"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True,
             "dtype": "$numpy.float32"},
            {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"}]


def _model_card(model: ExportModel) -> ModelCardText:
    return ModelCardText(
        method_long="toy CenterNet-like detector (a test plugin of medkd, not a published method)",
        network=f"`toy_centernet`, dilations {list(model.config.dilations)}, width {model.config.width}",
        inference="min-max normalisation per input; heatmap peaks above the score threshold; slices linked in 3D",
        input_output="- Input: a 2D image or a volume.\n- Output: boxes, scores and labels (decoded by the inferer; "
                     "`monai.bundle run` computes them but writes no files).",
        limitations=["Trained on synthetic bright boxes only: meaningless on real images."],
        validation_score="F1 at IoU 0.5",
    )


def bundle_predictor(path: Path, meta: dict[str, Any], network: Any, inferer: Any, device: Any) -> Any:
    """A ``detection`` predictor of a toy bundle: the bundle's network decoded by its inferer."""
    from medkd.inference import Predictor, file_sha256
    from medkd.io.labels import labels_from_dicts

    model = network.to(device).eval()
    return Predictor(kind="detection", name=str(meta.get("name", path.name)), version=str(meta.get("version", "?")),
                     weights_sha256=file_sha256(path / "models" / "model.pt"),
                     labels=labels_from_dicts(meta.get("label_classes", [])),
                     run=lambda array: inferer.detect(model, array), source=path,
                     metadata={"method": "toy", "task": meta.get("task")})


TOY_BUNDLE_SPEC = register_bundle_spec(BundleSpec(
    method="toy",
    kind="detection",
    stages=("train",),
    load=_load,
    label_names=lambda model: model.config.label_names(),
    dataset_card=lambda model: TOY_CARD,
    describe=_describe,
    network_def=lambda model: {"name": model.net, **model.config.net_kwargs()},
    network_data_format=_network_data_format,
    inferer=lambda model: {"_target_": INFERER, **vars(model.config.decode)},
    preprocessing=_preprocessing,
    postprocessing=lambda model: [],
    model_card=_model_card,
    component_modules=("toy_detector.components",),
    predictor=bundle_predictor,
))
