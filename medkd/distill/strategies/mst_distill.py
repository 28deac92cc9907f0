# SPDX-License-Identifier: Apache-2.0
"""MST-Distill: a multi-modal teacher taught to a single-modality student through a mixture of specialised teachers.

Li et al., "MST-Distill: Mixture of Specialized Teachers for Cross-Modal Knowledge Distillation", ACM MM 2025
(arXiv 2507.07015; code Gray-OREO/MST-Distill, ``main-MST-Distill.py`` and ``KD_methods/MST.py``). In medkd: a
multi-sequence MRI or PET/CT teacher for a student that sees one modality; on SynthLesion-2D, the teacher sees the
image and its paired second modality (``data.paired_column``, CSV layout), the student the image alone.

Networks (classification only): the **teacher** sees ``cat(image, paired)`` (``2 C`` input channels), the
**auxiliary** model sees ``paired`` alone, the **student** (``student.net``) sees ``image`` alone, so the final
student is a normal run of the experiment's student and evaluates like any other. Teacher and auxiliary share one
architecture: ``strategy_params.teacher_net``/``teacher_params``, else ``teacher.net``/``teacher.net_params`` of the
YAML, else ``kd_cnn`` with its defaults (input channels adapted). The strategy builds and feeds its teacher itself
(:attr:`~medkd.distill.strategy.Strategy.owns_teacher`): the runner does not train ``teacher.net`` first (here it
only names the architecture) and does not run a loaded teacher on image-only batches. A multi-modal teacher trained
before (``RUN/mm_teacher`` of an earlier run, ``2 C`` input channels) is reused with
``strategy_params.teacher_checkpoint`` or the experiment's ``teacher.checkpoint`` (one of them): it stays frozen and
stage 1 co-trains the auxiliary model and the student only. A reused teacher must take ``2 C`` input channels (image
and paired modality concatenated); an image-only checkpoint is refused with a ``ConfigError``.

Stages (``T`` = ``temperature``, KL(p_a||p_b) with ``p = softmax(z / T)``):

1. **Co-training** (``cotrain_iterations``, into ``RUN/cotrain``): each of teacher ``t``, auxiliary ``a`` and
   student ``s`` minimises its CE plus ``T^2 KL(p_x||p_self)`` towards the two others, the targets not detached, as
   the official code. The co-trained teacher and auxiliary model are written as run folders ``RUN/mm_teacher``
   and ``RUN/auxiliary``.
2. **MaskNets** (``mask_iterations``): a small sigmoid gate (:class:`MaskNet`) on each of the ``mask_layers`` of
   the teacher and of the auxiliary model scales that layer's channels by a mask in (0, 1); each masked network is
   one **expert** (``E = 2 * len(mask_layers)``, 4 by default). With the networks frozen (eval mode), each mask
   minimises ``T^2 KL(p_s||p_masked)``: the expert moves towards the student, which limits knowledge drift.
3. **Routed distillation** (``optim.iterations``, into ``RUN``): a :class:`GateNet` on the student's logits picks the
   top-``k`` experts per case; the student minimises ``ce_weight * CE + kd_weight * mean_topk T^2 KL(p_e||p_s) +
   balance_weight * KL(uniform||mean gate)`` (:func:`topk_expert_kd`, :func:`balance_loss`). The top-k choice is not
   differentiable, so the official gate learns from the balance term alone; ``gate_weighted: true`` (a medkd option)
   weighs the top-k KD terms by the gate probabilities renormalised by their detached sum, which leaves the loss
   value unchanged and lets the KD term move the gate away from experts the student disagrees with.

Gate and masks are strategy modules (saved in ``RUN/student/*.pt`` under ``strategy``, never exported); the
experiment's ``distill.terms`` are not used (the loss above is MST-Distill's). ``summary()`` holds the test accuracy
of the teacher, the auxiliary model and each expert, the stage losses and the share of cases routed to each expert.

Simplifications [recon]: the official MaskNet embeds the pooled channels as tokens for multi-head attention; medkd's
is a squeeze-excitation gate (pooled channels -> MLP -> sigmoid), with its output bias at 2 so the experts start
near the unmasked networks. The official run keeps the masks of the best validation epoch and decays the KD and
balance weights during stage 3; medkd keeps the last masks and constant weights. The official balance term is
``KLDivLoss(reduction="batchmean")`` on the expert vector, i.e. divided by ``E``; here it is the plain KL of spec
§3.11 (absorbed by ``balance_weight``). Defaults: ``k=1``, ``T=4``, weights 1; the paper trains every stage with Adam
at 1e-4 (the preset uses the experiment's optimiser).

Example:
    >>> import torch
    >>> gate = torch.full((3, 4), 0.25)
    >>> float(balance_loss(gate))
    0.0
    >>> s, experts = torch.zeros(3, 5), torch.zeros(3, 4, 5)
    >>> loss, chosen = topk_expert_kd(s, experts, torch.softmax(torch.randn(3, 4), 1), k=1)
    >>> float(loss), tuple(chosen.shape)
    (0.0, (3, 1))
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.dense import tempered_kl
from medkd.distill.registry import register_strategy
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.distill.terms import TermSpec
from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medkd.distill.data import ClassificationData
    from medkd.distill.task import DistillTask

__all__ = ["GateNet", "MSTDistill", "MaskNet", "balance_loss", "masked_forward", "topk_expert_kd"]

logger = logging.getLogger(__name__)

_DEFAULT_NET = "kd_cnn"


class MaskNet(nn.Module):
    """A channel mask in (0, 1) computed from a feature map (squeeze-excitation style) [recon].

    ``(B, C, *spatial)`` or ``(B, C)`` -> ``(B, C)``: spatial mean, ``Linear(C, h) -> ReLU -> Linear(h, C) ->
    sigmoid`` with ``h = max(4, C // reduction)``; the last bias starts at ``init_bias`` (2: masks near 0.88, so an
    expert starts close to its unmasked network).

    Args:
        channels: C. reduction: hidden-width divisor (>= 1). init_bias: the output bias at initialisation.

    Example:
        >>> m = MaskNet(8)(torch.randn(2, 8, 4, 4))
        >>> tuple(m.shape), bool(((m > 0) & (m < 1)).all())
        ((2, 8), True)
    """

    def __init__(self, channels: int, reduction: int = 4, init_bias: float = 2.0) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.constant_(self.fc2.bias, init_bias)

    def forward(self, feat: Tensor) -> Tensor:
        pooled = feat.flatten(2).mean(-1) if feat.ndim > 2 else feat
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))


class GateNet(nn.Module):
    """The router: student logits ``(B, K)`` -> expert logits ``(B, E)`` (``Linear(K, 2K) -> Linear(2K, E)``, no
    activation in between, as the official ``GateNet``).

    Example:
        >>> GateNet(5, 4)(torch.randn(3, 5)).shape
        torch.Size([3, 4])
    """

    def __init__(self, num_classes: int, experts: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(num_classes, 2 * num_classes)
        self.fc2 = nn.Linear(2 * num_classes, experts)

    def forward(self, logits: Tensor) -> Tensor:
        return self.fc2(self.fc1(logits))


def balance_loss(gate_probs: Tensor) -> Tensor:
    """Load balance ``KL(uniform || mean_b gate_probs[b])`` of gate probabilities ``(B, E)``: 0 for a uniform mean.

    Example:
        >>> round(float(balance_loss(torch.tensor([[1.0, 0.0], [1.0, 0.0]]) * 0.98 + 0.01)), 4)
        1.6145
    """
    mean = gate_probs.mean(0).clamp_min(torch.finfo(gate_probs.dtype).tiny)
    uniform = torch.full_like(mean, 1.0 / mean.numel())
    return (uniform * (uniform.log() - mean.log())).sum()


def topk_expert_kd(student: Tensor, experts: Tensor, gate_probs: Tensor, k: int = 1, temperature: float = 4.0,
                   weighted: bool = False) -> tuple[Tensor, Tensor]:
    """The routed distillation term: per case, the mean over its top-``k`` experts of ``T^2 KL(p_e || p_s)``,
    averaged over the batch (experts detached).

    Args:
        student: logits ``(B, K)``. experts: expert logits ``(B, E, K)``. gate_probs: ``(B, E)``.
        k: experts per case (1..E). temperature: T.
        weighted: weigh each chosen expert's term by its gate probability over the detached sum of the chosen
            ones (same value, a gradient for the gate) instead of the plain mean.

    Returns:
        ``(loss, chosen)``: the scalar and the chosen expert indices ``(B, k)``.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.tensor([[2.0, 0.0, 0.0]]).repeat(2, 1)
        >>> loss, _ = topk_expert_kd(s, t[:, None], torch.ones(2, 1), temperature=1.0)
        >>> round(float(loss), 4)  # one expert: plain KD
        0.433
    """
    b, e, c = experts.shape
    if not 1 <= k <= e:
        raise ValueError(f"k must be in 1..{e} (the number of experts), got {k}")
    chosen = gate_probs.topk(k, dim=1).indices
    picked = experts.detach().gather(1, chosen[..., None].expand(-1, -1, c))
    kl = tempered_kl(student[:, None].expand(-1, k, -1).reshape(-1, c), picked.reshape(-1, c), temperature)
    kl = temperature**2 * kl.view(b, k)
    if weighted:
        g = gate_probs.gather(1, chosen)
        per_case = (g / g.sum(1, keepdim=True).detach() * kl).sum(1)
    else:
        per_case = kl.mean(1)
    return per_case.mean(), chosen


@contextmanager
def masked_forward(layer: nn.Module, mask: nn.Module) -> Iterator[None]:
    """Within the block, ``layer``'s output ``(B, C, ...)`` is multiplied by ``mask(output)`` ``(B, C)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
        >>> with masked_forward(net[0], lambda f: torch.zeros_like(f)):
        ...     net(torch.randn(1, 3)).equal(net[1].bias[None])
        True
    """

    def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
        m = mask(output)
        return output * m.view(*m.shape, *[1] * (output.ndim - m.ndim))

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _input_channels(net: nn.Module) -> int | None:
    """The input channels of the first convolution (or linear layer) of ``net``."""
    for module in net.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.in_channels
        if isinstance(module, nn.Linear):
            return module.in_features
    return None


def _module(net: nn.Module, name: str, what: str) -> nn.Module:
    modules = dict(net.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"mst_distill: the {what} has no module {name!r} (mask_layers).{hint} See "
                          "'medkd distill list-modules --net NAME'")
    return modules[name]


def _set_frozen(nets: Sequence[nn.Module], frozen: bool) -> None:
    for net in nets:
        net.train(not frozen)
        for p in net.parameters():
            p.requires_grad_(not frozen)


def _mean_kl(pred: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``T^2 * mean_b KL(p_target || p_pred)`` (the target keeps its gradient, as the official co-training)."""
    return temperature**2 * tempered_kl(pred, target, temperature).mean()


@register_strategy("mst_distill")
class MSTDistill(Strategy):
    """MST-Distill (Li et al., ACM MM'25): multi-modal teacher -> single-modality student via routed masked experts.

    Args:
        k: experts per case (1..E, ``E = 2 * len(mask_layers)``). temperature: T of every KL.
        ce_weight / kd_weight / balance_weight: the stage-3 weights (>= 0).
        cotrain_iterations / mask_iterations: stage-1 / stage-2 steps (0: ``optim.iterations``).
        mask_layers: modules of teacher and auxiliary model that get a MaskNet (dotted names).
        mask_reduction: MaskNet hidden-width divisor. gate_weighted: the gate also learns from the KD term.
        teacher_net / teacher_params: the architecture of teacher and auxiliary model (module docstring).
        teacher_checkpoint: a run folder holding a multi-modal teacher (``2 C`` inputs, e.g. ``RUN/mm_teacher``
            of an earlier run) to reuse, frozen; relative to the current folder. The experiment's
            ``teacher.checkpoint`` does the same.

    Raises:
        ConfigError: a bad value (in ``__init__``), or at run time no ``data.paired_column``, an unknown mask layer,
            a teacher checkpoint (either one) of the wrong input channels, or both checkpoints set.
    """

    tasks = frozenset({"classification"})
    owns_teacher = True  # a multi-modal teacher: the runner must not feed it image-only batches

    def __init__(self, k: int = 1, temperature: float = 4.0, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 balance_weight: float = 1.0, cotrain_iterations: int = 0, mask_iterations: int = 0,
                 mask_layers: Sequence[str] = ("stages.2", "stages.3"), mask_reduction: int = 4,
                 gate_weighted: bool = False, teacher_net: str = "", teacher_params: dict[str, Any] | None = None,
                 teacher_checkpoint: str = "") -> None:
        self.mask_layers = tuple(str(n) for n in ([mask_layers] if isinstance(mask_layers, str) else mask_layers))
        self.experts = 2 * len(self.mask_layers)
        if not self.mask_layers:
            raise ConfigError("mst_distill: mask_layers must name at least one module, e.g. [stages.2, stages.3]")
        if not 1 <= int(k) <= self.experts:
            raise ConfigError(f"mst_distill: k must be in 1..{self.experts} (2 x {len(self.mask_layers)} mask "
                              f"layers), got {k}")
        if not temperature > 0:
            raise ConfigError(f"mst_distill: temperature must be > 0, got {temperature}")
        for name, value in (("ce_weight", ce_weight), ("kd_weight", kd_weight), ("balance_weight", balance_weight),
                            ("cotrain_iterations", cotrain_iterations), ("mask_iterations", mask_iterations)):
            if value < 0:
                raise ConfigError(f"mst_distill: {name} must be >= 0, got {value}")
        if mask_reduction < 1:
            raise ConfigError(f"mst_distill: mask_reduction must be >= 1, got {mask_reduction}")
        self.k, self.temperature = int(k), float(temperature)
        self.ce_weight, self.kd_weight, self.balance_weight = float(ce_weight), float(kd_weight), float(balance_weight)
        self.cotrain_iterations, self.mask_iterations = int(cotrain_iterations), int(mask_iterations)
        self.mask_reduction, self.gate_weighted = int(mask_reduction), bool(gate_weighted)
        self.teacher_net, self.teacher_params = teacher_net, dict(teacher_params or {})
        self.teacher_checkpoint = teacher_checkpoint
        self._phase = ""
        self._teacher: nn.Module | None = None
        self._auxiliary: nn.Module | None = None
        self._teacher_frozen = False
        self.masks: nn.ModuleList | None = None
        self._layers: list[nn.Module] = []
        self.gate: GateNet | None = None
        self._routed: Tensor | None = None
        self._results: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------ networks
    def _architecture(self, ctx: StrategyContext) -> tuple[str, dict[str, Any]]:
        if self.teacher_net:
            return self.teacher_net, self.teacher_params
        if ctx.cfg.teacher.net:
            return ctx.cfg.teacher.net, dict(ctx.cfg.teacher.net_params) | self.teacher_params
        return _DEFAULT_NET, self.teacher_params

    def _build(self, ctx: StrategyContext, in_channels: int) -> nn.Module:
        from medkd.distill.networks import build_network

        net, params = self._architecture(ctx)
        cfg = replace(ctx.cfg, data=replace(ctx.cfg.data, in_channels=in_channels))
        return build_network(cfg, ctx.data, net, params)[0]

    def _reused_teacher(self, ctx: StrategyContext, channels: int) -> nn.Module | None:
        """The frozen multi-modal teacher of ``teacher_checkpoint`` or of the experiment's ``teacher.checkpoint``
        (loaded by the runner, ``ctx.teacher``), or None to co-train one."""
        if self.teacher_checkpoint and ctx.teacher is not None:
            raise ConfigError(f"mst_distill: both strategy_params.teacher_checkpoint ({self.teacher_checkpoint}) and "
                              f"teacher.checkpoint ({ctx.teacher.source}) name a teacher; set only one of them")
        if self.teacher_checkpoint:
            from medkd.distill.teachers import load_teacher

            loaded, where = load_teacher(self.teacher_checkpoint, ctx.device), "teacher_checkpoint"
        elif ctx.teacher is not None:
            loaded, where = ctx.teacher, "teacher.checkpoint"
        else:
            return None
        found = _input_channels(loaded.network)
        if found != channels:
            raise ConfigError(
                f"mst_distill: {where} {loaded.source} takes {found} input channels; the multi-modal teacher needs "
                f"{channels} (image + paired modality concatenated). Give a multi-modal teacher run (RUN/mm_teacher of "
                "an earlier mst_distill run), or leave it empty and name the architecture in "
                "strategy_params.teacher_net to co-train one")
        if loaded.num_classes and loaded.num_classes != ctx.data.num_classes:
            raise DataError(loaded.source, f"the teacher predicts {loaded.num_classes} classes, the data has "
                                           f"{ctx.data.num_classes}")
        return loaded.network

    # ------------------------------------------------------------------------------------------ the three stages
    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        cfg = ctx.cfg
        if not cfg.data.paired_column:
            raise ConfigError("mst_distill needs the paired second modality: set data.paired_column (layout csv; "
                              "SynthLesion-2D written with paired=True has the column 'paired')")
        data: ClassificationData = ctx.data  # type: ignore[assignment]
        channels = cfg.data.in_channels
        reused = self._reused_teacher(ctx, 2 * channels)
        self._teacher_frozen = reused is not None
        self._teacher = reused if reused is not None else self._build(ctx, 2 * channels)
        self._auxiliary = self._build(ctx, channels)
        layers = [(_module(self._teacher, n, "teacher"), "teacher", n) for n in self.mask_layers]
        layers += [(_module(self._auxiliary, n, "auxiliary model"), "auxiliary", n) for n in self.mask_layers]
        student = ctx.build_student()
        ce = (TermSpec(name="ce", plugin="ce"),)

        self._phase = "cotrain"
        cotrain = ctx.train(out=ctx.out / "cotrain", student=student, teacher=None, terms=ce, hooks=self,
                            iterations=self.cotrain_iterations or cfg.optim.iterations)
        self._teacher.eval()
        self._auxiliary.eval()
        self._results["cotrain"] = {"student_test_accuracy": cotrain.get("last", {}).get("test", {}).get("accuracy"),
                                    "teacher_frozen": self._teacher_frozen}
        self._save_network(ctx, self._teacher, "mm_teacher", 2 * channels)
        self._save_network(ctx, self._auxiliary, "auxiliary", channels)

        self._phase = "masks"
        self._train_masks(ctx, data, student, [layer for layer, _, _ in layers])
        self._results["experts"] = [f"{who}:{name}" for _, who, name in layers]

        self._phase = "distill"
        self._layers = [layer for layer, _, _ in layers]
        self.gate = GateNet(data.num_classes, self.experts)
        self._routed = torch.zeros(self.experts, dtype=torch.long)
        final = ctx.train(student=student, teacher=None, terms=(replace(ce[0], weight=self.ce_weight),), hooks=self)
        self._phase = ""
        self._results["routing"] = [round(float(r), 4) for r in self._routed / self._routed.sum().clamp_min(1)]
        self._results["test_accuracy"] = self._accuracies(ctx, data)
        return final

    def _save_network(self, ctx: StrategyContext, net: nn.Module, name: str, in_channels: int) -> None:
        """Write ``net`` as a classification run ``RUN/<name>`` (reusable as ``teacher_checkpoint``)."""
        from medkd.distill.students import ClassifierInfo, write_student_run
        from medkd.engine.checkpoint import save_checkpoint

        if name == "mm_teacher" and self._teacher_frozen:
            return
        arch, params = self._architecture(ctx)
        info = ClassifierInfo(net=arch, net_params=dict(params), in_channels=in_channels,
                              num_classes=ctx.data.num_classes, class_names=ctx.data.class_names,
                              image_size=tuple(ctx.cfg.data.image_size))
        out = ctx.out / name
        write_student_run(out, task="classification", info=info, role="teacher")
        save_checkpoint(Path(out) / "student" / "best.pt", student=net, teacher=None, optimizer=None,
                        config={"strategy": "mst_distill", "network": name}, iteration=0)

    def _inputs(self, batch: dict[str, Any], device: torch.device) -> tuple[Tensor, Tensor]:
        if "paired" not in batch:
            raise ConfigError("mst_distill: the batch has no 'paired' images: set data.paired_column")
        return batch["image"].to(device), batch["paired"].to(device)

    def _expert_logits(self, image: Tensor, paired: Tensor) -> Tensor:
        """Every expert's logits ``(B, E, K)``: the teacher then the auxiliary model, one MaskNet active each."""
        assert self.masks is not None and self._teacher is not None and self._auxiliary is not None
        both = torch.cat([image, paired], 1)
        out = []
        for i, (layer, mask) in enumerate(zip(self._layers, self.masks, strict=True)):
            net, x = (self._teacher, both) if i < len(self.mask_layers) else (self._auxiliary, paired)
            with masked_forward(layer, mask):
                out.append(net(x))
        return torch.stack(out, 1)

    def _train_masks(self, ctx: StrategyContext, data: ClassificationData, student: nn.Module,
                     layers: list[nn.Module]) -> None:
        """Stage 2: each MaskNet minimises ``T^2 KL(p_s || p_masked)``, networks frozen (eval mode)."""
        from medkd.distill.data import example_batch
        from medkd.distill.task import build_optimizer, schedule_lr

        assert self._teacher is not None and self._auxiliary is not None
        device = ctx.device
        nets = [student, self._teacher, self._auxiliary]
        for net in nets:
            net.to(device)
        _set_frozen(nets, True)
        self._layers = layers
        widths = []
        image, paired = self._inputs(example_batch(data), device)
        sources = ([(self._teacher, torch.cat([image, paired], 1))] * len(self.mask_layers)
                   + [(self._auxiliary, paired)] * len(self.mask_layers))
        for layer, (net, x) in zip(layers, sources, strict=True):
            handle = layer.register_forward_hook(lambda _m, _i, o: widths.append(o.shape[1]))
            with torch.no_grad():
                net(x[:1])
            handle.remove()
        self.masks = nn.ModuleList(MaskNet(w, self.mask_reduction) for w in widths).to(device)
        iterations = self.mask_iterations or ctx.cfg.optim.iterations
        optim = replace(ctx.cfg.optim, iterations=iterations)
        optimizer = build_optimizer(optim, [self.masks])
        losses = []
        batches = data.batches(ctx.cfg.experiment.seed + 7919)
        for it in range(1, iterations + 1):
            for group in optimizer.param_groups:
                group["lr"] = schedule_lr(optim, it)
            image, paired = self._inputs(next(batches), device)
            with torch.no_grad():
                target = student(image)
            experts = self._expert_logits(image, paired)
            e = experts.shape[1]
            per_expert = self.temperature**2 * tempered_kl(
                experts.reshape(-1, experts.shape[-1]), target[:, None].expand(-1, e, -1).reshape(-1, target.shape[1]),
                self.temperature).view(-1, e).mean(0)
            optimizer.zero_grad(set_to_none=True)
            per_expert.sum().backward()  # each mask only sees its own expert's term
            optimizer.step()
            losses.append(per_expert.detach().cpu())
        _set_frozen([self._teacher, self._auxiliary], True)
        _set_frozen([student], False)
        self.masks.requires_grad_(False)
        first, last = losses[0], torch.stack(losses[-max(1, len(losses) // 10):]).mean(0)
        self._results["mask_kl"] = {"first": [round(float(v), 4) for v in first],
                                    "last": [round(float(v), 4) for v in last], "iterations": iterations}

    def _accuracies(self, ctx: StrategyContext, data: ClassificationData) -> dict[str, Any]:
        """Test accuracy of the teacher, the auxiliary model and every expert (eval mode)."""
        if not ctx.cfg.eval.test:
            return {}
        split = ctx.cfg.data.test_split
        images, labels, _ = data.tensors(split)
        paired = data.paired(split)
        device, out = ctx.device, {}
        assert self._teacher is not None and self._auxiliary is not None
        preds: dict[str, list[Tensor]] = {"teacher": [], "auxiliary": [], "experts": []}
        with torch.inference_mode():
            for i in range(0, len(labels), 256):
                x, p = images[i:i + 256].to(device), paired[i:i + 256].to(device)
                preds["teacher"].append(self._teacher(torch.cat([x, p], 1)).argmax(1).cpu())
                preds["auxiliary"].append(self._auxiliary(p).argmax(1).cpu())
                preds["experts"].append(self._expert_logits(x, p).argmax(2).cpu())
        for name in ("teacher", "auxiliary"):
            out[name] = round(float((torch.cat(preds[name]) == labels).float().mean()), 4)
        experts = torch.cat(preds["experts"])
        out["experts"] = [round(float(v), 4) for v in (experts == labels[:, None]).float().mean(0)]
        return out

    # ------------------------------------------------------------------------------------------ loop hooks
    def modules(self) -> nn.Module | None:
        if self._phase == "cotrain":
            trained = {"auxiliary": self._auxiliary}
            if not self._teacher_frozen:
                trained["teacher"] = self._teacher
            return nn.ModuleDict(trained)
        if self._phase == "distill":
            return nn.ModuleDict({"gate": self.gate, "masks": self.masks})
        return None

    def setup(self, task: DistillTask) -> None:
        assert self._teacher is not None and self._auxiliary is not None
        self._teacher.to(task.device)
        self._auxiliary.to(task.device)
        if self._phase == "distill" or self._teacher_frozen:
            _set_frozen([self._teacher], True)
        if self._phase == "distill":
            _set_frozen([self._auxiliary], True)

    def pre_epoch(self, task: DistillTask, epoch: int) -> None:
        if self._phase == "distill" or self._teacher_frozen:  # the engine sets its modules to train mode
            self._teacher.eval()  # type: ignore[union-attr]
        if self._phase == "distill":
            self._auxiliary.eval()  # type: ignore[union-attr]
            self.masks.eval()  # type: ignore[union-attr]

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[Tensor, dict[str, float]]:
        loss, logs = task.step_loss(batch, iteration)
        assert task.last is not None and self._teacher is not None and self._auxiliary is not None
        s, label = task.last.student["logits"], task.last.batch["label"]
        image, paired = self._inputs(batch, task.device)
        T = self.temperature
        if self._phase == "cotrain":
            if self._teacher_frozen:
                with torch.no_grad():
                    t = self._teacher(torch.cat([image, paired], 1))
            else:
                t = self._teacher(torch.cat([image, paired], 1))
            a = self._auxiliary(paired)
            loss_s = loss + _mean_kl(s, t, T) + _mean_kl(s, a, T)
            loss_a = F.cross_entropy(a, label) + _mean_kl(a, t, T) + _mean_kl(a, s, T)
            total = loss_s + loss_a
            logs = {**logs, "loss_s": float(loss_s.detach()), "loss_a": float(loss_a.detach())}
            if not self._teacher_frozen:
                loss_t = F.cross_entropy(t, label) + _mean_kl(t, s, T) + _mean_kl(t, a, T)
                total = total + loss_t
                logs["loss_t"] = float(loss_t.detach())
            return total, logs
        assert self.gate is not None
        if self._phase == "distill":
            self._teacher.eval()
            self._auxiliary.eval()
        with torch.no_grad():
            experts = self._expert_logits(image, paired)
        gate_probs = torch.softmax(self.gate(s), dim=1)
        kd, chosen = topk_expert_kd(s, experts, gate_probs, self.k, T, self.gate_weighted)
        balance = balance_loss(gate_probs)
        if torch.is_grad_enabled() and self._routed is not None:
            self._routed += torch.bincount(chosen.flatten().cpu(), minlength=self.experts)
        total = loss + self.kd_weight * kd + self.balance_weight * balance
        return total, {**logs, "mst_kd": float(kd.detach()), "balance": float(balance.detach())}

    def summary(self) -> dict[str, Any]:
        return dict(self._results)
