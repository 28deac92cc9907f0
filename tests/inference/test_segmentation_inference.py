# SPDX-License-Identifier: Apache-2.0
"""medkd.inference.segmentation: the BCP protocols against loop ports of the reference, SegmentationSpec recipes
and its one 2D/3D dispatch (``infer``), which BCP evaluation and ``segment`` share."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import zoom
from skimage.measure import label as sk_label
from torch import nn

from medkd.inference.segmentation import (
    SegmentationSpec,
    exact_overlaps,
    labels_from_probs,
    predict_slices_2d,
    predict_sliding_3d,
)
from medkd.metrics.components import largest_component


def _reference_lcc(mask: np.ndarray) -> np.ndarray:
    """Port of the reference ``getLargestCC``."""
    labels = sk_label(mask)
    if labels.max() == 0:
        return mask
    return labels == np.argmax(np.bincount(labels.flat)[1:]) + 1


def _reference_sliding(model: nn.Module, image: np.ndarray, patch, stride, num_classes: int):
    """Loop port of ``test_single_case``; also accumulates every class (the reference adds p_fg to all channels)."""
    w, h, d = image.shape
    pads = [max(p - s, 0) for p, s in zip(patch, image.shape)]
    image = np.pad(image, [(q // 2, q - q // 2) for q in pads], mode="constant", constant_values=0)
    ww, hh, dd = image.shape
    counts = [math.ceil((n - p) / s) + 1 for n, p, s in zip(image.shape, patch, stride)]
    score_fg = np.zeros((num_classes,) + image.shape, dtype=np.float32)
    score_all = np.zeros((num_classes,) + image.shape, dtype=np.float32)
    cnt = np.zeros(image.shape, dtype=np.float32)
    for x in range(counts[0]):
        xs = min(stride[0] * x, ww - patch[0])
        for y in range(counts[1]):
            ys = min(stride[1] * y, hh - patch[1])
            for z in range(counts[2]):
                zs = min(stride[2] * z, dd - patch[2])
                window = (slice(xs, xs + patch[0]), slice(ys, ys + patch[1]), slice(zs, zs + patch[2]))
                tensor = torch.from_numpy(image[window][None, None].astype(np.float32))
                with torch.no_grad():
                    prob = torch.softmax(model(tensor)[0], dim=1).numpy()[0]
                score_fg[(slice(None), *window)] += prob[1]
                score_all[(slice(None), *window)] += prob
                cnt[window] += 1
    score_fg, score_all = score_fg / cnt[None], score_all / cnt[None]
    crop = (slice(None),) + tuple(slice(q // 2, q // 2 + n) for q, n in zip(pads, (w, h, d)))
    return (score_fg[0] > 0.5).astype(int)[crop[1:]], score_fg[crop], score_all[crop]


class _TupleNet3d(nn.Module):
    """Tiny random 3D net returning ``(logits, features)`` like the reference VNet."""

    def __init__(self, num_classes: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Dropout3d(0.5))
        self.head = nn.Conv3d(4, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        logits = 3.0 * self.head(feats)
        logits[:, 1] -= 1.0  # sparse, fragmented foreground so that the largest-component step matters
        return logits, feats


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


SLIDING_CASES = [
    # volume shape, patch, stride
    ((30, 26, 14), (16, 16, 8), (6, 6, 2)),  # last windows clipped to the end
    ((12, 26, 14), (16, 16, 8), (6, 5, 3)),  # first axis smaller than the patch
    ((9, 11, 5), (16, 12, 8), (4, 4, 4)),  # every axis smaller than the patch
    ((28, 16, 13), (16, 16, 8), (16, 16, 8)),  # stride == patch, one axis exactly the patch
]


@pytest.mark.parametrize("shape,patch,stride", SLIDING_CASES)
def test_sliding_window_parity(shape, patch, stride) -> None:
    model, image = _TupleNet3d().train(), _volume(shape)
    labels, probs = predict_sliding_3d(model, image, patch=patch, stride=stride, num_classes=2)
    assert not model.training  # put in eval mode, left there
    ref_labels, ref_fg, ref_all = _reference_sliding(model, image, patch, stride, 2)
    assert labels.dtype == np.uint8 and labels.shape == shape and probs.shape == (2, *shape)
    np.testing.assert_array_equal(labels, _reference_lcc(ref_labels).astype(np.uint8))
    np.testing.assert_allclose(probs[1], ref_fg[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probs, ref_all, rtol=0, atol=1e-6)
    raw, _ = predict_sliding_3d(model, image, patch=patch, stride=stride, num_classes=2, keep_largest=False)
    np.testing.assert_array_equal(raw, ref_labels)
    assert raw.sum() > labels.sum() > 0  # several components before the largest-component step


def test_sliding_window_batched_and_multiclass() -> None:
    shape, patch, stride = (22, 20, 12), (16, 16, 8), (6, 6, 2)
    model, image = _TupleNet3d(num_classes=3, seed=1), _volume(shape, seed=1)
    labels, probs = predict_sliding_3d(model, image, patch=patch, stride=stride, num_classes=3, batch_size=4)
    _, _, ref_all = _reference_sliding(model, image, patch, stride, 3)
    np.testing.assert_allclose(probs, ref_all, rtol=0, atol=1e-6)
    argmax = np.argmax(ref_all, axis=0)
    expected = np.zeros(shape, np.uint8)
    for c in (1, 2):
        expected[_reference_lcc(argmax == c).astype(bool)] = c
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("stride", [(0, 4, 4), (17, 4, 4), (4, 4)])
def test_sliding_window_rejects_bad_stride(stride) -> None:
    with pytest.raises(ValueError, match="stride"):
        predict_sliding_3d(_TupleNet3d(), _volume((8, 8, 8)), patch=(16, 8, 8), stride=stride, num_classes=2)


def test_exact_overlaps_reproduce_strides() -> None:
    patch, stride = (112, 112, 80, 96, 24), (18, 18, 4, 16, 24)
    overlaps = exact_overlaps(patch, stride)
    assert [int(p * (1 - o)) for p, o in zip(patch, overlaps)] == list(stride)
    assert all(0 <= o < 1 for o in overlaps)
    assert int(96 * (1 - (1 - 16 / 96))) == 15  # why the naive overlap is not used


@pytest.mark.parametrize("ndim,seed", [(2, 0), (3, 1), (3, 2)])
def test_largest_component_matches_reference(ndim: int, seed: int) -> None:
    mask = (np.random.default_rng(seed).random((14,) * ndim) < 0.25).astype(np.uint8)
    np.testing.assert_array_equal(largest_component(mask), _reference_lcc(mask).astype(np.uint8))


@pytest.mark.parametrize(
    "mask,expected",
    [
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)),  # empty stays empty
        (np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], np.uint8), np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], np.uint8)),
        (np.array([1, 1, 0, 1, 1], np.int64), np.array([1, 1, 0, 0, 0], np.int64)),  # tie: first in raster order
        (np.array([True, False, True, True]), np.array([False, False, True, True])),
    ],
)
def test_largest_component_cases(mask: np.ndarray, expected: np.ndarray) -> None:
    out = largest_component(mask)
    assert out.dtype == mask.dtype
    np.testing.assert_array_equal(out, expected)


def test_largest_component_3d_full_connectivity() -> None:
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = 1  # corner-touching chain: one 26-connected component
    mask[4, 4, 0] = mask[4, 3, 0] = 1
    np.testing.assert_array_equal(largest_component(mask), mask * (np.arange(5) < 3)[:, None, None])


class _Net2d(nn.Module):
    def __init__(self, num_classes: int = 4, as_tuple: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, num_classes, 3, padding=1))
        self.as_tuple = as_tuple
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        out = 4.0 * self.conv(x)
        return (out, x) if self.as_tuple else out


def _reference_slices(model: nn.Module, image: np.ndarray, patch) -> np.ndarray:
    """Loop port of ``test_ACDC.py::test_single_volume`` (one slice per forward)."""
    prediction = np.zeros(image.shape, dtype=np.int64)
    for ind in range(image.shape[0]):
        x, y = image[ind].shape
        resized = zoom(image[ind], (patch[0] / x, patch[1] / y), order=0)
        with torch.no_grad():
            out = model(torch.from_numpy(resized)[None, None].float())
            out = out[0] if isinstance(out, tuple) else out
            pred = torch.argmax(torch.softmax(out, dim=1), dim=1)[0].numpy()
        prediction[ind] = zoom(pred, (x / patch[0], y / patch[1]), order=0)
    return prediction


SLICE_CASES = [
    # volume shape, patch, batch size, tuple output
    ((5, 37, 29), (24, 20), 2, False),
    ((3, 217, 190), (256, 256), 16, True),
    ((4, 24, 20), (24, 20), 4, False),  # already at the network size
]


@pytest.mark.parametrize("shape,patch,batch_size,as_tuple", SLICE_CASES)
def test_predict_slices_2d_matches_reference(shape, patch, batch_size: int, as_tuple: bool) -> None:
    model, image = _Net2d(as_tuple=as_tuple), np.random.default_rng(0).random(shape).astype(np.float32)
    labels = predict_slices_2d(model, image, patch=patch, num_classes=4, batch_size=batch_size)
    assert model.calls == math.ceil(shape[0] / batch_size)  # batched, not one slice per forward
    assert labels.dtype == np.uint8 and labels.shape == shape
    expected = _reference_slices(model, image, patch)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize(
    "volume,num_classes,match",
    [(np.zeros((8, 8), np.float32), 4, r"\(S, H, W\)"), (np.zeros((2, 8, 8), np.float32), 3, "4 channels.*expected 3")],
)
def test_predict_slices_2d_rejects_bad_input(volume: np.ndarray, num_classes: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        predict_slices_2d(_Net2d(), volume, patch=(8, 8), num_classes=num_classes)


class Constant(nn.Module):
    """Logits favouring class 1 where the input is above its mean (channels: bg, fg)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = (x - x.mean()) * self.w
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


def test_spec_round_trip_and_validation():
    spec = SegmentationSpec("sliding_3d", 2, [16, 16, 8], "zscore", "xyz", stride=[4, 4, 2])
    assert spec.patch == (16, 16, 8) and spec.spatial_dims == 3
    assert SegmentationSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="mode"):
        SegmentationSpec("slices_3d", 2, (8, 8))
    with pytest.raises(ValueError, match="axes"):
        SegmentationSpec("slices_2d", 2, (8, 8), axes="yxz")
    with pytest.raises(TypeError):
        SegmentationSpec.from_dict({**spec.to_dict(), "colour": 1})


def test_slices_2d_segments_bright_region_and_keeps_shape():
    spec = SegmentationSpec("slices_2d", 2, (16, 16), "minmax")
    volume = np.zeros((3, 20, 24), np.float32)
    volume[:, 5:15, 6:18] = 100.0
    labels = spec.segment(Constant(), volume)
    assert labels.shape == volume.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, (volume > 50).astype(np.uint8))
    assert spec.segment(Constant(), volume[0]).shape == (1, 20, 24)  # a 2D image is one slice
    with pytest.raises(ValueError, match="shape"):
        spec.segment(Constant(), np.zeros((2, 2, 2, 2), np.float32))


def test_sliding_3d_with_xyz_axes_transposes_back():
    spec = SegmentationSpec("sliding_3d", 2, (8, 8, 8), "zscore", "xyz", stride=(4, 4, 4), keep_largest=False)
    volume = np.zeros((10, 12, 9), np.float32)
    volume[2:6, 3:9, 1:5] = 10.0
    labels = spec.segment(Constant(), volume)
    assert labels.shape == volume.shape
    np.testing.assert_array_equal(labels, (volume > 5).astype(np.uint8))


@pytest.mark.parametrize("keep_largest", [True, False])
def test_infer_is_the_protocols_dispatch(keep_largest: bool) -> None:
    """``infer`` runs exactly the protocol of its mode with the spec's settings (the one 2D/3D dispatch)."""
    net2d, image2d = _Net2d(), np.random.default_rng(1).random((3, 30, 26)).astype(np.float32)
    spec2d = SegmentationSpec("slices_2d", 4, (24, 20), batch_size=2)
    np.testing.assert_array_equal(
        spec2d.infer(net2d, image2d), predict_slices_2d(net2d, image2d, patch=(24, 20), num_classes=4, batch_size=2)
    )
    net3d, image3d = _TupleNet3d(), _volume((12, 10, 9))
    spec3d = SegmentationSpec("sliding_3d", 2, (8, 8, 4), stride=(4, 4, 2), keep_largest=keep_largest)
    expected, _ = predict_sliding_3d(net3d, image3d, patch=(8, 8, 4), stride=(4, 4, 2), num_classes=2,
                                     keep_largest=keep_largest)
    np.testing.assert_array_equal(spec3d.infer(net3d, image3d, "cpu"), expected)
    default_stride = SegmentationSpec("sliding_3d", 2, (8, 8, 4))  # half the patch
    expected, _ = predict_sliding_3d(net3d, image3d, patch=(8, 8, 4), stride=(4, 4, 2), num_classes=2)
    np.testing.assert_array_equal(default_stride.infer(net3d, image3d), expected)


def test_labels_from_probs_threshold_argmax_and_components() -> None:
    probs = np.zeros((2, 1, 7), np.float32)
    probs[1, 0] = [0.9, 0.9, 0.1, 0.6, 0.1, 0.1, 0.1]
    probs[0] = 1 - probs[1]
    assert labels_from_probs(probs, keep_largest=False).tolist() == [[1, 1, 0, 1, 0, 0, 0]]
    assert labels_from_probs(probs, keep_largest=True).tolist() == [[1, 1, 0, 0, 0, 0, 0]]
    three = np.stack([np.full((1, 3), 0.2), np.array([[0.5, 0.1, 0.5]]), np.array([[0.3, 0.7, 0.3]])])
    assert labels_from_probs(three, keep_largest=False).tolist() == [[1, 2, 1]]
