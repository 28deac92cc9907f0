# SPDX-License-Identifier: Apache-2.0
"""The component a toy detector bundle names in ``configs/inference.json``: :class:`ToyDetectionInferer`.

It carries the decoding settings, so the bundle predictor and ``monai.bundle run`` decode the network's dense output
as the run's own predictor does. medkd's trust check allowlists this module because the toy bundle spec lists
``toy_detector.components`` in ``component_modules``.

Example:
    >>> import numpy as np
    >>> from toy_detector.net import ToyCenterNet
    >>> inferer = ToyDetectionInferer(score_threshold=0.99)
    >>> inferer.detect(ToyCenterNet().eval(), np.zeros((20, 24), np.float32))["boxes"].shape
    (0, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn
from toy_detector.detect import detect

__all__ = ["ToyDetectionInferer"]


class ToyDetectionInferer(Inferer):
    """Detect each image of a batch; see :func:`toy_detector.detect.detect`.

    Args:
        score_threshold, max_detections, link_iou: the run's :class:`~toy_detector.config.DecodeConfig`.
    """

    def __init__(self, score_threshold: float = 0.3, max_detections: int = 20, link_iou: float = 0.3) -> None:
        super().__init__()
        self.settings = {"score_threshold": float(score_threshold), "max_detections": int(max_detections),
                         "link_iou": float(link_iou)}

    def detect(self, network: nn.Module, array: np.ndarray) -> dict[str, np.ndarray]:
        """The detection kind's output for a float32 image ``(y, x)`` or volume ``(z, y, x)``."""
        return detect(network, array, **self.settings)

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """One dict of boxes, scores and labels per image of ``(B, 1, x, y[, z])`` (``LoadImaged`` order); boxes
        in the detection kind's ``x, y[, z]`` voxel order."""
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        items = plain.detach().to(device="cpu", dtype=torch.float32).numpy()
        return [self.detect(network, np.ascontiguousarray(item[0].T)) for item in items]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings})"
