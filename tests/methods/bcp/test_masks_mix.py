# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import numpy as np
import pytest
import torch

from medkd.methods.bcp.masks import box_extent, box_mask
from medkd.methods.bcp.mix import mix


@pytest.mark.parametrize(
    "shape, fraction",
    [((256, 256), 170**2 / 256**2), ((112, 112, 80), 74 * 74 * 53 / (112 * 112 * 80)), ((64, 64), 42**2 / 64**2)],
)
def test_box_side_and_pasted_fraction(shape, fraction):
    m = box_mask(shape, rng=np.random.default_rng(0))
    assert m.shape == shape
    assert float((m == 0).float().mean()) == pytest.approx(fraction)
    inside = torch.nonzero(m == 0)
    sides = (inside.max(0).values - inside.min(0).values + 1).tolist()
    assert sides == [int(s * 2 / 3) for s in shape]


def test_box_offsets_cover_the_range_and_stay_inside():
    rng = np.random.default_rng(1)
    starts = np.array([[a for a, _ in box_extent((30, 12), rng=rng)] for _ in range(2000)])
    assert starts[:, 0].min() == 0 and starts[:, 0].max() == 30 - 20 - 1  # randint is high-exclusive
    assert starts[:, 1].min() == 0 and starts[:, 1].max() == 12 - 8 - 1


def test_box_uses_numpy_global_rng_for_reproducibility():
    np.random.seed(3)
    a = box_extent((64, 64))
    np.random.seed(3)
    assert box_extent((64, 64)) == a


def test_one_box_shared_by_the_batch_for_images_and_labels():
    mask = box_mask((16, 16), rng=np.random.default_rng(2))
    a_img, b_img = torch.zeros(4, 1, 16, 16), torch.ones(4, 1, 16, 16)
    a_lab, b_lab = torch.zeros(4, 16, 16, dtype=torch.long), torch.full((4, 16, 16), 3)
    img, lab = mix(a_img, b_img, mask), mix(a_lab, b_lab, mask)
    assert lab.dtype == torch.long
    for i in range(4):  # the same box in every sample, and image/label compositions agree
        assert torch.equal(img[i, 0] == 1, mask == 0)
        assert torch.equal(lab[i] == 3, img[i, 0] == 1)


def test_mix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        mix(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9), torch.ones(8, 8))
    with pytest.raises(ValueError, match="mask shape"):
        mix(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), torch.ones(4, 4))
