# SPDX-License-Identifier: Apache-2.0
"""Export a trained medkd BCP run as a MONAI bundle (``medkd bundle export``).

The bundle (layout in :mod:`medkd.bundle.layout`) holds the student's weights as a plain state_dict, a
``metadata.json`` that passes ``verify_metadata`` against :data:`~medkd.bundle.layout.SCHEMA_PATH`, and an
``inference.json`` whose masks equal ``medkd bcp predict``'s voxel for voxel. The folder is built next to ``out``
and moved into place at the end, so a failed export never leaves a half-written bundle.

Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.

Example:
    >>> export_bundle("runs/acdc_bcp", "models/acdc_bcp")  # doctest: +SKIP
    PosixPath('models/acdc_bcp')
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkd.bundle.inference_config import inference_config
from medkd.bundle.layout import (
    DATA_LICENSE, INFERENCE, INTENDED_USE, LICENSE, LOGGING, METADATA, README, TEMPLATES_DIR, TORCHSCRIPT, WEIGHTS,
)
from medkd.bundle.metadata import DATASET_CARDS, DatasetCard, build_metadata
from medkd.bundle.model_card import markdown_table, performance_section, render_readme
from medkd.bundle.trust import check_bundle_trust, require_trusted
from medkd.config import config_to_dict
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.predictor import SegmentationSpec, file_sha256
from medkd.errors import DataError

__all__ = ["export_bundle", "export_torchscript"]

logger = logging.getLogger(__name__)

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
_VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+([-+.][0-9A-Za-z.+-]*)?$")  # as in schemas/metadata_schema.json
_TRAINING_KEYS = (
    "method", "dataset", "faithful", "net", "in_channels", "num_classes", "labeled", "patch", "batch_size",
    "labeled_batch_size", "pretrain_iterations", "selftrain_iterations", "lr", "momentum", "weight_decay", "lr_step",
    "ema_decay", "mask_ratio", "u_weight", "seed", "val_interval", "sliding_stride",
)


def _check_out(out: Path, run: Path, overwrite: bool) -> None:
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise DataError(out, f"the bundle folder must lie outside the run folder {run}")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not overwrite:
        raise DataError(out, "already exists; pass overwrite=True (medkd bundle export --overwrite) to replace it")
    if not out.is_dir() or not (out / METADATA).is_file():
        raise DataError(out, "exists and is not a MONAI bundle: refusing to replace it, choose another folder")


def _plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous (channels_last training leaves NHWC strides) copies: same values, portable layout."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _class_names(cfg: Any) -> list[str]:
    from medkd.methods.bcp.evaluate import class_names

    return list(class_names(cfg))


def _recipe_text(spec: SegmentationSpec) -> str:
    rule = "foreground probability > 0.5" if spec.num_classes == 2 else "argmax over classes"
    return _RECIPE[spec.mode].format(
        patch="x".join(map(str, spec.patch)), stride="x".join(map(str, spec.stride or ())), rule=rule,
        keep="yes" if spec.keep_largest else "no", intensity=spec.intensity,
    ) + (" (the network sees the volume as (x, y, z), the LA h5 layout)" if spec.axes == "xyz" else "")


def _describe(cfg: Any, names: list[str], card: DatasetCard, run_name: str) -> tuple[str, str]:
    """(task, description) defaults."""
    structures = ", ".join(names[1:])
    dims = "2D slice-wise" if cfg.spatial_dims == 2 else "3D"
    method = "BCP semi-supervised" if cfg.method.value == "bcp" else "supervised-baseline"
    task = f"{dims} segmentation of {structures} ({card.title})"
    description = (
        f"{method} {dims} segmentation of {structures} with the {cfg.net} network, trained with {cfg.labeled} "
        f"labelled case(s) in the {cfg.dataset.value} data layout; exported by medkd from run {run_name!r}."
    )
    return task, description


def _limitations(cfg: Any, spec: SegmentationSpec) -> str:
    unlabelled = " plus unlabelled ones" if cfg.method.value == "bcp" else " only"
    items = [
        f"Trained from {cfg.labeled} labelled case(s){unlabelled}: expect errors on images unlike the training "
        "data (other scanners, sequences, fields of view, pathologies, paediatric patients).",
        "No resampling or reorientation: the network sees voxels as stored on disk. Inputs must follow the training "
        "data's orientation and through-plane axis (SimpleITK z), and roughly its resolution.",
        "Intensities are normalised per volume; volumes with implants, strong artefacts or large empty margins shift "
        "the normalisation.",
        "The output is not checked for anatomical plausibility and carries no uncertainty estimate.",
        "If the run was trained on synthetic data (medkd's demo), the weights are meaningless on real images.",
        "`monai.bundle run` reads NIfTI only; DICOM series go through `medkd pipeline run`.",
    ]
    if spec.mode == "slices_2d":
        items.insert(2, "Slice-by-slice 2D model: no through-plane context; slices are nearest-resized to the patch.")
    return "\n".join(f"- {item}" for item in items)


def _readme_values(
    *, cfg: Any, meta: dict[str, Any], spec: SegmentationSpec, names: list[str], card: DatasetCard, run: Path,
    stage: str, ckpt_name: str, parameters: int, out: Path,
) -> dict[str, Any]:
    import medkd

    labels = meta["label_classes"]
    labels_table = markdown_table(
        [[e["value"], e["name"], e["code"]["meaning"], f"{e['code']['scheme']} {e['code']['value']}"] for e in labels]
    )
    config = meta["medkd"]["config"]
    training_table = markdown_table([[f"`{k}`", f"`{config[k]}`"] for k in _TRAINING_KEYS if k in config])
    image_shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    has_terms = card.terms is not None
    return {
        "title": meta["name"], "intended_use": INTENDED_USE, "description": meta["description"],
        "method_long": _METHOD_LONG.get(cfg.method.value, cfg.method.value), "net": cfg.net,
        "parameters": f"{parameters:,}", "dims": cfg.spatial_dims, "in_channels": cfg.in_channels,
        "num_classes": cfg.num_classes, "recipe": _recipe_text(spec), "version": meta["version"],
        "medkd_version": medkd.__version__, "run": run.resolve().name, "checkpoint": f"{stage}/{ckpt_name}",
        "weights_sha256": meta["medkd"]["weights_sha256"], "labels_table": labels_table,
        "dims_word": "3D" if cfg.spatial_dims == 3 else "3D (or 2D)",
        "intensity_note": f"Intensities are normalised inside the model ({spec.intensity}).",
        "image_shape": f"`(1, {', '.join(map(str, image_shape))})`",
        "data_text": f"Data layout: **{card.title}**. {card.source}; {card.data_type}."
        + (" See `docs/data_license.txt` for the data's terms." if has_terms else ""),
        "training_table": training_table,
        "performance": performance_section(run, stage, val_split=cfg.resolved_val_split()),
        "limitations": _limitations(cfg, spec),
        "bundle_path": f"models/{out.name}",
        "references": "\n".join(f"- {ref}" for ref in meta["references"]),
        "data_license_note": " The training data's terms: `docs/data_license.txt`." if has_terms else "",
    }


def export_torchscript(bundle: Path, *, trust: bool = False) -> Path | None:
    """Write ``models/model.ts`` with MONAI's ``ckpt_export`` (traced on a ``"16*n"``, ``n=1`` input).

    torch 2.15 deprecates TorchScript in favour of ``torch.export``; a failure only warns.

    Args:
        bundle: bundle folder.
        trust: parse configs that hold code outside medkd's allowlist (:func:`~medkd.bundle.trust.require_trusted`).

    Returns:
        The file written, or None on failure.

    Raises:
        UntrustedBundleError: the configs hold code outside medkd's allowlist and ``trust`` is false.
    """
    from monai.bundle import ckpt_export

    require_trusted(bundle, trust)
    target = bundle / TORCHSCRIPT
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt_export(
                net_id="network_def", filepath=str(target), ckpt_file=str(bundle / WEIGHTS),
                meta_file=str(bundle / METADATA), config_file=str(bundle / INFERENCE), bundle_root=str(bundle),
                use_trace=True,
            )
    except Exception as err:  # noqa: BLE001 - TorchScript is optional: any failure becomes a warning
        target.unlink(missing_ok=True)
        warnings.warn(f"TorchScript export failed, the bundle has no {TORCHSCRIPT}: {type(err).__name__}: {err}",
                      RuntimeWarning, stacklevel=2)
        return None
    return target


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


def _finite(value: Any) -> float | None:
    """A score for JSON: None for a missing or non-finite one (``-inf`` before the first validation)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _load_student(run: Path, cfg: Any, checkpoint: str, stage: str | None) -> tuple[Path, dict[str, Any], nn.Module]:
    """(checkpoint file, checkpoint, network holding the student's weights)."""
    from medkd.methods.bcp.predict import checkpoint_path
    from medkd.nets import create_net

    ckpt_file = checkpoint_path(run, cfg, checkpoint, stage)
    ckpt = load_checkpoint(ckpt_file)
    net: nn.Module = create_net(cfg.net, in_channels=cfg.in_channels, out_channels=cfg.num_classes)
    try:
        net.load_state_dict(ckpt["student"])
    except RuntimeError as err:
        raise DataError(ckpt_file, f"student weights do not fit {cfg.net!r} of config.yaml: {err}") from err
    return ckpt_file, ckpt, net


def _build(
    folder: Path, run: Path, out: Path, *, checkpoint: str, stage: str | None, version: str,
    description: str | None,
) -> None:
    from medkd.io.labels import labels_from_names
    from medkd.methods.bcp.predict import load_run_config, segmentation_spec
    from medkd.nets import count_parameters

    cfg = load_run_config(run)
    ckpt_file, ckpt, net = _load_student(run, cfg, checkpoint, stage)
    (folder / "models").mkdir(parents=True)
    torch.save(_plain_state(ckpt["student"]), folder / WEIGHTS)

    spec = segmentation_spec(cfg)
    names = _class_names(cfg)
    card = DATASET_CARDS.get(cfg.dataset.value, DATASET_CARDS["nifti"])
    task, default_description = _describe(cfg, names, card, run.resolve().name)
    medkd_block = {
        "kind": "segmentation", "method": cfg.method.value, "dataset": cfg.dataset.value, "net": cfg.net,
        "run": run.resolve().name, "stage": ckpt_file.parent.name, "checkpoint": ckpt_file.name,
        "iteration": int(ckpt.get("iteration", 0)), "best_score": _finite(ckpt.get("best_score")),
        "source_checkpoint_sha256": file_sha256(ckpt_file), "weights_sha256": file_sha256(folder / WEIGHTS),
        "segmentation_spec": spec.to_dict(), "config": config_to_dict(cfg),
    }
    meta = build_metadata(
        name=out.name, version=version, description=description or default_description, task=task, spec=spec,
        labels=labels_from_names(names), class_names=names, card=card, divisor=getattr(net, "size_divisor", None),
        medkd_block=medkd_block,
    )
    _write_json(folder / METADATA, meta)
    _write_json(folder / INFERENCE, inference_config(cfg.net, cfg.in_channels, spec))
    shutil.copyfile(TEMPLATES_DIR / "logging.conf", folder / LOGGING)
    shutil.copyfile(TEMPLATES_DIR / "LICENSE", folder / LICENSE)
    readme = render_readme(_readme_values(
        cfg=cfg, meta=meta, spec=spec, names=names, card=card, run=run, stage=ckpt_file.parent.name,
        ckpt_name=ckpt_file.name, parameters=count_parameters(net), out=out,
    ))
    (folder / README).parent.mkdir(parents=True, exist_ok=True)
    (folder / README).write_text(readme, encoding="utf-8")
    if card.terms:
        (folder / DATA_LICENSE).write_text(card.terms + "\n", encoding="utf-8")
    _check_own_configs(folder, run)


def _check_own_configs(folder: Path, run: Path) -> None:
    """medkd's exports load without ``--trust-bundle``: refuse to write one that would not (a description or run
    name starting with ``$`` would be code to MONAI)."""
    refusals = check_bundle_trust(folder)
    if refusals:
        first = refusals[0]
        raise DataError(run, f"the bundle would not pass medkd's trust check: {first.file.split('/')[-1]} "
                             f"{first.key}: {first.text!r} {first.why}; choose another description or names")


def export_bundle(
    run: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "best",
    stage: str | None = None,
    version: str = "0.1.0",
    torchscript: bool = False,
    overwrite: bool = False,
    description: str | None = None,
) -> Path:
    """Write a MONAI bundle of a BCP run's student into ``out`` (``models/<snake_name>/``).

    Args:
        run: run folder written by ``medkd bcp train`` (``RUN/config.yaml``, ``RUN/<stage>/{best,last}.pt``).
        out: bundle folder to create; its name is the bundle's ``name``.
        checkpoint: ``best`` (falls back to ``last``) or ``last``.
        stage: ``pretrain``, ``selftrain`` or ``supervised``; default the run's final stage.
        version: bundle version (``metadata.json`` ``version`` and ``changelog``).
        torchscript: also write ``models/model.ts`` (a failure only warns).
        overwrite: replace an existing bundle folder.
        description: metadata ``description``; default generated from the run.

    Returns:
        ``out``.

    Raises:
        DataError: ``run`` is not a medkd run or lacks the checkpoint; ``out`` exists (without ``overwrite``), is
            not a bundle, or lies inside the run; or the configs would not pass medkd's trust check (a
            ``description`` starting with ``$``).
        ValueError: ``checkpoint`` is neither ``best`` nor ``last``, or ``version`` is not ``MAJOR.MINOR.PATCH``.
    """
    run, out = Path(run), Path(out)
    if not _VERSION.match(version):
        raise ValueError(f"version must look like 1.2.3 (MAJOR.MINOR.PATCH), got {version!r}")
    if not (run / "config.yaml").is_file():
        raise DataError(run, "not a medkd run folder (config.yaml is missing): pass the --out of 'medkd bcp train'")
    _check_out(out, run, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        _build(work, run, out, checkpoint=checkpoint, stage=stage, version=version, description=description)
        if torchscript:
            export_torchscript(work, trust=True)  # checked by _build
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            work.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    out.chmod(0o755)  # mkdtemp made it private
    logger.info("bundle written to %s (from %s)", out, run)
    return out
