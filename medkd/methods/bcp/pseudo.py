# SPDX-License-Identifier: Apache-2.0
"""Teacher pseudo-labels with largest-connected-component filtering (BCP, spec §2 stage 2).

- ACDC: ``argmax`` of the teacher's softmax, then per slice and per class the largest 8-connected component.
- LA: foreground probability ``>= 0.5``, then per volume the largest 26-connected component.

Components are labelled for the whole batch in one ``scipy.ndimage.label`` call per class, with a structuring
element that does not connect neighbouring samples, so no Python loop runs over samples or voxels. Empty
classes stay empty. Ties keep the component with the lower label id, as ``numpy.argmax`` in the reference.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

__all__ = ["largest_component_per_sample", "pseudo_labels_argmax_lcc", "pseudo_labels_threshold_lcc"]


def largest_component_per_sample(masks: np.ndarray) -> np.ndarray:
    """Keep, in each sample of ``masks`` ``(B, *S)`` (bool), only its largest fully-connected component.

    Example:
        >>> m = np.zeros((1, 5, 5), bool); m[0, 0, 0] = True; m[0, 2:4, 2:4] = True
        >>> int(largest_component_per_sample(m).sum())
        4
    """
    masks = np.asarray(masks, dtype=bool)
    batch = masks.shape[0]
    structure = np.zeros((3,) * masks.ndim, dtype=bool)
    structure[1] = True  # full connectivity within a sample, none across samples
    labels, n = ndimage.label(masks, structure=structure)
    if n == 0:
        return masks.copy()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, dtype=np.int64)
    owner[labels.reshape(batch, -1)] = np.arange(batch)[:, None]
    ids = np.arange(1, n + 1)
    key = sizes[1:] * (n + 1) + (n - ids)  # larger first, then lower id first
    best_key = np.full(batch, -1, dtype=np.int64)
    np.maximum.at(best_key, owner[1:], key)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = key == best_key[owner[1:]]
    return keep[labels]


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
