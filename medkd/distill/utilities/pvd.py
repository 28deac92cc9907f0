# SPDX-License-Identifier: Apache-2.0
"""PVD-AL: progressive block-wise distillation from the shallow stages to the output, with active weighting of the
cases by their distillation loss (arXiv 2304.04012; reported 10-20x faster than training from scratch).

One training on the shared engine (the experiment's optimiser and one learning-rate schedule over all steps), split
into ``S + 1`` stages by :func:`stage_bounds` (``S`` = the number of tapped student stages):

- **block stage** ``s = 1 .. S`` (together ``block_fraction`` of the steps, equal shares): a 1x1-convolution
  connector maps the student's stage-``s`` features to the teacher's stage-``s`` features (average-pooled to the
  teacher's size when they differ) under MSE. Only the student stages up to ``s`` receive gradients, so the stages
  **unfreeze in order**: student stage ``s`` keeps its initial parameters until block stage ``s`` begins, the head
  until the final stage (the whole student still runs forward, so BatchNorm running statistics move). Earlier
  stages **keep training** (they are not frozen once their own stage is over), since a deeper block's features
  depend on them.
- **final stage**: every parameter trains on the logits with the experiment's ``distill.terms`` (``ce`` + ``kd``).

**Active weighting** (PVD-AL's "AL"): each step's per-case losses ``l_i`` are combined as ``sum_i w_i l_i`` with
``w = l_dist / sum(l_dist)`` (:func:`active_weights`: detached, summing to 1, proportional to each case's
distillation loss), so the cases the student imitates worst weigh most. In block stages ``l_dist`` is the
per-case feature MSE; in the final stage it is the per-case ``kd`` term (as weighted and ramped in the YAML), and the
weights multiply each case's total (``ce`` + ``kd``). Terms without a per-case form here (anything but ``ce`` and
``kd``) are added as their batch value, unweighted, with a warning.

The utility (``medkd distill tool pvd``) trains the PVD-AL student into ``OUT`` (a normal run) and, with
``compare``, plain distillation with the same terms and steps into ``OUT/kd``, and reports both accuracies and
wall times.

Example:
    >>> import torch
    >>> stage_bounds(100, 4, 0.5), [stage_of(i, (12, 25, 38, 50)) for i in (1, 12, 13, 50, 51)]
    ((12, 25, 38, 50), [1, 1, 2, 4, 5])
    >>> active_weights(torch.tensor([1.0, 3.0])).tolist()
    [0.25, 0.75]
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.hooks import FeatureTap, tap_key
from medkd.distill.registry import register_utility
from medkd.distill.strategy import Strategy
from medkd.distill.tools import ToolContext, Utility
from medkd.errors import ConfigError

if TYPE_CHECKING:
    from medkd.distill.task import DistillTask

__all__ = ["PVD", "active_weights", "stage_bounds", "stage_of"]

logger = logging.getLogger(__name__)



def active_weights(losses: Tensor) -> Tensor:
    """``w_i = l_i / sum_j l_j`` of per-case losses ``(B,)``: detached, summing to 1 (uniform when all are 0).

    Example:
        >>> active_weights(torch.zeros(4)).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    losses = losses.detach().float().clamp_min(0.0)
    total = losses.sum()
    uniform = torch.full_like(losses, 1.0 / max(1, losses.numel()))
    return torch.where(total > 0, losses / total.clamp_min(torch.finfo(losses.dtype).tiny), uniform)


def stage_bounds(iterations: int, blocks: int, block_fraction: float) -> tuple[int, ...]:
    """The last iteration (1-based) of each block stage: ``round(k * block_fraction * iterations / blocks)``.

    Args:
        iterations: all steps (> 0). blocks: block stages (> 0). block_fraction: their share, in [0, 1).

    Raises:
        ValueError: values out of range.
    """
    if iterations < 1 or blocks < 1 or not 0.0 <= block_fraction < 1.0:
        raise ValueError(f"need iterations >= 1, blocks >= 1 and block_fraction in [0, 1), got {iterations}, {blocks}, "
                         f"{block_fraction}")
    return tuple(round(k * block_fraction * iterations / blocks) for k in range(1, blocks + 1))


def stage_of(iteration: int, bounds: tuple[int, ...]) -> int:
    """The 1-based stage of a 1-based iteration: ``1 .. len(bounds)`` block stages, ``len(bounds) + 1`` final."""
    return bisect.bisect_left(bounds, iteration) + 1


def _connector(student: Tensor, teacher: Tensor) -> nn.Module:
    """A 1x1 convolution (a linear map for ``(B, C)`` features) from the student's channels to the teacher's."""
    if student.ndim != teacher.ndim or student.ndim not in (2, 4, 5):
        raise ConfigError(f"pvd pairs (B, C[, *spatial]) features of the same rank, got student "
                          f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    if student.ndim == 2:
        return nn.Linear(student.shape[1], teacher.shape[1])
    conv = nn.Conv2d if student.ndim == 4 else nn.Conv3d
    return conv(student.shape[1], teacher.shape[1], kernel_size=1)


def _fit_to(pred: Tensor, target: Tensor) -> Tensor:
    if pred.ndim == 2 or pred.shape[2:] == target.shape[2:]:
        return pred
    pool = F.adaptive_avg_pool2d if pred.ndim == 4 else F.adaptive_avg_pool3d
    return pool(pred, target.shape[2:])


class _Progressive(Strategy):
    """PVD-AL's loop hooks: block stages with connectors, then the logits (not registered; run by :class:`PVD`)."""

    def __init__(self, student_taps: tuple[str, ...], teacher_taps: tuple[str, ...], bounds: tuple[int, ...],
                 active: bool = True) -> None:
        self.student_taps, self.teacher_taps, self.bounds, self.active = student_taps, teacher_taps, bounds, active
        self.connectors = nn.ModuleList()
        self._warned: set[str] = set()

    def setup(self, task: DistillTask) -> None:
        from medkd.distill.data import example_batch

        if task.frozen is None:
            raise ConfigError("pvd needs a teacher (teacher.checkpoint)")
        self.s_tap = FeatureTap(task.student, self.student_taps, what="student")
        self.t_tap = FeatureTap(task.frozen.module, self.teacher_taps, detach=True, what="teacher")
        x = example_batch(task.data)["image"][:2].to(task.device)
        was = task.student.training
        task.student.eval()
        with torch.no_grad():
            task.student(x)
            task.frozen(x)
        task.student.train(was)
        s, t = self.s_tap.pop(), self.t_tap.pop()
        self._pop_task_taps(task)
        self.connectors = nn.ModuleList(_connector(s[tap_key(a)], t[tap_key(b)])
                                        for a, b in zip(self.student_taps, self.teacher_taps))

    def modules(self) -> nn.Module:
        return self.connectors

    @staticmethod
    def _pop_task_taps(task: DistillTask) -> None:
        task.student_tap.pop()
        if task.teacher_tap is not None:
            task.teacher_tap.pop()

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[Tensor, dict[str, float]]:
        stage = stage_of(iteration, self.bounds)
        if stage <= len(self.bounds):
            return self._block(task, batch["image"].to(task.device, non_blocking=True), stage)
        return self._final(task, batch, iteration)

    def _block(self, task: DistillTask, images: Tensor, stage: int) -> tuple[Tensor, dict[str, float]]:
        assert task.frozen is not None
        task.student(images)  # the later stages and the head run but get no gradient: they stay as they are
        task.frozen(images)
        fs = self.s_tap.pop()[tap_key(self.student_taps[stage - 1])]
        ft = self.t_tap.pop()[tap_key(self.teacher_taps[stage - 1])].float()
        self._pop_task_taps(task)
        pred = _fit_to(self.connectors[stage - 1](fs), ft).float()
        per_case = (pred - ft).square().flatten(1).mean(dim=1)
        weights = active_weights(per_case) if self.active else active_weights(torch.ones_like(per_case))
        loss = (weights * per_case).sum()
        return loss, {"pvd/stage": float(stage), "pvd/feature_mse": float(per_case.detach().mean()),
                      "pvd/weight_max": float(weights.max())}

    def _final(self, task: DistillTask, batch: dict[str, Any], iteration: int) -> tuple[Tensor, dict[str, float]]:
        from medkd.distill.dense import tempered_kl
        from medkd.distill.task import StepOutputs
        from medkd.distill.terms import ramp_factor

        images = batch["image"].to(task.device, non_blocking=True)
        label = batch["label"].to(task.device, non_blocking=True)
        logits = task.student(images)
        student = {"logits": logits, **task.student_tap.pop()}
        teacher = task.teacher_outputs(images, batch)
        self.s_tap.pop()
        self.t_tap.pop()
        inputs = {**batch, "image": images, "label": label}
        ctx = {"epoch": (iteration - 1) / task.iterations_per_epoch, "step": iteration}
        task.last = StepOutputs(student, teacher, inputs, ctx)
        total = logits.new_zeros(len(label), dtype=torch.float32)
        distill = torch.zeros_like(total)
        rest: Tensor | float = 0.0
        logs: dict[str, float] = {"pvd/stage": float(len(self.bounds) + 1)}
        for spec in task.terms.specs:
            plugin = task.terms.losses[spec.name]
            factor = spec.weight * ramp_factor(spec.ramp, ctx["epoch"], spec.warmup)
            if spec.plugin == "kd":
                temp = plugin.temperature
                per = temp**2 * tempered_kl(logits.float(), teacher["logits"].detach().float(), temp)
                distill = distill + factor * per.detach()
            elif spec.plugin == "ce":
                per = F.cross_entropy(logits.float(), label, reduction="none", ignore_index=plugin.ignore_index,
                                      label_smoothing=plugin.label_smoothing)
            else:
                if spec.name not in self._warned:
                    self._warned.add(spec.name)
                    logger.warning("pvd: term %r (%s) has no per-case form here: added unweighted", spec.name,
                                   spec.plugin)
                raw = sum(plugin(student, teacher, inputs, ctx).values())
                rest = rest + factor * raw
                logs[f"{spec.name}/raw"] = float(raw.detach())
                continue
            total = total + factor * per
            logs[f"{spec.name}/raw"] = float(per.detach().mean())
        uniform = not (self.active and bool(distill.any()))
        weights = active_weights(torch.ones_like(distill) if uniform else distill)
        loss = (weights * total).sum() + rest
        logs["pvd/weight_max"] = float(weights.max())
        return loss, logs

    def teardown(self, task: DistillTask) -> None:
        for tap in ("s_tap", "t_tap"):
            if hasattr(self, tap):
                getattr(self, tap).remove()


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and speed of a training summary."""
    out: dict[str, Any] = {k: summary.get(k) for k in ("seconds", "seconds_per_iteration", "iterations",
                                                       "extra_params", "best_iteration")}
    for which in ("best", "last"):
        entry = summary.get(which, {})
        out[f"val_accuracy_{which}"] = entry.get("val", {}).get("accuracy")
        out[f"test_accuracy_{which}"] = entry.get("test", {}).get("accuracy")
    return out


@register_utility("pvd")
class PVD(Utility):
    """PVD-AL: progressive block-wise distillation (shallow to output) with loss-proportional case weights.

    ``medkd distill tool pvd --config apps/distill/synth_lesion_pvd.yaml --data-root DIR --out OUT`` trains the
    experiment's student from ``teacher.checkpoint`` into ``OUT`` (a normal run), plain distillation with the same
    terms and steps into ``OUT/kd`` (``compare``), and writes ``OUT/pvd.json``: the stage schedule, test accuracy
    (``pvd.test_accuracy_best``, ``kd.test_accuracy_best``) and seconds of both.

    Args:
        block_fraction: share of the steps spent in the block stages, in [0, 1) (0: active-weighted KD only).
        student_taps / teacher_taps: the paired stage modules, shallow to deep (default ``stages.0 ..`` of the
            student, the same names in the teacher).
        active: weight cases by their distillation loss (False: the plain mean, for an ablation).
        compare: also train plain distillation (same terms, steps, seed) into ``OUT/kd``.
        iterations: all steps (0: ``optim.iterations``).

    Raises:
        ValueError: ``block_fraction`` outside [0, 1), taps of different lengths, negative iterations.
    """

    command = "tool"

    def __init__(self, block_fraction: float = 0.5, student_taps: list[str] | tuple[str, ...] = (),
                 teacher_taps: list[str] | tuple[str, ...] = (), active: bool = True, compare: bool = True,
                 iterations: int = 0) -> None:
        if not 0.0 <= float(block_fraction) < 1.0:
            raise ValueError(f"block_fraction must lie in [0, 1), got {block_fraction}")
        if teacher_taps and len(teacher_taps) != len(student_taps or teacher_taps):
            raise ValueError(f"student_taps and teacher_taps pair stages: got {len(student_taps)} and "
                             f"{len(teacher_taps)} names")
        if int(iterations) < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.block_fraction, self.active, self.compare = float(block_fraction), bool(active), bool(compare)
        self.student_taps, self.teacher_taps = tuple(student_taps), tuple(teacher_taps)
        self.iterations = int(iterations)

    def _taps(self, ctx: ToolContext) -> tuple[tuple[str, ...], tuple[str, ...]]:
        taps = self.student_taps
        if not taps:
            stages = getattr(ctx.build_student(), "stages", None)
            if not isinstance(stages, nn.Sequential):
                raise ConfigError(f"student {ctx.cfg.student.net!r} has no 'stages': give --param "
                                  "student_taps=[...] teacher_taps=[...] (medkd distill list-modules --net NAME)")
            taps = tuple(f"stages.{i}" for i in range(len(stages)))
        teacher_taps = self.teacher_taps or taps
        if len(teacher_taps) != len(taps):
            raise ConfigError(f"pvd pairs stages: {len(taps)} student taps, {len(teacher_taps)} teacher taps")
        return taps, teacher_taps

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        cfg = ctx.cfg
        if cfg.task != "classification":
            raise ConfigError(f"pvd distils classification students, this experiment is {cfg.task}")
        ctx.load_teacher()  # a clear error without teacher.checkpoint
        student_taps, teacher_taps = self._taps(ctx)
        iterations = self.iterations or cfg.optim.iterations
        bounds = stage_bounds(iterations, len(student_taps), self.block_fraction)
        schedule = [{"stage": s + 1, "first": (bounds[s - 1] if s else 0) + 1, "last": bounds[s],
                     "student": student_taps[s], "teacher": teacher_taps[s]} for s in range(len(bounds))]
        schedule.append({"stage": len(bounds) + 1, "first": bounds[-1] + 1, "last": iterations, "terms":
                         [t.name for t in cfg.distill.terms]})
        logger.info("pvd: %d block stages over iterations 1-%d, then the logits until %d", len(bounds), bounds[-1],
                    iterations)
        strategy = _Progressive(student_taps, teacher_taps, bounds, active=self.active)
        result: dict[str, Any] = {"schedule": schedule, "active": self.active, "block_fraction": self.block_fraction,
                                  "earlier_stages": "keep training"}
        result["pvd"] = _brief(ctx.train(hooks=strategy, iterations=iterations))
        if self.compare:  # no teacher cache: the same teacher forward per step as PVD-AL, so seconds compare
            plain = replace(ctx, cfg=replace(cfg, teacher=replace(cfg.teacher, cache=False)))
            result["kd"] = _brief(plain.train(out=ctx.out / "kd", iterations=iterations))
            for which in ("best", "last"):
                a, b = result["pvd"][f"test_accuracy_{which}"], result["kd"][f"test_accuracy_{which}"]
                result[f"delta_test_accuracy_{which}"] = round(a - b, 5) if a is not None and b is not None else None
            logger.info("pvd: test accuracy %.4f in %.1f s, plain distillation %.4f in %.1f s",
                        result["pvd"]["test_accuracy_best"] or 0.0, result["pvd"]["seconds"] or 0.0,
                        result["kd"]["test_accuracy_best"] or 0.0, result["kd"]["seconds"] or 0.0)
        return result
