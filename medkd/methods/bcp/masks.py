# SPDX-License-Identifier: Apache-2.0
"""The BCP copy-paste box: one box per iteration, shared by the whole batch (Bai et al., CVPR 2023).

``M`` is 1 outside the box and 0 inside. The box side is ``floor(ratio * s)`` on every spatial axis and its
offset is uniform in ``{0, ..., s - side - 1}`` (numpy's high-exclusive ``randint``, as the reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["box_mask", "box_extent"]


def box_extent(
    spatial_shape: Sequence[int], ratio: float = 2 / 3, rng: np.random.Generator | None = None
) -> tuple[tuple[int, int], ...]:
    """Draw the box as ``((start, stop), ...)`` per spatial axis.

    Args:
        spatial_shape: ``(H, W)`` or ``(W, H, D)``.
        ratio: box side as a fraction of each axis.
        rng: numpy generator; ``None`` uses numpy's global RNG (seeded by ``medkd.engine.seed_everything``).

    Example:
        >>> (start, stop), _ = box_extent((256, 256), rng=np.random.default_rng(0))
        >>> stop - start
        170
    """
    draw = rng.integers if rng is not None else np.random.randint
    extent = []
    for size in spatial_shape:
        side = int(size * ratio)
        start = int(draw(0, size - side)) if size - side > 0 else 0
        extent.append((start, start + side))
    return tuple(extent)


def box_mask(
    spatial_shape: Sequence[int],
    ratio: float = 2 / 3,
    *,
    rng: np.random.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The mask ``M`` of shape ``spatial_shape`` (float32): 1 outside the box, 0 inside.

    Returns:
        ``(H, W)`` or ``(W, H, D)`` tensor; broadcast it over ``(B, C, ...)`` images and ``(B, ...)`` labels.

    Example:
        >>> m = box_mask((6, 6), rng=np.random.default_rng(0))
        >>> int((m == 0).sum())  # a 4x4 box
        16
    """
    mask = torch.ones(tuple(spatial_shape), dtype=torch.float32, device=device)
    mask[tuple(slice(a, b) for a, b in box_extent(spatial_shape, ratio, rng))] = 0
    return mask
