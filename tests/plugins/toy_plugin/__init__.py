# SPDX-License-Identifier: Apache-2.0
"""A toy medkd plugin (entry point ``toy = toy_plugin``): importing it registers a classification network.

It lives outside ``medkd/`` and is found only through its entry point (see ``plugins.dist.install_plugin``).
"""

from __future__ import annotations

from torch import nn

from medkd.nets import register_net

__all__ = ["toy_plugin_classifier"]

IMPORTS = [0]  # how often this module body ran; a test checks discovery imports it once


@register_net("toy_plugin_classifier", task="classification")
def toy_plugin_classifier(in_channels: int = 1, num_classes: int = 2) -> nn.Module:
    """(B, in_channels, H, W) -> (B, num_classes) logits."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, num_classes),
    )


IMPORTS[0] += 1
