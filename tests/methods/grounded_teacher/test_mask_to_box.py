# SPDX-License-Identifier: Apache-2.0
"""Masks to boxes: the exclusive-edge convention, SAM's inclusive XYWH (+1), and the expert filters on patched masks
(a randomly initialised SAM predicts nothing meaningful, so the masks are made by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.utils.amg import batched_mask_to_box, box_xyxy_to_xywh

from medkd.methods.grounded_teacher.experts import SamExpert
from medkd.methods.grounded_teacher.experts.mask_boxes import largest_component, mask_to_box, sam_bbox_to_xyxy
from medkd.methods.grounded_teacher.experts.sam_expert import boxes_from_sam_masks, refine_box


def _mask(hw: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros(hw, bool)
    for x1, y1, x2, y2 in rects:
        mask[y1:y2, x1:x2] = True
    return mask


@pytest.mark.parametrize("rect", [(2, 3, 9, 5), (0, 0, 1, 1), (5, 0, 40, 30), (39, 29, 40, 30)])
def test_sam_xywh_plus_one_matches_mask_box(rect: tuple[int, int, int, int]) -> None:
    mask = _mask((30, 40), rect)
    assert mask_to_box(mask).tolist() == [float(v) for v in rect]
    # SAM's own conversion (what SamAutomaticMaskGenerator writes to "bbox") is XYWH with inclusive edges
    sam_bbox = box_xyxy_to_xywh(batched_mask_to_box(torch.from_numpy(mask)[None])[0]).tolist()
    assert sam_bbox[2] == rect[2] - rect[0] - 1
    assert sam_bbox_to_xyxy(sam_bbox).tolist() == [float(v) for v in rect]


def test_empty_mask_and_largest_component() -> None:
    assert mask_to_box(np.zeros((5, 5), bool)) is None
    mask = _mask((20, 20), (1, 1, 4, 4), (8, 8, 15, 12))
    assert mask_to_box(largest_component(mask)).tolist() == [8.0, 8.0, 15.0, 12.0]
    assert mask_to_box(mask).tolist() == [1.0, 1.0, 15.0, 12.0]


def _ann(rect: tuple[int, int, int, int], score: float) -> dict:
    x1, y1, x2, y2 = rect
    return {"bbox": [x1, y1, x2 - x1 - 1, y2 - y1 - 1], "area": (x2 - x1) * (y2 - y1), "predicted_iou": score}


def test_auto_filters_on_patched_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    anns = [
        _ann((2, 2, 12, 10), 0.95),  # kept
        _ann((20, 20, 30, 30), 0.8),  # score not above 0.8
        _ann((0, 0, 40, 30), 0.99),  # covers the whole image (> 0.25)
        _ann((30, 5, 32, 7), 0.99),  # 4 pixels < min_area 5
        _ann((35, 25, 40, 30), 0.85),  # kept, touches the far edges
    ]
    expert = SamExpert(None, arch="tiny", mode="auto", score_threshold=0.8, min_area=5, points_per_side=2)
    monkeypatch.setattr(expert.generator, "generate", lambda image: anns)
    out = expert.predict(np.random.rand(30, 40).astype(np.float32), "img")
    assert out.boxes.tolist() == [[2.0, 2.0, 12.0, 10.0], [35.0, 25.0, 40.0, 30.0]]
    np.testing.assert_allclose(out.scores, [0.95, 0.85], rtol=1e-6)
    assert out.labels.tolist() == [-1, -1]
    direct = boxes_from_sam_masks(anns, (30, 40), score_threshold=0.0, max_area_fraction=1.0)
    assert len(direct) == 5


def test_refine_box_on_patched_masks() -> None:
    prompt = np.array([4.0, 4.0, 16.0, 14.0])
    masks = np.stack([
        _mask((30, 40), (0, 0, 40, 30)),
        _mask((30, 40), (5, 5, 15, 13), (30, 25, 32, 27)),  # best IoU prediction; a stray blob is dropped
        _mask((30, 40), (5, 5, 6, 6)),
    ])
    box, score = refine_box(masks, np.array([0.5, 0.9, 0.7]), prompt, score_threshold=0.8, min_prompt_iou=0.3)
    assert box.tolist() == [5.0, 5.0, 15.0, 13.0] and score == pytest.approx(0.9)
    assert refine_box(masks, np.array([0.5, 0.79, 0.7]), prompt, score_threshold=0.8, min_prompt_iou=0.3) is None
    # the best mask is far from its prompt: rejected by the prompt-IoU rule
    far = np.stack([_mask((30, 40), (30, 20, 38, 28))] * 3)
    assert refine_box(far, np.array([0.9, 0.9, 0.9]), prompt, score_threshold=0.8, min_prompt_iou=0.3) is None
    assert refine_box(np.zeros((3, 30, 40), bool), np.ones(3), prompt, score_threshold=0.0, min_prompt_iou=0.0) is None


def test_refine_expert_on_patched_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    expert = SamExpert(None, arch="tiny", mode="refine", score_threshold=0.8)
    mask = _mask((30, 40), (5, 5, 15, 13))
    monkeypatch.setattr(
        expert.predictor, "predict",
        lambda box, multimask_output: (np.stack([mask] * 3), np.array([0.2, 0.95, 0.3]), None),
    )
    teacher = {"boxes": np.array([[4, 4, 16, 14], [4, 4, 16, 14]], np.float32),
               "scores": np.array([0.9, 0.4], np.float32), "labels": np.array([1, 0])}
    out = expert.predict(np.random.rand(30, 40).astype(np.float32), "img", teacher)
    # the prompt scoring 0.4 (< 0.5) is not refined; the other inherits its class
    assert out.boxes.tolist() == [[5.0, 5.0, 15.0, 13.0]] and out.labels.tolist() == [1]
    np.testing.assert_allclose(out.scores, [0.95], rtol=1e-6)
