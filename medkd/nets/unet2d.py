# SPDX-License-Identifier: Apache-2.0
"""The 2D U-Net used by BCP on ACDC, re-implemented from its description (PyMIC ``UNet_2d``).

Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023; the network is
the PyMIC U-Net (Wang et al., "PyMIC: A deep learning toolkit for annotation-efficient medical image
segmentation", CMPB 2023) as used in SSL4MIS and BCP.

Layout: a five-level encoder (16, 32, 64, 128, 256 channels; dropout 0.05, 0.1, 0.2, 0.3, 0.5) of
conv-BN-LeakyReLU-Dropout-conv-BN-LeakyReLU blocks with 2x2 max-pooling between levels; a decoder whose stages
apply a 1x1 conv, bilinear x2 upsampling (``align_corners=True``), concatenation with the skip and a conv block
without dropout; a 3x3 output conv. Only segmentation logits are returned; the reference's unused projection and
contrastive heads are left out, so the parameter count (1,813,764 for 1 -> 4 channels) is encoder + decoder.

Example:
    >>> import torch
    >>> net = bcp_unet2d(in_channels=1, out_channels=4)
    >>> net(torch.rand(1, 1, 32, 32)).shape
    torch.Size([1, 4, 32, 32])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from medkd.nets.factory import register_net

__all__ = ["BCPUNet2d", "bcp_unet2d", "bcp_unet2d_half"]

logger = logging.getLogger(__name__)


class _ConvBlock(nn.Sequential):
    """conv3x3-BN-LeakyReLU-Dropout-conv3x3-BN-LeakyReLU, shape-preserving: (B, C_in, H, W) -> (B, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class _UpBlock(nn.Module):
    """1x1 conv to the skip width, bilinear x2 upsampling, concat ``[skip, up]``, conv block (no dropout)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _ConvBlock(2 * skip_channels, out_channels, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Map ``x`` (B, C_in, H/2, W/2) and ``skip`` (B, C_skip, H, W) to (B, C_out, H, W)."""
        return self.conv(torch.cat([skip, self.up(self.reduce(x))], dim=1))


class BCPUNet2d(nn.Module):
    """PyMIC-style 2D U-Net with encoder dropout, as used by BCP for ACDC. Input and output are ``BCHW``.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        features: channels per level, shallow to deep; at least two levels.
        dropout: dropout probability of each encoder level (same length as ``features``).

    Raises:
        ValueError: ``features`` has fewer than two levels, ``dropout`` differs in length, a probability is
            outside [0, 1), or a channel count is not positive.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    ) -> None:
        super().__init__()
        features, dropout = tuple(int(f) for f in features), tuple(float(p) for p in dropout)
        if len(features) < 2:
            raise ValueError(f"features needs at least two levels, got {features}")
        if len(dropout) != len(features):
            raise ValueError(f"dropout has {len(dropout)} entries but features has {len(features)}: {dropout}")
        if not all(0.0 <= p < 1.0 for p in dropout):
            raise ValueError(f"dropout probabilities must lie in [0, 1), got {dropout}")
        if min(features + (in_channels, out_channels)) < 1:
            raise ValueError(
                f"channel counts must be positive, got in={in_channels}, out={out_channels}, features={features}"
            )
        self.in_channels, self.out_channels, self.features = in_channels, out_channels, features

        stages: list[nn.Module] = [_ConvBlock(in_channels, features[0], dropout[0])]
        for level in range(1, len(features)):
            stages.append(
                nn.Sequential(nn.MaxPool2d(2), _ConvBlock(features[level - 1], features[level], dropout[level]))
            )
        self.encoder = nn.ModuleList(stages)
        self.decoder = nn.ModuleList(
            _UpBlock(features[level], features[level - 1], features[level - 1])
            for level in range(len(features) - 1, 0, -1)
        )
        self.head = nn.Conv2d(features[0], out_channels, kernel_size=3, padding=1)

    @property
    def size_divisor(self) -> int:
        """Every spatial size of the input must be a multiple of this (``2 ** (levels - 1)``)."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment a batch of images.

        Args:
            x: images (B, in_channels, H, W); H and W divisible by ``size_divisor`` (16 by default).

        Returns:
            Logits (B, out_channels, H, W).

        Raises:
            ValueError: ``x`` is not 4D or H, W are not divisible by ``size_divisor``.

        Example:
            >>> net = BCPUNet2d(1, 4, features=(8, 16, 32, 64, 128)).eval()
            >>> net(torch.rand(2, 1, 32, 48)).shape
            torch.Size([2, 4, 32, 48])
        """
        if x.ndim != 4 or any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(
                f"expected input (B, C, H, W) with H and W divisible by {self.size_divisor}, got {tuple(x.shape)}"
            )
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)


@register_net
def bcp_unet2d(
    in_channels: int = 1,
    out_channels: int = 4,
    features: Sequence[int] = (16, 32, 64, 128, 256),
    dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
) -> nn.Module:
    """BCP's ACDC network: the PyMIC 2D U-Net, 1,813,764 parameters for 1 -> 4 channels.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        features: channels per level, shallow to deep.
        dropout: encoder dropout per level.

    Returns:
        A :class:`BCPUNet2d` mapping (B, in_channels, H, W) to logits (B, out_channels, H, W).

    Example:
        >>> bcp_unet2d(1, 4).head.out_channels
        4
    """
    return BCPUNet2d(in_channels, out_channels, features=features, dropout=dropout)


@register_net
def bcp_unet2d_half(
    in_channels: int = 1,
    out_channels: int = 4,
    features: Sequence[int] = (8, 16, 32, 64, 128),
    dropout: Sequence[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
) -> nn.Module:
    """Half-width :func:`bcp_unet2d` (8 ... 128 channels) for CPU presets and benchmarks.

    Args:
        in_channels: input channels.
        out_channels: output channels (classes, background included).
        features: channels per level, shallow to deep.
        dropout: encoder dropout per level.

    Returns:
        A :class:`BCPUNet2d` mapping (B, in_channels, H, W) to logits (B, out_channels, H, W).

    Example:
        >>> bcp_unet2d_half(1, 4).features
        (8, 16, 32, 64, 128)
    """
    return BCPUNet2d(in_channels, out_channels, features=features, dropout=dropout)
