# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.nets.retinanet (``retinanet2d``): contract, CPU training, box axes, soft targets, anchor
weights, classification-only losses, ``(g, p)`` pairs, copies and state dicts, both extractors."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medkd.nets import NetTask, create_net, list_nets, net_task
from medkd.nets.contracts import check_detection_net, check_registered_net, synthetic_detection_batch
from medkd.nets.retinanet import RetinaNet2D, swap_box_axes
from medkd.nets.retinanet_loss import anchor_pairs, soft_sigmoid_focal_loss

EXTRACTORS = ["torchvision", "plain"]
STEPS = 40


def _net(num_classes: int = 2, extractor: str = "plain", **kwargs: Any) -> RetinaNet2D:
    torch.manual_seed(0)
    net = create_net("retinanet2d", num_classes=num_classes, backbone="resnet10", extractor=extractor, **kwargs)
    assert isinstance(net, RetinaNet2D)
    return net


def _scene(size: int = 64) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Two images: a wide box (class 1) and a tall box (class 0) on the first, nothing on the second."""
    images = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(1)) * 0.2
    boxes = torch.tensor([[6.0, 10.0, 38.0, 22.0], [44.0, 30.0, 56.0, 60.0]])
    for x0, y0, x1, y1 in boxes.int().tolist():
        images[0, 0, y0:y1, x0:x1] += 0.8
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    return images, targets


def _losses(net: RetinaNet2D, images: torch.Tensor, targets: list[dict[str, Any]], seed: int = 0, **kwargs: Any):
    torch.manual_seed(seed)  # the hard-negative sampler draws at random
    return net.train()(images, targets, **kwargs)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    lo, hi = torch.maximum(a[:2], b[:2]), torch.minimum(a[2:], b[2:])
    inter = (hi - lo).clamp(min=0).prod()
    return float(inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter))


def test_registered_as_detection_with_spec_defaults() -> None:
    assert "retinanet2d" in list_nets(task="detection") and net_task("retinanet2d") is NetTask.DETECTION
    net = create_net("retinanet2d", num_classes=3)
    det = net.detector
    assert net.num_classes == 3 and net.backbone == "resnet18" and net.extractor == "torchvision"
    assert det.network.feature_map_channels == 64 and det.num_anchors_per_loc == 3
    assert det.proposal_matcher.num_candidates == 4 and not det.proposal_matcher.center_in_gt
    assert det.fg_bg_sampler.batch_size_per_image == 64 and det.fg_bg_sampler.positive_fraction == 0.3
    sel = det.box_selector
    assert (sel.score_thresh, sel.nms_thresh, sel.detections_per_img) == (0.05, 0.22, 100)
    # three levels, anchors 8/12/16 px on the finest (stride 4) and x2, x4 on the next two
    sides = [sorted({float(a[2] - a[0]) for a in cell}) for cell in det.anchor_generator.cell_anchors]
    assert sides == [[8, 12, 16], [16, 24, 32], [32, 48, 64]]


@pytest.mark.parametrize("kwargs, match", [({"backbone": "resnet50"}, "resnet10"), ({"extractor": "timm"}, "plain"),
                                           ({"fpn_channels": 0}, "fpn_channels")])  # fmt: skip
def test_bad_options_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_net("retinanet2d", num_classes=2, **kwargs)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_detector_cpu(extractor: str) -> None:
    """Spec test 1: both extractors, 2 training steps plus inference, and the registry's detection contract."""
    net = _net(2, extractor)
    images, targets = _scene()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for step in range(2):
        losses = _losses(net, images, targets, seed=step)
        assert set(losses) == {"classification", "box_regression"}
        assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    with torch.no_grad():
        dets = net.eval()(list(images))
    assert len(dets) == 2
    for d in dets:
        n = d["boxes"].shape[0]
        assert d["boxes"].shape == (n, 4) and d["scores"].shape == (n,) and d["labels"].dtype == torch.int64
        assert n <= 100 and bool((d["scores"] >= 0.05).all())
    images_c, targets_c = synthetic_detection_batch(2, size=(64, 64), num_classes=2)
    check_detection_net(net, images_c, targets_c, num_classes=2)
    losses, _ = check_registered_net("retinanet2d", extractor=extractor, backbone="resnet10")
    assert set(losses) == {"classification", "box_regression"}


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_wide_box_is_predicted_where_it_is(extractor: str) -> None:
    """Boxes are x = column: on a wide image (32 rows, 96 columns) a rectangle wider than tall is learnt and
    predicted in place; read with the axes swapped it would lie outside the image."""
    image = torch.zeros(1, 1, 32, 96)
    image[0, 0, 10:22, 12:76] = 1.0  # rows 10..22 (y), columns 12..76 (x)
    truth = torch.tensor([12.0, 10.0, 76.0, 22.0])
    net = _net(1, extractor)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(STEPS):
        losses = _losses(net, image, [{"boxes": truth[None], "labels": torch.tensor([0])}], seed=step)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    with torch.no_grad():
        det = net.eval()(image)[0]
    assert det["boxes"].shape[0] >= 1
    assert _iou(det["boxes"][0], truth) > 0.5, det["boxes"][:3]
    assert bool((det["boxes"][:, 2] <= 96).all() and (det["boxes"][:, 3] <= 32).all())


def test_output_boxes_follow_the_image_axes() -> None:
    """Every candidate box lies inside a (32 rows, 128 columns) image read as x = column, and some reach far
    beyond x = 32; the network's own (MONAI) boxes are the same with the axes swapped."""
    net = _net(2).eval()
    net.set_decode(score_threshold=0.0, nms_threshold=1.0, detections_per_image=1000)
    image = torch.rand(1, 1, 32, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        boxes = net(image)[0]["boxes"]
        raw = net.detector(image)[0]["boxes"]
    assert boxes.shape[0] > 100
    assert bool((boxes[:, [0, 2]] <= 128).all() and (boxes[:, [1, 3]] <= 32).all()) and boxes[:, 2].max() > 100
    torch.testing.assert_close(boxes, raw[:, [1, 0, 3, 2]])


def test_targets_are_not_modified_and_box_axes_swapped_for_monai() -> None:
    net = _net()
    images, targets = _scene()
    before = copy.deepcopy(targets)
    seen: list[list[dict[str, torch.Tensor]]] = []
    original = net.detector.compute_loss
    net.detector.compute_loss = lambda head, tg, *a: seen.append(tg) or original(head, tg, *a)
    _losses(net, images, targets)
    for t, b in zip(targets, before, strict=True):
        assert set(t) == set(b) and all(torch.equal(t[k], b[k]) for k in t)
    torch.testing.assert_close(seen[0][0]["boxes"], targets[0]["boxes"][:, [1, 0, 3, 2]])


def test_one_hot_soft_labels_reproduce_hard_labels_exactly() -> None:
    net = _net(3)
    images, targets = _scene()
    soft = [dict(t, soft_labels=nn.functional.one_hot(t["labels"], 3).float()) for t in targets]
    hard_losses, soft_losses = _losses(net, images, targets), _losses(net, images, soft)
    for key in hard_losses:
        assert torch.equal(hard_losses[key], soft_losses[key]), key
    mixed = [dict(soft[0], soft_labels=torch.tensor([[0.0, 0.7, 0.3], [1.0, 0.0, 0.0]])), soft[1]]
    assert not torch.equal(_losses(net, images, mixed)["classification"], hard_losses["classification"])


def test_hard_label_loss_matches_monai_focal_loss() -> None:
    """Without soft labels or weights the loss is MONAI's detector loss with ``FocalLoss(gamma=2, mean)``."""
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.losses import FocalLoss

    net = _net(2)
    det = net.detector
    captured: dict[str, Any] = {}
    ours = det.compute_cls_loss

    def spy(*args: Any) -> torch.Tensor:
        captured.update(args=args, rng=torch.get_rng_state())
        return ours(*args)

    det.compute_cls_loss = spy
    loss = _losses(net, *_scene())["classification"]
    det.cls_loss_func = FocalLoss(gamma=2.0, reduction="mean")
    torch.set_rng_state(captured["rng"])
    stock = RetinaNetDetector.compute_cls_loss(det, *captured["args"])
    torch.testing.assert_close(loss, stock)


def test_anchor_weights_scale_positive_anchors() -> None:
    net = _net(2)
    images, targets = _scene()

    def const(w: float):
        return lambda g, p: torch.full(g.shape, w)

    base = _losses(net, images, targets)["classification"]
    zero, one, two = (_losses(net, images, targets, anchor_weights=const(w))["classification"] for w in (0, 1, 2))
    torch.testing.assert_close(one, base)
    assert one - zero > 0  # the positives contribute
    torch.testing.assert_close(two - zero, 2 * (one - zero))
    # weights follow the pair: doubling only class-1 anchors adds their part once more
    only1 = _losses(net, images, targets, anchor_weights=lambda g, p: 1.0 + (g == 1).float())["classification"]
    no1 = _losses(net, images, targets, anchor_weights=lambda g, p: (g != 1).float())["classification"]
    torch.testing.assert_close(only1 - one, one - no1)
    with pytest.raises(ValueError, match="anchor_weights returned shape"):
        _losses(net, images, targets, anchor_weights=lambda g, p: torch.ones(1))


def test_regress_false_gives_zero_box_loss_without_gradient() -> None:
    net = _net(2)
    images, targets = _scene()
    assert _losses(net, images, targets)["box_regression"] > 0
    losses = _losses(net, images, targets, regress=False)
    assert losses["box_regression"].item() == 0 and not losses["box_regression"].requires_grad
    net.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    reg = list(net.detector.network.regression_head.parameters())
    assert all(p.grad is None for p in reg)
    assert net.detector.network.classification_head.cls_logits.weight.grad.abs().sum() > 0
    assert net.detector.regress and net.detector.anchor_weights is None  # the options do not stick


@pytest.mark.parametrize("logit, expected_p", [(4.0, 1), (-4.0, -1)])
def test_last_pairs_on_a_controlled_head(logit: float, expected_p: int) -> None:
    """Class 1 scores sigmoid(logit) and class 0 sigmoid(-4) at every anchor: p is 1, or background (-1)."""
    net = _net(2)
    head = net.detector.network.classification_head.cls_logits
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-4.0, logit] * net.detector.num_anchors_per_loc))
    images, targets = _scene()
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    _losses(net, images, targets, anchor_weights=lambda g, p: calls.append((g, p)) or torch.ones(g.shape))
    pairs = net.last_pairs
    assert pairs.dtype == torch.long and pairs.ndim == 2 and pairs.shape[1] == 2
    # expected: one pair per anchor that ATSS matches to a box, g = that box's class
    det = net.detector
    monai_targets = [{"boxes": swap_box_axes(t["boxes"]), "labels": t["labels"]} for t in targets]
    matched = det.compute_anchor_matched_idxs(det.anchors, monai_targets, [16 * 16, 8 * 8, 4 * 4])
    expected_g = torch.cat([t["labels"][m[m >= 0]] for t, m in zip(targets, matched, strict=True)])
    assert pairs.shape[0] == expected_g.shape[0] > 2
    assert torch.equal(pairs[:, 0], expected_g) and set(expected_g.tolist()) == {0, 1}
    assert bool((pairs[:, 1] == expected_p).all())
    assert len(calls) == 1 and torch.equal(torch.stack(calls[0], 1), pairs)


def test_soft_focal_loss_reduces_to_monai_focal_loss_and_is_minimal_at_target() -> None:
    from monai.losses.focal_loss import sigmoid_focal_loss

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 3, generator=gen) * 3
    hard = (torch.rand(50, 3, generator=gen) > 0.7).float()
    torch.testing.assert_close(soft_sigmoid_focal_loss(logits, hard), sigmoid_focal_loss(logits, hard, gamma=2.0))
    torch.testing.assert_close(
        soft_sigmoid_focal_loss(logits, hard, alpha=0.25), sigmoid_focal_loss(logits, hard, gamma=2.0, alpha=0.25)
    )
    y = torch.tensor([[0.3, 0.7]])
    x = torch.logit(y).requires_grad_()
    soft_sigmoid_focal_loss(x, y).sum().backward()
    assert x.grad.abs().max() < 1e-6
    pairs = anchor_pairs(torch.tensor([[3.0, -3.0], [-3.0, 0.1], [-3.0, -0.1]]), torch.tensor([1, 0, 1]))
    assert pairs.tolist() == [[1, 0], [0, 1], [1, -1]]


def test_bad_targets_raise() -> None:
    net = _net(2)
    images, _ = _scene()
    box = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    with pytest.raises(ValueError, match="labels must lie"):
        net.train()(images[:1], [{"boxes": box, "labels": torch.tensor([2])}])
    with pytest.raises(ValueError, match="soft_labels"):
        net.train()(images[:1], [{"boxes": box, "labels": torch.tensor([1]), "soft_labels": torch.ones(1, 3)}])
    with pytest.raises(ValueError, match="needs targets"):
        net.train()(images[:1])


def test_deepcopy_state_dict_and_extractors_round_trip() -> None:
    net = _net(2, "torchvision")
    images, targets = _scene()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step in range(3):  # move the weights and BN statistics off their initial values
        losses = _losses(net, images, targets, seed=step)
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    net.eval()
    net.set_decode(score_threshold=0.0, nms_threshold=0.5, detections_per_image=20)
    with torch.no_grad():
        ref = net(images)
    assert ref[0]["boxes"].shape[0] > 0

    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    plain = _net(2, "plain")
    assert list(plain.state_dict()) == list(net.state_dict())  # interchangeable extractors
    plain.load_state_dict(torch.load(buffer, weights_only=True))
    plain.set_decode(score_threshold=0.0, nms_threshold=0.5, detections_per_image=20)
    clone = copy.deepcopy(net)
    pickled = pickle.loads(pickle.dumps(net))
    for other in (clone, plain.eval(), pickled):
        with torch.no_grad():
            out = other(images)
        for a, b in zip(ref, out, strict=True):
            for key in ("boxes", "scores", "labels"):
                torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    clone.train()
    _losses(clone, images, targets)  # the copy trains on its own
    assert clone.last_pairs.shape[0] > 0 and net.last_pairs.shape != (0, 0)


def test_plain_extractor_needs_no_torchvision() -> None:
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import torch\n"
        "from medkd.nets import create_net\n"
        "net = create_net('retinanet2d', num_classes=2, backbone='resnet10', extractor='plain')\n"
        "t = {'boxes': torch.tensor([[4.0, 8.0, 30.0, 20.0]]), 'labels': torch.tensor([1])}\n"
        "sum(net.train()(torch.rand(1, 1, 64, 64), [t]).values()).backward()\n"
        "net.eval()(torch.rand(1, 1, 64, 64))\n"
        "assert 'torchvision' not in {m.split('.')[0] for m, v in sys.modules.items() if v is not None}\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
