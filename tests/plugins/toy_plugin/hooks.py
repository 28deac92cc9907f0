# SPDX-License-Identifier: Apache-2.0
"""A callable entry point (``toy_hook = toy_plugin.hooks:register``): medkd calls ``register()`` when it loads it."""

from __future__ import annotations

from torch import nn

from medkd.nets import NETS, list_nets, register_net

__all__ = ["register"]


def register() -> None:
    """Register ``toy_plugin_segmenter``; listing a registry meanwhile must not recurse into discovery."""
    assert "toy_plugin_segmenter" not in list_nets()  # a registry listed while plugins load

    @register_net("toy_plugin_segmenter")
    def toy_plugin_segmenter(in_channels: int = 1, out_channels: int = 2) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, 3, padding=1)

    assert "toy_plugin_segmenter" in NETS
