# SPDX-License-Identifier: Apache-2.0
"""Teacher pseudo-labels with largest-connected-component filtering (BCP, spec §2 stage 2).

- ACDC: ``argmax`` of the teacher's softmax, then per slice and per class the largest 8-connected component.
- LA: foreground probability ``>= 0.5``, then per volume the largest 26-connected component.

Components come from :func:`medkd.metrics.components.largest_component_per_sample`: one batched labelling per
class, no Python loop over samples or voxels. Empty classes stay empty; ties as ``numpy.argmax`` in the reference.
"""

from __future__ import annotations

import numpy as np
import torch

from medkd.metrics.components import largest_component_per_sample

__all__ = ["largest_component_per_sample", "pseudo_labels_argmax_lcc", "pseudo_labels_threshold_lcc"]


def pseudo_labels_argmax_lcc(logits: torch.Tensor, *, lcc: bool = True) -> torch.Tensor:
    """ACDC pseudo-labels ``(B, *S)`` (int64) from teacher logits ``(B, C, *S)``: argmax, then LCC per class.

    Example:
        >>> pseudo_labels_argmax_lcc(torch.randn(2, 4, 16, 16)).shape
        torch.Size([2, 16, 16])
    """
    hard = logits.argmax(dim=1)
    if not lcc:
        return hard
    labels = hard.to(torch.uint8).cpu().numpy()
    out = np.zeros_like(labels)
    for c in range(1, logits.shape[1]):  # a loop over classes, each a single batched labelling
        out[largest_component_per_sample(labels == c)] = c
    return torch.from_numpy(out).to(device=logits.device, dtype=torch.int64)


def pseudo_labels_threshold_lcc(logits: torch.Tensor, *, threshold: float = 0.5, lcc: bool = True) -> torch.Tensor:
    """LA pseudo-labels ``(B, *S)`` (int64): softmax foreground probability ``>= threshold``, then LCC."""
    fg = torch.softmax(logits, dim=1)[:, 1] >= threshold
    if not lcc:
        return fg.long()
    keep = largest_component_per_sample(fg.cpu().numpy())
    return torch.from_numpy(keep).to(device=logits.device, dtype=torch.int64)
