# SPDX-License-Identifier: Apache-2.0
"""Strategy plugins: methods that change the shape of training (generations, snapshots, routing, stages).

A loss plugin adds a term to every step; a strategy owns the loop. It is a :class:`Strategy` subclass registered
with ``@register_strategy("key")`` and chosen in the experiment YAML::

    distill:
      strategy: borup_sd
      strategy_params: {alpha: 0.6, generations: 5}
      terms: [...]            # the terms each training of the strategy uses (where it uses them)

The runner builds the data and the teacher as for any experiment (unless the strategy sets
:attr:`Strategy.owns_teacher`), then calls :meth:`Strategy.run` with a :class:`StrategyContext`: the strategy trains
one or more networks through :meth:`StrategyContext.train` (the same engine, checkpoints, resume and summaries as a
plain run) and returns the summary of its final student, which must be stored as a normal run in ``ctx.out``
(``RUN/student/best.pt``). Inside one training the strategy's loop hooks run (pass ``hooks=self``):
:meth:`~Strategy.setup`, :meth:`~Strategy.pre_epoch`, :meth:`~Strategy.train_step`, :meth:`~Strategy.post_epoch`,
:meth:`~Strategy.teardown`; modules it returns from :meth:`~Strategy.modules` train with the student.

Example:
    >>> from medkd.distill.registry import register_strategy, _unregister
    >>> @register_strategy("toy_twice_doc")
    ... class TwiceAsLong(Strategy):
    ...     '''Train the student for twice the configured iterations.'''
    ...     def run(self, ctx):
    ...         return ctx.train(iterations=2 * ctx.cfg.optim.iterations)
    >>> type(create_strategy("toy_twice_doc")).__name__
    'TwiceAsLong'
    >>> _unregister("toy_twice_doc")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from medkd.distill.loop_hooks import LoopHooks
from medkd.distill.registry import PluginKind, get_plugin, instantiate
from medkd.distill.networks import build_network

if TYPE_CHECKING:
    from medkd.distill.config import DistillConfig
    from medkd.distill.data import ClassificationData, SegmentationData
    from medkd.distill.teachers import LoadedTeacher
    from medkd.distill.terms import TermSpec

__all__ = ["Strategy", "StrategyContext", "create_strategy", "strategy_parameters", "KEEP"]


class _Keep:
    """Marker: keep the experiment's own value (``ctx.train(teacher=KEEP)``)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


class Strategy(LoopHooks):
    """Base class of strategy plugins (subclass, register with ``@register_strategy``, override what you need).

    Class attributes:
        requires_teacher: the experiment must name a teacher (``teacher.checkpoint`` or ``teacher.net``).
        owns_teacher: the strategy builds and feeds its teacher itself, e.g. on other inputs than the student's
            ``image`` (a multi-modal teacher). The runner then does not train ``teacher.net`` first (the strategy
            may read it as an architecture) and loads ``teacher.checkpoint`` checking only its task and classes:
            no forward on the student's images (teacher latency, ``eval.teacher`` test metrics). The loaded
            teacher reaches the strategy as ``ctx.teacher``; checking its inputs is the strategy's job.
        tasks: the tasks it supports (``classification``, ``segmentation``).

    The default :meth:`run` trains the student once with this strategy's loop hooks.
    """

    requires_teacher: ClassVar[bool] = False
    owns_teacher: ClassVar[bool] = False
    tasks: ClassVar[frozenset[str]] = frozenset({"classification", "segmentation"})
    plugin_key: ClassVar[str] = ""

    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        """Train the final student into ``ctx.out`` and return its summary (``ctx.train``'s)."""
        return ctx.train(hooks=self)

    def summary(self) -> dict[str, Any]:
        """Strategy-specific results for ``RUN/summary.json`` (``strategy`` entry): generations, forgetting, ..."""
        return {}

def strategy_parameters(name: str) -> dict[str, Any]:
    """The keyword parameters of strategy ``name`` and their defaults."""
    cls = get_plugin(name, PluginKind.STRATEGY)
    return {p.name: p.default for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def create_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy plugin ``name`` with ``params`` (``distill.strategy_params``).

    Raises:
        KeyError: unknown strategy (close matches listed) or a loss/utility key.
        ConfigError: an unknown parameter (close matches listed) or a bad value.
    """
    cls = get_plugin(name, PluginKind.STRATEGY)
    allowed = strategy_parameters(name)
    return instantiate(cls, f"strategy {name!r}", list(allowed), params)


@dataclass
class StrategyContext:
    """What a strategy works with: the experiment, its data and teacher, the run folder, and a way to train.

    Attributes:
        cfg: the resolved experiment. data: its data (built once). data_root: the dataset folder.
        out: the run folder (the final student goes here). device: where to train.
        teacher: the loaded teacher, or None. resume, progress: as for ``medkd distill run``.
        trainer: the runner's training function (:func:`medkd.distill.runner.train_network`).
    """

    cfg: DistillConfig
    data: ClassificationData | SegmentationData
    data_root: Path
    out: Path
    device: torch.device
    teacher: LoadedTeacher | None
    trainer: Callable[..., dict[str, Any]]
    resume: bool = False
    progress: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher_network(self) -> nn.Module | None:
        """The teacher network (eval mode), or None."""
        return self.teacher.network if self.teacher is not None else None

    def build_student(self, net: str | None = None, net_params: dict[str, Any] | None = None) -> nn.Module:
        """A fresh student network (``student.net`` unless ``net`` is given)."""
        net = net or self.cfg.student.net
        params = self.cfg.student.net_params if net_params is None else net_params
        return build_network(self.cfg, self.data, net, params)[0]

    def train(self, *, out: Path | str | None = None, net: str | None = None,
              net_params: dict[str, Any] | None = None, student: nn.Module | None = None,
              terms: tuple[TermSpec, ...] | None = None, teacher: nn.Module | None = KEEP,
              data: ClassificationData | SegmentationData | None = None, iterations: int | None = None,
              hooks: Strategy | None = None, role: str = "student") -> dict[str, Any]:
        """Train one network on the shared engine into a run folder and return its summary.

        Args:
            out: the run folder (default ``ctx.out``, the final student).
            net / net_params: the network (default the experiment's student); ``student`` an already built
                network of that architecture to start from (its weights are trained further).
            terms: the loss terms (default ``distill.terms``). teacher: a teacher network, None for none, or
                ``KEEP`` for the experiment's. data: a subset of the data (default all of it).
            iterations: default ``optim.iterations``. hooks: the strategy whose loop hooks run.
            role: ``student`` or ``teacher`` (what the run folder says it holds).
        """
        return self.trainer(
            self.cfg, data if data is not None else self.data,
            net=net or self.cfg.student.net,
            net_params=self.cfg.student.net_params if net_params is None else net_params,
            terms=self.cfg.distill.terms if terms is None else tuple(terms),
            teacher=self.teacher_network if teacher is KEEP else teacher,
            out=Path(out) if out is not None else self.out,
            iterations=iterations or self.cfg.optim.iterations, resume=self.resume, progress=self.progress,
            device=self.device, role=role, student=student, hooks=hooks)
