# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.nets.classifiers: 2-D/3-D shapes, parameter counts, tap names and argument checks."""

from __future__ import annotations

import pytest
import torch

from medkd.nets import KDCNN, count_parameters, create_net, net_task
from medkd.nets.contracts import check_classification_net, spatial_dims

NAMES = ["kd_cnn", "kd_cnn_wide", "monai_resnet10", "monai_resnet18"]


@pytest.mark.parametrize("name", NAMES)
def test_registered_as_classification(name: str) -> None:
    assert net_task(name) == "classification"


@pytest.mark.parametrize(
    "name, dims, shape",
    [
        ("kd_cnn", 2, (3, 2, 64, 64)),
        ("kd_cnn", 2, (2, 2, 24, 40)),  # any size, not only powers of two
        ("kd_cnn", 3, (2, 2, 16, 16, 16)),
        ("kd_cnn_wide", 2, (2, 2, 32, 32)),
        ("kd_cnn_wide", 3, (2, 2, 8, 16, 16)),
        ("monai_resnet10", 2, (2, 2, 64, 64)),
        ("monai_resnet10", 3, (2, 2, 16, 16, 16)),
        ("monai_resnet18", 2, (2, 2, 32, 32)),
        ("monai_resnet18", 3, (2, 2, 16, 16, 16)),
    ],
)
def test_shapes_2d_3d(name: str, dims: int, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = create_net(name, in_channels=2, num_classes=4, spatial_dims=dims).train()
    assert spatial_dims(net) == dims
    check_classification_net(net, torch.randn(shape), num_classes=4)  # forward, shape (B, 4), backward
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(shape)[:1]).shape == (1, 4)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("kd_cnn", {}, 294_357),  # the ~0.3 M SynthLesion-2D student (spec distillation_plugins.md §5)
        ("kd_cnn", {"in_channels": 1, "num_classes": 5, "spatial_dims": 2, "width": 16, "depth": 4}, 294_357),
        ("kd_cnn", {"spatial_dims": 3}, 879_861),
        ("kd_cnn", {"width": 8, "depth": 3}, 18_317),
        ("kd_cnn_wide", {}, 2_638_709),
        ("monai_resnet18", {}, 11_173_701),  # the ~11 M teacher (spec §5)
        ("monai_resnet10", {}, 4_902_981),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert count_parameters(create_net(name, **kwargs)) == expected


@pytest.mark.parametrize("name, depth", [("kd_cnn", 4), ("kd_cnn_wide", 4), ("kd_cnn", 2)])
def test_tap_names_and_stage_shapes(name: str, depth: int) -> None:
    net = create_net(name, depth=depth).eval()
    modules = dict(net.named_modules())
    assert {f"stages.{i}" for i in range(depth)} | {"pool", "head"} <= set(modules)
    assert f"stages.{depth}" not in modules
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        modules[n].register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
        for n in [f"stages.{i}" for i in range(depth)] + ["pool"]
    ]
    with torch.no_grad():
        net(torch.rand(2, 1, 64, 64))
    for hook in hooks:
        hook.remove()
    for i, width in enumerate(net.widths):
        assert shapes[f"stages.{i}"] == (2, width, 64 // 2**i, 64 // 2**i)
    assert shapes["pool"] == (2, net.widths[-1])


def test_monai_resnet_tap_names() -> None:
    modules = dict(create_net("monai_resnet18").named_modules())
    assert {"layer1", "layer2", "layer3", "layer4", "avgpool", "fc"} <= set(modules)


def test_kd_cnn_wide_is_same_family() -> None:
    small, wide = create_net("kd_cnn"), create_net("kd_cnn_wide")
    assert isinstance(small, KDCNN) and isinstance(wide, KDCNN)
    assert wide.widths == tuple(3 * w for w in small.widths)
    assert [n for n, _ in small.named_modules()] == [n for n, _ in wide.named_modules()]


def test_monai_kwargs_pass_through() -> None:
    net = create_net("monai_resnet18", in_channels=3, num_classes=2, conv1_t_stride=2, no_max_pool=True)
    assert net.conv1.stride == (2, 2) and net.conv1.in_channels == 3
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("kd_cnn", {"spatial_dims": 1}, "spatial_dims must be 2 or 3"),
        ("kd_cnn", {"width": 0}, "positive"),
        ("kd_cnn", {"depth": 0}, "positive"),
        ("kd_cnn_wide", {"num_classes": 0}, "positive"),
        ("monai_resnet18", {"spatial_dims": 4}, "spatial_dims must be 2 or 3"),
    ],
)
def test_bad_arguments_raise(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_net(name, **kwargs)
