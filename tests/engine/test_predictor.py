# SPDX-License-Identifier: Apache-2.0
"""The shared inference interface: SegmentationSpec recipes, Predictor, load_predictor dispatch and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medkd.engine.predictor import (
    PREDICTOR_SOURCES, Predictor, SegmentationSpec, file_sha256, load_predictor, resolve_device,
)
from medkd.errors import DataError
from medkd.io.labels import labels_from_names


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


def test_predictor_call_and_describe():
    pred = Predictor("segmentation", "m", "1", "ab" * 32, labels_from_names(["bg", "lesion"]),
                     run=lambda a: (a > 0).astype(np.uint8), source=Path("."))
    out = pred(np.array([[[-1, 2]]], dtype=np.int16))
    assert out.tolist() == [[[0, 1]]]
    info = pred.describe()
    assert info["labels"][0]["name"] == "lesion" and info["weights_sha256"] == "ab" * 32


def test_load_predictor_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(DataError, match="metadata.json"):
        load_predictor(tmp_path)
    assert set(PREDICTOR_SOURCES.list()) >= {"bundle", "bcp_run"}


def test_resolve_device_and_sha(tmp_path):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
