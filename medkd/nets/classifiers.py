# SPDX-License-Identifier: Apache-2.0
"""Classification networks (task ``classification``) for knowledge distillation: a plain CNN family and MONAI's
ResNets.

* ``kd_cnn`` (:class:`KDCNN`): ``depth`` stages of two conv3x3-BN-ReLU blocks, widths ``width * 2**i``, stride-2
  downsampling at the start of every stage but the first, global average pooling and a linear head. With the
  defaults (2-D, width 16, depth 4, one input channel, five classes) it has 294,357 parameters: the ~0.3 M
  student of the SynthLesion-2D benchmark (spec ``distillation_plugins.md`` §5).
* ``kd_cnn_wide``: the same family with width 48 (2.6 M parameters), a teacher of the same architecture.
* ``monai_resnet18`` / ``monai_resnet10``: MONAI's ``ResNet`` (Hara et al., CVPR 2018, after He et al., CVPR 2016),
  2-D by default; ResNet-18 is the benchmark's ~11 M teacher. MONAI is imported when one is built.

All map ``(B, in_channels, *spatial)`` (``spatial`` = ``(H, W)`` or ``(D, H, W)``) to logits
``(B, num_classes)``. Module names are stable feature-tap paths (spec §1, ``FeatureTap``): ``stages.0`` ...
``stages.{depth-1}`` (``(B, width * 2**i, *spatial / 2**i)``), ``pool`` (``(B, C)``) and ``head`` for the CNNs;
``layer1`` ... ``layer4``, ``avgpool`` and ``fc`` for the ResNets.

Example:
    >>> import torch
    >>> from medkd.nets import count_parameters, create_net
    >>> net = create_net("kd_cnn", in_channels=1, num_classes=5)
    >>> net(torch.rand(2, 1, 64, 64)).shape, count_parameters(net)
    (torch.Size([2, 5]), 294357)
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from medkd.nets.factory import register_net

__all__ = ["GlobalAvgPool", "KDCNN", "kd_cnn", "kd_cnn_wide", "monai_resnet10", "monai_resnet18"]

logger = logging.getLogger(__name__)

_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[int, type[nn.Module]] = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


class GlobalAvgPool(nn.Module):
    """Mean over all spatial axes: ``(B, C, *spatial)`` -> ``(B, C)``, for 2-D and 3-D inputs alike.

    Example:
        >>> GlobalAvgPool()(torch.ones(2, 3, 4, 5, 6)).shape
        torch.Size([2, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=-1)


def _conv_bn_relu(spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        _CONV[spatial_dims](in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        _NORM[spatial_dims](out_channels),
        nn.ReLU(inplace=True),
    )


class KDCNN(nn.Module):
    """A plain VGG-style CNN classifier for 2-D ``(B, C, H, W)`` or 3-D ``(B, C, D, H, W)`` inputs.

    Stage ``i`` is two conv3x3-BN-ReLU blocks of width ``width * 2**i``; every stage after the first starts with a
    stride-2 convolution, so stage ``i`` works at ``1 / 2**i`` of the input resolution. Global average pooling and
    a linear layer give the logits. Any input size of at least ``2**(depth - 1)`` per axis is accepted.

    Args:
        in_channels: input channels.
        num_classes: output logits.
        spatial_dims: 2 or 3.
        width: channels of the first stage.
        depth: number of stages.

    Attributes:
        stages: ``nn.Sequential`` of the stages (tap names ``stages.0`` ... ``stages.{depth-1}``).
        pool: :class:`GlobalAvgPool`, output ``(B, width * 2**(depth-1))``.
        head: the linear classifier.
        widths: channels of each stage.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, or a non-positive size.

    Example:
        >>> net = KDCNN(1, 3, width=4, depth=2)
        >>> net.widths, net(torch.rand(1, 1, 16, 16)).shape
        ((4, 8), torch.Size([1, 3]))
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, width: int = 16,
                 depth: int = 4) -> None:
        super().__init__()
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if min(in_channels, num_classes, width, depth) < 1:
            raise ValueError(
                "in_channels, num_classes, width and depth must be positive, got "
                f"{in_channels}, {num_classes}, {width}, {depth}"
            )
        self.widths = tuple(width * 2**i for i in range(depth))
        stages, previous = [], in_channels
        for i, channels in enumerate(self.widths):
            stages.append(
                nn.Sequential(
                    _conv_bn_relu(spatial_dims, previous, channels, stride=1 if i == 0 else 2),
                    _conv_bn_relu(spatial_dims, channels, channels),
                )
            )
            previous = channels
        self.stages = nn.Sequential(*stages)
        self.pool = GlobalAvgPool()
        self.head = nn.Linear(previous, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of ``x`` ``(B, in_channels, *spatial)``."""
        return self.head(self.pool(self.stages(x)))


@register_net("kd_cnn", task="classification")
def kd_cnn(in_channels: int = 1, num_classes: int = 5, spatial_dims: int = 2, width: int = 16,
           depth: int = 4) -> nn.Module:
    """The small student CNN of the distillation benchmark (:class:`KDCNN`, ~0.3 M parameters in 2-D).

    Args:
        in_channels: input channels.
        num_classes: output logits.
        spatial_dims: 2 for ``(B, C, H, W)``, 3 for ``(B, C, D, H, W)``.
        width: channels of the first stage (doubled per stage).
        depth: number of stages.

    Returns:
        The :class:`KDCNN`.

    Example:
        >>> kd_cnn(1, 5, spatial_dims=3, width=4, depth=2)(torch.rand(2, 1, 8, 8, 8)).shape
        torch.Size([2, 5])
    """
    return KDCNN(in_channels, num_classes, spatial_dims=spatial_dims, width=width, depth=depth)


@register_net("kd_cnn_wide", task="classification")
def kd_cnn_wide(in_channels: int = 1, num_classes: int = 5, spatial_dims: int = 2, width: int = 48,
                depth: int = 4) -> nn.Module:
    """A teacher from the student's family: :class:`KDCNN` of width 48 (about 2.6 M parameters in 2-D).

    Args:
        in_channels: input channels.
        num_classes: output logits.
        spatial_dims: 2 or 3.
        width: channels of the first stage.
        depth: number of stages.

    Returns:
        The :class:`KDCNN`.

    Example:
        >>> kd_cnn_wide().widths
        (48, 96, 192, 384)
    """
    return KDCNN(in_channels, num_classes, spatial_dims=spatial_dims, width=width, depth=depth)


def _monai_resnet(variant: str, in_channels: int, num_classes: int, spatial_dims: int, **kwargs: Any) -> nn.Module:
    from monai.networks.nets import resnet

    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return getattr(resnet, variant)(
        spatial_dims=spatial_dims, n_input_channels=in_channels, num_classes=num_classes, **kwargs
    )


@register_net("monai_resnet18", task="classification")
def monai_resnet18(in_channels: int = 1, num_classes: int = 5, spatial_dims: int = 2, **kwargs: Any) -> nn.Module:
    """MONAI's ResNet-18 (basic blocks ``[2, 2, 2, 2]``, widths 64-512), the benchmark teacher.

    MONAI's defaults: a 7x7 stride-1 stem convolution then max pooling, so a 64x64 image reaches ``layer4`` at
    4x4. In 2-D with one input channel and five classes it has 11,173,701 parameters (33.2 M in 3-D).

    Args:
        in_channels: input channels (MONAI's ``n_input_channels``).
        num_classes: output logits.
        spatial_dims: 2 for ``(B, C, H, W)``, 3 for ``(B, C, D, H, W)``.
        **kwargs: further ``monai.networks.nets.ResNet`` arguments (``conv1_t_stride``, ``no_max_pool``,
            ``widen_factor``, ``norm``, ...).

    Returns:
        The ``monai.networks.nets.ResNet``.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3.

    Example:
        >>> monai_resnet18(1, 5).fc.out_features
        5
    """
    return _monai_resnet("resnet18", in_channels, num_classes, spatial_dims, **kwargs)


@register_net("monai_resnet10", task="classification")
def monai_resnet10(in_channels: int = 1, num_classes: int = 5, spatial_dims: int = 2, **kwargs: Any) -> nn.Module:
    """MONAI's ResNet-10 (basic blocks ``[1, 1, 1, 1]``, widths 64-512): 4.9 M parameters in 2-D, a mid-size
    teacher or a teacher-assistant between ``monai_resnet18`` and ``kd_cnn``.

    Args:
        in_channels: input channels (MONAI's ``n_input_channels``).
        num_classes: output logits.
        spatial_dims: 2 or 3.
        **kwargs: further ``monai.networks.nets.ResNet`` arguments.

    Returns:
        The ``monai.networks.nets.ResNet``.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3.

    Example:
        >>> monai_resnet10(3, 2, spatial_dims=3).conv1.in_channels
        3
    """
    return _monai_resnet("resnet10", in_channels, num_classes, spatial_dims, **kwargs)
