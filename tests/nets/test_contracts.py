# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.nets.contracts: each task's contract accepts conforming networks and rejects broken ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from medkd.keys import Keys
from medkd.nets import NETS, NetTask, register_net
from medkd.nets.contracts import (
    NET_CONTRACTS,
    NetContractError,
    check_classification_net,
    check_detection_net,
    check_registered_net,
    check_segmentation_net,
    check_video_encoder,
    detection_keys,
    synthetic_detection_batch,
)


class TinyDetector(nn.Module):
    """A torchvision-style 2D detector: K box proposals per image from pooled conv features.

    Training: ``net(images, targets)`` -> ``{"classification", "box_regression"}`` losses; eval: ``net(images)`` ->
    one ``{"boxes", "scores", "labels"}`` dict per image.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, proposals: int = 3, drop: str = "") -> None:
        super().__init__()
        self.num_classes, self.k, self.drop = num_classes, proposals, drop
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.boxes = nn.Linear(8, 4 * proposals)
        self.logits = nn.Linear(8, num_classes * proposals)

    def _heads(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(image[None]).flatten(1)
        h, w = image.shape[-2:]
        raw = torch.sigmoid(self.boxes(f)).view(self.k, 2, 2)  # (K, corner, yx-fraction)
        lo, hi = raw.min(dim=1).values, raw.max(dim=1).values
        scale = torch.tensor([w, h], dtype=image.dtype)
        return torch.cat([lo * scale, hi * scale], dim=1), self.logits(f).view(self.k, self.num_classes)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        if self.training:
            cls, reg = [], []
            for image, target in zip(images, targets or [], strict=True):
                boxes, logits = self._heads(image)
                n = min(self.k, len(target[Keys.BOXES]))
                cls.append(nn.functional.cross_entropy(logits[:n], target[Keys.LABELS][:n]))
                reg.append(nn.functional.smooth_l1_loss(boxes[:n], target[Keys.BOXES][:n]))
            return {"classification": torch.stack(cls).mean(), "box_regression": torch.stack(reg).mean()}
        out = []
        for image in images:
            boxes, logits = self._heads(image)
            scores, labels = logits.softmax(-1).max(-1)
            det = {"boxes": boxes, "scores": scores, "labels": labels}
            out.append({k: v for k, v in det.items() if k != self.drop})
        return out


class ClipEncoder(nn.Module):
    """Per-frame conv features, averaged over time (``per_frame=False``) or kept per frame."""

    def __init__(self, in_channels: int = 3, dim: int = 6, per_frame: bool = False, time_first: bool = True) -> None:
        super().__init__()
        self.per_frame, self.time_first = per_frame, time_first
        self.frame = nn.Sequential(nn.Conv2d(in_channels, dim, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if not self.time_first:  # a (B, C, T, H, W) encoder fed a (B, T, C, H, W) clip mixes time and channels
            clip = clip.transpose(1, 2)
        b, t = clip.shape[:2]
        f = self.frame(clip.flatten(0, 1)).view(b, t, -1)
        return f if self.per_frame else f.mean(1)


def _classifier(in_channels: int = 2, num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(NETS, "_items", dict(NETS._items))
    monkeypatch.setattr(NETS, "_meta", dict(NETS._meta))


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(
    "task, factory",
    [
        (NetTask.DETECTION, TinyDetector),
        (NetTask.CLASSIFICATION, _classifier),
        (NetTask.VIDEO_ENCODER, ClipEncoder),
        (NetTask.VIDEO_ENCODER, lambda in_channels=3: ClipEncoder(in_channels, per_frame=True)),
    ],
)
def test_registered_net_of_each_task_passes_the_sweep(task: NetTask, factory: Callable[..., nn.Module]) -> None:
    register_net("tiny_task_net", task=task)(factory)
    torch.manual_seed(0)
    out = check_registered_net("tiny_task_net")
    if task is NetTask.DETECTION:
        losses, detections = out
        assert set(losses) == {"classification", "box_regression"} and len(detections) == 2


def test_every_task_has_a_contract() -> None:
    assert set(NET_CONTRACTS) == set(NetTask)


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(
    "task, factory, match",
    [
        (NetTask.SEGMENTATION, lambda in_channels=2, out_channels=3: nn.Conv2d(in_channels, out_channels, 3), "output"),
        (NetTask.SEGMENTATION, lambda in_channels=2, out_channels=3: _classifier(in_channels, out_channels), "output"),
        (NetTask.CLASSIFICATION, lambda in_channels=2, num_classes=3: nn.Conv2d(in_channels, num_classes, 1), "output"),
        (
            NetTask.DETECTION,
            lambda in_channels=1, num_classes=2: TinyDetector(in_channels, num_classes, drop="scores"),
            "lack",
        ),
        (NetTask.VIDEO_ENCODER, lambda in_channels=3: ClipEncoder(in_channels, time_first=False), "Conv2d|channels"),
    ],
)
def test_sweep_rejects_a_net_breaking_its_task_contract(task: NetTask, factory: Callable, match: str) -> None:
    register_net("tiny_bad_net", task=task)(factory)
    with pytest.raises((NetContractError, RuntimeError), match=match):
        check_registered_net("tiny_bad_net")


def test_segmentation_contract_checks_gradients() -> None:
    net = nn.Conv2d(1, 2, 3, padding=1)
    check_segmentation_net(net, torch.randn(1, 1, 8, 8), out_channels=2)
    net.requires_grad_(False)
    with pytest.raises(NetContractError, match="no parameter received a gradient"):
        check_segmentation_net(net, torch.randn(1, 1, 8, 8).requires_grad_(), out_channels=2)
    nan_net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Threshold(10.0, float("nan")))
    with pytest.raises(NetContractError, match="non-finite output"):
        check_segmentation_net(nan_net, torch.randn(1, 1, 8, 8), out_channels=2)


@pytest.mark.parametrize("per_frame, ok", [(None, True), (False, True), (True, False)])
def test_video_encoder_layout_choice(per_frame: bool | None, ok: bool) -> None:
    clip = torch.randn(2, 4, 3, 16, 16)
    if ok:
        assert check_video_encoder(ClipEncoder(), clip, per_frame=per_frame).shape == (2, 6)
    else:
        with pytest.raises(NetContractError, match=r"expected \(2, 4, D\)"):
            check_video_encoder(ClipEncoder(), clip, per_frame=per_frame)
    with pytest.raises(NetContractError, match=r"\(B, T, C, H, W\)"):
        check_video_encoder(ClipEncoder(), clip[:, 0], per_frame=per_frame)


def test_classification_contract_wrong_class_count() -> None:
    with pytest.raises(NetContractError, match=r"expected \(2, 5\)"):
        check_classification_net(_classifier(2, 3), torch.randn(2, 2, 8, 8), num_classes=5)


def test_detection_contract_rejects_bad_outputs() -> None:
    images, targets = synthetic_detection_batch(2, size=(32, 32))
    with pytest.raises(NetContractError, match="labels outside"):
        check_detection_net(TinyDetector(num_classes=3), images, targets, num_classes=1)
    with pytest.raises(NetContractError, match="one target dict per image"):
        check_detection_net(TinyDetector(), images, targets[:1])
    with pytest.raises(NetContractError, match="boxes"):  # 2D boxes are (K, 4): a 3D image wants (K, 6)
        check_detection_net(
            _ForgetsDims(),
            [torch.randn(1, 8, 8, 8)],
            [{"boxes": torch.zeros(0, 6), "labels": torch.zeros(0, dtype=torch.long)}],
        )


class _ForgetsDims(TinyDetector):
    def forward(self, images: list[torch.Tensor], targets: Any = None) -> Any:
        if self.training:
            return {"loss": self.boxes.weight.square().sum()}
        return [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}]


def test_synthetic_detection_batch_boxes_inside_images() -> None:
    images, targets = synthetic_detection_batch(4, in_channels=2, size=(40, 24, 16), num_classes=3, seed=1)
    for image, target in zip(images, targets, strict=True):
        boxes, labels = target["boxes"], target["labels"]
        assert image.shape == (2, 40, 24, 16) and boxes.shape[1] == 6 and labels.dtype == torch.int64
        assert (boxes[:, 3:] > boxes[:, :3]).all() and (boxes >= 0).all()
        assert (boxes[:, 3:] <= torch.tensor([40.0, 24.0, 16.0])).all() and ((labels >= 0) & (labels < 3)).all()


@pytest.mark.usefixtures("scratch_registry")
def test_monai_retinanet_detector_passes_detection_contract() -> None:
    """The contract is MONAI's detector interface: a RetinaNetDetector passes it with its own keys."""
    detection = pytest.importorskip("monai.apps.detection.networks.retinanet_detector")
    pytest.importorskip("torchvision")
    from monai.apps.detection.networks.retinanet_network import RetinaNet, resnet_fpn_feature_extractor
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet

    def tiny_retinanet(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
        backbone = resnet.ResNet(
            block="basic", layers=[1, 1, 1, 1], block_inplanes=[8, 16, 32, 64], n_input_channels=in_channels,
            spatial_dims=2, conv1_t_stride=2, conv1_t_size=7,
        )  # fmt: skip
        extractor = resnet_fpn_feature_extractor(backbone, 2, pretrained_backbone=False, returned_layers=[1, 2])
        network = RetinaNet(2, num_classes, 1, extractor, size_divisible=[8, 8])
        anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[1, 2, 4], base_anchor_shapes=((8, 8),))
        det = detection.RetinaNetDetector(network, anchors, spatial_dims=2, num_classes=num_classes, size_divisible=8)
        det.set_atss_matcher(num_candidates=4, center_in_gt=False)
        det.set_box_selector_parameters(score_thresh=0.0, topk_candidates_per_level=20, detections_per_img=5)
        return det

    register_net("tiny_monai_retinanet", task="detection")(tiny_retinanet)
    torch.manual_seed(0)
    assert detection_keys(tiny_retinanet()) == ("boxes", "labels", "labels_scores")
    losses, detections = check_registered_net("tiny_monai_retinanet")
    assert set(losses) == {"classification", "box_regression"}
    assert all(d["boxes"].shape[1] == 4 for d in detections)
