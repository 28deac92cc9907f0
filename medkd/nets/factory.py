# SPDX-License-Identifier: Apache-2.0
"""The network registry: ``NETS``, the ``@register_net`` decorator and the ``create_net`` front door.

Network modules (``unet2d``, ``vnet``, ``monai_nets``, and methods' or plugins' own modules) register plain factory
functions here under a :class:`NetTask`; presets and bundles refer to networks only by their registry name. What a
network of each task takes and returns is written down, and checked, in :mod:`medkd.nets.contracts`.

Example:
    >>> import medkd.nets  # registers the built-in networks
    >>> net = create_net("bcp_unet2d_half", in_channels=1, out_channels=4)
    >>> "bcp_unet2d" in list_nets("bcp_*", task="segmentation")
    True
    >>> net_task("bcp_unet2d")
    <NetTask.SEGMENTATION: 'segmentation'>
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar, overload

from torch import nn

from medkd.registry import Registry, resolve_option

__all__ = ["NETS", "NetTask", "count_parameters", "create_net", "list_nets", "net_task", "register_net"]

logger = logging.getLogger(__name__)

NetFactory = TypeVar("NetFactory", bound=Callable[..., nn.Module])


class NetTask(StrEnum):
    """What a registered network does; each task has a contract in :mod:`medkd.nets.contracts`.

    - ``segmentation``: ``in_channels``/``out_channels`` keywords; ``(B, C_in, *spatial)`` -> ``(B, C_out, *spatial)``.
    - ``classification``: ``in_channels``/``num_classes`` keywords; ``(B, C_in, *spatial)`` -> ``(B, num_classes)``.
    - ``detection``: ``in_channels``/``num_classes`` keywords; a torchvision/MONAI-style detector (a loss dict in
      training, a list of ``boxes``/``scores``/``labels`` dicts in eval).
    - ``video_encoder``: ``in_channels`` keyword; a clip ``(B, T, C, H, W)`` -> ``(B, D)`` or per frame ``(B, T, D)``.
    """

    SEGMENTATION = "segmentation"
    DETECTION = "detection"
    CLASSIFICATION = "classification"
    VIDEO_ENCODER = "video_encoder"

    @classmethod
    def resolve(cls, value: str | NetTask) -> NetTask:
        """Return the member for ``value``.

        Raises:
            ValueError: unknown task; the message names close matches and the allowed tasks.
        """
        return resolve_option(cls, value, "net task", "Tasks")


NETS: Registry[Callable[..., nn.Module]] = Registry("net")
"""Registry of network factories; each entry's metadata holds its ``task`` (a :class:`NetTask`)."""


@overload
def register_net(name: NetFactory) -> NetFactory: ...


@overload
def register_net(name: str | None = None, *, task: str | NetTask = ...) -> Callable[[NetFactory], NetFactory]: ...


def register_net(
    name: str | NetFactory | None = None, *, task: str | NetTask = NetTask.SEGMENTATION
) -> NetFactory | Callable[[NetFactory], NetFactory]:
    """Register a network factory under a task: bare (``@register_net``), named (``@register_net("name")``) or
    with a task (``@register_net("tiny_retinanet", task="detection")``); the task defaults to segmentation.

    Raises:
        ValueError: unknown ``task``.
    """
    resolved = NetTask.resolve(task)
    if callable(name):
        return NETS.register(name.__name__, task=resolved)(name)
    return NETS.register(name, task=resolved)


def create_net(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network.

    Args:
        name: registry name, e.g. ``"bcp_unet2d"``, ``"bcp_vnet"``, ``"monai_basicunet"``.
        **kwargs: passed to the factory; the keywords each task's factories accept are listed in :class:`NetTask`.

    Returns:
        The network, a ``torch.nn.Module``; a segmentation network maps ``(B, in_channels, *spatial)`` to logits
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


def list_nets(pattern: str | None = None, task: str | NetTask | None = None) -> list[str]:
    """Sorted names of the registered networks that match a shell-style pattern and, if given, a task.

    Args:
        pattern: ``fnmatch`` pattern, e.g. ``"bcp_*"``; ``None`` matches all.
        task: only networks registered under this task.

    Returns:
        The matching names, sorted.

    Raises:
        ValueError: unknown ``task``.

    Example:
        >>> list_nets("bcp_vnet*")
        ['bcp_vnet', 'bcp_vnet_small']
        >>> list_nets("bcp_*", task="detection")
        []
    """
    names = NETS.list(pattern or "*")
    if task is None:
        return names
    wanted = NetTask.resolve(task)
    return [n for n in names if net_task(n) is wanted]


def net_task(name: str) -> NetTask:
    """The task a network was registered under (segmentation for factories registered without one).

    Raises:
        KeyError: unknown ``name``.
    """
    return NetTask.resolve(NETS.meta(name).get("task", NetTask.SEGMENTATION))


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
