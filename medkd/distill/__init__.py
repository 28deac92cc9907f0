# SPDX-License-Identifier: Apache-2.0
"""Plugin knowledge distillation: registries by kind, feature taps, weighted terms, the loss plugins.

The front door (spec ``distillation_plugins.md``):

- :func:`create_loss` ``(name, **params)`` -> an ``nn.Module`` with ``forward(student, teacher, batch, ctx=None)``
  returning named scalar tensors whose sum is the loss;
- :func:`list_plugins` -> every plugin (built-in and from ``medkd.plugins`` entry points) with its kind;
- :func:`register_loss`, :func:`register_strategy`, :func:`register_utility` for new plugins.

Example:
    >>> import torch
    >>> from medkd.distill import create_loss, list_plugins
    >>> "kd" in [p.key for p in list_plugins(kind="loss")]
    True
    >>> out = create_loss("kd", temperature=2.0)({"logits": torch.zeros(2, 3)}, {"logits": torch.zeros(2, 3)}, {})
    >>> float(out["kd"])
    0.0
"""

from __future__ import annotations

from medkd.distill import losses as _builtin_losses  # registers medkd's loss plugins
from medkd.distill import strategies as _builtin_strategies  # registers medkd's strategies
from medkd.distill import utilities as _builtin_utilities  # registers medkd's utilities
from medkd.distill.base import DistillLoss, Requires, RequirementError, create_loss, loss_parameters
from medkd.distill.registry import (
    PLUGINS,
    PluginInfo,
    PluginKind,
    get_plugin,
    list_plugins,
    plugin_kind,
    register_loss,
    register_strategy,
    register_utility,
)
from medkd.distill.strategy import Strategy, StrategyContext, create_strategy
from medkd.distill.tools import ToolContext, Utility, create_utility, run_utility

__all__ = [
    "PLUGINS", "DistillLoss", "PluginInfo", "PluginKind", "RequirementError", "Requires", "create_loss",
    "get_plugin", "list_plugins", "loss_parameters", "plugin_kind", "register_loss", "register_strategy",
    "register_utility", "Strategy", "StrategyContext", "ToolContext", "Utility", "create_strategy", "create_utility",
    "run_utility",
]
