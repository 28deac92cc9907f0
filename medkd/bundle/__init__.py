# SPDX-License-Identifier: Apache-2.0
"""MONAI bundles of trained medkd models: export, inspect, verify, load.

A bundle exported from a BCP run (:func:`export_bundle`) runs with ``python -m monai.bundle run`` and writes the
same masks, voxel for voxel, as ``medkd bcp predict`` on the run; it passes MONAI's ``verify_metadata`` (with
:data:`SCHEMA_PATH`, offline) and ``verify_net_in_out``. :func:`verify_bundle` runs those checks in process,
:func:`bundle_info` describes a bundle and :func:`load_bundle_predictor` loads it as a
:class:`~medkd.engine.predictor.Predictor`. MONAI runs a config's code (``$`` expressions, ``_target_``) while
parsing it, so every loader first reads the configs as data with :func:`check_bundle_trust` and refuses code outside
medkd's allowlist unless ``trust=True`` (``--trust-bundle``); medkd's own exports pass without it.

Example:
    >>> from medkd.bundle import export_bundle, verify_bundle
    >>> bundle = export_bundle("runs/acdc_bcp", "models/acdc_bcp")  # doctest: +SKIP
    >>> all(r.ok for r in verify_bundle(bundle))  # doctest: +SKIP
    True
"""

from __future__ import annotations

from medkd.bundle.export import export_bundle, export_torchscript
from medkd.bundle.info import bundle_info
from medkd.bundle.layout import REQUIRED_FILES, SCHEMA_PATH, SCHEMA_URL
from medkd.bundle.predictor import load_bundle_predictor
from medkd.bundle.trust import Refusal, check_bundle_trust, require_trusted
from medkd.bundle.verify import CheckResult, verify_bundle

__all__ = [
    "export_bundle", "export_torchscript", "bundle_info", "verify_bundle", "CheckResult", "load_bundle_predictor",
    "SCHEMA_PATH", "SCHEMA_URL", "REQUIRED_FILES", "Refusal", "check_bundle_trust", "require_trusted",
]
