# SPDX-License-Identifier: Apache-2.0
"""The ``sam`` expert: segment-anything (Kirillov et al., ICCV 2023) with a user-supplied checkpoint.

* ``auto``: ``SamAutomaticMaskGenerator`` over the whole image (run offline in stage E). SAM's ``bbox`` is XYWH with
  inclusive edges, so ``x2 = x + w + 1``; the score is ``predicted_iou``. Masks covering more than
  ``max_area_fraction`` of the image or fewer than ``min_area`` pixels are dropped; boxes with a score above
  ``score_threshold`` (``tau_e``) are kept. Labels are ``-1`` (class-agnostic).
* ``refine``: box prompts (teacher boxes with score >= ``prompt_min_score``, original pixels) through
  ``SamPredictor.predict(box=..., multimask_output=True)``; the mask with the best predicted IoU, its largest
  connected component and its tight box; the score is the predicted IoU and the class is the prompt's. A box is
  kept if its score is above ``score_threshold`` and its IoU with the prompt is at least ``min_prompt_iou``. Image
  embeddings are cached (LRU, ``cache_size`` images) by ``image_id``.

The image (``(H, W)`` float32) is windowed to its 1st-99th percentiles, scaled to uint8 and replicated to RGB.

Example:
    >>> import numpy as np
    >>> expert = SamExpert(None, arch="tiny", mode="refine", score_threshold=0.0, min_prompt_iou=0.0)
    >>> out = expert.predict(np.random.rand(40, 50).astype(np.float32), "a", np.array([[5.0, 5, 30, 25]]))
    >>> out.boxes.shape[1], bool((out.boxes[:, 2] <= 50).all())
    (4, True)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from enum import StrEnum
from os import PathLike
from typing import Any

import numpy as np
import torch
from monai.utils import optional_import

from medkd.data.box_views import normalise_intensity
from medkd.methods.grounded_teacher.experts.base import EXPERTS, ExpertBoxes
from medkd.methods.grounded_teacher.experts.mask_boxes import (
    box_iou_one,
    largest_component,
    mask_to_box,
    sam_bbox_to_xyxy,
)
from medkd.methods.grounded_teacher.experts.sam_build import SamDims, build_sam, load_sam
from medkd.registry import resolve_option

__all__ = ["SamExpert", "SamMode", "to_sam_rgb", "boxes_from_sam_masks", "refine_box"]

logger = logging.getLogger(__name__)

SamAutomaticMaskGenerator, _ = optional_import("segment_anything", name="SamAutomaticMaskGenerator")
SamPredictor, _ = optional_import("segment_anything", name="SamPredictor")


class SamMode(StrEnum):
    AUTO = "auto"
    REFINE = "refine"


def to_sam_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` intensities -> ``(H, W, 3)`` uint8 RGB (1st-99th percentile window, replicated)."""
    gray = np.asarray(image, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"expected a 2D image (H, W), got shape {gray.shape}")
    u8 = np.round(normalise_intensity(gray) * 255.0).astype(np.uint8)
    return np.repeat(u8[:, :, None], 3, axis=2)


def boxes_from_sam_masks(
    annotations: list[Mapping[str, Any]],
    image_hw: tuple[int, int],
    *,
    score_threshold: float,
    max_area_fraction: float = 0.25,
    min_area: int = 0,
) -> ExpertBoxes:
    """Expert boxes from ``SamAutomaticMaskGenerator.generate`` records (``bbox`` XYWH inclusive, ``area``,
    ``predicted_iou``): area filters, ``x2 = x + w + 1``, clipped to the image, score above the threshold."""
    h, w = int(image_hw[0]), int(image_hw[1])
    keep_boxes, keep_scores = [], []
    for ann in annotations:
        area = float(ann["area"])
        score = float(ann["predicted_iou"])
        if area > max_area_fraction * h * w or area < min_area or not score > score_threshold:
            continue
        box = sam_bbox_to_xyxy(ann["bbox"])
        box[0::2] = np.clip(box[0::2], 0, w)
        box[1::2] = np.clip(box[1::2], 0, h)
        if box[2] > box[0] and box[3] > box[1]:
            keep_boxes.append(box)
            keep_scores.append(min(max(score, 0.0), 1.0))
    n = len(keep_boxes)
    return ExpertBoxes(np.asarray(keep_boxes, np.float32).reshape(n, 4), np.asarray(keep_scores), np.full(n, -1))


def refine_box(
    masks: np.ndarray, iou_predictions: np.ndarray, prompt: np.ndarray, *, score_threshold: float, min_prompt_iou: float
) -> tuple[np.ndarray, float] | None:
    """The refined box of one prompt from SAM's multimask output, or ``None`` when it is rejected.

    Args:
        masks: ``(3, H, W)`` boolean masks (logits > 0) in original pixels.
        iou_predictions: ``(3,)`` predicted IoUs.
        prompt: the prompt box, xyxy.
        score_threshold: keep only a predicted IoU above this.
        min_prompt_iou: keep only a box overlapping the prompt at least this much.
    """
    best = int(np.argmax(iou_predictions))
    score = float(iou_predictions[best])
    if not score > score_threshold:
        return None
    box = mask_to_box(largest_component(masks[best]))
    if box is None or box_iou_one(box, prompt) < min_prompt_iou:
        return None
    return box, min(max(score, 0.0), 1.0)


def _prompts(prompt_boxes: Any, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Prompt boxes ``(M, 4)`` and their labels from an array, a detections dict or ExpertBoxes."""
    if prompt_boxes is None:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    if isinstance(prompt_boxes, ExpertBoxes):
        prompt_boxes = prompt_boxes.as_dict()
    if isinstance(prompt_boxes, Mapping):
        eb = ExpertBoxes(
            prompt_boxes["boxes"],
            prompt_boxes.get("scores", np.ones(len(prompt_boxes["boxes"]))),
            prompt_boxes.get("labels", np.full(len(prompt_boxes["boxes"]), -1)),
        )
        eb = eb.select(eb.scores >= min_score)
        return eb.boxes, eb.labels
    arr = prompt_boxes.detach().cpu().numpy() if hasattr(prompt_boxes, "detach") else prompt_boxes
    boxes = np.asarray(arr, np.float32).reshape(-1, 4)
    return boxes, np.full(len(boxes), -1, np.int64)


class SamExpert:
    """segment-anything as a GT expert (see the module docstring).

    Args:
        checkpoint: the user's SAM state dict (``.pth``); ``None`` keeps random weights (tests only; warned).
        arch: ``vit_b`` / ``vit_l`` / ``vit_h``, ``tiny``, a :class:`SamDims` or a dict of its fields.
        mode: ``auto`` or ``refine``.
        score_threshold: ``tau_e`` (0.8).
        points_per_side, points_per_batch, pred_iou_thresh, stability_score_thresh, box_nms_thresh,
            min_mask_region_area: ``SamAutomaticMaskGenerator`` parameters (``auto``); ``min_mask_region_area > 0``
            needs OpenCV.
        max_area_fraction: ``auto``: drop masks covering more of the image than this.
        min_area: ``auto``: drop masks with fewer pixels.
        prompt_min_score: ``refine``: smallest score of a prompt box.
        min_prompt_iou: ``refine``: smallest IoU of the refined box with its prompt.
        cache_size: ``refine``: image embeddings kept (LRU).
        device: torch device.

    Raises:
        DataError: the checkpoint is missing, unreadable or of another size or architecture.
        ValueError: unknown mode or architecture.
    """

    def __init__(
        self,
        checkpoint: str | PathLike[str] | None,
        arch: str | SamDims | dict[str, Any] = "vit_b",
        mode: str = "auto",
        *,
        score_threshold: float = 0.8,
        points_per_side: int = 16,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        box_nms_thresh: float = 0.7,
        min_mask_region_area: int = 0,
        max_area_fraction: float = 0.25,
        min_area: int = 0,
        prompt_min_score: float = 0.5,
        min_prompt_iou: float = 0.3,
        cache_size: int = 8,
        device: str = "cpu",
    ) -> None:
        self.mode = resolve_option(SamMode, mode, "SAM expert mode")
        if checkpoint is None:
            logger.warning("SAM expert without a checkpoint: random weights (for tests only)")
            self.model = build_sam(arch).to(device).eval()
        else:
            self.model = load_sam(checkpoint, arch, device=device)
        self.score_threshold = float(score_threshold)
        self.max_area_fraction = float(max_area_fraction)
        self.min_area = int(min_area)
        self.prompt_min_score = float(prompt_min_score)
        self.min_prompt_iou = float(min_prompt_iou)
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = OrderedDict()
        self.predictor = SamPredictor(self.model)
        self.generator = None
        if self.mode is SamMode.AUTO:
            self.generator = SamAutomaticMaskGenerator(
                self.model,
                points_per_side=points_per_side,
                points_per_batch=points_per_batch,
                pred_iou_thresh=pred_iou_thresh,
                stability_score_thresh=stability_score_thresh,
                box_nms_thresh=box_nms_thresh,
                min_mask_region_area=min_mask_region_area,
                output_mode="binary_mask",
            )

    @torch.no_grad()
    def predict(self, image: np.ndarray, image_id: str, prompt_boxes: Any = None) -> ExpertBoxes:
        """Expert boxes for one image in original pixels (``auto`` ignores ``prompt_boxes``)."""
        if self.mode is SamMode.AUTO:
            return self._auto(image)
        return self._refine(image, str(image_id), prompt_boxes)

    def _auto(self, image: np.ndarray) -> ExpertBoxes:
        assert self.generator is not None
        annotations = self.generator.generate(to_sam_rgb(image))
        return boxes_from_sam_masks(
            annotations,
            image.shape[:2],
            score_threshold=self.score_threshold,
            max_area_fraction=self.max_area_fraction,
            min_area=self.min_area,
        )

    def _set_image(self, image: np.ndarray, image_id: str) -> None:
        cached = self._cache.get(image_id)
        if cached is not None and cached[1] == tuple(image.shape[:2]):
            self._cache.move_to_end(image_id)
            features, original_size, input_size = cached
            self.predictor.reset_image()
            self.predictor.features = features
            self.predictor.original_size = original_size
            self.predictor.input_size = input_size
            self.predictor.is_image_set = True
            return
        self.predictor.set_image(to_sam_rgb(image))
        if self.cache_size:
            self._cache[image_id] = (
                self.predictor.features,
                tuple(self.predictor.original_size),
                tuple(self.predictor.input_size),
            )
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def _refine(self, image: np.ndarray, image_id: str, prompt_boxes: Any) -> ExpertBoxes:
        prompts, labels = _prompts(prompt_boxes, self.prompt_min_score)
        if len(prompts) == 0:
            return ExpertBoxes.empty()
        self._set_image(image, image_id)
        out_boxes, out_scores, out_labels = [], [], []
        for prompt, label in zip(prompts, labels):
            masks, ious, _ = self.predictor.predict(box=prompt, multimask_output=True)
            kept = refine_box(
                masks, ious, prompt, score_threshold=self.score_threshold, min_prompt_iou=self.min_prompt_iou
            )
            if kept is not None:
                out_boxes.append(kept[0])
                out_scores.append(kept[1])
                out_labels.append(label)
        n = len(out_boxes)
        boxes = np.asarray(out_boxes, np.float32).reshape(n, 4)
        return ExpertBoxes(boxes, np.asarray(out_scores), np.asarray(out_labels, np.int64))


@EXPERTS.register("sam")
def _sam_expert(checkpoint: str | PathLike[str] | None = None, **kwargs: Any) -> SamExpert:
    return SamExpert(checkpoint, **kwargs)
