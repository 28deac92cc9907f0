# SPDX-License-Identifier: Apache-2.0
"""The ``classification`` model kind (distilled classification students), registered with
:func:`medkd.inference.register_kind` when :mod:`medkd.methods` is imported.

* input: a float32 image ``(c, y, x)`` (``(y, x)``: one channel; ``(c, z, y, x)`` for a 3-D classifier), with the
  intensities :func:`medkd.data.classification.load_image` gives (8-bit PNG / 255, NIfTI as stored); or a dict
  ``{"image": array, <metadata key>: value, ...}``: a model routed by a metadata key (``partition_students``) reads
  its key from it.
* output: ``{"probabilities": (classes,) float32 summing to 1, "label": int}``, ``label`` the most probable class;
  a routed model adds ``"partition"``, the key value whose student answered.

The predictor's ``run`` receives ``{"image": float32 array, "metadata": {key: text}}``. numpy is imported on call.

Example:
    >>> import numpy as np
    >>> from medkd.inference import check_output
    >>> out = {"probabilities": np.array([0.2, 0.8], np.float32), "label": 1}
    >>> check_output("classification", out, np.zeros((1, 8, 8), np.float32))
    >>> prepare_classification({"image": np.zeros((4, 4)), "modality": "MR"})["metadata"]
    {'modality': 'MR'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medkd.inference.kinds import Kind, register_kind

__all__ = ["CLASSIFICATION", "check_classification", "prepare_classification"]


def prepare_classification(data: Any) -> dict[str, Any]:
    """``{"image": float32 array, "metadata": {key: text}}`` of an image or of a dict with an ``image`` entry.

    Raises:
        ValueError: a dict without ``image``, or an image with fewer than 2 axes.
    """
    import numpy as np

    metadata: dict[str, str] = {}
    if isinstance(data, Mapping):
        if "image" not in data:
            raise ValueError(f"a classification input dict needs an 'image' entry; it has {sorted(map(str, data))}")
        metadata = {str(k): str(v) for k, v in data.items() if k != "image"}
        data = data["image"]
    image = np.asarray(data, dtype=np.float32)
    if image.ndim < 2:
        raise ValueError(f"a classification image needs at least 2 axes (y, x), got shape {image.shape}")
    return {"image": image, "metadata": metadata}


def check_classification(output: Any, input: Any) -> None:
    """Raise ``ValueError`` unless ``output`` is ``{"probabilities": (C,) summing to 1, "label": argmax}``."""
    import numpy as np

    if not isinstance(output, Mapping) or "probabilities" not in output or "label" not in output:
        raise ValueError("classification output must be a dict with 'probabilities' and 'label'")
    probs = np.asarray(output["probabilities"])
    if probs.ndim != 1 or len(probs) < 2 or not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probabilities must be a float vector over >= 2 classes, got {probs.dtype} {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-3:
        raise ValueError(f"probabilities must be finite, >= 0 and sum to 1 (sum {float(probs.sum()):.4f})")
    label = output["label"]
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < len(probs):
        raise ValueError(f"label must be an int class index in [0, {len(probs)}), got {label!r}")
    if probs[int(label)] < probs.max():
        raise ValueError(f"label {int(label)} is not the most probable class ({int(probs.argmax())})")


CLASSIFICATION = register_kind(Kind(
    "classification",
    "float32 image (c, y, x) or (y, x), or a dict {'image': array, <metadata key>: value} for a routed model",
    "dict: probabilities (classes,) float summing to 1, label int (argmax); routed models add partition",
    prepare_classification, check_classification,
))
