# SPDX-License-Identifier: Apache-2.0
"""Bidirectional copy-paste mixing: ``mix(a, b, M) = a * M + b * (1 - M)`` (``a`` outside, ``b`` in the box).

The same function mixes images ``(B, C, *S)`` and label maps ``(B, *S)``: ``M`` (``*S``) broadcasts over the
leading dimensions, and label maps keep their integer dtype.
"""

from __future__ import annotations

import torch

__all__ = ["mix"]


def mix(outside: torch.Tensor, inside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Paste ``inside`` into ``outside`` where ``mask`` is 0.

    Args:
        outside: ``(B, C, *S)`` image or ``(B, *S)`` label map shown where ``mask == 1``.
        inside: same shape, pasted where ``mask == 0``.
        mask: ``(*S)`` box mask from :func:`medkd.methods.bcp.masks.box_mask`.

    Example:
        >>> a, b = torch.zeros(1, 1, 3, 3), torch.ones(1, 1, 3, 3)
        >>> m = torch.ones(3, 3); m[1, 1] = 0
        >>> mix(a, b, m)[0, 0]
        tensor([[0., 0., 0.],
                [0., 1., 0.],
                [0., 0., 0.]])
    """
    if outside.shape != inside.shape:
        raise ValueError(f"mix needs equal shapes, got {tuple(outside.shape)} and {tuple(inside.shape)}")
    if tuple(mask.shape) != tuple(outside.shape[-mask.ndim :]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the spatial shape of {tuple(outside.shape)}")
    return torch.where(mask.bool(), outside, inside)
