# SPDX-License-Identifier: Apache-2.0
"""Load a :class:`~medkd.inference.predictor.Predictor` from a model folder: a MONAI bundle or a medkd run.

Model folders are a registry (:data:`PREDICTOR_SOURCES`) of :class:`PredictorSource` records, each a ``probe`` (is
this folder one of mine?) and a ``load``. The layers above inference register theirs: :mod:`medkd.methods` the
``run`` source (dispatching on ``RUN/run.json`` to the method that wrote the run) and :mod:`medkd.bundle` the
``bundle`` source. :func:`load_predictor` imports those two packages by name the first time it runs, so a caller
that imported only :mod:`medkd.inference` still finds them; the inference layer itself imports nothing above it.

Example:
    >>> src = PredictorSource("never", probe=lambda path: False, load=lambda path, device, *, trust=False: None)
    >>> src.probe(Path("."))
    False
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkd.errors import DataError
from medkd.inference.devices import resolve_device
from medkd.inference.predictor import Predictor
from medkd.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["PredictorSource", "PREDICTOR_SOURCES", "BUILTIN_SOURCE_MODULES", "load_predictor"]

logger = logging.getLogger(__name__)

#: packages that register predictor sources when imported (layers above inference: imported by name, on first use)
BUILTIN_SOURCE_MODULES = ("medkd.methods", "medkd.bundle")


@dataclass(frozen=True)
class PredictorSource:
    """A kind of model folder: ``probe(path)`` says whether ``path`` is one, ``load(path, device, *, trust)``
    loads it as a :class:`~medkd.inference.predictor.Predictor`."""

    name: str
    probe: Callable[[Path], bool]
    load: Callable[..., Predictor]


PREDICTOR_SOURCES: Registry = Registry("predictor source")

_discovered = False


def _discover_sources() -> None:
    """Import the packages that register built-in sources (once): runs (medkd.methods) and bundles (medkd.bundle)."""
    global _discovered
    if _discovered:
        return
    for module in BUILTIN_SOURCE_MODULES:
        importlib.import_module(module)
    _discovered = True


def load_predictor(path: str | Path, device: str | torch.device | None = "auto", *, trust: bool = False) -> Predictor:
    """Load a MONAI bundle folder (``configs/metadata.json``) or a medkd run folder (``run.json``/``config.yaml``).

    Args:
        path: the model folder.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        trust: run a bundle's config code (``$`` expressions, ``_target_`` outside medkd's allowlist) without
            checking it first, like the ecosystem's ``trust_remote_code``; only for bundles you trust.

    Returns:
        The predictor; its ``kind`` says what it takes and returns.

    Raises:
        DataError: the folder does not exist, is none of the registered kinds, or is a run of an unknown method
            (the message names the folder and the known methods).
        UntrustedBundleError: a bundle's configs hold code outside the allowlist and ``trust`` is false.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "model folder not found (a MONAI bundle exported by 'medkd bundle export' or a run)")
    _discover_sources()
    for name in PREDICTOR_SOURCES.list():
        source: PredictorSource = PREDICTOR_SOURCES.get(name)
        if source.probe(path):
            logger.debug("%s: loading as a %s", path, name)
            return source.load(path, resolve_device(device), trust=trust)
    raise DataError(
        path, "not a model folder: expected configs/metadata.json (a MONAI bundle) or run.json/config.yaml (a run)"
    )
