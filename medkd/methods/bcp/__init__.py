# SPDX-License-Identifier: Apache-2.0
"""BCP: Bidirectional Copy-Paste for semi-supervised medical image segmentation (Bai et al., CVPR 2023).

Pieces: :func:`box_mask` (one box per iteration), :func:`mix`, :func:`region_loss` (region-normalised Dice+CE),
pseudo-labels with largest connected components, and the pure :func:`pretrain_step` / :func:`selftrain_step`;
:func:`train_bcp` runs them on the shared engine. Spec: ``shared/specs/bcp.md``.

Importing the package registers BCP's :class:`~medkd.methods.registry.Method` (:data:`BCP`) without importing
torch; the names below load their modules on first use.

Example:
    >>> import medkd.methods.bcp as bcp
    >>> bcp.BCP.name, bcp.BCPConfig.__name__
    ('bcp', 'BCPConfig')
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from medkd.methods.bcp.method import BCP

#: exported name -> the submodule defining it (imported on first access)
_EXPORTS = {
    "BCPConfig": "config",
    "DiceFlavour": "losses",
    "dice_ce": "losses",
    "region_ce": "losses",
    "region_dice": "losses",
    "region_loss": "losses",
    "box_extent": "masks",
    "box_mask": "masks",
    "mix": "mix",
    "largest_component_per_sample": "pseudo",
    "pseudo_labels_argmax_lcc": "pseudo",
    "pseudo_labels_threshold_lcc": "pseudo",
    "StepOptions": "steps",
    "pretrain_step": "steps",
    "selftrain_step": "steps",
    "supervised_step": "steps",
    "train_bcp": "trainer",
}

__all__ = [
    "BCP",
    "BCPConfig",
    "DiceFlavour",
    "StepOptions",
    "box_extent",
    "box_mask",
    "dice_ce",
    "largest_component_per_sample",
    "mix",
    "pretrain_step",
    "pseudo_labels_argmax_lcc",
    "pseudo_labels_threshold_lcc",
    "region_ce",
    "region_dice",
    "region_loss",
    "selftrain_step",
    "supervised_step",
    "train_bcp",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """This package's module type: importing the submodule ``mix`` keeps ``medkd.methods.bcp.mix`` the function."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the import system binds submodules on their package; the exported function wins
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
