# SPDX-License-Identifier: Apache-2.0
"""Grounded Teacher's :class:`~medkd.methods.bundle_spec.BundleSpec`: what ``medkd bundle export`` writes for a GT
run (kind ``detection``).

- ``network_def``: the registered ``retinanet2d`` with the run's keywords (``medkd.nets.create_net``);
  ``models/model.pt`` holds the final model: the EMA teacher of ``RUN/adapt/last.pt`` (``source``: the student).
- ``network_data_format``: ``image`` a single-channel 2D image (sides multiples of 16, values in [0, 1]) and
  ``pred`` the network's dense head output ``(B, K + 4, A)``: per anchor ``K`` class logits and 4 box-regression
  deltas (``network_def`` sets ``dense_output: true``), so MONAI's ``verify_net_in_out`` checks the real network.
  The inferer decodes: anchors, box deltas, score threshold, NMS (the detector's ``detect``), as model-zoo's
  RetinaNet bundles do in their ``RetinaNetDetector``.
- the workflow: ``LoadImaged`` (PNG/JPEG) -> :class:`~medkd.methods.grounded_teacher.components.GTDetectionInferer`
  (the preprocessing of :func:`~medkd.methods.grounded_teacher.predict.detect_images`, boxes above the run's
  ``report_threshold``) -> :class:`~medkd.methods.grounded_teacher.components.SaveDetectionsJsond`, so
  ``python -m monai.bundle run`` writes ``<image>_detections.json`` with the boxes ``medkd gt predict`` reports.
- the predictor of a GT bundle (:func:`bundle_predictor`) is the run predictor's twin: same boxes, scores, labels.

Ashraf et al., "Context Aware Grounded Teacher for Source Free Object Detection", arXiv 2504.15404.

Example:
    >>> from medkd.methods.bundle_spec import get_bundle_spec
    >>> spec = get_bundle_spec("gt", "runs/gt")
    >>> spec.kind, spec.stages, spec.component_modules
    ('detection', ('adapt', 'source'), ('medkd.methods.grounded_teacher.components',))
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
)

__all__ = ["DATASET_CARDS", "GT_BUNDLE_SPEC", "GT_REFERENCE", "INFERER", "INPUT_PATTERNS", "WRITER",
           "bundle_predictor"]

GT_REFERENCE = (
    "Ashraf T., et al. Context Aware Grounded Teacher for Source Free Object Detection. arXiv 2504.15404, 2025. "
    "https://arxiv.org/abs/2504.15404"
)
INFERER = "medkd.methods.grounded_teacher.components.GTDetectionInferer"
WRITER = "medkd.methods.grounded_teacher.components.SaveDetectionsJsond"
#: files of ``dataset_dir`` that ``monai.bundle run`` reads (2D images; DICOM MG goes through ``medkd pipeline run``)
INPUT_PATTERNS: tuple[str, ...] = ("*.png", "*.jpg", "*.jpeg")

_DDSM_REF = "Lee R. S., et al. A curated mammography data set for use in computer-aided detection and diagnosis " \
            "research (CBIS-DDSM). Scientific Data 4, 170177 (2017)."
_INBREAST_REF = "Moreira I. C., et al. INbreast: toward a full-field digital mammographic database. Academic " \
                "Radiology 19(2), 236-248 (2012)."
_RSNA_REF = "RSNA Screening Mammography Breast Cancer Detection (2023); RSNA-BSD1K box annotations as released " \
            "with the Grounded Teacher code."

#: target dataset folder (``GTConfig.target.dataset``, case-insensitive) -> its card
DATASET_CARDS: dict[str, DatasetCard] = {
    "inbreast": DatasetCard(
        title="INbreast full-field digital mammograms (adapted from a DDSM source model)", modality="MG",
        source="INbreast in the COCO layout of the Grounded Teacher releases", data_type="PNG/DICOM MG images, "
        "COCO JSON boxes (training); PNG/JPEG 2D images (bundle inference)",
        terms="If these weights were adapted on INbreast, its terms apply (access on request from the "
              "INbreast authors; research use) and publications must cite:\n" + _INBREAST_REF,
        reference=_INBREAST_REF,
    ),
    "rsna-bsd1k": DatasetCard(
        title="RSNA-BSD1K screening mammograms (adapted from a DDSM source model)", modality="MG",
        source="RSNA screening mammography, BSD1K subset in the COCO layout of the Grounded Teacher releases",
        data_type="PNG images, COCO JSON boxes (training); PNG/JPEG 2D images (bundle inference)",
        terms="If these weights were adapted on RSNA-BSD1K, the RSNA Screening Mammography competition data "
              "terms apply (non-commercial research) and publications must cite:\n" + _RSNA_REF,
        reference=_RSNA_REF,
    ),
    "synthetic": DatasetCard(
        title="medkd's synthetic lesion domains (source and shifted target)", modality="n/a",
        source="medkd.data.synthetic.lesions.write_lesion_domains (synthetic, no patient data)",
        data_type="PNG images, COCO JSON boxes (training); PNG/JPEG 2D images (bundle inference)",
    ),
}
_GENERIC_CARD = DatasetCard(title="a user COCO detection dataset (2D images)", modality="n/a",
                            source="user-provided images and COCO JSON boxes",
                            data_type="PNG/JPEG/DICOM images, COCO JSON boxes")

_METHOD_LONG = {
    "gt": "Grounded Teacher (Ashraf et al., 2025): source-free adaptation of a lesion detector by a mean teacher "
          "with a relational context module (class-confusion matrices, semantic augmentation, semantic-aware loss) "
          "and an expert branch",
    "mean_teacher": "plain mean-teacher source-free adaptation (the Grounded Teacher paper's baseline: no expert, "
                    "no relational context module)",
    "source_only": "the source-trained detector, not adapted (the Grounded Teacher paper's lower bound)",
}
_TRAINING_KEYS = ("method", "mode", "classes", "image_size", "net", "source_train", "adapt", "expert",
                  "expert_threshold", "decode", "seed")
_METRICS = (("AP", "AP"), ("AP50", "AP50"), ("R@0.3", "R@0.3"), ("CPM", "CPM"))
_HOW_TO_RUN = """With medkd (PNG/JPEG images or DICOM MG in; boxes as JSON/CSV, a DICOM SR per image out):

```bash
pip install "medkd[bundle,dicom]"
medkd pipeline run pipelines/mammo_lesions.yaml -i DICOM_DIR -o OUT_DIR --model {bundle_path}
medkd bundle info {bundle_path}
medkd bundle verify {bundle_path}
```

In Python:

```python
from medkd.inference import load_predictor

predictor = load_predictor("{bundle_path}", device="auto")
found = predictor(image)  # float32 (rows, columns) -> boxes (N, 4) x_min, y_min, x_max, y_max; scores; labels 1..K
```"""


def _card_key(cfg: Any) -> str:
    name = str(cfg.target.dataset).lower()
    return "synthetic" if name in ("target", "synthetic") else name


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    """The run's final model (the adapted EMA teacher), or the ``source`` student; ``checkpoint`` ``best`` falls back
    to ``last`` (adaptation keeps only ``last``: selecting on target validation would be an oracle)."""
    from medkd.config import config_to_dict
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.errors import DataError
    from medkd.methods.grounded_teacher.config import GTMethod
    from medkd.methods.grounded_teacher.runs import final_stage, load_run_config, stage_checkpoint, stage_dir
    from medkd.nets import create_net

    cfg = load_run_config(run)
    stage = stage or final_stage(cfg)
    if stage == "adapt" and cfg.method is GTMethod.SOURCE_ONLY:
        raise DataError(run, "a source_only run has no adaptation stage: export --stage source")
    path, entry = stage_checkpoint(run, stage)
    last = stage_dir(Path(run), stage) / "last.pt"
    if checkpoint == "last" and last.is_file():
        path = last
    ckpt = load_checkpoint(path)
    state = ckpt.get(entry)
    if not isinstance(state, dict):
        raise DataError(path, f"the checkpoint has no {entry!r} weights")
    _import_net(cfg.net.name)
    net = create_net(cfg.net.name, **cfg.net_kwargs())
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(path, f"the {entry} weights do not fit the run's {cfg.net.name!r} "
                              f"({str(err).splitlines()[0]})") from None
    best = ckpt.get("best_score")
    return ExportModel(
        run=Path(run), config=cfg, config_dict=config_to_dict(cfg), net=cfg.net.name, network=net.eval(),
        state=state, checkpoint_file=path, stage=stage, iteration=int(ckpt.get("iteration", 0)),
        best_score=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
    )


def _import_net(name: str) -> None:
    """Register ``retinanet2d`` if ``medkd.nets`` does not import it yet."""
    from medkd.nets import NETS

    if name not in NETS and name == "retinanet2d":
        import medkd.nets.retinanet  # noqa: F401


def _dataset_card(model: ExportModel) -> DatasetCard:
    return DATASET_CARDS.get(_card_key(model.config), _GENERIC_CARD)


def _describe(model: ExportModel, names: Sequence[str], card: DatasetCard) -> tuple[str, str]:
    cfg = model.config
    classes = ", ".join(names[1:])
    what = "mammograms" if card.modality == "MG" else "2D images"
    task = f"2D lesion detection ({classes}) in {what}"
    description = (
        f"{_METHOD_LONG.get(cfg.method.value, cfg.method.value).split(':')[0]} ({cfg.mode.value} mode) {cfg.net.name} "
        f"detector of {classes} on {card.title}; exported by medkd from run {model.run.resolve().name!r}, stage "
        f"{model.stage!r}."
    )
    return task, description


def _network_def(model: ExportModel) -> dict[str, Any]:
    return {"name": model.net, **model.config.net_kwargs(), "dense_output": True}


def _network_data_format(model: ExportModel, names: Sequence[str], card: DatasetCard, divisor: int | None
                         ) -> dict[str, Any]:
    """``image`` ``(1, 16*n, 16*n)`` in [0, 1] (the inferer windows and resizes any image); ``pred`` the dense head
    output ``(B, K + 4, A)`` (``A`` anchors: not a fixed size)."""
    image = image_tensor(spatial_shape=["16*n", "16*n"], modality=card.modality, value_range=[0, 1],
                         is_patch_data=False)
    k = len(names) - 1
    channels = {**{str(i): f"class logit: {name}" for i, name in enumerate(names[1:])},
                **{str(k + j): f"box regression delta {d}" for j, d in enumerate(("dx", "dy", "dw", "dh"))}}
    pred = {"type": "image", "format": "anchor class logits and box deltas (B, K + 4, anchors)",
            "num_channels": k + 4, "spatial_shape": ["*"], "dtype": "float32", "value_range": [],
            "is_patch_data": False, "channel_def": channels}
    return network_data_format(image, pred)


def _inferer(model: ExportModel) -> dict[str, Any]:
    cfg = model.config
    return {"_target_": INFERER, "image_size": int(cfg.image_size), "min_score": float(cfg.decode.report_threshold)}


def _preprocessing(model: ExportModel) -> list[dict[str, Any]]:
    """PNG/JPEG as stored (``(x, y)`` axes, channels first); the inferer windows, resizes and averages channels."""
    return [
        {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader", "image_only": True,
         "dtype": "$numpy.float32"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]


def _postprocessing(model: ExportModel) -> list[dict[str, Any]]:
    return [{"_target_": WRITER, "output_dir": "@output_dir", "label_names": list(model.config.label_names())}]


def _model_card(model: ExportModel) -> ModelCardText:
    from medkd.nets import count_parameters

    cfg = model.config
    k = len(cfg.classes)
    return ModelCardText(
        method_long=_METHOD_LONG.get(cfg.method.value, cfg.method.value),
        network=f"`{cfg.net.name}` (MONAI RetinaNet, {cfg.net.backbone} + FPN {cfg.net.fpn_channels}, "
                f"{count_parameters(model.network):,} parameters), 1 input channel, {k} class(es)",
        inference=f"intensities windowed to [0, 1] (1st..99th percentile per image), short side resized to "
                  f"{cfg.image_size} pixels, RetinaNet decoding (score > {cfg.decode.score_threshold}, NMS IoU "
                  f"{cfg.decode.nms_threshold}, at most {cfg.decode.max_detections} boxes), boxes mapped back to "
                  f"the image; boxes scoring at least {cfg.decode.report_threshold} are reported",
        input_output=(
            "- Input: a single-channel 2D image (PNG/JPEG for `monai.bundle run`; DICOM MG through `medkd pipeline "
            "run`), any size.\n"
            "- Output: per image, `boxes` `(N, 4)` as `x_min, y_min, x_max, y_max` in pixels of the input (`x` the "
            "column), `scores` `(N,)` and `labels` `(N,)` (label values 1..K, see the label table), written by "
            "`monai.bundle run` as `<image>_detections.json`.\n"
            "- `network_data_format` in `configs/metadata.json` describes the network: `image` `(1, 16*n, 16*n)` in "
            "[0, 1] -> `pred`, the dense head output `(B, K + 4, anchors)` (class logits and box deltas per "
            "anchor); the inferer decodes it into boxes."
        ),
        limitations=[
            "Adapted without source images to one target site: expect errors on images from other sites, vendors "
            "or views, and on lesion types absent from the classes.",
            "2D only: each image is processed on its own (no CC/MLO pairing, no priors).",
            "Scores are not calibrated probabilities; the report threshold was set for the training data.",
            "If the run was trained on synthetic data (medkd's demo), the weights are meaningless on real images.",
            "`monai.bundle run` reads PNG/JPEG only; DICOM images go through `medkd pipeline run`.",
        ],
        how_to_run=_HOW_TO_RUN,
        equivalence="The boxes of `monai.bundle run` are those of `medkd gt predict` on the run: both call the same "
                    "`detect_images`.",
        training_keys=_TRAINING_KEYS,
        metrics=_METRICS,
        validation_score="AP50 on the source validation split" if model.stage == "source" else "none (the last "
                         "EMA teacher is the model)",
        validation_split="validation",
        eval_command="`medkd gt eval --run RUN --data-root DIR --split val --json RUN/eval_val.json`",
    )


def _provenance(model: ExportModel) -> dict[str, Any]:
    cfg = model.config
    return {"variant": cfg.method.value, "mode": cfg.mode.value, "dataset": cfg.target.dataset,
            "source_dataset": cfg.source.dataset}


def _recipe(model: ExportModel) -> dict[str, Any]:
    cfg = model.config
    return {"image_size": int(cfg.image_size), "report_threshold": float(cfg.decode.report_threshold)}


def bundle_predictor(path: Path, meta: dict[str, Any], network: Any, inferer: Any, device: Any) -> Any:
    """A ``detection`` predictor of a GT bundle: 2D images ``(y, x)`` -> boxes above the report threshold, scores,
    label values 1..K (the run predictor's output for the same weights)."""
    from medkd.errors import DataError
    from medkd.inference import Predictor, file_sha256
    from medkd.io.labels import labels_from_dicts
    from medkd.methods.grounded_teacher.components import GTDetectionInferer

    if not isinstance(inferer, GTDetectionInferer):
        raise DataError(path / "configs" / "inference.json", "'inferer' is not a GTDetectionInferer: not a Grounded "
                                                             "Teacher bundle")
    model = network.to(device).eval()
    info = meta.get("medkd") if isinstance(meta.get("medkd"), dict) else {}
    return Predictor(
        kind="detection", name=str(meta.get("name", Path(path).resolve().name)), version=str(meta.get("version", "?")),
        weights_sha256=file_sha256(Path(path) / "models" / "model.pt"),
        labels=labels_from_dicts(meta.get("label_classes", []), source=str(Path(path) / "configs" / "metadata.json")),
        run=lambda array: inferer.detect(model, array), source=Path(path),
        metadata={"method": "gt", "task": meta.get("task"), "description": meta.get("description"),
                  "intended_use": meta.get("intended_use"), "net": info.get("net"), "stage": info.get("stage"),
                  "report_threshold": inferer.min_score},
    )


GT_BUNDLE_SPEC = register_bundle_spec(BundleSpec(
    method="gt",
    kind="detection",
    stages=("adapt", "source"),
    load=_load,
    label_names=lambda model: list(model.config.label_names()),
    dataset_card=_dataset_card,
    describe=_describe,
    network_def=_network_def,
    network_data_format=_network_data_format,
    inferer=_inferer,
    preprocessing=_preprocessing,
    postprocessing=_postprocessing,
    model_card=_model_card,
    references=(GT_REFERENCE,),
    provenance=_provenance,
    recipe=_recipe,
    input_patterns=INPUT_PATTERNS,
    component_modules=("medkd.methods.grounded_teacher.components",),
    predictor=bundle_predictor,
))
