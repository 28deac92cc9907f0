# SPDX-License-Identifier: Apache-2.0
"""Pseudo-labels against a scikit-image per-sample reference (spec test 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import label as sk_label

from medkd.methods.bcp.pseudo import (
    largest_component_per_sample,
    pseudo_labels_argmax_lcc,
    pseudo_labels_threshold_lcc,
)


def reference_lcc(mask: np.ndarray) -> np.ndarray:
    """The reference's getLargestCC: skimage label (full connectivity), argmax of bincount."""
    labels = sk_label(mask)
    if labels.max() == 0:
        return mask.astype(bool)
    return labels == np.argmax(np.bincount(labels.flat)[1:]) + 1


@pytest.mark.parametrize("shape", [(6, 32, 32), (3, 16, 16, 12)])
def test_lcc_matches_skimage_per_sample(shape):
    rng = np.random.default_rng(0)
    masks = rng.random(shape) > 0.6
    ours = largest_component_per_sample(masks)
    for i in range(shape[0]):
        assert np.array_equal(ours[i], reference_lcc(masks[i]))


def test_acdc_pseudo_labels_match_reference_and_keep_empty_class():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(4, 4, 24, 24)).astype(np.float32))
    logits[:, 3] -= 100  # class 3 never wins: stays empty
    ours = pseudo_labels_argmax_lcc(logits).numpy()
    hard = logits.argmax(1).numpy()
    for i in range(4):
        expected = np.zeros_like(hard[i])
        for c in (1, 2, 3):
            expected[reference_lcc(hard[i] == c)] = c
        assert np.array_equal(ours[i], expected)
    assert not (ours == 3).any()


def test_components_do_not_connect_across_samples():
    m = np.zeros((2, 8, 8), bool)
    m[0, 2:6, 2:6] = True  # 16 px in sample 0
    m[1, 2:6, 2:6] = True  # the same place in sample 1 must stay a separate component
    m[1, 0, 7] = True
    out = largest_component_per_sample(m)
    assert out[0].sum() == 16 and out[1].sum() == 16 and not out[1, 0, 7]


def test_la_threshold_pseudo_labels():
    logits = torch.zeros(2, 2, 8, 8, 8)
    logits[0, 0] = 1.0  # background wins in sample 0 except where the foreground is raised
    logits[0, 1, 1:3, 1:3, 1:3] = 5.0  # 8 voxels
    logits[0, 1, 5:8, 5:8, 5:8] = 5.0  # 27 voxels: the largest
    out = pseudo_labels_threshold_lcc(logits)
    assert out.dtype == torch.int64 and int(out[0].sum()) == 27
    assert int(out[1].sum()) == 8 * 8 * 8  # p_fg = 0.5 exactly passes the >= 0.5 threshold
