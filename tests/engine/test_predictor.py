# SPDX-License-Identifier: Apache-2.0
"""The deprecated paths medkd.engine.predictor and medkd.metrics.seg_inference re-export medkd.inference (same
objects), so old imports, monkeypatches and pickles keep working."""

from __future__ import annotations

import importlib

import pytest

from medkd import inference
from medkd.inference import segmentation
from medkd.metrics import components

SHIMS = {
    "medkd.engine.predictor": {
        "SegmentationSpec": segmentation.SegmentationSpec, "Predictor": inference.Predictor,
        "PredictorSource": inference.PredictorSource, "PREDICTOR_SOURCES": inference.PREDICTOR_SOURCES,
        "load_predictor": inference.load_predictor, "resolve_device": inference.resolve_device,
        "file_sha256": inference.file_sha256,
    },
    "medkd.metrics.seg_inference": {
        "predict_slices_2d": segmentation.predict_slices_2d, "predict_sliding_3d": segmentation.predict_sliding_3d,
        "exact_overlaps": segmentation.exact_overlaps, "largest_component": components.largest_component,
    },
}


@pytest.mark.parametrize("path", sorted(SHIMS))
def test_old_paths_re_export_the_same_objects(path):
    module = importlib.import_module(path)
    assert set(module.__all__) == set(SHIMS[path])
    for name, obj in SHIMS[path].items():
        assert getattr(module, name) is obj, name
    assert "deprecated: use medkd.inference" in module.__doc__.lower()


def test_resolve_device():
    assert inference.resolve_device("cpu").type == "cpu"
    assert inference.resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert inference.resolve_device(None, mps=False).type in ("cpu", "cuda")

