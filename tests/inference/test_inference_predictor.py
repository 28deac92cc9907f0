# SPDX-License-Identifier: Apache-2.0
"""medkd.inference.Predictor: one interface for every kind; the kind decides the input coercion and the output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.inference import Predictor, file_sha256
from medkd.io.labels import labels_from_names


def _predictor(kind: str, run) -> Predictor:
    return Predictor(kind, f"fake_{kind}", "1", "ab" * 32, labels_from_names(["bg", "lesion"]), run=run,
                     source=Path("."))


def _segment(volume: np.ndarray) -> np.ndarray:
    assert volume.dtype == np.float32 and torch.is_inference_mode_enabled()
    return (volume > 0).astype(np.uint8).reshape((1, *volume.shape) if volume.ndim == 2 else volume.shape)


def _detect(image: np.ndarray) -> dict:
    """One box around the bright voxels: (x0, y0, x1, y1) for an image, (x0, y0, z0, x1, y1, z1) for a volume."""
    assert image.dtype == np.float32
    found = np.nonzero(image > 0)[::-1]  # (x, y[, z]) indices
    if not len(found[0]):
        return {"boxes": np.zeros((0, 2 * image.ndim), np.float32), "scores": np.zeros(0, np.float32),
                "labels": np.zeros(0, np.int64)}
    box = [int(a.min()) for a in found] + [int(a.max()) + 1 for a in found]
    return {"boxes": np.array([box], np.float32), "scores": np.array([0.8], np.float32),
            "labels": np.array([0], np.int64)}


def _forecast(frames) -> dict:
    means = [float(np.mean(frame)) for frame in frames]  # consumes a stream frame by frame
    return {"brightness_next": np.array(means), "event": (np.array(means) > 1).astype(np.float32)}


def test_segmentation_predictor_takes_a_volume_and_returns_a_label_map():
    pred = _predictor("segmentation", _segment)
    volume = np.array([[[-1, 2], [3, -4]]], dtype=np.int16)
    out = pred(volume)
    assert out.tolist() == [[[0, 1], [1, 0]]] and out.dtype == np.uint8
    pred.check(out, volume)
    pred.check(pred(volume[0]), volume[0])  # a 2D image is one slice
    info = pred.describe()
    assert info["kind"] == "segmentation" and info["labels"][0]["name"] == "lesion"
    assert info["weights_sha256"] == "ab" * 32


@pytest.mark.parametrize("shape", [(20, 30), (4, 20, 30)])
def test_detection_predictor_returns_boxes_scores_labels(shape):
    image = np.zeros(shape, np.uint8)
    image[..., 5:9, 10:17] = 200
    pred = _predictor("detection", _detect)
    out = pred(image)
    pred.check(out, image)
    expected = [10.0, 5.0, 17.0, 9.0] if len(shape) == 2 else [10.0, 5.0, 0.0, 17.0, 9.0, 4.0]
    assert out["boxes"].tolist() == [expected] and out["labels"].tolist() == [0]
    empty = pred(np.zeros(shape, np.float32))
    pred.check(empty, np.zeros(shape))
    assert empty["boxes"].shape == (0, 2 * len(shape))


def test_forecasting_predictor_streams_frames():
    frames = [np.full((8, 8), v, np.uint8) for v in (0, 2, 3)]
    pred = _predictor("forecasting", _forecast)
    out = pred(iter(frames))  # a generator reaches run unchanged
    assert out["event"].tolist() == [0.0, 1.0, 1.0]
    as_array = pred(np.stack(frames))
    pred.check(as_array, np.stack(frames))
    np.testing.assert_array_equal(as_array["brightness_next"], out["brightness_next"])


def test_check_rejects_an_output_of_another_kind():
    pred = _predictor("segmentation", _segment)
    with pytest.raises(ValueError, match="uint8|numpy"):
        pred.check({"boxes": np.zeros((0, 4))}, np.zeros((2, 2, 2), np.float32))


def test_unknown_kind_is_refused_with_close_matches():
    with pytest.raises(KeyError, match="Did you mean 'segmentation'"):
        _predictor("segmentaton", _segment)


def test_file_sha256(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
