# SPDX-License-Identifier: Apache-2.0
"""What a loss plugin is: :class:`DistillLoss`, its :class:`Requires`, and the ``create_loss`` front door.

A loss plugin is an ``nn.Module`` whose ``forward(student, teacher, batch, ctx=None)`` takes three dicts and
returns a dict of named scalar tensors whose sum is the loss:

- ``student`` / ``teacher``: ``"logits"`` as ``(N, C)`` or dense ``(B, C, *spatial)``; feature taps as
  ``"feat:<module name>"`` (:mod:`medkd.distill.hooks`); other named outputs a plugin documents.
- ``batch``: ``"label"`` as class indices (``(N,)`` or ``(B, *spatial)``, ``ignore_index`` marks unlabelled
  voxels), plus whatever the plugin's :attr:`DistillLoss.requires` lists.
- ``ctx``: ``{"epoch": float, "step": int}`` (``epoch`` counts from 0; ramps read it).

Example:
    >>> import torch
    >>> loss = create_loss("kd", temperature=4.0)
    >>> s = {"logits": torch.randn(8, 5)}
    >>> float(loss(s, {"logits": s["logits"].clone()}, {})["kd"])
    0.0
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medkd.distill.registry import PluginKind, get_plugin, instantiate
from medkd.errors import ConfigError

__all__ = ["DistillLoss", "Requires", "RequirementError", "create_loss", "loss_parameters"]


class RequirementError(ConfigError):
    """A plugin needs an output, feature tap or batch key that the experiment does not provide."""


@dataclass(frozen=True)
class Requires:
    """What a plugin reads: keys of the student's and teacher's output dicts and of the batch.

    ``"feat:*"`` means "at least one feature tap"; ``"embedding|feat:*"`` means either. Checked before training by
    :meth:`check_keys`.

    Example:
        >>> Requires(student=("logits", "feat:*"), batch=("label",)).missing({"logits"}, {"logits"}, {"label"})
        ["student output 'feat:*' (add a module name to student.taps)"]
    """

    student: tuple[str, ...] = ("logits",)
    teacher: tuple[str, ...] = ("logits",)
    batch: tuple[str, ...] = ()

    def missing(self, student: set[str], teacher: set[str], batch: set[str]) -> list[str]:
        """The required keys not among those given, in words."""
        out = []
        for side, need, have in (("student", self.student, student), ("teacher", self.teacher, teacher)):
            for key in need:
                ok = any(_present(alt, have) for alt in key.split("|"))  # "a|b": either will do
                if not ok:
                    hint = f" (add {'a module name' if key == 'feat:*' else repr(key[5:])} to {side}.taps)" \
                        if key.startswith("feat:") else ""
                    out.append(f"{side} output {key!r}{hint}")
        out += [f"batch key {key!r}" for key in self.batch if key not in batch]
        return out

    def check_keys(self, plugin: str, student: set[str], teacher: set[str], batch: set[str]) -> None:
        """Raise :class:`RequirementError` naming the plugin and every missing key."""
        missing = self.missing(student, teacher, batch)
        if missing:
            raise RequirementError(f"distillation plugin {plugin!r} needs {'; '.join(missing)}")


def _present(key: str, have: set[str]) -> bool:
    return any(k.startswith("feat:") for k in have) if key == "feat:*" else key in have


class DistillLoss(nn.Module):
    """Base class of loss plugins (subclass, set :attr:`requires`, implement :meth:`forward`).

    Submodules a loss owns (projectors, exit branches, gates) are trained with the student and counted as extra
    parameters; they are never exported with the student.
    """

    requires: ClassVar[Requires] = Requires()
    plugin_key: ClassVar[str] = ""

    def forward(
        self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
        ctx: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """Named scalar loss terms; their sum is the loss (every plugin overrides this)."""
        raise TypeError(f"{type(self).__name__} must override forward(student, teacher, batch, ctx=None)")

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Seeded ``(student, teacher, batch, ctx)`` for the stored-value tests: logits ``(6, 5)`` and labels.

        Plugins needing more (taps, pairs, graphs) override this.
        """
        g = torch.Generator().manual_seed(seed)
        student = {"logits": torch.randn(6, 5, generator=g)}
        teacher = {"logits": 2.0 * torch.randn(6, 5, generator=g)}
        batch = {"label": torch.randint(0, 5, (6,), generator=g)}
        return student, teacher, batch, {"epoch": 30.0, "step": 100}


def loss_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of loss plugin ``name`` and their defaults (``inspect.Parameter.empty`` if none)."""
    cls = get_plugin(name, PluginKind.LOSS)
    sig = inspect.signature(cls)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create_loss(name: str, **params: Any) -> nn.Module:
    """Build the loss plugin ``name`` with ``params``.

    Args:
        name: a registered loss key (``medkd distill list``): ``kd``, ``dkd``, ``pld``, ``bpkd``, ...
        **params: the plugin's parameters (e.g. ``temperature``).

    Returns:
        An ``nn.Module``: ``forward(student, teacher, batch, ctx=None) -> {name: scalar tensor}``.

    Raises:
        KeyError: unknown plugin (close matches listed) or a strategy/utility key.
        ConfigError: an unknown parameter (close matches listed) or a bad value.

    Example:
        >>> create_loss("dkd", alpha=1.0, beta=8.0, temperature=4.0, warmup=20).warmup
        20
    """
    cls = get_plugin(name, PluginKind.LOSS)
    allowed = loss_parameters(name)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls).parameters.values())
    return instantiate(cls, f"loss plugin {name!r}", list(allowed), params, open_keywords=takes_any)
