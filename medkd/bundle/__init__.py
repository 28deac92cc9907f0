# SPDX-License-Identifier: Apache-2.0
"""MONAI bundles of trained medkd models: export, inspect, verify, load.

:func:`export_bundle` writes a bundle of any run whose method provides a
:class:`~medkd.methods.bundle_spec.BundleSpec` (``RUN/run.json`` names the method): the layout, metadata, model
card and checks are this package's, the network, inferer, transforms and prose the method's. The bundle runs with
``python -m monai.bundle run`` (a segmentation bundle writes the masks of the method's own predictor, voxel for
voxel) and passes MONAI's ``verify_metadata`` (with :data:`SCHEMA_PATH`, offline) and, for image outputs,
``verify_net_in_out``. :func:`verify_bundle` runs those checks in process,
:func:`bundle_info` describes a bundle and :func:`load_bundle_predictor` loads it as a
:class:`~medkd.engine.predictor.Predictor`. MONAI runs a config's code (``$`` expressions, ``_target_``) while
parsing it, so every loader first reads the configs as data with :func:`check_bundle_trust` and refuses code outside
medkd's allowlist unless ``trust=True`` (``--trust-bundle``); medkd's own exports pass without it.

Example:
    >>> from medkd.bundle import export_bundle, verify_bundle
    >>> bundle = export_bundle("runs/my_run", "models/my_model")  # doctest: +SKIP
    >>> all(r.ok for r in verify_bundle(bundle))  # doctest: +SKIP
    True
"""

from __future__ import annotations

from medkd.bundle.export import export_bundle, export_torchscript
from medkd.bundle.info import bundle_info
from medkd.bundle.layout import METADATA, REQUIRED_FILES, SCHEMA_PATH, SCHEMA_URL
from medkd.bundle.predictor import load_bundle_predictor
from medkd.bundle.trust import Refusal, check_bundle_trust, require_trusted
from medkd.bundle.verify import CheckResult, verify_bundle
from medkd.inference.loading import PREDICTOR_SOURCES, PredictorSource

if "bundle" not in PREDICTOR_SOURCES.list():  # load_predictor() recognises bundle folders through this source
    PREDICTOR_SOURCES.register("bundle")(
        PredictorSource("bundle", lambda path: (path / METADATA).is_file(), load_bundle_predictor)
    )

__all__ = [
    "export_bundle", "export_torchscript", "bundle_info", "verify_bundle", "CheckResult", "load_bundle_predictor",
    "SCHEMA_PATH", "SCHEMA_URL", "REQUIRED_FILES", "Refusal", "check_bundle_trust", "require_trusted",
]
