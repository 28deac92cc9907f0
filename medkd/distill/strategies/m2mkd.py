# SPDX-License-Identifier: Apache-2.0
"""m2mKD: module-to-module distillation of a modular teacher, one block at a time inside the frozen teacher.

Lo et al., "m2mKD: Module-to-Module Knowledge Distillation for Modular Transformers", arXiv 2402.16918 (code
kamanphoebe/m2mKD). In medkd: block-wise distillation of a big encoder into a modular student; on SynthLesion-2D
``kd_cnn_wide`` (the meta model) teaches ``kd_cnn``, both built of the same number of ``stages`` at the same
resolutions.

**Phase 1** (one pair per block ``i``, ``module_iterations`` steps each): the **hybrid** network is the teacher with
its stage ``i`` replaced by ``stitch_in -> student stage i -> stitch_out`` (:class:`HybridNet`; the stitches are 1x1
convolutions, teacher width <-> student width, :class:`Stitch`). Only the student stage and its two stitches train,
on ``(1 - alpha) * CE(hybrid, y) + alpha * T^2 * sum KL(p_teacher || p_hybrid) / (B * C)`` (:func:`m2m_loss`;
spec §3.12, ``alpha = 0.5``, ``T = 1``); the teacher (the meta model) runs in eval mode and gets no gradient. The
pairs are independent of each other (each sees only the frozen teacher), so they could run on separate GPUs; here
they run one after the other, each checkpointed in ``RUN/modules/stage_<i>.pt`` (reused on ``--resume``).

**Phase 2**: the student's trained stages are assembled into the student (``student.net``), its head fresh or,
with ``head_iterations``, fitted first on CE for that many steps with the stages frozen; then the whole student
trains end to end with the experiment's ``distill.terms`` and teacher into ``RUN`` (a normal run).

**MoE student** (``experts >= 2``; 0, the default, keeps the student as configured): every student stage becomes a
:class:`~medkd.distill.moe.MoEStage`, ``experts`` copies of the stage (identical at the start) behind a linear
router on the global-average-pooled stage input; each sample goes to its ``top_k`` most probable experts, whose
gate-weighted outputs are summed (gates renormalised over the selected experts). Phase 1 trains each mixture (its
experts and router) inside the teacher like a plain stage; in both phases ``balance_weight`` times the
Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e`` of the mixtures is added (logged ``moe/balance`` in
phase 2). The run stays a normal run: ``student.json`` records ``net_params.moe = {experts, top_k, stages}``, from
which :class:`~medkd.distill.students.ClassifierInfo` rebuilds the wrapped network. ``summary()`` records
``experts``, ``top_k`` and, per block, the last balance loss.

``summary()`` holds, per block, the hybrid's validation accuracy and its last CE and KL. Differences from the paper
[recon]: the official stitches are linear layers on transformer tokens (width 1024); here 1x1 convolutions on feature
maps, initialised to a (rectangular) identity so that a stitch between equal widths starts as the identity; the
official meta model is a pre-trained transformer cut into modules; here any network whose ``stages`` (an
``nn.Sequential``/``nn.ModuleList``) run in order. The paper's modular students (NAC, V-MoE) are transformers that
route tokens; here a whole stage (a convolutional block) is the expert and routing is per sample from pooled
features, experts start as copies of the configured stage, the renormalising sum of the gates is detached (so that
top-1 gates of 1 still pass the task gradient to the router), and the balance loss and its default weight are
Switch Transformer's (not checked against the official code).

Example:
    >>> import torch
    >>> from medkd.nets import create_net
    >>> teacher = create_net("kd_cnn", width=8, depth=2).eval()
    >>> import copy
    >>> hybrid = HybridNet(teacher, 1, copy.deepcopy(teacher.stages[1]), Stitch(8, 8), Stitch(16, 16)).eval()
    >>> x = torch.randn(2, 1, 16, 16)
    >>> torch.allclose(hybrid(x), teacher(x), atol=1e-6)
    True
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.dense import tempered_kl
from medkd.distill.moe import MoEStage, check_moe, moe_stages, wrap_stages
from medkd.distill.registry import register_strategy
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.errors import ConfigError

if TYPE_CHECKING:
    from medkd.distill.data import ClassificationData

__all__ = ["M2MKD", "HybridNet", "Stitch", "m2m_loss", "stage_shapes"]

logger = logging.getLogger(__name__)

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class Stitch(nn.Module):
    """A 1x1 convolution ``(B, in, *spatial) -> (B, out, *spatial)`` (a linear layer for ``(B, in)``), initialised
    to a rectangular identity (channel ``c`` -> ``c`` for ``c < min(in, out)``, no bias).

    Args:
        in_channels / out_channels: widths. spatial_dims: 0 (vectors), 1, 2 or 3.

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> Stitch(4, 4)(x).equal(x), Stitch(4, 6)(x)[:, 4:].abs().max().item()
        (True, 0.0)
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (0, *_CONV):
            raise ValueError(f"spatial_dims must be 0, 1, 2 or 3, got {spatial_dims}")
        self.proj = (nn.Linear(in_channels, out_channels) if spatial_dims == 0
                     else _CONV[spatial_dims](in_channels, out_channels, kernel_size=1))
        with torch.no_grad():
            eye = torch.eye(out_channels, in_channels)
            self.proj.weight.copy_(eye.view(out_channels, in_channels, *[1] * spatial_dims))
            self.proj.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def _stages(net: nn.Module, attr: str, what: str) -> nn.Module:
    stages = getattr(net, attr, None)
    if not isinstance(stages, (nn.Sequential, nn.ModuleList)) or len(stages) == 0:
        raise ConfigError(f"m2mkd needs a modular {what}: {type(net).__name__} has no {attr!r} (an nn.Sequential or "
                          "nn.ModuleList of stages run in order, as kd_cnn / kd_cnn_wide)")
    return stages


class HybridNet(nn.Module):
    """The teacher with its stage ``index`` replaced by ``stitch_out(block(stitch_in(x)))`` (a forward hook on the
    teacher's stage, no surgery). The teacher always stays in eval mode, whatever ``train()`` is called with.

    Args:
        teacher: the meta model, with ``teacher.<stages>[index]``. index: the stage replaced.
        block: the student's stage. stitch_in / stitch_out: the stitches. stages: the stages attribute name.
    """

    def __init__(self, teacher: nn.Module, index: int, block: nn.Module, stitch_in: nn.Module, stitch_out: nn.Module,
                 stages: str = "stages") -> None:
        super().__init__()
        self.teacher, self.index = teacher, index
        self.block, self.stitch_in, self.stitch_out = block, stitch_in, stitch_out
        self._stage = _stages(teacher, stages, "teacher")[index]

    def train(self, mode: bool = True) -> HybridNet:
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        def replace_output(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> Tensor:
            return self.stitch_out(self.block(self.stitch_in(inputs[0])))

        handle = self._stage.register_forward_hook(replace_output)
        try:
            return self.teacher(x)
        finally:
            handle.remove()


def m2m_loss(hybrid: Tensor, teacher: Tensor, label: Tensor, alpha: float = 0.5,
             temperature: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """``(1 - alpha) * CE(hybrid, y) + alpha * T^2 * sum KL(p_teacher || p_hybrid) / (B * C)`` of logits ``(B, C)``.

    Returns:
        ``(loss, {"ce": ..., "kl": ...})`` (``kl`` = ``T^2 * sum KL / (B * C)``, unweighted).

    Example:
        >>> z = torch.randn(4, 3)
        >>> loss, parts = m2m_loss(z, z, torch.tensor([0, 1, 2, 0]))
        >>> float(parts["kl"]), bool(torch.isclose(loss, 0.5 * parts["ce"]))
        (0.0, True)
    """
    b, c = hybrid.shape
    kl = temperature**2 * tempered_kl(hybrid, teacher.detach(), temperature).sum() / (b * c)
    ce = F.cross_entropy(hybrid, label)
    return (1 - alpha) * ce + alpha * kl, {"ce": ce, "kl": kl}


def stage_shapes(net: nn.Module, x: Tensor, stages: str = "stages") -> list[tuple[torch.Size, torch.Size]]:
    """``(input shape, output shape)`` of every stage of ``net`` on ``x`` (eval mode, no grad; mode restored)."""
    seen: list[tuple[torch.Size, torch.Size]] = []
    handles = [m.register_forward_hook(lambda _m, i, o: seen.append((i[0].shape, o.shape)))
               for m in _stages(net, stages, "network")]
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
        net.train(was)
    return seen


@register_strategy("m2mkd")
class M2MKD(Strategy):
    """m2mKD (Lo et al., arXiv 2402.16918): each student stage learns inside the frozen teacher, then end-to-end KD.

    Args:
        alpha: KL weight in phase 1 (CE gets ``1 - alpha``), in [0, 1]. temperature: T of phase 1 (> 0).
        module_iterations: phase-1 steps per block (0: ``optim.iterations // number of stages``, at least 1).
        head_iterations: steps fitting the assembled student's head on CE first (0: the head stays fresh).
        stages: the attribute holding the stages in teacher and student.
        experts: 0 (the student as configured) or >= 2: every student stage a mixture of that many experts.
        top_k: experts per sample, in [1, experts]. balance_weight: weight of the load-balancing loss (>= 0).

    Raises:
        ConfigError: a bad value; at run time a teacher or student without ``stages``, different numbers of stages,
            or stages whose resolutions differ.

    Example:
        >>> M2MKD(experts=4, top_k=2).experts
        4
    """

    requires_teacher = True
    tasks = frozenset({"classification"})

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, module_iterations: int = 0,
                 head_iterations: int = 0, stages: str = "stages", experts: int = 0, top_k: int = 1,
                 balance_weight: float = 0.01) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"m2mkd: alpha must be in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ConfigError(f"m2mkd: temperature must be > 0, got {temperature}")
        if module_iterations < 0 or head_iterations < 0:
            raise ConfigError(f"m2mkd: module_iterations and head_iterations must be >= 0, got {module_iterations}, "
                              f"{head_iterations}")
        if experts != 0:
            check_moe(experts, top_k, "m2mkd")
        elif top_k != 1:
            raise ConfigError(f"m2mkd: top_k={top_k} needs experts >= 2 (experts=0: no mixture of experts)")
        if not balance_weight >= 0:
            raise ConfigError(f"m2mkd: balance_weight must be >= 0, got {balance_weight}")
        self.experts, self.top_k, self.balance_weight = int(experts), int(top_k), float(balance_weight)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.module_iterations, self.head_iterations = int(module_iterations), int(head_iterations)
        self.stages = stages
        self._results: dict[str, Any] = {}

    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        from medkd.distill.data import example_batch

        teacher = ctx.teacher_network
        assert teacher is not None  # requires_teacher
        data: ClassificationData = ctx.data  # type: ignore[assignment]
        student = ctx.build_student()
        t_stages, s_stages = _stages(teacher, self.stages, "teacher"), _stages(student, self.stages, "student")
        if len(t_stages) != len(s_stages):
            raise ConfigError(f"m2mkd: the teacher has {len(t_stages)} stages, the student {len(s_stages)}; they "
                              "must match (e.g. kd_cnn_wide and kd_cnn of the same depth)")
        if self.experts:  # s_stages[i] becomes a mixture of copies of itself
            if "moe" in ctx.cfg.student.net_params:
                raise ConfigError("m2mkd: student.net_params already has 'moe'; set experts and top_k in "
                                  "distill.strategy_params only")
            wrap_stages(student, self.experts, self.top_k, self.stages)
            self._results.update(experts=self.experts, top_k=self.top_k, balance_weight=self.balance_weight)
        device = ctx.device
        teacher.to(device).eval()
        student.to(device)
        x = example_batch(data)["image"][:1].to(device)
        t_shapes, s_shapes = stage_shapes(teacher, x, self.stages), stage_shapes(student, x, self.stages)
        for i, ((ti, to), (si, so)) in enumerate(zip(t_shapes, s_shapes, strict=True)):
            if ti[2:] != si[2:] or to[2:] != so[2:]:
                raise ConfigError(f"m2mkd: stage {i} works at {tuple(ti[2:])}->{tuple(to[2:])} in the teacher, "
                                  f"{tuple(si[2:])}->{tuple(so[2:])} in the student; the resolutions must match")
        iterations = self.module_iterations or max(1, ctx.cfg.optim.iterations // len(t_stages))
        flags = [p.requires_grad for p in teacher.parameters()]
        teacher.requires_grad_(False)
        try:
            blocks = []
            for i, ((ti, to), (si, so)) in enumerate(zip(t_shapes, s_shapes, strict=True)):
                dims = len(ti) - 2
                hybrid = HybridNet(teacher, i, s_stages[i], Stitch(ti[1], si[1], dims), Stitch(so[1], to[1], dims),
                                   self.stages).to(device)
                blocks.append(self._train_block(ctx, data, hybrid, iterations))
        finally:
            for p, flag in zip(teacher.parameters(), flags, strict=True):
                p.requires_grad_(flag)
        self._results["blocks"] = blocks
        self._results["module_iterations"] = iterations
        if self.head_iterations:
            self._results["head_fit_val_accuracy"] = self._fit_head(ctx, data, student)
        if not self.experts:
            return ctx.train(student=student)
        moe = {"experts": self.experts, "top_k": self.top_k, "stages": self.stages}
        return ctx.train(student=student, net_params={**ctx.cfg.student.net_params, "moe": moe}, hooks=self)

    def train_step(self, task: Any, batch: dict[str, Any], iteration: int) -> tuple[Tensor, dict[str, float]]:
        """Phase 2 with an MoE student: the experiment's terms plus the weighted load-balancing loss."""
        loss, logs = task.step_loss(batch, iteration)
        balance = self._balance(task.student)
        return loss + self.balance_weight * balance, {**logs, "moe/balance": float(balance)}

    @staticmethod
    def _balance(net: nn.Module) -> Tensor:
        """The sum of the load-balancing losses of the last forward of ``net``'s mixtures of experts."""
        losses = [m.balance_loss for m in moe_stages(net)]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def _train_block(self, ctx: StrategyContext, data: ClassificationData, hybrid: HybridNet,
                     iterations: int) -> dict[str, Any]:
        """Phase 1 for one block: the student stage and its stitches, on :func:`m2m_loss`."""
        from medkd.distill.task import build_optimizer, schedule_lr
        from medkd.engine.checkpoint import load_checkpoint, save_checkpoint

        i, device = hybrid.index, ctx.device
        trained = nn.ModuleDict({"block": hybrid.block, "stitch_in": hybrid.stitch_in, "stitch_out": hybrid.stitch_out})
        path = ctx.out / "modules" / f"stage_{i}.pt"
        if ctx.resume and path.is_file():
            saved = load_checkpoint(path)
            trained.load_state_dict(saved["student"])
            logger.info("m2mkd: stage %d read from %s", i, path)
            return {"stage": i, **saved["extra_state"]}
        optim = replace(ctx.cfg.optim, iterations=iterations)
        optimizer = build_optimizer(optim, [trained])
        hybrid.train()
        batches = data.batches(ctx.cfg.experiment.seed + 1000 * (i + 1))
        ce = kl = balance = torch.zeros(())
        for it in range(1, iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = schedule_lr(optim, it)
            batch = next(batches)
            image, label = batch["image"].to(device), batch["label"].to(device)
            with torch.no_grad():
                target = hybrid.teacher(image)
            loss, parts = m2m_loss(hybrid(image), target, label, self.alpha, self.temperature)
            if isinstance(hybrid.block, MoEStage):
                balance = hybrid.block.balance_loss
                loss = loss + self.balance_weight * balance
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ce, kl, balance = parts["ce"].detach(), parts["kl"].detach(), balance.detach()
        result = {"val_accuracy": round(data.validate(hybrid, device)["accuracy"], 4), "ce": round(float(ce), 4),
                  "kl": round(float(kl), 4), "iterations": iterations}
        if isinstance(hybrid.block, MoEStage):
            result["balance"] = round(float(balance), 4)
        save_checkpoint(path, student=trained, teacher=None, optimizer=None, config={"strategy": "m2mkd"},
                        iteration=iterations, extra_state=result)
        logger.info("m2mkd: stage %d trained in the teacher: hybrid val accuracy %.3f", i, result["val_accuracy"])
        return {"stage": i, **result}

    def _fit_head(self, ctx: StrategyContext, data: ClassificationData, student: nn.Module) -> float:
        """A short CE fit of the assembled student's head (``head``), its stages frozen in eval mode."""
        from medkd.distill.task import build_optimizer, schedule_lr

        head = getattr(student, "head", None)
        if not isinstance(head, nn.Module):
            raise ConfigError("m2mkd: head_iterations needs a student with a 'head' module (kd_cnn)")
        optim = replace(ctx.cfg.optim, iterations=self.head_iterations)
        optimizer = build_optimizer(optim, [head])
        student.eval()
        batches = data.batches(ctx.cfg.experiment.seed + 999)
        for it in range(1, self.head_iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = schedule_lr(optim, it)
            batch = next(batches)
            loss = F.cross_entropy(student(batch["image"].to(ctx.device)), batch["label"].to(ctx.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        student.zero_grad(set_to_none=True)
        student.train()
        return round(data.validate(student, ctx.device)["accuracy"], 4)

    def summary(self) -> dict[str, Any]:
        return copy.deepcopy(self._results)
