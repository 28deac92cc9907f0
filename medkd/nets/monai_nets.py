# SPDX-License-Identifier: Apache-2.0
"""MONAI networks under medkd registry names, with defaults chosen to sit beside the BCP reference networks.

MONAI is imported inside each factory, so ``import medkd.nets`` stays cheap; every factory takes ``in_channels``
and ``out_channels`` keywords so presets can swap networks by name, and passes further keywords to MONAI.

Example:
    >>> import torch
    >>> net = monai_basicunet(in_channels=1, out_channels=4)
    >>> net(torch.rand(1, 1, 32, 32)).shape
    torch.Size([1, 4, 32, 32])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from medkd.nets.factory import register_net

__all__ = ["monai_basicunet", "monai_unet", "monai_vnet"]

logger = logging.getLogger(__name__)


@register_net
def monai_basicunet(
    in_channels: int = 1,
    out_channels: int = 4,
    spatial_dims: int = 2,
    features: Sequence[int] = (16, 32, 64, 128, 256, 16),
    norm: str | tuple = "batch",
    dropout: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """MONAI ``BasicUNet``; the defaults give the MONAI-native counterpart of :func:`bcp_unet2d` (BCP spec §7).

    Differences from the PyMIC U-Net: transposed-conv upsampling, LeakyReLU slope 0.1, no encoder dropout.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        spatial_dims: 2 for (B, C, H, W) input, 3 for (B, C, H, W, D).
        features: six channel counts, the five levels then the last decoder stage.
        norm: MONAI norm name or ``(name, kwargs)``.
        dropout: dropout probability in every conv block.
        **kwargs: further ``monai.networks.nets.BasicUNet`` arguments (``act``, ``bias``, ``upsample``).

    Returns:
        The network, mapping (B, in_channels, *spatial) to logits (B, out_channels, *spatial); spatial sizes
        divisible by 16.

    Example:
        >>> monai_basicunet(1, 2, spatial_dims=3).final_conv.out_channels
        2
    """
    from monai.networks.nets import BasicUNet

    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        features=tuple(features),
        norm=norm,
        dropout=dropout,
        **kwargs,
    )


@register_net
def monai_unet(
    in_channels: int = 1,
    out_channels: int = 4,
    spatial_dims: int = 2,
    channels: Sequence[int] = (16, 32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2, 2),
    num_res_units: int = 2,
    norm: str | tuple = "batch",
    dropout: float = 0.0,
    **kwargs: Any,
) -> nn.Module:
    """MONAI ``UNet`` (residual units, strided convs) with widths matching :func:`bcp_unet2d`.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        spatial_dims: 2 for (B, C, H, W) input, 3 for (B, C, H, W, D).
        channels: channels per level.
        strides: downsampling stride between levels (``len(channels) - 1`` entries).
        num_res_units: residual units per block.
        norm: MONAI norm name or ``(name, kwargs)``.
        dropout: dropout probability.
        **kwargs: further ``monai.networks.nets.UNet`` arguments (``act``, ``kernel_size``, ...).

    Returns:
        The network, mapping (B, in_channels, *spatial) to logits (B, out_channels, *spatial); spatial sizes
        divisible by the product of ``strides``.

    Example:
        >>> net = monai_unet(1, 2, channels=(4, 8), strides=(2,))
        >>> type(net).__name__
        'UNet'
    """
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        norm=norm,
        dropout=dropout,
        **kwargs,
    )


@register_net
def monai_vnet(
    in_channels: int = 1,
    out_channels: int = 2,
    spatial_dims: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """MONAI ``VNet`` (Milletari et al., 3DV 2016) with MONAI's defaults.

    Note: this is the original, much larger V-Net: about 45.6 M parameters against 9.45 M for :func:`bcp_vnet`,
    so it is **not** comparable with the BCP/UA-MT results (BCP spec §7). ``in_channels`` must divide 16.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        spatial_dims: 3 for (B, C, H, W, D), 2 for (B, C, H, W).
        **kwargs: further ``monai.networks.nets.VNet`` arguments (``act``, ``dropout_prob``, ``bias``, ...).

    Returns:
        The network, mapping (B, in_channels, *spatial) to logits (B, out_channels, *spatial); spatial sizes
        divisible by 16.

    Example:
        >>> type(monai_vnet(1, 2)).__name__
        'VNet'
    """
    from monai.networks.nets import VNet

    return VNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)
