# SPDX-License-Identifier: Apache-2.0
"""The network registry: ``NETS``, the ``@register_net`` decorator and the ``create_net`` front door.

Network modules (``unet2d``, ``vnet``, ``monai_nets``) register plain factory functions here; presets and
bundles refer to networks only by their registry name.

Example:
    >>> import medkd.nets  # registers the built-in networks
    >>> net = create_net("bcp_unet2d_half", in_channels=1, out_channels=4)
    >>> "bcp_unet2d" in list_nets("bcp_*")
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from medkd.registry import Registry

__all__ = ["NETS", "register_net", "create_net", "list_nets", "count_parameters"]

logger = logging.getLogger(__name__)

NETS: Registry[Callable[..., nn.Module]] = Registry("net")
"""Registry of network factories; every factory accepts ``in_channels`` and ``out_channels`` keywords."""

register_net = NETS.register
"""Decorator registering a network factory, bare (``@register_net``) or named (``@register_net("name")``)."""


def create_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network.

    Args:
        name: registry name, e.g. ``"bcp_unet2d"``, ``"bcp_vnet"``, ``"monai_basicunet"``.
        **kwargs: passed to the factory; every factory accepts ``in_channels`` and ``out_channels``.

    Returns:
        The network, a ``torch.nn.Module`` mapping ``(B, in_channels, *spatial)`` to logits
        ``(B, out_channels, *spatial)``.

    Raises:
        KeyError: unknown ``name``; the message lists close matches and all known names.

    Example:
        >>> net = create_net("bcp_unet2d", in_channels=1, out_channels=4)
        >>> count_parameters(net)
        1813764
    """
    factory = NETS.get(name)
    net = factory(**kwargs)
    logger.debug("built net %r (%d parameters) with %s", name, count_parameters(net), kwargs)
    return net


def list_nets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered networks that match a shell-style pattern.

    Args:
        pattern: ``fnmatch`` pattern, e.g. ``"bcp_*"``.

    Returns:
        The matching names, sorted.

    Example:
        >>> list_nets("bcp_vnet*")
        ['bcp_vnet', 'bcp_vnet_small']
    """
    return NETS.list(pattern)


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of a network (buffers such as BatchNorm statistics excluded).

    Args:
        net: the network.
        trainable_only: count only parameters with ``requires_grad``; the default counts all, so an EMA
            teacher with detached parameters reports the same size as its student.

    Returns:
        The parameter count.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
