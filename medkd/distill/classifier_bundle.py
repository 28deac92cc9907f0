# SPDX-License-Identifier: Apache-2.0
"""The bundle spec of distilled classification students, routed ones included (``distill`` runs of kind
``classification``; registered as the ``distill`` method's variant for that kind).

A plain student exports its network (``student.json``) and best checkpoint. A ``partition_students`` run
(``RUN/routing.json``) exports **one routed bundle**: ``network_def`` builds a
:class:`~medkd.distill.routing.PartitionedStudent` of every partition's student (``models/model.pt`` holds them all,
``students.<value>.*``), routed by the run's key as at training and in the run's own predictor:

- medkd (``load_predictor(bundle)``, ``medkd distill predict``): the key value comes with each image
  (``{"image": array, "modality": "MR"}``, a datalist column or ``--meta modality=MR``);
- ``monai.bundle run``: each image's key value comes from its sidecar JSON (``case.png`` -> ``case.json``,
  ``{"modality": "MR"}``), read by :class:`~medkd.distill.bundle_components.LoadClassificationImaged`.

An unknown or missing value raises, naming the key and the known values: no silent fallback. Predictions of both
ways are ``OUTPUT_DIR/predictions.csv`` (``monai.bundle run``) or a dict / CSV row per image (medkd), and agree.

Example:
    >>> DISTILL_CLASSIFIER_BUNDLE_SPEC.kind, DISTILL_CLASSIFIER_BUNDLE_SPEC.background
    ('classification', False)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkd.methods.bundle_spec import (
    BundleSpec, DatasetCard, ExportModel, ModelCardText, classification_pred, image_tensor, network_data_format,
    register_bundle_spec,
)

__all__ = ["COMPONENTS", "DISTILL_CLASSIFIER_BUNDLE_SPEC", "DISTILL_REFERENCE", "MSD_REFERENCE"]

DISTILL_REFERENCE = (
    "Hinton G., Vinyals O., Dean J. Distilling the Knowledge in a Neural Network. NIPS Deep Learning Workshop "
    "2014. https://arxiv.org/abs/1503.02531"
)
MSD_REFERENCE = "Song Y. et al. Multi-Student Diffusion Distillation for Better One-Step Generators. ICML 2025."

#: the module of the bundle's network builders, reader and writer (allowlisted by the trust check)
COMPONENTS = "medkd.distill.bundle_components"
_INPUT_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.nii.gz", "*.nii")

_HOW_TO_RUN = """With medkd (image files in, a CSV of labels and probabilities out):

```bash
pip install "medkd[bundle]"
medkd distill predict {bundle_path} IMAGES... --out predictions.csv{meta_flag}
medkd distill predict {bundle_path} --datalist datalist.csv --out predictions.csv  # image column + metadata
medkd bundle info {bundle_path}
medkd bundle verify {bundle_path}
```

In Python:

```python
from medkd.inference import load_predictor
from medkd.data.classification import load_image

predictor = load_predictor("{bundle_path}", device="auto")
out = predictor({input_expr})  # -> {{"probabilities": (classes,), "label": int{partition}}}
```"""


@dataclass(frozen=True)
class ClassifierExport:
    """What a classification run exports (:attr:`ExportModel.config`).

    Attributes:
        students: ``{value: student.json fields}`` (one entry, value None, for a plain student).
        key: the routing key (None: a plain student).
        class_names, image_size, in_channels: shared by every student.
        summary: the run's ``summary.json`` (empty if missing).
    """

    students: dict[str | None, dict[str, Any]]
    key: str | None
    class_names: tuple[str, ...]
    image_size: tuple[int, ...]
    in_channels: int
    summary: dict[str, Any]

    @property
    def routed(self) -> bool:
        return self.key is not None


def _student_fields(run: Path) -> dict[str, Any]:
    from medkd.distill.students import classifier_info

    info = classifier_info(run)
    return {"net": info.net, "net_params": dict(info.net_params), "in_channels": info.in_channels,
            "num_classes": info.num_classes, "image_size": list(info.image_size),
            "class_names": list(info.class_names)}


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    """The run's student (``checkpoint``), or every partition's student of a routed run."""
    from medkd.distill.predict import load_classification_run
    from medkd.distill.routing import ROUTING_FILE, read_routing
    from medkd.engine.checkpoint import load_checkpoint

    run = Path(run)
    network, names, size, key, ckpt_file = load_classification_run(run, checkpoint, "cpu")  # a LoadedClassifier
    folders = read_routing(run)[1] if (run / ROUTING_FILE).is_file() else {None: "."}
    students = {value: _student_fields(run / folder) for value, folder in folders.items()}
    summary_file = run / "summary.json"
    try:
        summary = json.loads(summary_file.read_text(encoding="utf-8")) if summary_file.is_file() else {}
    except ValueError:
        summary = {}
    first = next(iter(students.values()))
    config = ClassifierExport(students=students, key=key, class_names=tuple(names), image_size=tuple(size),
                              in_channels=int(first["in_channels"]), summary=summary)
    config_dict = {"net": first["net"], "in_channels": config.in_channels, "num_classes": len(names),
                   "image_size": list(size), "class_names": list(names), "route_key": key,
                   "partitions": {str(v): folders[v] for v in students} if key else None,
                   "students": {str(v): s for v, s in students.items()}}
    ckpt = load_checkpoint(ckpt_file)
    best = ckpt.get("best_score")
    return ExportModel(
        run=run, config=config, config_dict=config_dict, net=first["net"], network=network,
        state=network.state_dict(), checkpoint_file=ckpt_file, stage=ckpt_file.parent.name,
        iteration=int(ckpt.get("iteration", 0)),
        best_score=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
    )


def _label_names(model: ExportModel) -> list[str]:
    return list(model.config.class_names)


def _dataset_card(model: ExportModel) -> DatasetCard:
    return DatasetCard(
        title="a classification datalist (class folders or a CSV datalist with metadata columns)",
        modality="n/a",
        source="user-provided images with class labels (e.g. medkd's synthetic SynthLesion-2D demo data)",
        data_type="PNG/JPEG (8-bit / 255) or NIfTI images, resized to "
                  f"{'x'.join(map(str, model.config.image_size))}",
    )


def _describe(model: ExportModel, names: Sequence[str], card: DatasetCard) -> tuple[str, str]:
    cfg = model.config
    task = f"image classification into {len(names)} classes ({', '.join(names)})"
    if cfg.routed:
        task += f", one student per {cfg.key} routed by it"
        how = (f"{len(cfg.students)} partition students ({', '.join(map(str, cfg.students))}) of `{model.net}`, "
               f"each case routed by its {cfg.key!r}")
    else:
        how = f"a `{model.net}` student"
    return task, (f"Distilled classifier: {how}, trained by medkd distill; exported by medkd from run "
                  f"{model.run.resolve().name!r}.")


def _network_def(model: ExportModel) -> dict[str, Any]:
    cfg = model.config

    def args(fields: dict[str, Any]) -> dict[str, Any]:
        return {k: fields[k] for k in ("net", "in_channels", "num_classes", "image_size", "net_params")}

    if not cfg.routed:
        return {"_target_": f"{COMPONENTS}.classifier", **args(cfg.students[None])}
    return {"_target_": f"{COMPONENTS}.routed_classifier", "key": cfg.key,
            "students": {str(v): args(s) for v, s in cfg.students.items()}}


def _network_data_format(model: ExportModel, names: Sequence[str], card: DatasetCard,
                         divisor: int | None) -> dict[str, Any]:
    cfg = model.config
    image = image_tensor(spatial_shape=list(cfg.image_size), modality=card.modality, num_channels=cfg.in_channels,
                         channel_def={str(c): "image" for c in range(cfg.in_channels)}, is_patch_data=False)
    return network_data_format(image, classification_pred(names))


def _inferer(model: ExportModel) -> dict[str, Any]:
    return {"_target_": "SimpleInferer"}


def _preprocessing(model: ExportModel) -> list[dict[str, Any]]:
    """medkd's training reader (and, routed, the sidecar key), then the training resize."""
    cfg = model.config
    mode = "bilinear" if len(cfg.image_size) == 2 else "trilinear"
    return [
        {"_target_": f"{COMPONENTS}.LoadClassificationImaged", "keys": "image", "route_key": cfg.key},
        {"_target_": "Resized", "keys": "image", "spatial_size": list(cfg.image_size), "mode": mode,
         "align_corners": False},
    ]


def _postprocessing(model: ExportModel) -> list[dict[str, Any]]:
    cfg = model.config
    return [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": f"{COMPONENTS}.WriteClassificationd", "keys": "pred", "output_dir": "@output_dir",
         "class_names": list(cfg.class_names), "route_key": cfg.key},
    ]


def _summary_line(cfg: ClassifierExport) -> str:
    strategy = cfg.summary.get("strategy") or {}
    routed = (strategy.get("routed") or {}).get("test") or {}
    if cfg.routed and "accuracy" in routed:
        glob = ((strategy.get("global") or {}).get("test") or {}).get("accuracy")
        return (f" Routed test accuracy at training: {routed['accuracy']:.4f} over {routed.get('n', '?')} cases"
                + (f" (one global student: {glob:.4f})." if isinstance(glob, (int, float)) else "."))
    return ""


def _model_card(model: ExportModel) -> ModelCardText:
    from medkd.nets import count_parameters

    cfg = model.config
    size = "x".join(map(str, cfg.image_size))
    key = cfg.key
    routing = (f" Each case goes to the student of its `{key}` ({', '.join(map(str, cfg.students))}); a missing or "
               f"unknown value is an error." if key else "")
    meta_flag = f" --meta {key}=VALUE" if key else ""
    input_expr = f'{{"image": load_image("case.png"), "{key}": "VALUE"}}' if key else 'load_image("case.png")'
    return ModelCardText(
        method_long="knowledge distillation of a classifier (medkd distill"
                    + (f", MSD partition students routed by `{key}`)" if key else ")"),
        network=f"`{model.net}` ({count_parameters(model.network):,} parameters"
                + (f" over {len(cfg.students)} students" if key else "") + f"), {cfg.in_channels} input channel(s), "
                f"{len(cfg.class_names)} classes",
        inference=f"resize to {size} (bilinear, as at training), network, softmax; label = argmax.{routing}"
                  + _summary_line(cfg),
        input_output=(
            f"- Input: an image file (PNG/JPEG: 8-bit values / 255; NIfTI as stored) with {cfg.in_channels} "
            f"channel(s), any size (resized to {size}).\n"
            + (f"- Routing: each image's `{key}`: with medkd, passed with the image; with `monai.bundle run`, a "
               f"sidecar JSON next to it\n  (`case.png` -> `case.json`: `{{\"{key}\": \"VALUE\"}}`).\n" if key else "")
            + "- Output: `OUTPUT_DIR/predictions.csv` (file, label, class, one probability per class"
            + (f", {key}" if key else "") + ") with `monai.bundle run`;\n  a dict `probabilities`, `label`"
            + (", `partition`" if key else "") + " per image with medkd."
        ),
        limitations=[
            "Trained on the run's data only: expect errors on images unlike them (other scanners, sites, "
            "populations).",
            "Images are resized to the training size without keeping the aspect ratio.",
            "If the run was trained on synthetic data (medkd's demo), the weights are meaningless on real images.",
            *(["A case whose key value has no student cannot be classified by this bundle."] if key else []),
        ],
        how_to_run=_HOW_TO_RUN.replace("{meta_flag}", meta_flag).replace("{input_expr}", input_expr)
        .replace("{partition}", ', "partition": str' if key else ""),
        equivalence="The labels and probabilities of `monai.bundle run` are those of medkd's predictor on the same "
                    "files: same reader,\nresize and network" + (", same routing." if key else "."),
        training_keys=("net", "in_channels", "num_classes", "image_size", "class_names", "route_key", "partitions"),
        validation_score="validation accuracy",
        eval_command="`medkd distill eval RUN --data-root DATA --json RUN/test.json`",
    )


def _predictor(path: Path, meta: dict[str, Any], network: Any, inferer: Any, device: Any) -> Any:
    from medkd.distill.predict import classification_predictor

    config = (meta.get("medkd") or {}).get("config") or {}
    names = [str(n) for n in config.get("class_names") or []]
    size = config.get("image_size") or []
    if not names or not size:
        from medkd.errors import DataError

        raise DataError(path / "configs" / "metadata.json", "medkd.config lacks class_names or image_size: not a "
                                                             "medkd classification bundle")
    return classification_predictor(
        network, class_names=names, image_size=size, name=str(meta.get("name", path.resolve().name)),
        version=str(meta.get("version", "?")), weights=Path(path) / "models" / "model.pt", source=path, device=device,
        route_key=config.get("route_key"),
        metadata={"method": "distill", "task": meta.get("task"), "description": meta.get("description"),
                  "intended_use": meta.get("intended_use")},
    )


DISTILL_CLASSIFIER_BUNDLE_SPEC = register_bundle_spec(BundleSpec(
    method="distill",
    kind="classification",
    stages=("student",),
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
    references=(DISTILL_REFERENCE, MSD_REFERENCE),
    input_patterns=_INPUT_PATTERNS,
    component_modules=(COMPONENTS,),
    predictor=_predictor,
    background=False,
), variant=True)
