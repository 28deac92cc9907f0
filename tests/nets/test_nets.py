# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.nets: registry sweep, reference parameter counts, dropout behaviour and input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medkd.nets import (
    NETS,
    BCPUNet2d,
    BCPVNet,
    NetTask,
    VNetNorm,
    count_parameters,
    create_net,
    list_nets,
    net_task,
    register_net,
)
from medkd.nets.contracts import check_registered_net, spatial_dims

IN_CH, OUT_CH = 2, 3


def _input(dims: int) -> torch.Tensor:
    return torch.randn(2, IN_CH, 32, 32) if dims == 2 else torch.randn(1, IN_CH, 32, 32, 16)


@pytest.mark.parametrize("name", list_nets())
def test_registry_sweep_contract_per_task(name: str) -> None:
    """Every registered network (built-in or from a plugin) honours its task's contract, forward and backward."""
    torch.manual_seed(0)
    check_registered_net(name)


def test_builtin_nets_tasks() -> None:
    import medkd.methods.surgfutr.modules  # noqa: F401  (registers SurgFUTR's clip encoder, whatever ran before)

    classifiers = ["kd_cnn", "kd_cnn_wide", "monai_resnet10", "monai_resnet18", "salt_vit"]
    assert set(list_nets()) - set(list_nets(task="segmentation")) == {"retinanet2d", "salt_frames", "surgfutr_cnn",
                                                                       *classifiers}
    assert list_nets(task=NetTask.DETECTION) == ["retinanet2d"]
    assert list_nets(task="video_encoder") == ["salt_frames", "surgfutr_cnn"]
    assert list_nets(task="classification") == classifiers


@pytest.mark.parametrize("name", [n for n in list_nets(task="segmentation") if n != "monai_vnet"])
def test_channels_last_matches_contiguous(name: str) -> None:
    net = create_net(name, in_channels=IN_CH, out_channels=OUT_CH).eval()
    dims = spatial_dims(net)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    x = _input(dims)
    with torch.no_grad():
        ref = net(x)
        out = net.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("bcp_unet2d", {"in_channels": 1, "out_channels": 4}, 1_813_764),  # BCP spec §7, PyMIC UNet encoder+decoder
        ("bcp_vnet", {"in_channels": 1, "out_channels": 2}, 9_448_866),  # BCP spec §7, UA-MT VNet encoder+decoder
        ("bcp_unet2d_half", {"in_channels": 1, "out_channels": 4}, 454_788),
        ("bcp_vnet_small", {"in_channels": 1, "out_channels": 2}, 2_364_434),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    net = create_net(name, **kwargs)
    assert count_parameters(net) == expected


def test_count_parameters_trainable_only() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == 11
    assert count_parameters(net, trainable_only=True) == 5


@pytest.mark.parametrize(
    "name, close", [("bcp_unet2", "bcp_unet2d"), ("bcp_vnett", "bcp_vnet"), ("monai_unet3d", "monai_unet")]
)
def test_unknown_name_suggests_close_match(name: str, close: str) -> None:
    with pytest.raises(KeyError, match=f"'{close}'"):
        create_net(name)


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by the test are dropped afterwards."""
    monkeypatch.setattr(NETS, "_items", dict(NETS._items))
    monkeypatch.setattr(NETS, "_meta", dict(NETS._meta))


@pytest.mark.usefixtures("scratch_registry")
def test_register_net_bare_and_named() -> None:

    @register_net
    def tiny_net(in_channels: int = 1, out_channels: int = 2) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 1)

    @register_net("tiny_named")
    def _factory(in_channels: int = 1, out_channels: int = 2) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 3)

    assert list_nets("tiny*") == ["tiny_named", "tiny_net"]
    assert create_net("tiny_net", in_channels=3, out_channels=5).weight.shape == (5, 3, 1, 1)
    assert create_net("tiny_named").kernel_size == (3, 3)
    assert net_task("tiny_net") is net_task("tiny_named") is NetTask.SEGMENTATION  # the default task


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize("task", list(NetTask))
def test_register_net_with_task_and_list_by_task(task: NetTask) -> None:
    @register_net("tiny_tasked", task=task.value)
    def _factory(in_channels: int = 1) -> nn.Module:
        return nn.Identity()

    assert net_task("tiny_tasked") is task
    assert NETS.meta("tiny_tasked") == {"task": task}
    assert list_nets("tiny_*", task=task) == ["tiny_tasked"]
    others = [t for t in NetTask if t is not task]
    assert all("tiny_tasked" not in list_nets(task=t) for t in others)
    assert create_net("tiny_tasked", in_channels=3)(torch.ones(1)).item() == 1.0  # create_net is unchanged


@pytest.mark.usefixtures("scratch_registry")
def test_plain_registry_entry_counts_as_segmentation() -> None:
    NETS.register("tiny_plain")(lambda in_channels=1, out_channels=2: nn.Conv2d(in_channels, out_channels, 1))
    assert net_task("tiny_plain") is NetTask.SEGMENTATION
    assert "tiny_plain" in list_nets(task="segmentation")


@pytest.mark.parametrize("task, close", [("detecton", "detection"), ("video_encodr", "video_encoder"), ("xyz", None)])
def test_unknown_task_raises(task: str, close: str | None) -> None:
    match = f"Did you mean '{close}'" if close else "Tasks: segmentation, detection"
    with pytest.raises(ValueError, match=match):
        register_net("never_registered", task=task)
    with pytest.raises(ValueError, match=match):
        list_nets(task=task)
    assert "never_registered" not in list_nets()


def test_list_nets_pattern() -> None:
    assert list_nets("bcp_*") == ["bcp_unet2d", "bcp_unet2d_half", "bcp_vnet", "bcp_vnet_small"]
    assert set(list_nets("monai_*")) >= {"monai_basicunet", "monai_unet"}
    assert list_nets("no_such_*") == []


def test_unet2d_dropout_layout() -> None:
    net = create_net("bcp_unet2d")
    probs = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    assert probs == [0.05, 0.1, 0.2, 0.3, 0.5, 0.0, 0.0, 0.0, 0.0]
    ups = [m for m in net.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 4 and all(u.mode == "bilinear" and u.align_corners for u in ups)
    assert net.head.kernel_size == (3, 3)


@pytest.mark.parametrize(
    "dropout, mode, same",
    [(True, "eval", True), (True, "train", False), (False, "train", True), (False, "eval", True)],
)
def test_vnet_dropout_train_only(dropout: bool, mode: str, same: bool) -> None:
    torch.manual_seed(0)
    net = getattr(create_net("bcp_vnet", dropout=dropout), mode)()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
    assert torch.equal(a, b) == same
    n_dropout = sum(isinstance(m, nn.Dropout3d) for m in net.modules())
    assert n_dropout == (2 if dropout else 0)


@pytest.mark.parametrize("norm", list(VNetNorm))
def test_vnet_normalizations(norm: VNetNorm) -> None:
    net = BCPVNet(1, 2, n_filters=4, normalization=norm.value).eval()
    out = net(torch.randn(1, 1, 32, 32, 32))  # instance norm needs a bottleneck larger than 1 voxel
    assert out.shape == (1, 2, 32, 32, 32)
    has_norm = any(isinstance(m, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)) for m in net.modules())
    assert has_norm == (norm is not VNetNorm.NONE)


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (BCPVNet, {"normalization": "batchnrom"}, "batchnorm"),
        (BCPVNet, {"n_filters": 0}, "positive"),
        (BCPUNet2d, {"features": (8, 16, 32), "dropout": (0.1, 0.2)}, "dropout has 2 entries"),
        (BCPUNet2d, {"features": (8,), "dropout": (0.1,)}, "two levels"),
        (BCPUNet2d, {"dropout": (0.0, 0.1, 0.2, 0.3, 1.0)}, r"\[0, 1\)"),
    ],
)
def test_bad_arguments_raise(factory: type[nn.Module], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("bcp_unet2d_half", (1, 1, 24, 32)),
        ("bcp_unet2d_half", (1, 1, 1, 32, 32)),
        ("bcp_vnet_small", (1, 1, 16, 16, 8)),
        ("bcp_vnet_small", (1, 1, 16, 16)),
    ],
)
def test_bad_input_shape_raises(name: str, shape: tuple[int, ...]) -> None:
    net = create_net(name).eval()
    with pytest.raises(ValueError, match="divisible by"):
        net(torch.randn(shape))


def test_unet2d_custom_depth_and_shapes() -> None:
    net = BCPUNet2d(3, 5, features=(4, 8, 16), dropout=(0.0, 0.1, 0.2)).eval()
    assert net.size_divisor == 4
    assert net(torch.randn(2, 3, 12, 20)).shape == (2, 5, 12, 20)
