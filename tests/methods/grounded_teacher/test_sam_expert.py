# SPDX-License-Identifier: Apache-2.0
"""The SAM expert end to end on a tiny randomly initialised SAM (spec section 7): auto and refine run and give xyxy
boxes inside the image, thresholds filter, checkpoints round-trip, and a wrong checkpoint is a clear DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.errors import DataError
from medkd.methods.grounded_teacher.experts import SAM_DIMS, SamDims, SamExpert, build_sam, create_expert, load_sam
from medkd.methods.grounded_teacher.experts.sam_expert import to_sam_rgb


def _image(h: int = 48, w: int = 60, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 10.0, (h, w)).astype(np.float32)
    image[10:25, 15:35] += 80.0
    return image


def _inside(boxes: np.ndarray, h: int, w: int) -> bool:
    return bool(
        (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all() and (boxes[:, 2] <= w).all()
        and (boxes[:, 3] <= h).all() and (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    )


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    return path


def test_tiny_sam_size() -> None:
    sam = build_sam("tiny")
    assert sam.image_encoder.img_size == 64 and sam.prompt_encoder.embed_dim == 32
    assert sum(p.numel() for p in sam.parameters()) < 100_000


def test_input_windowing_to_rgb() -> None:
    rgb = to_sam_rgb(_image())
    assert rgb.shape == (48, 60, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.min() == 0 and rgb.max() == 255


def test_auto_end_to_end_and_threshold(tiny_checkpoint: Path) -> None:
    kwargs = dict(arch="tiny", mode="auto", points_per_side=4, pred_iou_thresh=-1e9, stability_score_thresh=0.0,
                  max_area_fraction=1.0)
    loose = SamExpert(tiny_checkpoint, score_threshold=-1.0, **kwargs)
    out = loose.predict(_image(), "a.png")
    assert len(out) >= 1 and out.boxes.dtype == np.float32 and _inside(out.boxes, 48, 60)
    assert out.labels.tolist() == [-1] * len(out) and ((out.scores >= 0) & (out.scores <= 1)).all()
    strict = SamExpert(tiny_checkpoint, score_threshold=1.0, **kwargs)  # no predicted IoU is above 1
    assert len(strict.predict(_image(), "a.png")) == 0


def test_refine_end_to_end_cache_and_threshold(tiny_checkpoint: Path) -> None:
    expert = create_expert("sam", checkpoint=tiny_checkpoint, arch="tiny", mode="refine", score_threshold=-1.0,
                           min_prompt_iou=0.0, cache_size=1)
    calls = []
    encoder = expert.model.image_encoder
    handle = encoder.register_forward_hook(lambda *args: calls.append(1))
    prompts = {"boxes": np.array([[15, 10, 35, 25], [2, 2, 20, 20]], np.float32),
               "scores": np.array([0.9, 0.6], np.float32), "labels": np.array([1, 0])}
    out = expert.predict(_image(), "a.png", prompts)
    assert len(out) >= 1 and _inside(out.boxes, 48, 60) and set(out.labels.tolist()) <= {0, 1}
    expert.predict(_image(), "a.png", prompts)
    assert len(calls) == 1  # the second call reuses the cached embedding
    expert.predict(_image(seed=1), "b.png", prompts)
    expert.predict(_image(), "a.png", prompts)
    assert len(calls) == 3  # cache_size 1: b evicted a
    handle.remove()
    assert len(expert.predict(_image(), "a.png", None)) == 0
    strict = SamExpert(tiny_checkpoint, arch="tiny", mode="refine", score_threshold=1.0)
    assert len(strict.predict(_image(), "a.png", prompts)) == 0


def test_checkpoint_round_trip(tiny_checkpoint: Path) -> None:
    saved = torch.load(tiny_checkpoint, weights_only=True)
    expert = SamExpert(tiny_checkpoint, arch="tiny", mode="refine")
    for key, value in expert.model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    wrapped = tiny_checkpoint.with_name("wrapped.pth")
    torch.save({"model": saved}, wrapped)
    torch.testing.assert_close(load_sam(wrapped, "tiny").state_dict()["mask_decoder.iou_token.weight"],
                               saved["mask_decoder.iou_token.weight"])


def test_wrong_checkpoints_are_data_errors(tmp_path: Path, tiny_checkpoint: Path) -> None:
    wider = SamDims(**{**SAM_DIMS["tiny"].__dict__, "encoder_dim": 48})
    wrong_size = tmp_path / "wider.pth"
    torch.save(build_sam(wider).state_dict(), wrong_size)
    with pytest.raises(DataError, match=r"wider\.pth: checkpoint does not fit SAM tiny: .* has shape \(.*48.*\) in the "
                                        r"file and \(.*32.*\) in the model"):
        SamExpert(wrong_size, arch="tiny")
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(1280, 3, 8, 8)
    looks_h = tmp_path / "looks_h.pth"
    torch.save(state, looks_h)
    with pytest.raises(DataError, match=r"the file looks like vit_h"):
        load_sam(looks_h, "tiny")
    state = torch.load(tiny_checkpoint, weights_only=True)
    state.pop("mask_decoder.iou_token.weight")
    missing = tmp_path / "missing.pth"
    torch.save(state, missing)
    with pytest.raises(DataError, match="missing key mask_decoder.iou_token.weight"):
        load_sam(missing, "tiny")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="garbage.pth: not a readable SAM checkpoint"):
        load_sam(garbage, "tiny")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(DataError, match="expected a state dict"):
        load_sam(tmp_path / "list.pth", "tiny")
    with pytest.raises(DataError, match="not found"):
        load_sam(tmp_path / "absent.pth", "tiny")
    with pytest.raises(ValueError, match="unknown SAM expert mode"):
        SamExpert(tiny_checkpoint, arch="tiny", mode="segment")
