# SPDX-License-Identifier: Apache-2.0
"""A 2D RetinaNet for lesion detection on CPU: MONAI's ``RetinaNet`` / ``RetinaNetDetector`` with a ResNet-FPN
extractor, ATSS matching, hard-negative sampling and a sigmoid focal loss that takes soft targets and per-anchor
weights (Grounded Teacher spec sections 2.3 "On RetinaNet" and 7).

Registered as ``retinanet2d`` (task ``detection``). Boxes in and out are ``(x_min, y_min, x_max, y_max)`` in pixels
with **x = column**, y = row; MONAI's 2D boxes follow the tensor axes (dim 0 = rows), so :class:`RetinaNet2D`
swaps the axes on the way in and out. Training hooks beyond MONAI's detector:

- ``soft_labels`` ``(N, K)`` per target box: the classification target of the anchors matched to that box;
- ``regress=False``: classification only (the box loss is returned as a constant 0, with no gradient);
- ``anchor_weights(g, p) -> (M,)``: a weight per positive anchor, ``g`` its box's class, ``p`` the argmax of its
  sigmoid scores (-1 when below 0.5);
- ``net.last_pairs``: the ``(M, 2)`` ``(g, p)`` pairs of the last training forward (all positive anchors).

MONAI (and torchvision, for ``extractor="torchvision"``) is imported when a network is built, not by
``import medkd.nets``.

Example:
    >>> import torch
    >>> net = retinanet2d(num_classes=2, backbone="resnet10", extractor="plain")
    >>> target = {"boxes": torch.tensor([[8.0, 20.0, 40.0, 32.0]]), "labels": torch.tensor([1])}
    >>> sorted(net.train()(torch.rand(1, 1, 64, 64), [target]))
    ['box_regression', 'classification']
    >>> tuple(net.last_pairs.shape[1:])
    (2,)
    >>> sorted(net.eval()(torch.rand(1, 1, 64, 64))[0])
    ['boxes', 'labels', 'scores']
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from medkd.keys import Keys
from medkd.nets.factory import register_net
from medkd.nets.retinanet_loss import anchor_pairs, soft_sigmoid_focal_loss
from medkd.registry import resolve_option

__all__ = [
    "SOFT_LABELS",
    "AnchorWeights",
    "Backbone",
    "Extractor",
    "PlainBackboneWithFPN",
    "RetinaNet2D",
    "retinanet2d",
    "swap_box_axes",
]

logger = logging.getLogger(__name__)

SOFT_LABELS = "soft_labels"
"""Target key of the optional ``(N, K)`` soft classification targets, one row per box."""

AnchorWeights = Callable[[Tensor, Tensor], Tensor]
"""``(g (M,) long, p (M,) long) -> (M,)`` weight per positive anchor."""

_SWAP = [1, 0, 3, 2]
_RETURNED_LAYERS = (1, 2)  # ResNet layer1 (stride 4) and layer2 (stride 8), plus a max-pooled level (stride 16)
_FEATURE_MAP_SCALES = (1, 2, 4)  # anchor shapes on the three levels: anchor_sizes * scale
_SIZE_DIVISIBLE = 16


class Backbone(StrEnum):
    """The ResNet depth: ``resnet10`` (one basic block per stage) or ``resnet18`` (two)."""

    RESNET10 = "resnet10"
    RESNET18 = "resnet18"

    @property
    def layers(self) -> list[int]:
        return [1, 1, 1, 1] if self is Backbone.RESNET10 else [2, 2, 2, 2]


class Extractor(StrEnum):
    """How the ResNet's stages feed the FPN: MONAI's ``BackboneWithFPN`` (needs torchvision) or ``plain`` (the same
    modules and state-dict keys without torchvision)."""

    TORCHVISION = "torchvision"
    PLAIN = "plain"


def swap_box_axes(boxes: Tensor) -> Tensor:
    """Between medkd's 2D boxes (x = column first) and MONAI's (tensor axis 0 = row first); its own inverse.

    Example:
        >>> swap_box_axes(torch.tensor([[1.0, 2.0, 3.0, 4.0]])).tolist()
        [[2.0, 1.0, 4.0, 3.0]]
    """
    return boxes[..., _SWAP]


class PlainBackboneWithFPN(nn.Module):
    """A ResNet's stem and stages ``layer1..layerN`` followed by an FPN, without torchvision.

    The same modules under the same names as MONAI's ``BackboneWithFPN`` (``body.conv1``, ..., ``fpn.*``), so the
    state dicts of the two extractors are interchangeable.

    Args:
        backbone: a MONAI ``ResNet``.
        returned_layers: the ResNet stages whose outputs feed the FPN, e.g. ``(1, 2)``.
        fpn: a MONAI ``FeaturePyramidNetwork`` taking those stages' outputs.
        out_channels: the FPN's channels.
    """

    def __init__(self, backbone: nn.Module, returned_layers: Sequence[int], fpn: nn.Module, out_channels: int) -> None:
        super().__init__()
        last = f"layer{max(returned_layers)}"
        body: OrderedDict[str, nn.Module] = OrderedDict()
        for name, module in backbone.named_children():
            body[name] = module
            if name == last:
                break
        self.body = nn.ModuleDict(body)
        self.return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
        self.fpn = fpn
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, C, H, W)`` -> the FPN's feature maps, highest resolution first."""
        features: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.body.items():
            x = module(x)
            if name in self.return_layers:
                features[self.return_layers[name]] = x
        out: dict[str, Tensor] = self.fpn(features)
        return out


def _feature_extractor(backbone: Backbone, extractor: Extractor, in_channels: int, fpn_channels: int,
                       **resnet_kwargs: Any) -> nn.Module:  # fmt: skip
    from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
    from monai.networks.nets import resnet

    options: dict[str, Any] = {"block_inplanes": resnet.get_inplanes(), "conv1_t_stride": 2, "conv1_t_size": 7}
    options.update(resnet_kwargs)
    net = resnet.ResNet(block="basic", layers=backbone.layers, n_input_channels=in_channels, spatial_dims=2, **options)
    in_channels_list = [net.in_planes // 8 * 2 ** (k - 1) for k in _RETURNED_LAYERS]  # as MONAI's _resnet_fpn_extractor
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(_RETURNED_LAYERS)}
    if extractor is Extractor.TORCHVISION:
        from monai.networks.blocks.backbone_fpn_utils import BackboneWithFPN

        return BackboneWithFPN(net, return_layers, in_channels_list, fpn_channels, spatial_dims=2)
    fpn = FeaturePyramidNetwork(2, in_channels_list, fpn_channels, extra_blocks=LastLevelMaxPool(2))
    return PlainBackboneWithFPN(net, _RETURNED_LAYERS, fpn, fpn_channels)


@functools.cache
def _detector_class() -> type:
    """``GTRetinaNetDetector``: MONAI's ``RetinaNetDetector`` with soft targets, anchor weights and ``(g, p)`` pairs.

    Defined on first use so that ``import medkd.nets`` does not import MONAI's detection package; reachable as
    ``medkd.nets.retinanet.GTRetinaNetDetector`` (so pickling works).
    """
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
    from monai.apps.detection.utils.hard_negative_sampler import HardNegativeSampler

    class GTRetinaNetDetector(RetinaNetDetector):  # type: ignore[misc]
        """MONAI's detector whose classification loss takes soft targets and per-anchor weights.

        Overrides ``compute_anchor_matched_idxs`` (ATSS without torchvision's ``Matcher``), ``compute_cls_loss``
        (soft targets, weights, ``(g, p)`` pairs, soft-target focal loss over the hard-negative sample) and
        ``compute_box_loss`` (0 when ``regress`` is off). Boxes are in MONAI's convention (tensor axes).
        """

        def __init__(self, *args: Any, focal_gamma: float = 2.0, focal_alpha: float | None = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.focal_gamma = float(focal_gamma)
            self.focal_alpha = focal_alpha
            self.regress = True
            self.anchor_weights: AnchorWeights | None = None
            self.last_pairs = torch.zeros((0, 2), dtype=torch.long)

        def compute_anchor_matched_idxs(
            self, anchors: list[Tensor], targets: list[dict[str, Tensor]], num_anchor_locs_per_level: Sequence[int]
        ) -> list[Tensor]:
            if not isinstance(self.proposal_matcher, ATSSMatcher):
                return super().compute_anchor_matched_idxs(anchors, targets, num_anchor_locs_per_level)
            matched = []
            for anchors_i, target in zip(anchors, targets, strict=True):
                boxes = target[self.target_box_key].to(anchors_i.device)
                if boxes.numel() == 0:
                    matched.append(torch.full((anchors_i.shape[0],), -1, dtype=torch.long, device=anchors_i.device))
                    continue
                _, idx = self.proposal_matcher(boxes, anchors_i, num_anchor_locs_per_level, self.num_anchors_per_loc)
                matched.append(idx.to(anchors_i.device))
            return matched

        def compute_cls_loss(
            self, cls_logits: Tensor, targets: list[dict[str, Tensor]], matched_idxs: list[Tensor]
        ) -> Tensor:
            """Mean soft focal loss over the sampled anchors and classes; positives weighted by ``anchor_weights``.

            Args:
                cls_logits: ``(B, A, K)`` logits.
                targets: per image ``boxes``, ``labels`` and optionally ``soft_labels`` ``(N, K)``.
                matched_idxs: per image ``(A,)`` matched box index (negative: background or ignored).
            """
            if not torch.isfinite(cls_logits).all():  # as MONAI: an error when training, else a warning
                if torch.is_grad_enabled():
                    raise ValueError("NaN or Inf in predicted classification logits.")
                logger.warning("NaN or Inf in predicted classification logits.")
            num_classes = cls_logits.shape[-1]
            matched = torch.stack(matched_idxs).to(cls_logits.device)  # (B, A)
            positive = matched >= 0
            hard, soft = [], []
            for target, idx in zip(targets, matched, strict=True):  # per image: gather the matched boxes' classes
                box_idx = idx[idx >= 0]
                labels = target[self.target_label_key].to(cls_logits.device)[box_idx]
                hard.append(labels)
                rows = target.get(SOFT_LABELS)
                soft.append(
                    rows.to(cls_logits.device, cls_logits.dtype)[box_idx]
                    if rows is not None
                    else nn.functional.one_hot(labels, num_classes).to(cls_logits.dtype)
                )
            gt = torch.cat(hard)
            pos_logits = cls_logits[positive]  # (M, K), same order as the per-image concatenation
            self.last_pairs = anchor_pairs(pos_logits, gt)
            weights = torch.ones(matched.shape, dtype=cls_logits.dtype, device=cls_logits.device)
            if self.anchor_weights is not None:
                w = torch.as_tensor(self.anchor_weights(self.last_pairs[:, 0], self.last_pairs[:, 1]))
                if w.shape != (gt.shape[0],):
                    raise ValueError(f"anchor_weights returned shape {tuple(w.shape)}, expected ({gt.shape[0]},)")
                weights[positive] = w.detach().to(weights)
            target_cls = torch.zeros_like(cls_logits)
            target_cls[positive] = torch.cat(soft)
            selected = self._sample(cls_logits, matched)
            losses = soft_sigmoid_focal_loss(
                cls_logits[selected], target_cls[selected], gamma=self.focal_gamma, alpha=self.focal_alpha
            )
            return (losses * weights[selected].unsqueeze(-1)).sum() / max(losses.numel(), 1)

        def _sample(self, cls_logits: Tensor, matched: Tensor) -> Tensor:
            """``(B, A)`` mask of the anchors in the loss: MONAI's hard-negative sample (positives at random up to
            the positive fraction, negatives from the highest-scoring pool), else all but the ignored ones."""
            if not isinstance(self.fg_bg_sampler, HardNegativeSampler):
                return matched != self.proposal_matcher.BETWEEN_THRESHOLDS
            max_logits = cls_logits.detach().float().max(dim=-1).values
            pos, neg = self.fg_bg_sampler.select_samples_img_list(list(matched + 1), list(max_logits))
            return (torch.stack(pos) + torch.stack(neg)) > 0

        def compute_box_loss(
            self, box_regression: Tensor, targets: list[dict[str, Tensor]], anchors: list[Tensor],
            matched_idxs: list[Tensor],
        ) -> Tensor:  # fmt: skip
            if not self.regress:
                return box_regression.new_zeros(())
            loss: Tensor = super().compute_box_loss(box_regression, targets, anchors, matched_idxs)
            return loss.to(box_regression.device)

    GTRetinaNetDetector.__module__ = __name__
    GTRetinaNetDetector.__qualname__ = "GTRetinaNetDetector"
    return GTRetinaNetDetector


def __getattr__(name: str) -> Any:
    if name == "GTRetinaNetDetector":
        return _detector_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def _quiet_root_info() -> Iterator[None]:
    """Hide INFO records (and below) of every logger for the block, restoring the previous setting."""
    previous = logging.root.manager.disable
    logging.disable(max(previous, logging.INFO))
    try:
        yield
    finally:
        logging.disable(previous)


class RetinaNet2D(nn.Module):
    """2D RetinaNet (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017) on MONAI's detector, with the
    hooks Grounded Teacher needs; boxes are ``(x_min, y_min, x_max, y_max)`` pixels, x = column.

    Architecture: ResNet10/18 stem, ``layer1`` (stride 4) and ``layer2`` (stride 8) into a ``fpn_channels`` FPN plus a
    max-pooled level (stride 16); square anchors ``anchor_sizes`` on the finest level and ``2x``, ``4x`` those on the
    next two (8..64 px by default, 3 per location); ATSS matching; hard-negative sampling; focal loss; smooth-L1 box
    regression. Inputs are padded to a multiple of 16.

    Args:
        in_channels: image channels.
        num_classes: foreground classes ``K`` (labels ``0..K-1``).
        backbone: ``resnet10`` or ``resnet18``.
        extractor: ``torchvision`` (MONAI's ``BackboneWithFPN``) or ``plain`` (no torchvision, same state dict).
        fpn_channels: FPN width.
        anchor_sizes: square anchor sides on the finest level, in input pixels.
        score_threshold, nms_threshold, detections_per_image: eval decoding (score filter, NMS IoU, top-k).
        atss_candidates: ATSS candidates per level and anchor shape.
        negatives_per_image: anchors per image in the classification loss (MONAI's ``batch_size_per_image``).
        positive_fraction: at most this fraction of them positive.
        focal_gamma, focal_alpha: focal loss parameters.
        dense_output: an ``eval()`` forward of a ``(B, C, H, W)`` tensor returns the raw head outputs
            ``(B, K + 4, A)`` (per anchor: ``K`` class logits, then 4 box-regression deltas) instead of detections,
            as MONAI's ``verify_net_in_out`` and bundle inferers expect a tensor; a list of images, and
            :meth:`detect`, always give detections. The state dict is the same either way.
        **resnet_kwargs: further ``monai.networks.nets.resnet.ResNet`` arguments (``norm``, ``block_inplanes``, ...).

    Raises:
        ValueError: unknown backbone or extractor, or a non-positive count.
    """

    target_box_key = Keys.BOXES.value
    target_label_key = Keys.LABELS.value
    pred_score_key = Keys.SCORES.value

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        *,
        backbone: str | Backbone = Backbone.RESNET18,
        extractor: str | Extractor = Extractor.TORCHVISION,
        fpn_channels: int = 64,
        anchor_sizes: Sequence[float] = (8, 12, 16),
        score_threshold: float = 0.05,
        nms_threshold: float = 0.22,
        detections_per_image: int = 100,
        atss_candidates: int = 4,
        negatives_per_image: int = 64,
        positive_fraction: float = 0.3,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        dense_output: bool = False,
        **resnet_kwargs: Any,
    ) -> None:
        super().__init__()
        self.dense_output = bool(dense_output)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("fpn_channels", fpn_channels), ("negatives_per_image", negatives_per_image)):  # fmt: skip
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not anchor_sizes:
            raise ValueError("anchor_sizes is empty")
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.backbone = resolve_option(Backbone, backbone, "backbone", "Backbones")
        self.extractor = resolve_option(Extractor, extractor, "extractor", "Extractors")
        channels = int(fpn_channels)
        features = _feature_extractor(self.backbone, self.extractor, self.in_channels, channels, **resnet_kwargs)
        shapes = tuple((float(s), float(s)) for s in anchor_sizes)
        network = RetinaNet(2, self.num_classes, len(shapes), features, size_divisible=_SIZE_DIVISIBLE)
        anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=_FEATURE_MAP_SCALES, base_anchor_shapes=shapes)
        detector = _detector_class()(network, anchors, spatial_dims=2, focal_gamma=focal_gamma, focal_alpha=focal_alpha)
        with _quiet_root_info():  # MONAI announces both on the root logger at INFO
            detector.set_atss_matcher(num_candidates=int(atss_candidates), center_in_gt=False)
            detector.set_hard_negative_sampler(
                batch_size_per_image=int(negatives_per_image), positive_fraction=float(positive_fraction)
            )
        detector.set_target_keys(box_key=Keys.BOXES.value, label_key=Keys.LABELS.value)
        detector.pred_score_key = Keys.SCORES.value
        self.detector = detector
        self.set_decode(score_threshold, nms_threshold, detections_per_image)

    def set_decode(
        self, score_threshold: float = 0.05, nms_threshold: float = 0.22, detections_per_image: int = 100
    ) -> None:
        """Eval decoding: drop scores below ``score_threshold``, NMS at ``nms_threshold``, keep the top
        ``detections_per_image`` (1000 candidates per level before NMS)."""
        self.detector.set_box_selector_parameters(
            score_thresh=float(score_threshold), topk_candidates_per_level=1000, nms_thresh=float(nms_threshold),
            detections_per_img=int(detections_per_image),
        )  # fmt: skip

    @property
    def last_pairs(self) -> Tensor:
        """``(M, 2)`` long ``(g, p)`` over the positive anchors of the last training forward (all images)."""
        pairs: Tensor = self.detector.last_pairs
        return pairs

    def _monai_target(self, target: Mapping[str, Any], device: torch.device) -> dict[str, Tensor]:
        boxes = torch.as_tensor(target[Keys.BOXES], device=device).float().reshape(-1, 4)
        labels = torch.as_tensor(target[Keys.LABELS], device=device).long().reshape(-1)
        if labels.shape[0] != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {labels.shape[0]} labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {labels.tolist()}")
        out = {Keys.BOXES.value: swap_box_axes(boxes), Keys.LABELS.value: labels}
        if target.get(SOFT_LABELS) is not None:
            soft = torch.as_tensor(target[SOFT_LABELS], device=device).float()
            if tuple(soft.shape) != (boxes.shape[0], self.num_classes):
                raise ValueError(f"soft_labels {tuple(soft.shape)}, expected ({boxes.shape[0]}, {self.num_classes})")
            out[SOFT_LABELS] = soft
        return out

    def forward(
        self,
        images: Tensor | Sequence[Tensor],
        targets: Sequence[Mapping[str, Any]] | None = None,
        *,
        regress: bool = True,
        anchor_weights: AnchorWeights | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (``train()``) or detections (``eval()``).

        Args:
            images: ``(B, C, H, W)`` or a list of ``(C, H, W)``.
            targets: training only; per image ``boxes`` ``(N, 4)`` xyxy (x = column), ``labels`` ``(N,)`` in
                ``0..K-1``, optional ``soft_labels`` ``(N, K)`` (rows sum to 1). Not modified.
            regress: ``False``: classification only, ``box_regression`` is a constant 0.
            anchor_weights: ``(g, p) -> (M,)`` weight per positive anchor in the classification loss.

        Returns:
            Training: ``{"classification": loss, "box_regression": loss}``. Eval: per image ``boxes`` ``(n, 4)``
            xyxy input pixels (x = column), ``scores`` ``(n,)``, ``labels`` ``(n,)`` int64, best first.

        Raises:
            ValueError: training without targets, or malformed targets.
        """
        images = images if isinstance(images, Tensor) else list(images)
        if self.training:
            if targets is None:
                raise ValueError("training forward needs targets (one dict per image)")
            device = images.device if isinstance(images, Tensor) else images[0].device
            monai_targets = [self._monai_target(t, device) for t in targets]
            self.detector.regress, self.detector.anchor_weights = bool(regress), anchor_weights
            try:
                losses: dict[str, Tensor] = self.detector(images, monai_targets)
            finally:
                self.detector.regress, self.detector.anchor_weights = True, None
            return losses
        if self.dense_output and isinstance(images, Tensor):
            return self.dense(images)
        return self.detect(images)

    def dense(self, images: Tensor) -> Tensor:
        """Raw head outputs ``(B, K + 4, A)`` of a ``(B, C, H, W)`` batch (``H``, ``W`` multiples of 16): per anchor
        (levels finest first, then positions, then anchor shapes, MONAI's order) ``K`` class logits and the 4
        box-regression deltas."""
        head = self.detector.network(images)
        cls = self.detector._reshape_maps(head[self.detector.cls_key])
        box = self.detector._reshape_maps(head[self.detector.box_reg_key])
        return torch.cat([cls, box], dim=-1).permute(0, 2, 1)

    def detect(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image (``eval()`` decoding), whatever :attr:`dense_output` says; see :meth:`forward`."""
        images = images if isinstance(images, Tensor) else list(images)
        detections: list[dict[str, Tensor]] = self.detector(images)
        return [
            {
                Keys.BOXES.value: swap_box_axes(d[Keys.BOXES.value]),
                Keys.SCORES.value: d[Keys.SCORES.value],
                Keys.LABELS.value: d[Keys.LABELS.value].long(),
            }
            for d in detections
        ]


@register_net("retinanet2d", task="detection")
def retinanet2d(
    in_channels: int = 1,
    num_classes: int = 1,
    *,
    backbone: str = "resnet18",
    extractor: str = "torchvision",
    fpn_channels: int = 64,
    anchor_sizes: Sequence[float] = (8, 12, 16),
    score_threshold: float = 0.05,
    nms_threshold: float = 0.22,
    detections_per_image: int = 100,
    atss_candidates: int = 4,
    negatives_per_image: int = 64,
    positive_fraction: float = 0.3,
    dense_output: bool = False,
    **kwargs: Any,
) -> RetinaNet2D:
    """The Grounded Teacher detector (spec 2.4): 2D RetinaNet, ResNet10/18 + FPN 64, anchors 8/12/16 px on the
    finest of 3 levels, ATSS (4 candidates), 64 sampled anchors per image (0.3 positive), NMS 0.22; see
    :class:`RetinaNet2D` for the arguments (``**kwargs``: ``focal_gamma``, ``focal_alpha``, ResNet arguments).

    Example:
        >>> net = retinanet2d(num_classes=3, backbone="resnet10", extractor="plain")
        >>> net.num_classes, net.detector.num_anchors_per_loc
        (3, 3)
    """
    return RetinaNet2D(
        in_channels, num_classes, backbone=backbone, extractor=extractor, fpn_channels=fpn_channels,
        anchor_sizes=anchor_sizes, score_threshold=score_threshold, nms_threshold=nms_threshold,
        detections_per_image=detections_per_image, atss_candidates=atss_candidates,
        negatives_per_image=negatives_per_image, positive_fraction=positive_fraction, dense_output=dense_output,
        **kwargs,
    )  # fmt: skip
