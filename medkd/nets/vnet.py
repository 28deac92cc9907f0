# SPDX-License-Identifier: Apache-2.0
"""The 3D V-Net used by UA-MT and BCP on the Left Atrium data, re-implemented from its description.

Milletari et al., "V-Net", 3DV 2016, in the variant of Yu et al., "Uncertainty-aware Self-ensembling Model for
Semi-supervised 3D Left Atrium Segmentation" (UA-MT), MICCAI 2019, used unchanged by Bai et al. (BCP), CVPR 2023.

Layout with ``n`` filters: encoder levels of 1, 2, 3, 3, 3 conv3x3x3-norm-ReLU stages at n, 2n, 4n, 8n, 16n
channels, joined by stride-2 2x2x2 convs (+norm, ReLU); Dropout3d(0.5) on the bottleneck; decoder of stride-2
transposed convs (+norm, ReLU) whose output is **added** to the skip, then 3, 3, 2, 1 conv stages; Dropout3d(0.5)
and a 1x1x1 output conv. The dropouts are ``nn.Dropout3d`` modules, active only in ``train()`` mode. Only the
segmentation logits are returned (the reference's unused projection/contrastive heads are left out): 9,448,866
parameters for 1 -> 2 channels with 16 filters and batch norm.

Example:
    >>> import torch
    >>> net = bcp_vnet_small(in_channels=1, out_channels=2).eval()
    >>> net(torch.rand(1, 1, 16, 16, 16)).shape
    torch.Size([1, 2, 16, 16, 16])
"""

from __future__ import annotations

import logging
import math
from enum import StrEnum

import torch
from torch import nn

from medkd.nets.factory import register_net
from medkd.registry import resolve_option

__all__ = ["BCPVNet", "VNetNorm", "bcp_vnet", "bcp_vnet_small"]

logger = logging.getLogger(__name__)

_ENCODER_STAGES = (1, 2, 3, 3, 3)
_DECODER_STAGES = (3, 3, 2, 1)  # deepest decoder level first


class VNetNorm(StrEnum):
    """Normalisation after each V-Net conv; group norm uses up to 16 groups (16 in the reference)."""

    BATCH = "batchnorm"
    GROUP = "groupnorm"
    INSTANCE = "instancenorm"
    NONE = "none"

    @classmethod
    def resolve(cls, value: str | VNetNorm) -> VNetNorm:
        """Return the member for ``value``.

        Raises:
            ValueError: unknown option; the message names close matches and the allowed options.
        """
        return resolve_option(cls, value, "normalization", "Options")


def _norm(norm: VNetNorm, channels: int) -> list[nn.Module]:
    if norm is VNetNorm.BATCH:
        return [nn.BatchNorm3d(channels)]
    if norm is VNetNorm.GROUP:
        return [nn.GroupNorm(num_groups=math.gcd(16, channels), num_channels=channels)]
    if norm is VNetNorm.INSTANCE:
        return [nn.InstanceNorm3d(channels)]
    return []


def _conv_stages(n_stages: int, in_channels: int, out_channels: int, norm: VNetNorm) -> nn.Sequential:
    """``n_stages`` x (conv3x3x3-norm-ReLU), shape-preserving: (B, C_in, W, H, D) -> (B, C_out, W, H, D)."""
    layers: list[nn.Module] = []
    for i in range(n_stages):
        layers += [nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1)]
        layers += _norm(norm, out_channels) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _resample(in_channels: int, out_channels: int, norm: VNetNorm, up: bool) -> nn.Sequential:
    """Stride-2 2x2x2 conv (``up=False``, halves each size) or transposed conv (``up=True``, doubles), norm, ReLU."""
    conv_cls = nn.ConvTranspose3d if up else nn.Conv3d
    return nn.Sequential(
        conv_cls(in_channels, out_channels, kernel_size=2, stride=2), *_norm(norm, out_channels), nn.ReLU(inplace=True)
    )


class BCPVNet(nn.Module):
    """UA-MT V-Net (no residual blocks) with optional Dropout3d. Input and output are ``BCWHD``.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        n_filters: channels of the first level; level ``k`` has ``n_filters * 2**k``.
        normalization: one of ``"batchnorm"``, ``"groupnorm"``, ``"instancenorm"``, ``"none"``.
        dropout: add Dropout3d(0.5) on the bottleneck and before the output conv (train mode only).

    Raises:
        ValueError: unknown ``normalization`` or a non-positive channel count.
    """

    size_divisor: int = 16
    """Every spatial size of the input must be a multiple of this."""

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        normalization: str | VNetNorm = VNetNorm.BATCH,
        dropout: bool = True,
    ) -> None:
        super().__init__()
        norm = VNetNorm.resolve(normalization)
        if min(in_channels, out_channels, n_filters) < 1:
            raise ValueError(
                f"channel counts must be positive, got in={in_channels}, out={out_channels}, n_filters={n_filters}"
            )
        self.in_channels, self.out_channels, self.n_filters, self.normalization = (
            in_channels,
            out_channels,
            n_filters,
            norm,
        )
        widths = [n_filters * 2**k for k in range(len(_ENCODER_STAGES))]

        self.encoder = nn.ModuleList(
            _conv_stages(n, in_channels if k == 0 else widths[k], widths[k], norm)
            for k, n in enumerate(_ENCODER_STAGES)
        )
        self.down = nn.ModuleList(_resample(widths[k], widths[k + 1], norm, up=False) for k in range(len(widths) - 1))
        deep_first = list(range(len(widths) - 1, 0, -1))
        self.up = nn.ModuleList(_resample(widths[k], widths[k - 1], norm, up=True) for k in deep_first)
        self.decoder = nn.ModuleList(
            _conv_stages(n, widths[k - 1], widths[k - 1], norm) for k, n in zip(deep_first, _DECODER_STAGES)
        )
        self.bottleneck_dropout: nn.Module = nn.Dropout3d(0.5) if dropout else nn.Identity()
        self.head_dropout: nn.Module = nn.Dropout3d(0.5) if dropout else nn.Identity()
        self.head = nn.Conv3d(n_filters, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of volumes.

        Args:
            x: volumes (B, in_channels, W, H, D), every spatial size divisible by 16.

        Returns:
            Logits (B, out_channels, W, H, D).

        Raises:
            ValueError: ``x`` is not 5D or a spatial size is not divisible by 16.

        Example:
            >>> net = BCPVNet(1, 2, n_filters=4).eval()
            >>> net(torch.rand(1, 1, 16, 32, 16)).shape
            torch.Size([1, 2, 16, 32, 16])
        """
        if x.ndim != 5 or any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(
                f"expected input (B, C, W, H, D) with sizes divisible by {self.size_divisor}, got {tuple(x.shape)}"
            )
        skips: list[torch.Tensor] = []
        for k, stage in enumerate(self.encoder):
            x = stage(x if k == 0 else self.down[k - 1](skips[-1]))
            skips.append(x)
        x = self.bottleneck_dropout(skips.pop())
        for up, stage in zip(self.up, self.decoder):
            x = stage(up(x) + skips.pop())
        return self.head(self.head_dropout(x))


@register_net
def bcp_vnet(
    in_channels: int = 1,
    out_channels: int = 2,
    n_filters: int = 16,
    normalization: str = "batchnorm",
    dropout: bool = True,
) -> nn.Module:
    """BCP's LA network: the UA-MT V-Net, 9,448,866 parameters for 1 -> 2 channels.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        n_filters: channels of the first level.
        normalization: ``"batchnorm"``, ``"groupnorm"``, ``"instancenorm"`` or ``"none"``.
        dropout: Dropout3d(0.5) on the bottleneck and before the output conv, active in train mode only.

    Returns:
        A :class:`BCPVNet` mapping (B, in_channels, W, H, D) to logits (B, out_channels, W, H, D).

    Example:
        >>> bcp_vnet(1, 2).head.out_channels
        2
    """
    return BCPVNet(in_channels, out_channels, n_filters=n_filters, normalization=normalization, dropout=dropout)


@register_net
def bcp_vnet_small(
    in_channels: int = 1,
    out_channels: int = 2,
    n_filters: int = 8,
    normalization: str = "batchnorm",
    dropout: bool = True,
) -> nn.Module:
    """:func:`bcp_vnet` with 8 filters (about a quarter of the parameters) for CPU presets.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        n_filters: channels of the first level.
        normalization: ``"batchnorm"``, ``"groupnorm"``, ``"instancenorm"`` or ``"none"``.
        dropout: Dropout3d(0.5) on the bottleneck and before the output conv, active in train mode only.

    Returns:
        A :class:`BCPVNet` mapping (B, in_channels, W, H, D) to logits (B, out_channels, W, H, D).

    Example:
        >>> bcp_vnet_small(1, 2).n_filters
        8
    """
    return BCPVNet(in_channels, out_channels, n_filters=n_filters, normalization=normalization, dropout=dropout)
