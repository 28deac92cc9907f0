# SPDX-License-Identifier: Apache-2.0
"""Load a medkd bundle as a :class:`~medkd.engine.predictor.Predictor`.

``configs/inference.json`` is parsed with MONAI's ``ConfigParser``: ``network_def`` builds the network and
``inferer`` carries the recipe; ``models/model.pt`` is read with ``torch.load(weights_only=True)`` and the labels
come from ``metadata.json`` ``label_classes``. Parsing a config runs its ``_target_`` and ``$`` expressions, so the
configs are first read as data and checked (:func:`medkd.bundle.trust.require_trusted`): code outside medkd's
allowlist is refused unless ``trust=True``.

Which predictor the parts become depends on the bundle's method and kind (metadata ``medkd.method`` /
``medkd.kind``): the method's :attr:`~medkd.methods.bundle_spec.BundleSpec.predictor` if it has one, else the
loader registered for the kind in :data:`BUNDLE_PREDICTORS` (``segmentation``: an inferer carrying a
:class:`~medkd.engine.predictor.SegmentationSpec`). A bundle without a medkd block is tried as a segmentation bundle.

Example:
    >>> predictor = load_bundle_predictor("models/my_model")  # doctest: +SKIP
    >>> predictor(volume).shape == volume.shape  # doctest: +SKIP
    True
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkd.bundle.config_files import read_inference, read_metadata
from medkd.bundle.layout import INFERENCE, METADATA, WEIGHTS
from medkd.bundle.trust import require_trusted
from medkd.engine.predictor import Predictor, SegmentationSpec, file_sha256, resolve_device
from medkd.errors import DataError
from medkd.io.labels import labels_from_dicts
from medkd.registry import Registry

__all__ = ["BUNDLE_PREDICTORS", "load_bundle_predictor", "load_weights", "parse_bundle", "read_metadata"]

#: kind -> ``loader(path, meta, network, inferer, device)`` returning a :class:`Predictor` (network weights loaded)
BUNDLE_PREDICTORS: Registry = Registry("bundle predictor kind")


def parse_bundle(
    path: str | Path, ids: tuple[str, ...] = ("network_def", "inferer"), *, trust: bool = False
) -> dict[str, Any]:
    """Instantiate config ids of ``configs/inference.json`` (``bundle_root`` set to ``path``).

    Args:
        path: bundle folder.
        ids: config ids to build.
        trust: parse without checking the configs first (:func:`~medkd.bundle.trust.require_trusted`).

    Raises:
        DataError: the config is missing, not a JSON object with ``network_def``, or an id cannot be built (MONAI's
            reason attached).
        UntrustedBundleError: the configs hold code outside medkd's allowlist and ``trust`` is false.
    """
    from monai.bundle import ConfigParser

    path = Path(path)
    config = path / INFERENCE
    read_inference(path)
    has_meta = (path / METADATA).is_file()
    if has_meta:
        read_metadata(path)
    require_trusted(path, trust)
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        if has_meta:
            parser.read_meta(str(path / METADATA))
    except Exception as err:
        raise DataError(config, f"MONAI cannot read the configs: {type(err).__name__}: {err}") from err
    parser["bundle_root"] = str(path)
    built = {}
    for key in ids:
        try:
            built[key] = parser.get_parsed_content(key)
        except Exception as err:
            raise DataError(config, f"cannot build {key!r}: {type(err).__name__}: {err}") from err
    return built


def load_weights(path: str | Path, network: nn.Module) -> None:
    """Load ``models/model.pt`` (``weights_only=True``) into ``network`` strictly.

    Raises:
        DataError: the file is missing, not a state_dict, or does not fit the network.
    """
    file = Path(path) / WEIGHTS
    if not file.is_file():
        raise DataError(path, f"no weights ({WEIGHTS} is missing)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(file, f"not loadable with torch.load(weights_only=True): {type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(file, "must hold a state_dict (a dict of tensors)")
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(file, f"weights do not fit network_def: {err}") from err


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@BUNDLE_PREDICTORS.register("segmentation")
def segmentation_predictor(
    path: Path, meta: dict[str, Any], network: nn.Module, inferer: Any, device: torch.device
) -> Predictor:
    """A ``segmentation`` predictor: float32 ``(z, y, x)`` in, uint8 ``(z, y, x)`` out, through the inferer's
    :class:`~medkd.engine.predictor.SegmentationSpec`.

    Raises:
        DataError: the inferer carries no :class:`SegmentationSpec`.
    """
    spec: SegmentationSpec | None = getattr(inferer, "spec", None)
    if not isinstance(spec, SegmentationSpec):
        raise DataError(path / INFERENCE, "'inferer' carries no medkd SegmentationSpec: not a segmentation bundle")
    model = network.to(device).eval()
    info = _mapping(meta.get("medkd"))
    return Predictor(
        kind="segmentation",
        name=str(meta.get("name", path.resolve().name)),
        version=str(meta.get("version", "?")),
        weights_sha256=file_sha256(path / WEIGHTS),
        labels=labels_from_dicts(meta.get("label_classes", []), source=str(path / METADATA)),
        run=lambda array: spec.segment(model, array),
        source=path,
        spec=spec,
        metadata={
            "task": meta.get("task"), "description": meta.get("description"),
            "intended_use": meta.get("intended_use"), "method": info.get("method"), "dataset": info.get("dataset"),
            "net": info.get("net"),
        },
    )


def _loader(path: Path, meta: dict[str, Any]) -> Callable[..., Predictor]:
    """The method's predictor loader, else the kind's (see the module docstring)."""
    from medkd.methods.bundle_spec import find_bundle_spec

    info = _mapping(meta.get("medkd"))
    method, kind = info.get("method"), info.get("kind", "segmentation")
    spec = find_bundle_spec(method, kind if isinstance(kind, str) else None) if isinstance(method, str) else None
    if spec is not None and spec.predictor is not None:
        return spec.predictor
    if not isinstance(kind, str) or kind not in BUNDLE_PREDICTORS:
        raise DataError(path / METADATA, f"medkd cannot load bundles of kind {kind!r} (method {method!r}); kinds it "
                                         f"loads: {', '.join(BUNDLE_PREDICTORS.list())}")
    return BUNDLE_PREDICTORS.get(kind)


def load_bundle_predictor(path: str | Path, device: torch.device | str = "cpu", *, trust: bool = False) -> Predictor:
    """A :class:`~medkd.engine.predictor.Predictor` of a bundle written by :func:`export_bundle`.

    Args:
        path: bundle folder.
        device: ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``.
        trust: run the configs' code without checking it (``--trust-bundle``); only for bundles you trust.

    Returns:
        The predictor of the bundle's kind; a ``segmentation`` one takes float32 ``(z, y, x)`` and returns uint8
        ``(z, y, x)``, equal to the bundle's ``monai.bundle run`` masks and to the source run's own predictor.

    Raises:
        DataError: not a medkd bundle of a kind medkd loads, or its configs are not valid JSON, or its network,
            inferer or weights cannot be loaded.
        UntrustedBundleError: the configs hold code outside medkd's allowlist and ``trust`` is false; nothing was run.
    """
    path = Path(path)
    meta = read_metadata(path)
    loader = _loader(path, meta)
    built = parse_bundle(path, trust=trust)
    load_weights(path, built["network_def"])
    return loader(path, meta, built["network_def"], built["inferer"], resolve_device(device))
