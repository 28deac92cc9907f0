# SPDX-License-Identifier: Apache-2.0
"""BCP augmentation: shapes and dtypes, image/label alignment, branch probabilities, crop geometry, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medkd.data.transforms import (
    RandIntRotated,
    RandOneOfd,
    RandPadCropd,
    RandRot90Flipd,
    ResizeNearestd,
    acdc_train_transform,
    la_train_transform,
    pad_crop,
    rot90_flip,
)


def _smooth_item(shape: tuple[int, ...], seed: int = 0) -> dict:
    """An image with a label that is the image thresholded: any misalignment breaks ``label == image > 0.5``."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random(shape), 2.0)
    image = (image - image.min()) / (image.max() - image.min())
    image_t = torch.from_numpy(image.astype(np.float32))
    return {"image": image_t[None], "label": (image_t > 0.5).long(), "case": "c"}


@pytest.mark.parametrize("shape, patch", [((40, 48), (64, 64)), ((64, 64), (64, 64)), ((70, 50), (32, 40))])
def test_acdc_transform_shapes_dtypes(shape, patch):
    np.random.seed(0)
    transform = acdc_train_transform(patch)
    for _ in range(12):
        out = transform(_smooth_item(shape))
        assert out["image"].shape == (1, *patch) and out["image"].dtype == torch.float32
        assert out["label"].shape == patch and out["label"].dtype == torch.int64
        assert type(out["image"]) is torch.Tensor and out["case"] == "c"


@pytest.mark.parametrize(
    "transform",
    [acdc_train_transform((48, 48)), RandRot90Flipd(spatial_dims=2), RandIntRotated(), ResizeNearestd(size=(50, 30))],
    ids=["acdc", "rot90flip", "rotate", "resize"],
)
def test_2d_transforms_keep_image_and_label_aligned(transform):
    np.random.seed(1)
    for seed in range(10):
        out = transform(_smooth_item((36, 36), seed))
        torch.testing.assert_close(out["label"], (out["image"][0] > 0.5).long(), rtol=0, atol=0)


def test_la_transform_keeps_alignment_and_patch():
    np.random.seed(2)
    transform = la_train_transform((16, 16, 8))
    for seed in range(6):
        out = transform(_smooth_item((20, 18, 12), seed))
        assert out["image"].shape == (1, 16, 16, 8) and out["label"].shape == (16, 16, 8)
        assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.int64
        torch.testing.assert_close(out["label"], (out["image"][0] > 0.5).long(), rtol=0, atol=0)


def test_acdc_branch_probabilities():
    """One of three branches: rot90/flip 0.5, rotation 0.25, nothing 0.25 (one numpy draw per call)."""
    seen: list[str] = []
    branches = [lambda d: seen.append("rot90") or d, lambda d: seen.append("rotate") or d, None]
    chooser = RandOneOfd(branches, [0.5, 0.25, 0.25])
    np.random.seed(0)
    for _ in range(4000):
        before = len(seen)
        chooser({"image": 0})
        if len(seen) == before:
            seen.append("none")
    counts = {k: seen.count(k) / len(seen) for k in ("rot90", "rotate", "none")}
    assert counts == pytest.approx({"rot90": 0.5, "rotate": 0.25, "none": 0.25}, abs=0.03)


def test_rot90_flip_reaches_every_reflection():
    image = torch.arange(9.0).reshape(1, 3, 3)
    expected = {rot90_flip(image, k, a, 2)[0].flatten().tolist().__repr__() for k in range(4) for a in range(2)}
    np.random.seed(3)
    t = RandRot90Flipd(keys=("image",), spatial_dims=2)
    seen = {t({"image": image})["image"][0].flatten().tolist().__repr__() for _ in range(200)}
    # rot90 then an always-applied flip reaches the 4 reflections of the square (as in the reference)
    assert seen == expected and len(expected) == 4


def test_random_draws_match_the_reference(monkeypatch):
    calls = []
    real = np.random.randint

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(np.random, "randint", spy)
    RandIntRotated()(_smooth_item((16, 16)))
    assert calls == [(-20, 20)]
    calls.clear()
    RandRot90Flipd(spatial_dims=3)(_smooth_item((6, 6, 4)))
    assert calls == [(0, 4), (0, 2)]  # k in {0..3}, flip axis 0 or 1


@pytest.mark.parametrize(
    "shape, patch",
    [((10, 12, 6), (16, 16, 8)), ((16, 16, 8), (16, 16, 8)), ((30, 17, 9), (16, 16, 8)), ((40, 40, 20), (16, 16, 8))],
)
def test_crop_always_yields_patch(shape, patch):
    np.random.seed(4)
    crop = RandPadCropd(patch=patch)
    for _ in range(10):
        out = crop({"image": torch.ones(1, *shape), "label": torch.ones(shape, dtype=torch.int64)})
        assert out["image"].shape == (1, *patch) and out["label"].shape == patch
        assert out["label"].dtype == torch.int64


def test_crop_pads_like_the_reference():
    """An axis <= patch pads every axis by max((patch - size) // 2 + 3, 0); the start is randint(0, size - patch)."""
    volume = torch.arange(1, 1 + 10 * 20 * 6, dtype=torch.float32).reshape(1, 10, 20, 6)
    np.random.seed(5)
    starts = set()
    for _ in range(300):
        out = RandPadCropd(keys=("image",), patch=(12, 16, 6))({"image": volume})["image"]
        padded = pad_crop(volume, (4, 1, 3), (0, 0, 0), (18, 22, 12))  # pads (12-10)//2+3, max((16-20)//2+3,0), 3
        hits = [(i, j, k) for i in range(7) for j in range(7) for k in range(7)
                if torch.equal(padded[:, i : i + 12, j : j + 16, k : k + 6], out)]
        assert len(hits) == 1
        starts.add(hits[0])
    assert {s[0] for s in starts} == set(range(6)) and {s[1] for s in starts} == set(range(6))
    assert {s[2] for s in starts} == set(range(6))


def test_crop_without_padding_is_a_subblock():
    volume = torch.arange(30 * 20 * 10, dtype=torch.int64).reshape(30, 20, 10)
    np.random.seed(6)
    out = RandPadCropd(keys=("label",), patch=(8, 8, 8))({"label": volume})["label"]
    i, j, k = np.unravel_index(int(out[0, 0, 0]), volume.shape)
    torch.testing.assert_close(out, volume[i : i + 8, j : j + 8, k : k + 8])


def test_seeding_numpy_reproduces_augmentation():
    item = _smooth_item((20, 18, 14))
    transform = la_train_transform((12, 12, 8))
    np.random.seed(7)
    a = transform(item)
    np.random.seed(7)
    b = transform(item)
    c = transform(item)
    torch.testing.assert_close(a["image"], b["image"])
    assert not torch.equal(b["image"], c["image"])


def test_crop_rejects_mismatched_keys():
    with pytest.raises(ValueError, match="spatial shape"):
        RandPadCropd(patch=(4, 4, 4))({"image": torch.zeros(1, 8, 8, 8), "label": torch.zeros(8, 8, 7)})


@pytest.mark.parametrize("bad", [dict(transforms=[None], weights=[1.0, 2.0]), dict(transforms=[None], weights=[-1.0])])
def test_one_of_rejects_bad_weights(bad):
    with pytest.raises(ValueError):
        RandOneOfd(**bad)
