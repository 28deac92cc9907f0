# SPDX-License-Identifier: Apache-2.0
"""Where things live in a medkd MONAI bundle, and the package data shipped with :mod:`medkd.bundle`.

A bundle folder (``models/<snake_name>/``)::

    LICENSE                   licence of the weights and configs (Apache-2.0)
    configs/metadata.json     versions, task, labels, network_data_format (``image`` -> ``pred``), medkd block
    configs/inference.json    ``python -m monai.bundle run`` workflow (medkd components)
    configs/logging.conf      logging for ``monai.bundle run``
    models/model.pt           the exported network's state_dict (``torch.load(weights_only=True)``)
    models/model.ts           TorchScript, only with ``torchscript=True``
    docs/README.md            model card (model-zoo headings)
    docs/data_license.txt     terms of the training data, when the dataset has any
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medkd.methods.bundle_spec import INTENDED_USE

__all__ = [
    "DATA_LICENSE",
    "HIDDEN_DEPENDENCIES",
    "INFERENCE",
    "INTENDED_USE",
    "LICENSE",
    "LOGGING",
    "METADATA",
    "README",
    "REQUIRED_FILES",
    "SCHEMA_PATH",
    "SCHEMA_URL",
    "TEMPLATES_DIR",
    "TORCHSCRIPT",
    "WEIGHTS",
]

_HERE = Path(__file__).resolve().parent

#: medkd's JSON schema for ``configs/metadata.json`` (passed to ``verify_metadata --filepath``, so nothing downloads)
SCHEMA_PATH: Path = _HERE / "schemas" / "metadata_schema.json"
#: README template, LICENSE text and logging.conf copied into every bundle
TEMPLATES_DIR: Path = _HERE / "templates"
#: the official MONAI model-zoo metadata schema, written to ``metadata.json`` ``schema``
SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"

METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
LOGGING = "configs/logging.conf"
WEIGHTS = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
README = "docs/README.md"
LICENSE = "LICENSE"
DATA_LICENSE = "docs/data_license.txt"

#: files every medkd bundle must have (model-zoo CI also requires LICENSE and a changelog entry for the version)
REQUIRED_FILES: tuple[str, ...] = (LICENSE, METADATA, INFERENCE, WEIGHTS, README)

#: modules MONAI needs at run time that ``import monai`` does not pull in: module -> (pip name, what needs it)
HIDDEN_DEPENDENCIES: dict[str, tuple[str, str]] = {
    "fire": ("fire", "the 'python -m monai.bundle' command line"),
    "ignite": ("pytorch-ignite", "SupervisedEvaluator (else 'Failed to instantiate component')"),
    "jsonschema": ("jsonschema", "verify_metadata"),
    "yaml": ("PyYAML", "YAML configs"),
}


def __getattr__(name: str) -> Any:
    """Names that moved to the method that owns them (old import paths keep working)."""
    if name == "BCP_REFERENCE":
        from medkd.methods.bcp import bundle

        return bundle.BCP_REFERENCE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
