# SPDX-License-Identifier: Apache-2.0
"""One inference interface for every deployment path: ``medkd <method> predict``, bundles, pipelines, the app.

A :class:`Predictor` wraps a loaded model of some kind (:mod:`medkd.inference.kinds`): ``predictor(x)`` coerces
``x`` to the kind's input (a float32 volume for ``segmentation`` and ``detection``, a frame stream for
``forecasting``), runs the model under ``torch.inference_mode()`` and returns the kind's output (a uint8 label map;
a dict of boxes, scores and labels; a dict of forecasts). Pipelines pick their writers and the app its view by
``kind``.

Example:
    >>> import numpy as np
    >>> from pathlib import Path
    >>> pred = Predictor("segmentation", "thresh", "1", "0" * 64, [], run=lambda v: (v > 0).astype(np.uint8),
    ...                  source=Path("."))
    >>> pred(np.array([[[-1.0, 2.0]]])).tolist()
    [[[0, 1]]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkd.inference.kinds import get_kind

if TYPE_CHECKING:
    from medkd.io.labels import LabelInfo

__all__ = ["Predictor", "file_sha256"]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (weights fingerprints for reports and SEG UIDs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Predictor:
    """A loaded model ready for inference; call it with its kind's input.

    Attributes:
        kind: a registered kind (``segmentation``, ``detection``, ``forecasting``); unknown kinds raise ``KeyError``.
        name: model name (bundle folder or run name).
        version: model version (bundle ``version``; ``run:<stage>/<checkpoint>`` for a run folder).
        weights_sha256: SHA-256 of the weights file (fingerprints, SEG/SR UIDs).
        labels: the classes the model outputs, with codes (label values of a map, detection labels).
        run: the function doing the work on the prepared input (the model is closed over).
        source: the folder it was loaded from.
        spec: the kind's recipe, if it has one (a :class:`~medkd.inference.segmentation.SegmentationSpec`).
        metadata: anything else worth reporting (method, task, description, intended use).
    """

    kind: str
    name: str
    version: str
    weights_sha256: str
    labels: list[LabelInfo]
    run: Callable[[Any], Any]
    source: Path
    spec: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get_kind(self.kind)  # unknown kind: KeyError naming the known ones

    def __call__(self, data: Any) -> Any:
        """The kind's output for ``data`` (coerced with the kind's ``prepare``: float32 arrays, frame streams)."""
        import torch

        prepared = get_kind(self.kind).prepare(data)
        with torch.inference_mode():
            return self.run(prepared)

    def check(self, output: Any, data: Any) -> None:
        """Raise ``ValueError`` if ``output`` does not fit this predictor's kind for input ``data``."""
        get_kind(self.kind).check_output(output, data)

    def describe(self) -> dict[str, Any]:
        """Identity of the model for reports and fingerprints (no weights)."""
        return {
            "kind": self.kind, "name": self.name, "version": self.version, "weights_sha256": self.weights_sha256,
            "source": str(self.source), "labels": [label.to_dict() for label in self.labels],
        }
