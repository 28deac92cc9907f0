# SPDX-License-Identifier: Apache-2.0
"""``medkd bundle info``: what a bundle is, what it is for and how to run it, as plain text.

Reads ``configs/metadata.json`` only (no config is parsed, no code runs, nothing is loaded into torch).

Example:
    >>> print(bundle_info("models/acdc_bcp"))  # doctest: +SKIP
    acdc_bcp 0.1.0
    ...
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

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


def _run_lines(path: Path) -> list[str]:
    b = shlex.quote(str(path))
    return [
        "How to run (research use only):",
        f"  medkd pipeline run pipelines/<pipeline>.yaml -i DICOM_DIR -o OUT_DIR --model {b}",
        f"  python -m monai.bundle run --config_file {b}/{INFERENCE} --meta_file {b}/{METADATA} \\",
        f"      --bundle_root {b} --dataset_dir NIFTI_DIR --output_dir OUT_DIR",
        f"  python -m monai.bundle verify_net_in_out network_def --meta_file {b}/{METADATA} \\",
        f"      --config_file {b}/{INFERENCE} --n 1 --device cpu",
        f"  python -m monai.bundle verify_metadata --meta_file {b}/{METADATA} \\",
        f"      --filepath {shlex.quote(str(SCHEMA_PATH))}",
        f"  medkd bundle verify {b}",
        f"  Python: medkd.engine.predictor.load_predictor({str(path)!r})(volume_zyx) -> uint8 mask",
    ]


def bundle_info(path: str | Path) -> str:
    """A human-readable description of a bundle folder.

    Covers name, version, task, description, intended use (research only), labels, the network's input and
    output tensors, the medkd provenance (method, dataset, run, recipe), how to run it and its files.

    Raises:
        DataError: ``path`` is not a bundle (no readable ``configs/metadata.json``).
    """
    from medkd.bundle.predictor import read_metadata

    path = Path(path)
    meta = read_metadata(path)
    medkd_block = meta.get("medkd") if isinstance(meta.get("medkd"), dict) else {}
    nd = meta.get("network_data_format") if isinstance(meta.get("network_data_format"), dict) else {}
    lines = [
        f"{meta.get('name', path.name)} {meta.get('version', '?')}",
        f"Task: {meta.get('task', '?')}",
        f"Description: {meta.get('description', '?')}",
        f"Intended use: {meta.get('intended_use') or INTENDED_USE}",
        f"Authors: {meta.get('authors', '?')}; {meta.get('copyright', '')}".rstrip("; "),
        f"Versions: monai {meta.get('monai_version', '?')}, torch {meta.get('pytorch_version', '?')}, "
        f"numpy {meta.get('numpy_version', '?')}; requires "
        + ", ".join(f"{k} {v}" for k, v in (meta.get("required_packages_version") or {}).items()),
    ]
    if medkd_block:
        spec = medkd_block.get("segmentation_spec") or {}
        lines += [
            f"Model: {medkd_block.get('method')} on {medkd_block.get('dataset')} layout, net {medkd_block.get('net')}, "
            f"run {medkd_block.get('run')} ({medkd_block.get('stage')}/{medkd_block.get('checkpoint')}, "
            f"iteration {medkd_block.get('iteration')})",
            f"Inference: {spec.get('mode')} patch {spec.get('patch')} stride {spec.get('stride')}, "
            f"intensity {spec.get('intensity')}, axes {spec.get('axes')}",
            f"Weights sha256: {medkd_block.get('weights_sha256')}",
        ]
    lines += ["Labels (value: name (code)):", *_label_lines(meta.get("label_classes"))]
    lines += ["Network input/output:", *_tensor_lines("input", nd.get("inputs")),
              *_tensor_lines("output", nd.get("outputs"))]
    lines += _run_lines(path)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    lines += ["Files:", *(f"  {name} ({(path / name).stat().st_size:,} bytes)" for name in files)]
    return "\n".join(lines)
