# SPDX-License-Identifier: Apache-2.0
"""``models/zoo.yaml``: the bundles medkd knows, their kind, where they live and how to make them (nothing is
downloaded).

Each entry's ``kind`` is a model kind (:data:`medkd.inference.KINDS`: ``segmentation``, ``detection``,
``forecasting``, or one a plugin registers); entries written before kinds existed have none and are
``segmentation``. An unknown kind is a :class:`~medkd.errors.ConfigError` naming the file, the entry and the known
kinds.

Example:
    >>> entries = load_zoo()
    >>> all(e.kind in ("segmentation", "detection", "forecasting") for e in entries)
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from medkd.config import config_from_dict
from medkd.errors import ConfigError

__all__ = ["DEFAULT_KIND", "ZooEntry", "default_zoo_file", "load_zoo", "models_root"]

#: the kind of an entry that names none (zoo files from before kinds)
DEFAULT_KIND = "segmentation"


@dataclass
class ZooEntry:
    """One known bundle.

    Attributes:
        name: bundle name. path: folder under :func:`models_root` (or absolute). method: training method.
        kind: model kind (``segmentation``, ``detection``, ``forecasting``; default ``segmentation``).
        task: what it segments/detects. trained_on: data and labels. modality: DICOM modality it expects.
        pipeline: the DICOM pipeline YAML that runs it. get: the command that makes it.
    """

    name: str
    path: str
    method: str = ""
    kind: str = DEFAULT_KIND
    task: str = ""
    trained_on: str = ""
    modality: str = ""
    pipeline: str = ""
    get: str = ""

    @property
    def folder(self) -> Path:
        """Where the bundle is (or would be)."""
        path = Path(os.path.expandvars(self.path))
        return path if path.is_absolute() else models_root() / path

    @property
    def present(self) -> bool:
        """Whether the bundle has been made on this machine."""
        return (self.folder / "configs" / "metadata.json").is_file()


def models_root() -> Path:
    """``$MEDKD_MODELS``, else ``models/`` in the working directory."""
    return Path(os.environ.get("MEDKD_MODELS", "models"))


def default_zoo_file() -> Path:
    """``models_root()/zoo.yaml`` if present, else the one in the medkd source checkout."""
    local = models_root() / "zoo.yaml"
    return local if local.is_file() else Path(__file__).resolve().parents[2] / "models" / "zoo.yaml"


def load_zoo(path: str | Path | None = None) -> list[ZooEntry]:
    """Entries of a zoo file (default :func:`default_zoo_file`).

    Raises:
        ConfigError: no file, no ``bundles:`` list, an unknown key or kind in an entry, or duplicate names.
    """
    from medkd.inference.kinds import KINDS, list_kinds

    path = Path(path) if path is not None else default_zoo_file()
    if not path.is_file():
        raise ConfigError(f"{path}: zoo file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("bundles"), list):
        raise ConfigError(f"{path}: expected a 'bundles:' list")
    entries = [config_from_dict(ZooEntry, e, source=f"{path}: bundles[{i}]") for i, e in enumerate(data["bundles"])]
    for i, entry in enumerate(entries):
        if entry.kind not in KINDS:
            raise ConfigError(f"{path}: bundles[{i}] ({entry.name}): unknown kind {entry.kind!r}; "
                              f"known kinds: {', '.join(list_kinds())}")  # fmt: skip
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: bundle names must be unique, got {names}")
    return entries
