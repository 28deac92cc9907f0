# SPDX-License-Identifier: Apache-2.0
"""FLOPs of one forward pass, for search budgets (DisWOT, N2N) and reports.

:func:`count_flops` runs the network once on a zero input of batch 1 under PyTorch's
``torch.utils.flop_counter.FlopCounterMode``, which counts the floating-point operations of the matrix products
and convolutions (``2 x`` multiply-accumulates; element-wise layers, normalisation and pooling are not counted,
as in fvcore and the NAS papers' budgets, which usually quote MACs = FLOPs / 2). Any ``nn.Module`` works, 2-D or
3-D, MONAI networks included; the network is left in its original train/eval mode and gradients are not needed.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(8, 4, bias=False)
    >>> count_flops(net, (8,))
    64
    >>> count_flops(torch.nn.Conv2d(1, 2, 3, padding=1, bias=False), (1, 4, 4))  # 2 * (2*1*3*3) * 4*4
    576
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["count_flops"]


def count_flops(net: nn.Module, input_shape: Sequence[int], *, device: torch.device | str | None = None) -> int:
    """FLOPs (``2 x`` MACs of convolutions and matrix products) of one forward of a batch of one.

    Args:
        net: the network.
        input_shape: one sample's shape without the batch axis, ``(C, H, W[, D])`` (or ``(features,)``).
        device: where to run (default: the device of the network's first parameter, else CPU).

    Returns:
        The FLOP count of ``net(torch.zeros(1, *input_shape))`` (eval mode, no grad).

    Raises:
        ValueError: an empty ``input_shape``.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if not input_shape:
        raise ValueError("count_flops needs the input shape of one sample, e.g. (1, 32, 32)")
    if device is None:
        param = next(net.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(1, *input_shape, device=device))
    finally:
        net.train(was)
    return int(counter.get_total_flops())
