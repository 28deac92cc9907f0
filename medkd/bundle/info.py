# SPDX-License-Identifier: Apache-2.0
"""``medkd bundle info``: what a bundle is, what it is for and how to run it, as plain text.

Reads the configs as data only (``json``, ``yaml.safe_load``): no config is parsed by MONAI, no code runs, nothing is
loaded into torch. It says whether the configs pass medkd's trust check (:mod:`medkd.bundle.trust`), i.e. whether
medkd will load the bundle without ``--trust-bundle``.

Example:
    >>> print(bundle_info("models/my_model"))  # doctest: +SKIP
    my_model 0.1.0
    ...
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from medkd.bundle.config_files import read_inference, read_metadata
from medkd.bundle.layout import INFERENCE, INTENDED_USE, METADATA, SCHEMA_PATH

__all__ = ["bundle_info"]

_TENSOR_FIELDS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range",
                  "is_patch_data")


def _tensor_lines(kind: str, tensors: Any) -> list[str]:
    if not isinstance(tensors, dict) or not tensors:
        return [f"  {kind}: (not described)"]
    lines = []
    for name, spec in tensors.items():
        spec = spec if isinstance(spec, dict) else {}
        fields = ", ".join(f"{key}={spec[key]}" for key in _TENSOR_FIELDS if key in spec)
        lines.append(f"  {kind} {name!r}: {fields}")
        channels = spec.get("channel_def")
        if isinstance(channels, dict) and channels:
            lines.append(f"    channels: {', '.join(f'{k}={v}' for k, v in channels.items())}")
    return lines


def _label_lines(labels: Any) -> list[str]:
    if not isinstance(labels, list) or not labels:
        return ["  (none listed)"]
    lines = []
    for entry in labels:
        if not isinstance(entry, dict):
            lines.append(f"  {entry}")
            continue
        code = entry.get("code") if isinstance(entry.get("code"), dict) else {}
        coded = f" ({code.get('meaning')}, {code.get('scheme')} {code.get('value')})" if code else ""
        lines.append(f"  {entry.get('value')}: {entry.get('name')}{coded}")
    return lines


def _run_lines(path: Path, kind: str, image_pred: bool) -> list[str]:
    """The commands that run and check the bundle; ``verify_net_in_out`` only when ``pred`` is an image."""
    b = shlex.quote(str(path))
    net_in_out = [
        f"  python -m monai.bundle verify_net_in_out network_def --meta_file {b}/{METADATA} \\",
        f"      --config_file {b}/{INFERENCE} --n 1 --device cpu",
    ] if image_pred else []
    return [
        "How to run (research use only):",
        f"  medkd pipeline run pipelines/<pipeline>.yaml -i DICOM_DIR -o OUT_DIR --model {b}",
        f"  python -m monai.bundle run --config_file {b}/{INFERENCE} --meta_file {b}/{METADATA} \\",
        f"      --bundle_root {b} --dataset_dir NIFTI_DIR --output_dir OUT_DIR",
        *net_in_out,
        f"  python -m monai.bundle verify_metadata --meta_file {b}/{METADATA} \\",
        f"      --filepath {shlex.quote(str(SCHEMA_PATH))}",
        f"  medkd bundle verify {b}",
        f"  Python: medkd.engine.predictor.load_predictor({str(path)!r}) -> a {kind} predictor",
    ]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _trust_lines(path: Path) -> tuple[list[str], bool]:
    """(the lines saying whether medkd loads the bundle without ``--trust-bundle``, whether it does)."""
    from medkd.bundle.trust import check_bundle_trust

    if (path / INFERENCE).is_file():
        read_inference(path)
    refusals = check_bundle_trust(path)
    if not refusals:
        return ["Config code: only medkd's allowlist (medkd loads it without --trust-bundle)"], True
    return [(
        f"Config code: REFUSED, {len(refusals)} value(s) outside medkd's allowlist would run as code; medkd will not "
        f"load this bundle without --trust-bundle (medkd bundle verify lists them). First: {refusals[0]}"
    )], False


def bundle_info(path: str | Path) -> str:
    """A human-readable description of a bundle folder.

    Covers name, version, task, description, intended use (research only), whether its configs pass medkd's trust
    check, labels, the network's input and output tensors, the medkd provenance (kind, method, run, recipe), how
    to run it and its files. Nothing in the bundle is run.

    Raises:
        DataError: ``path`` is not a bundle (no ``configs/metadata.json``), or a config is not valid JSON or not an
            object, or ``inference.json`` has no ``network_def``.
    """
    path = Path(path)
    meta = read_metadata(path)
    trust_lines, trusted = _trust_lines(path)
    medkd_block, nd, packages = (_mapping(meta.get(k)) for k in ("medkd", "network_data_format",
                                                                  "required_packages_version"))
    lines = [
        f"{meta.get('name', path.name)} {meta.get('version', '?')}",
        f"Task: {meta.get('task', '?')}",
        f"Description: {meta.get('description', '?')}",
        f"Intended use: {meta.get('intended_use') or INTENDED_USE}",
        f"Authors: {meta.get('authors', '?')}; {meta.get('copyright', '')}".rstrip("; "),
        f"Versions: monai {meta.get('monai_version', '?')}, torch {meta.get('pytorch_version', '?')}, "
        f"numpy {meta.get('numpy_version', '?')}; requires "
        + ", ".join(f"{k} {v}" for k, v in packages.items()),
        *trust_lines,
    ]
    if medkd_block:
        dataset = f" on {medkd_block['dataset']} layout" if medkd_block.get("dataset") else ""
        lines.append(
            f"Model: {medkd_block.get('kind', '?')} by {medkd_block.get('method')}{dataset}, net "
            f"{medkd_block.get('net')}, run {medkd_block.get('run')} ({medkd_block.get('stage')}/"
            f"{medkd_block.get('checkpoint')}, iteration {medkd_block.get('iteration')})"
        )
        for key, recipe in medkd_block.items():  # the method's recipe blocks (e.g. segmentation_spec)
            if key != "config" and isinstance(recipe, dict):
                lines.append(f"Inference ({key}): " + ", ".join(f"{k} {v}" for k, v in recipe.items()))
        lines.append(f"Weights sha256: {medkd_block.get('weights_sha256')}")
    lines += ["Labels (value: name (code)):", *_label_lines(meta.get("label_classes"))]
    lines += ["Network input/output:", *_tensor_lines("input", nd.get("inputs")),
              *_tensor_lines("output", nd.get("outputs"))]
    pred = _mapping(_mapping(nd.get("outputs")).get("pred"))
    kind = str(medkd_block.get("kind", "segmentation"))
    lines += _run_lines(path, kind, pred.get("type", "image") == "image") if trusted else [
        "How to run: not shown, every way of running it (medkd, python -m monai.bundle) would run the refused code",
    ]
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    lines += ["Files:", *(f"  {name} ({(path / name).stat().st_size:,} bytes)" for name in files)]
    return "\n".join(lines)
