# SPDX-License-Identifier: Apache-2.0
"""Named, weighted loss terms with ramps: ``L = sum_k w_k * r_k(epoch) * L_k``.

Each term is a loss plugin (:func:`medkd.distill.create_loss`) with a name, a weight and a ramp:

- ``const``: 1;
- ``linear``: ``min(epoch / warmup, 1)`` (DKD's warm-up);
- ``cosine``: ``(1 - cos(pi * min(epoch / warmup, 1))) / 2``.

:class:`WeightedTerms` logs every raw and weighted term (``<name>/raw``, ``<name>/weighted``, and each named
component a plugin returns as ``<name>/<component>``). Trainable submodules of the plugins (projectors, branches)
are the experiment's auxiliary modules: trained with the student, counted in :attr:`WeightedTerms.extra_params`,
never exported.

Example:
    >>> import torch
    >>> terms = WeightedTerms([TermSpec(name="ce", plugin="ce", weight=0.1),
    ...                        TermSpec(name="kd", plugin="kd", weight=0.9, params={"temperature": 4.0})])
    >>> s, t = {"logits": torch.randn(4, 3)}, {"logits": torch.randn(4, 3)}
    >>> total, logs = terms(s, t, {"label": torch.tensor([0, 1, 2, 0])}, {"epoch": 1.0})
    >>> sorted(logs)
    ['ce/raw', 'ce/weighted', 'kd/raw', 'kd/weighted']
    >>> abs(float(total) - (logs["ce/weighted"] + logs["kd/weighted"])) < 1e-5
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from medkd.distill.base import create_loss
from medkd.errors import ConfigError
from medkd.registry import resolve_option

__all__ = ["Ramp", "TermSpec", "WeightedTerms", "ramp_factor"]


class Ramp(StrEnum):
    """How a term's weight grows with the epoch."""

    CONST = "const"
    LINEAR = "linear"
    COSINE = "cosine"


def ramp_factor(ramp: str | Ramp, epoch: float, warmup: float) -> float:
    """The ramp's factor at ``epoch`` (0-based, fractional).

    Example:
        >>> ramp_factor("linear", 5, 20), ramp_factor("cosine", 20, 20), ramp_factor("const", 0, 20)
        (0.25, 1.0, 1.0)
    """
    ramp = resolve_option(Ramp, ramp, "ramp", "Ramps")
    if ramp is Ramp.CONST or warmup <= 0:
        return 1.0
    x = min(max(float(epoch), 0.0) / warmup, 1.0)
    return x if ramp is Ramp.LINEAR else 0.5 * (1.0 - math.cos(math.pi * x))


@dataclass(frozen=True, kw_only=True)
class TermSpec:
    """One term of ``distill.terms`` in the experiment YAML.

    Args:
        name: the term's name in logs (unique in the experiment).
        plugin: a loss plugin key (``medkd distill list``).
        weight: w_k (>= 0).
        ramp: ``const``, ``linear`` or ``cosine``. warmup: epochs of the ramp.
        params: the plugin's parameters.
    """

    name: str
    plugin: str
    weight: float = 1.0
    ramp: str = "const"
    warmup: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("every distill term needs a name")
        if not (isinstance(self.weight, (int, float)) and math.isfinite(self.weight) and self.weight >= 0):
            raise ConfigError(f"distill term {self.name!r}: weight must be a finite number >= 0, got {self.weight!r}")
        if self.warmup < 0:
            raise ConfigError(f"distill term {self.name!r}: warmup must be >= 0, got {self.warmup}")
        try:
            resolve_option(Ramp, self.ramp, "ramp", "Ramps")
        except ValueError as err:
            raise ConfigError(f"distill term {self.name!r}: {err}") from None


class WeightedTerms(nn.Module):
    """The experiment's loss: its terms' plugins, weights and ramps.

    Args:
        terms: the :class:`TermSpec` list (names unique).

    Raises:
        ConfigError: duplicate names, an unknown parameter; KeyError: an unknown plugin.
    """

    def __init__(self, terms: Sequence[TermSpec]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("distill.terms is empty: list at least one term (e.g. {name: kd, plugin: kd})")
        names = [t.name for t in terms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"distill.terms: duplicate term names {dupes}")
        self.specs = tuple(terms)
        self.losses = nn.ModuleDict({t.name: create_loss(t.plugin, **t.params) for t in terms})

    def requirements(self) -> dict[str, Any]:
        """Each term's :class:`~medkd.distill.base.Requires`, by term name."""
        return {name: type(loss).requires for name, loss in self.losses.items()}

    def check(self, student: set[str], teacher: set[str], batch: set[str]) -> None:
        """Raise :class:`~medkd.distill.base.RequirementError` if a term needs a key the experiment lacks."""
        for spec in self.specs:
            type(self.losses[spec.name]).requires.check_keys(spec.plugin, student, teacher, batch)

    @property
    def extra_params(self) -> int:
        """Trainable parameters owned by the plugins (projectors, branches; not exported)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad and not _uninitialized(p))

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> tuple[Tensor, dict[str, float]]:
        """The weighted sum and the logged values (floats)."""
        ctx = dict(ctx or {})
        epoch = float(ctx.get("epoch", 0.0))
        total: Tensor | None = None
        logs: dict[str, float] = {}
        for spec in self.specs:
            parts = self.losses[spec.name](student, teacher, batch, ctx)
            if not parts:
                raise ValueError(f"distill term {spec.name!r} ({spec.plugin}) returned no loss values")
            raw = sum(parts.values())
            weighted = spec.weight * ramp_factor(spec.ramp, epoch, spec.warmup) * raw
            total = weighted if total is None else total + weighted
            logs[f"{spec.name}/raw"] = float(raw.detach())
            logs[f"{spec.name}/weighted"] = float(weighted.detach())
            if len(parts) > 1:
                logs.update({f"{spec.name}/{k}": float(v.detach()) for k, v in parts.items()})
        assert total is not None
        return total, logs


def _uninitialized(p: Tensor) -> bool:
    return isinstance(p, nn.parameter.UninitializedParameter)


