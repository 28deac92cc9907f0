# SPDX-License-Identifier: Apache-2.0
"""Utility plugins as commands: ``medkd distill search NAME`` and ``medkd distill tool NAME``.

A utility acts before or around training (which student, which teacher, which order). Its Python functions are
the library (``medkd.distill.utilities.<name>``); the registered object is a :class:`Utility` subclass whose
:meth:`Utility.run` does the whole job from an experiment YAML and ``--param key=value`` settings, writes its
results under ``--out`` (``OUT/<name>.json`` at least) and returns them. ``command`` says whether it is a
``search`` (student/compression search) or a ``tool``.

Example:
    >>> from medkd.distill.registry import register_utility, _unregister
    >>> @register_utility("toy_count_doc")
    ... class CountParams(Utility):
    ...     '''Count the student's parameters.'''
    ...     def run(self, ctx):
    ...         from medkd.nets import count_parameters
    ...         return {"params": count_parameters(ctx.build_student())}
    >>> sorted(utility_parameters("toy_count_doc"))
    []
    >>> _unregister("toy_count_doc")
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medkd.distill.registry import PluginKind, get_plugin, instantiate
from medkd.errors import ConfigError
from medkd.io.atomic import write_text_atomic

if TYPE_CHECKING:
    from medkd.distill.config import DistillConfig
    from medkd.distill.data import ClassificationData, SegmentationData
    from medkd.distill.teachers import LoadedTeacher

__all__ = ["Utility", "ToolContext", "create_utility", "run_utility", "utility_parameters"]

logger = logging.getLogger(__name__)


class Utility:
    """Base class of utility plugins run as commands (override :meth:`run`).

    Class attributes:
        command: ``search`` (``medkd distill search NAME``) or ``tool`` (``medkd distill tool NAME``).
    """

    command: ClassVar[str] = "tool"
    plugin_key: ClassVar[str] = ""

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        """Do the job, write results under ``ctx.out`` and return them (JSON-serialisable)."""
        raise TypeError(f"{type(self).__name__} must override run(ctx)")


@dataclass
class ToolContext:
    """What a utility works with: the experiment, the dataset folder, the output folder.

    The data and the teacher are built on first use (:attr:`data`, :meth:`load_teacher`).
    """

    cfg: DistillConfig
    data_root: Path
    out: Path
    device: torch.device
    progress: bool = True
    _data: Any = field(default=None, repr=False)

    @property
    def data(self) -> ClassificationData | SegmentationData:
        """The experiment's data (read once)."""
        if self._data is None:
            from medkd.distill.data import build_data

            self._data = build_data(self.cfg, self.data_root)
        return self._data

    def load_teacher(self) -> LoadedTeacher:
        """The teacher of ``teacher.checkpoint`` (a run or bundle).

        Raises:
            ConfigError: no ``teacher.checkpoint`` in the experiment.
        """
        from medkd.distill.teachers import load_teacher

        if not self.cfg.teacher.checkpoint:
            raise ConfigError("this utility needs a trained teacher: set teacher.checkpoint (a run or bundle)")
        return load_teacher(self.cfg.teacher.checkpoint, self.device)

    def build_student(self, net: str | None = None, net_params: dict[str, Any] | None = None) -> nn.Module:
        """A fresh network (``student.net`` unless ``net`` is given) for the experiment's data."""
        from medkd.distill.networks import build_network

        net = net or self.cfg.student.net
        params = self.cfg.student.net_params if net_params is None else net_params
        return build_network(self.cfg, self.data, net, params)[0]

    def train(self, **kwargs: Any) -> dict[str, Any]:
        """Train a network as :meth:`medkd.distill.strategy.StrategyContext.train` does (same arguments)."""
        from medkd.distill.runner import train_network
        from medkd.distill.strategy import StrategyContext

        teacher = None
        if self.cfg.teacher.checkpoint:
            teacher = self.load_teacher()
        sctx = StrategyContext(cfg=self.cfg, data=self.data, data_root=self.data_root, out=self.out,
                               device=self.device, teacher=teacher, trainer=train_network, progress=self.progress)
        return sctx.train(**kwargs)


def utility_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of utility ``name`` (its class) and their defaults."""
    cls = get_plugin(name, PluginKind.UTILITY)
    if not isinstance(cls, type):
        return {}
    return {p.name: p.default for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create_utility(name: str, **params: Any) -> Utility:
    """Build the utility ``name`` with ``params`` (``--param key=value``).

    Raises:
        KeyError: unknown utility. ConfigError: an unknown parameter (close matches listed), a bad value, or a
            utility that is a plain function (no command).
    """
    cls = get_plugin(name, PluginKind.UTILITY)
    if not (isinstance(cls, type) and issubclass(cls, Utility)):
        raise ConfigError(f"utility {name!r} is a Python function, not a command")
    allowed = utility_parameters(name)
    return instantiate(cls, f"utility {name!r}", list(allowed), params)


def parse_params(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["budget=300000", "nets=[kd_cnn, kd_cnn_wide]"]`` -> a dict (values parsed as YAML).

    Example:
        >>> parse_params(["budget=300000", "nets=[a, b]", "name=x"])
        {'budget': 300000, 'nets': ['a', 'b'], 'name': 'x'}
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def run_utility(name: str, cfg: DistillConfig, data_root: str | Path, out: str | Path, *,
                params: dict[str, Any] | None = None, command: str | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Run utility ``name`` and write ``OUT/<name>.json``.

    Args:
        name: a utility key (``medkd distill list --kind utility``). cfg: the experiment.
        data_root: the dataset folder. out: the output folder (created). params: the utility's parameters.
        command: ``search`` or ``tool``: checked against the utility's own (a wrong one names the right one).

    Raises:
        KeyError, ConfigError: unknown utility or parameter; DataError: bad data.
    """
    from medkd.inference import resolve_device

    utility = create_utility(name, **(params or {}))
    if command is not None and utility.command != command:
        raise ConfigError(f"{name!r} is run with 'medkd distill {utility.command} {name}', not '{command}'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = ToolContext(cfg=cfg, data_root=Path(data_root), out=out,
                      device=resolve_device(cfg.experiment.device, mps=False), progress=progress)
    result = utility.run(ctx)
    write_text_atomic(out / f"{name}.json", json.dumps(result, indent=1, default=str))
    logger.info("%s results written to %s", name, out / f"{name}.json")
    return result
