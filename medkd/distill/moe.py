# SPDX-License-Identifier: Apache-2.0
"""Mixture-of-experts stages: a network stage replaced by ``experts`` copies of itself and a learned router.

:class:`MoEStage` routes every sample (top-``top_k``) from the global-average-pooled features of the stage input
and returns the gate-weighted sum of the selected experts' outputs; each expert runs only on the samples routed to
it (a loop over the experts, none over the samples). After every forward, :attr:`MoEStage.balance_loss` holds the
Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e`` (``f_e``: the fraction of routing assignments that
went to expert ``e``, ``P_e``: its mean router probability; 1 when balanced). :func:`wrap_stages` turns every stage
of a modular network (``net.stages``) into one; it is how m2mKD's MoE student is built and, from the ``moe`` entry of
``net_params`` (:class:`~medkd.distill.students.ClassifierInfo`), rebuilt from ``student.json``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> moe = MoEStage(nn.Conv2d(4, 6, 3, padding=1), experts=3, top_k=2)
    >>> moe(torch.randn(5, 4, 8, 8)).shape, moe.last_gates.shape
    (torch.Size([5, 6, 8, 8]), torch.Size([5, 2]))
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from medkd.errors import ConfigError

__all__ = ["MoEStage", "balance_loss", "check_moe", "moe_params", "moe_stages", "wrap_stages"]


def check_moe(experts: int, top_k: int, what: str = "moe") -> None:
    """Raise :class:`ConfigError` unless ``experts >= 2`` and ``1 <= top_k <= experts``."""
    if experts < 2:
        raise ConfigError(f"{what}: experts must be >= 2 for a mixture of experts (0: no mixture), got {experts}")
    if not 1 <= top_k <= experts:
        raise ConfigError(f"{what}: top_k must be in [1, experts={experts}], got {top_k}")


def balance_loss(probs: Tensor, chosen: Tensor) -> Tensor:
    """Switch-Transformer load balancing ``E * sum_e f_e * P_e`` of router probabilities ``probs`` ``(B, E)`` and
    the chosen experts ``chosen`` ``(B, k)`` (``f_e``: share of the ``B * k`` assignments; 1 for a uniform router).

    Example:
        >>> float(balance_loss(torch.full((4, 2), 0.5), torch.tensor([[0], [0], [0], [1]])))
        1.0
    """
    experts = probs.shape[1]
    f = torch.zeros(experts, device=probs.device, dtype=probs.dtype)
    f = f.index_add(0, chosen.reshape(-1), torch.ones(chosen.numel(), device=probs.device, dtype=probs.dtype))
    return experts * (f / chosen.numel() * probs.mean(0)).sum()


class MoEStage(nn.Module):
    """``experts`` copies of ``stage`` (identical weights at the start) behind a linear router on the
    global-average-pooled input ``(B, C, *spatial) -> (B, C)``.

    Each sample goes to its ``top_k`` most probable experts; their gates (softmax probabilities renormalised over
    the selected experts, so in [0, 1] and summing to 1) weight the experts' outputs. The renormalising sum is
    detached, so that with ``top_k = 1`` (gate 1) the router still gets the task's gradient, as Switch Transformer's
    gate ``p``.

    Args:
        stage: the stage copied (its input has the channels on dim 1). experts: >= 2. top_k: in [1, experts].
        in_channels: the stage input's channels (default: found from the stage's first conv/linear layer).

    Attributes:
        balance_loss: the load-balancing loss of the last forward (a tensor; 0 before any).
        last_gates / last_chosen: the last forward's gates and chosen experts, ``(B, top_k)``.
    """

    def __init__(self, stage: nn.Module, experts: int, top_k: int = 1, in_channels: int | None = None) -> None:
        super().__init__()
        check_moe(experts, top_k, "MoEStage")
        channels = in_channels if in_channels is not None else _in_channels(stage)
        self.experts = nn.ModuleList(copy.deepcopy(stage) for _ in range(experts))
        self.router = nn.Linear(channels, experts)
        self.top_k = top_k
        self.balance_loss: Tensor = torch.zeros(())
        self.last_gates: Tensor | None = None
        self.last_chosen: Tensor | None = None

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(gates, chosen, probs)`` for input ``x``: ``(B, top_k)``, ``(B, top_k)`` expert indices, ``(B, E)``."""
        pooled = x.flatten(2).mean(2) if x.ndim > 2 else x
        probs = torch.softmax(self.router(pooled), dim=1)
        top, chosen = probs.topk(self.top_k, dim=1)
        return top / top.sum(1, keepdim=True).detach(), chosen, probs

    def forward(self, x: Tensor) -> Tensor:
        gates, chosen, probs = self.route(x)
        self.balance_loss = balance_loss(probs, chosen)
        self.last_gates, self.last_chosen = gates.detach(), chosen
        out: Tensor | None = None
        for e, expert in enumerate(self.experts):
            sample, slot = (chosen == e).nonzero(as_tuple=True)
            if sample.numel() == 0:
                continue
            y = expert(x[sample])
            y = y * gates[sample, slot].view(-1, *[1] * (y.ndim - 1))
            if out is None:
                out = y.new_zeros((x.shape[0], *y.shape[1:]))
            out = out.index_add(0, sample, y)
        assert out is not None  # every sample goes to top_k >= 1 experts
        return out


def _in_channels(stage: nn.Module) -> int:
    for m in stage.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
        if isinstance(m, nn.Linear):
            return m.in_features
    raise ConfigError(f"MoEStage: no convolution or linear layer in {type(stage).__name__} to read its input "
                      "channels from; pass in_channels")


def wrap_stages(net: nn.Module, experts: int, top_k: int = 1, stages: str = "stages") -> nn.Module:
    """Replace every stage of ``net.<stages>`` (in place) by a :class:`MoEStage` of its copies; returns ``net``.

    Raises:
        ConfigError: bad ``experts``/``top_k``, or no ``stages`` (an nn.Sequential/nn.ModuleList).
    """
    check_moe(experts, top_k)
    seq = getattr(net, stages, None)
    if not isinstance(seq, (nn.Sequential, nn.ModuleList)) or len(seq) == 0:
        raise ConfigError(f"moe: {type(net).__name__} has no {stages!r} (an nn.Sequential or nn.ModuleList of "
                          "stages) to turn into mixtures of experts")
    for i, stage in enumerate(list(seq)):
        seq[i] = MoEStage(stage, experts, top_k)
    return net


def moe_stages(net: nn.Module) -> list[MoEStage]:
    """The :class:`MoEStage` modules of ``net``."""
    return [m for m in net.modules() if isinstance(m, MoEStage)]


def moe_params(spec: Any) -> dict[str, Any]:
    """The keywords of :func:`wrap_stages` from a ``moe`` entry ``{experts, top_k, stages}`` of ``net_params``."""
    if not isinstance(spec, dict) or set(spec) - {"experts", "top_k", "stages"}:
        raise ConfigError(f"net_params 'moe' must be a mapping of experts, top_k, stages; got {spec!r}")
    return {"experts": int(spec.get("experts", 0)), "top_k": int(spec.get("top_k", 1)),
            "stages": str(spec.get("stages", "stages"))}
