# SPDX-License-Identifier: Apache-2.0
"""medkd.inference.kinds: the kind registry and each kind's output contract (good outputs pass, each bad one names
what is wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from medkd.inference import KINDS, Kind, check_output, get_kind, list_kinds, register_kind

IMAGE = np.zeros((32, 48), np.float32)  # (y, x)
VOLUME = np.zeros((5, 32, 48), np.float32)  # (z, y, x)
FRAMES = np.zeros((6, 16, 16, 3), np.uint8)  # (T, y, x, c)


def _det(boxes, scores=None, labels=None) -> dict:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
    n = len(boxes)
    return {
        "boxes": boxes,
        "scores": np.linspace(0.9, 0.5, n).astype(np.float32) if scores is None else np.asarray(scores),
        "labels": np.zeros(n, np.int64) if labels is None else np.asarray(labels),
    }


def test_builtin_kinds_are_registered_with_descriptions():
    assert {"segmentation", "detection", "forecasting"} <= set(list_kinds())
    for name in ("segmentation", "detection", "forecasting"):
        kind = get_kind(name)
        assert kind.name == name and kind.input and kind.output
    with pytest.raises(KeyError, match="Did you mean 'detection'"):
        get_kind("detections")


GOOD = [
    ("segmentation", np.zeros((5, 32, 48), np.uint8), VOLUME),
    ("segmentation", np.zeros((1, 32, 48), np.uint8), IMAGE),  # a 2D image is one slice
    ("detection", _det([[4.0, 2.0, 20.0, 12.0], [0.0, 0.0, 48.0, 32.0]]), IMAGE),
    ("detection", _det(np.zeros((0, 4))), IMAGE),  # nothing found
    ("detection", _det([[1.0, 2.0, 0.0, 10.0, 12.0, 5.0]], labels=[2]), VOLUME),
    ("forecasting", {"phase": np.zeros((6, 7)), "rsd_minutes": np.ones(6)}, FRAMES),
    ("forecasting", {"events": np.zeros((3, 2))}, iter([])),  # a stream of unknown length
]


@pytest.mark.parametrize("kind,output,data", GOOD)
def test_outputs_that_fit_pass(kind, output, data):
    check_output(kind, output, data)
    get_kind(kind).check_output(output, data)


BAD = [
    ("segmentation", np.zeros((5, 32, 48), np.int64), VOLUME, "uint8"),
    ("segmentation", np.zeros((5, 32, 47), np.uint8), VOLUME, "shape"),
    ("segmentation", [[0]], IMAGE, "numpy"),
    ("detection", {"boxes": np.zeros((0, 4))}, IMAGE, "'scores'"),
    ("detection", _det([[1.0, 2.0, 0.0, 10.0, 12.0, 5.0]]), IMAGE, r"\(N, 4\)"),
    ("detection", _det([[4.0, 2.0, 20.0, 12.0]]), VOLUME, r"\(N, 6\)"),
    ("detection", _det([[4.0, 2.0, 20.0, 12.0]], scores=[0.5, 0.4]), IMAGE, "scores and labels"),
    ("detection", _det([[4.0, 2.0, 20.0, 12.0]], labels=[0.0]), IMAGE, "integers"),
    ("detection", _det([[4.0, 2.0, 20.0, 12.0]], labels=[-1]), IMAGE, ">= 0"),
    ("detection", _det([[20.0, 2.0, 4.0, 12.0]]), IMAGE, "max >= min"),
    ("detection", _det([[4.0, 2.0, 20.0, 40.0]]), IMAGE, "inside"),  # y beyond 32 rows
    ("detection", _det([[4.0, 2.0, 49.0, 12.0]]), IMAGE, "inside"),  # x beyond 48 columns
    ("detection", _det([[np.nan, 2.0, 20.0, 12.0]]), IMAGE, "finite"),
    ("detection", _det([[1.0, 1.0, 1.0, 2.0]]), np.zeros((2, 2, 2, 2)), "image"),
    ("forecasting", {}, FRAMES, "non-empty"),
    ("forecasting", {"a": np.zeros(6), "b": np.zeros(5)}, FRAMES, "different numbers"),
    ("forecasting", {"a": np.zeros(7)}, FRAMES, "more forecast steps"),
    ("forecasting", {"a": np.array(["x"] * 6)}, FRAMES, "numeric"),
    ("forecasting", {"a": np.full(6, np.inf)}, FRAMES, "finite"),
]


@pytest.mark.parametrize("kind,output,data,match", BAD)
def test_outputs_that_do_not_fit_are_named(kind, output, data, match):
    with pytest.raises(ValueError, match=match):
        check_output(kind, output, data)


def test_prepare_coerces_arrays_and_streams_through():
    seg = get_kind("segmentation").prepare(np.ones((2, 3), np.int16))
    assert seg.dtype == np.float32 and seg.shape == (2, 3)
    frames = iter([np.zeros((2, 2))])
    assert get_kind("forecasting").prepare(frames) is frames  # a generator is not read into memory
    assert get_kind("forecasting").prepare([np.zeros((2, 2))] * 3).shape == (3, 2, 2)


def test_a_new_kind_registers_and_is_checked():
    def check(output, data):
        if output != len(data):
            raise ValueError("count mismatch")

    kind = register_kind(Kind("counting", "a list", "its length", list, check))
    try:
        assert get_kind("counting") is kind and "counting" in list_kinds("count*")
        check_output("counting", 2, [1, 2])
        with pytest.raises(ValueError, match="count mismatch"):
            check_output("counting", 3, [1, 2])
    finally:
        KINDS._items.pop("counting", None)


@pytest.mark.parametrize(("output", "message"), [
    ({"probabilities": np.array([0.5, 0.5], np.float32)}, "with 'probabilities' and 'label'"),
    ({"probabilities": np.array([1.0], np.float32), "label": 0}, ">= 2 classes"),
    ({"probabilities": np.array([0.7, 0.7], np.float32), "label": 0}, "sum to 1"),
    ({"probabilities": np.array([0.2, 0.8], np.float32), "label": 2}, r"in \[0, 2\)"),
    ({"probabilities": np.array([0.2, 0.8], np.float32), "label": True}, "int class index"),
    ({"probabilities": np.array([0.2, 0.8], np.float32), "label": 0}, "not the most probable"),
])
def test_classification_outputs_are_checked(output, message):
    import medkd.methods  # noqa: F401  # registers the classification kind

    check_output("classification", {"probabilities": np.array([0.2, 0.8], np.float32), "label": 1}, None)
    with pytest.raises(ValueError, match=message):
        check_output("classification", output, None)


def test_classification_inputs_are_images_or_dicts_with_an_image():
    import medkd.methods  # noqa: F401

    prepared = get_kind("classification").prepare({"image": [[1, 2], [3, 4]], "site": 3})
    assert prepared["image"].dtype == np.float32 and prepared["metadata"] == {"site": "3"}
    with pytest.raises(ValueError, match="needs an 'image' entry"):
        get_kind("classification").prepare({"img": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="at least 2 axes"):
        get_kind("classification").prepare(np.zeros(4))
