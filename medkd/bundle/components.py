# SPDX-License-Identifier: Apache-2.0
"""Components that medkd bundles name in ``configs/inference.json``.

:class:`SegmentationInferer` is the ``inferer`` of segmentation bundles (a method's bundle spec names it): it
runs the very same :meth:`medkd.engine.predictor.SegmentationSpec.segment` as the method's own predictor, so
``python -m monai.bundle run`` writes masks voxel-for-voxel equal to medkd's own. Components that other kinds need
live with their method (:attr:`~medkd.methods.bundle_spec.BundleSpec.component_modules`).

MONAI's ``LoadImaged`` (nibabel) gives ``(C, x, y, z)`` in file voxel order, SimpleITK gives ``(z, y, x)``: the
same voxels transposed. The inferer transposes each batch item to ``(z, y, x)``, segments it and transposes the
label map back, keeping the input's metadata (affine, file name) so ``SaveImaged`` writes it on the input's grid.

Example:
    >>> import torch
    >>> from torch import nn
    >>> inferer = SegmentationInferer({"mode": "slices_2d", "num_classes": 2, "patch": [16, 16]})
    >>> inferer(torch.rand(1, 1, 20, 24, 3), nn.Conv2d(1, 2, 3, padding=1)).shape
    torch.Size([1, 1, 20, 24, 3])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from medkd.engine.predictor import SegmentationSpec

__all__ = ["SegmentationInferer", "to_zyx", "from_zyx"]


def to_zyx(item: np.ndarray) -> np.ndarray:
    """A MONAI spatial array ``(x, y[, z])`` as SimpleITK's ``(z, y, x)`` (``(y, x)`` for 2D), float32, contiguous.

    Example:
        >>> to_zyx(np.zeros((4, 3, 2))).shape
        (2, 3, 4)
    """
    return np.ascontiguousarray(np.asarray(item, dtype=np.float32).T)


def from_zyx(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_zyx` for a label map; a 2D input's ``(1, y, x)`` result becomes ``(x, y)``.

    Example:
        >>> from_zyx(np.zeros((1, 3, 4), np.uint8), (4, 3)).shape
        (4, 3)
    """
    return np.ascontiguousarray(np.asarray(labels).T.reshape(shape))


class SegmentationInferer(Inferer):
    """MONAI inferer that segments each image of a batch with a :class:`~medkd.engine.predictor.SegmentationSpec`.

    Args:
        spec: the recipe, a :class:`SegmentationSpec` or its :meth:`~SegmentationSpec.to_dict` form (as written
            in ``inference.json``).

    Raises:
        TypeError: ``spec`` has unknown keys.
        ValueError: ``spec`` has an invalid mode or axes.
    """

    def __init__(self, spec: SegmentationSpec | Mapping[str, Any]) -> None:
        super().__init__()
        self.spec = spec if isinstance(spec, SegmentationSpec) else SegmentationSpec.from_dict(dict(spec))

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Label maps of a batch.

        Args:
            inputs: images ``(B, 1, x, y[, z])`` as ``LoadImaged`` + ``EnsureChannelFirstd`` give them (raw
                intensities: the spec normalises each volume).
            network: the segmentation network (already on its device).

        Returns:
            uint8 label maps ``(B, 1, x, y[, z])`` on the inputs' device; a :class:`~monai.data.MetaTensor`
            carrying the inputs' metadata when the inputs are one.

        Raises:
            ValueError: ``inputs`` is not ``(B, 1, x, y[, z])``.
        """
        if inputs.ndim not in (4, 5) or inputs.shape[1] != 1:
            raise ValueError(f"expected images (B, 1, x, y[, z]), got shape {tuple(inputs.shape)}")
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        items = plain.detach().to(device="cpu", dtype=torch.float32).numpy()
        masks = [from_zyx(self.spec.segment(network, to_zyx(item[0])), item.shape[1:]) for item in items]
        out = torch.from_numpy(np.stack(masks)[:, None]).to(inputs.device)
        if isinstance(inputs, MetaTensor):
            out = MetaTensor(out)
            out.copy_meta_from(inputs)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
