# SPDX-License-Identifier: Apache-2.0
"""COCONUT-style continual distillation: classes or sites arrive in stages; rehearsal, SupCon and KD from the
previous stage's model keep what was learnt (spec §3.16, [recon]: the COCONUT paper was not located, so the whole
recipe is reconstructed from the spec's ingredients).

**Stages.** Class-incremental (default): ``stages`` lists the class indices of each stage (default: the classes in
index order split into ``num_stages`` contiguous groups, e.g. 5 classes in 3 stages ``[[0, 1], [2, 3], [4]]``);
each stage trains on ``data.subset(classes=...)``. Site-incremental: ``key`` names a metadata column (CSV datalist:
``modality``, ``anatomy``, ``site``) and each of its ``values`` (default the sorted values of the training split) is
one stage, on ``data.subset(metadata={key: value})``. Stage ``i`` continues from the weights at the end of stage
``i - 1`` (its ``last.pt``) for ``stage_iterations`` iterations (0: ``optim.iterations``; the schedule restarts each
stage); intermediate stages are run folders ``RUN/stages/s<i>``, the last one is ``RUN``. Each training selects its
``best.pt`` on, and reports, the **whole** validation/test splits (every class or site, as the final model is
used); the accuracy matrix below uses the end-of-stage (``last``) weights.

**Loss per step** (:meth:`Coconut.train_step`): the stage's batch plus up to as many rehearsal samples drawn from
the buffer (deterministic per seed, stage and iteration; flipped like the data when ``data.augment``), then

    L = terms(current U buffer)                                  # the YAML's distill.terms, e.g. CE
      + supcon_weight * SupCon(g(f(x)), y; temperature)          # Khosla et al., NeurIPS 2020, on current U buffer
      + kd_weight * T^2 KL(p_prev || p_s) over the classes seen before this stage (T = kd_temperature)
      + infonce_weight * InfoNCE(g(f(x)), g(f(paired)); infonce_temperature)   # only with a "paired" batch key

``f`` is the student's feature tap ``tap`` (``pool`` of ``kd_cnn``: the pooled embedding); ``g`` is a projection
head (:class:`ProjectionHead`, ``Linear-ReLU-Linear`` to ``proj_dim``, SupCon's) trained with the student as the
strategy's module (saved under ``strategy`` in checkpoints, never exported, counted as ``extra_params``). KD is
LwF-style: the frozen previous-stage model on the same mixed batch, restricted to the classes seen in earlier stages.
InfoNCE is CLIP's symmetric loss between each image and its paired second modality (``data.paired_column``), both
through the student and ``g``.

**Buffer** (:class:`ClassBalancedBuffer`, ``buffer`` samples): equal slots per seen class (``buffer // seen``;
classes with fewer samples keep them all), a uniform reservoir within each class (each sample gets a random
priority once, the class keeps its lowest ones, so shrinking the slots when classes arrive keeps a uniform sample);
it is filled at the end of each stage from that stage's training split, so stage ``i`` rehearses stages ``< i``.

**Baseline**: fine-tuning, the same stages with ``buffer: 0, supcon_weight: 0, kd_weight: 0``.

``summary()``: the accuracy matrix ``acc[i][j]`` (after stage ``i``, on stage ``j``'s test classes or site), the
average accuracy (mean of the last row), the average forgetting (Chaudhry et al., ECCV 2018: mean over ``j < last``
of ``max_{i < last} acc[i][j] - acc[last][j]``), the backward transfer, and the buffer's class counts.

[recon] choices: one view per sample (no two-view augmentation as in SupCon's paper, whose labels make positives
anyway) and no ``temperature / base_temperature`` factor; the buffer is filled per stage, not per step; KD on the
old classes only; the defaults (``tau=0.1`` SupCon, ``0.07`` InfoNCE, buffer 200) are the spec's.

Example:
    >>> import torch
    >>> z, y = torch.randn(2, 8), torch.tensor([3, 3])
    >>> abs(float(supcon_loss(z, y))) < 1e-6  # two samples of one class: nothing to contrast
    True
    >>> average_forgetting([[0.9, 0.0], [0.6, 0.8]])  # stage 0 lost 0.3
    0.3
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.dense import tempered_kl
from medkd.distill.hooks import FeatureTap, tap_key
from medkd.distill.registry import register_strategy
from medkd.distill.routing import metadata_values
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medkd.distill.data import ClassificationData
    from medkd.distill.task import DistillTask

__all__ = [
    "ClassBalancedBuffer", "Coconut", "ProjectionHead", "average_accuracy", "average_forgetting",
    "backward_transfer", "class_balanced_selection", "info_nce_loss", "supcon_loss",
]

logger = logging.getLogger(__name__)

#: the folder of the intermediate stages inside the strategy's run folder
STAGES = "stages"


# ---------------------------------------------------------------------------------------------------- losses
def supcon_loss(z: Tensor, labels: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020, ``L_out``) of embeddings ``z`` ``(N, D)``.

    With ``s_ia = <z_i, z_a> / T`` on L2-normalised rows, anchor ``i`` with positives ``P(i) = {p != i: y_p = y_i}``
    contributes ``-1/|P(i)| sum_p [s_ip - logsumexp_{a != i} s_ia]``; the loss is the mean over anchors that have
    positives (0 when none has). Two samples of one class give exactly 0.

    Args:
        z: embeddings ``(N, D)`` (normalised here). labels: ``(N,)`` class indices. temperature: T (> 0).

    Example:
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> bool(supcon_loss(z, y) < supcon_loss(z, y[[0, 2, 1, 3]]))
        True
    """
    z = F.normalize(z.float(), dim=1)
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    count = positive.sum(1)
    has = count > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    mean_pos = log_prob.masked_fill(~positive, 0.0).sum(1)[has] / count[has]
    return -mean_pos.mean()


def info_nce_loss(a: Tensor, b: Tensor, temperature: float = 0.07) -> Tensor:
    """CLIP's symmetric InfoNCE between paired embeddings ``a``, ``b`` ``(N, D)`` (row ``i`` of each is a pair).

    Example:
        >>> e = torch.eye(4)
        >>> bool(info_nce_loss(e, e) < info_nce_loss(e, e.flip(0)))
        True
    """
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class ProjectionHead(nn.Module):
    """SupCon's projection head: ``(N, D) -> Linear(D, D) -> ReLU -> Linear(D, out)``; spatial maps are averaged.

    Example:
        >>> ProjectionHead(8, 4)(torch.randn(2, 8, 3, 3)).shape
        torch.Size([2, 4])
    """

    def __init__(self, dim: int, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, out))

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat.flatten(2).mean(-1) if feat.ndim > 2 else feat)


# ---------------------------------------------------------------------------------------------------- buffer
def class_balanced_selection(labels: Tensor, priority: Tensor, slots: int) -> Tensor:
    """Indices (ascending) of the ``slots`` lowest-``priority`` samples of each class (all of a smaller class).

    Example:
        >>> class_balanced_selection(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([.5, .1, .9, .3, .2]), 2).tolist()
        [0, 1, 3, 4]
    """
    if len(labels) == 0 or slots <= 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.argsort(priority)
    order = order[torch.argsort(labels[order], stable=True)]  # grouped by class, by priority within a class
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order)) - torch.repeat_interleave(starts, counts)
    return order[rank < slots].sort().values


class ClassBalancedBuffer:
    """A class-balanced rehearsal buffer: equal slots per seen class, a uniform reservoir within each class.

    Each sample added gets a random priority (from the buffer's own generator, so the contents are a function of
    the seed and of the data added); every class keeps its ``capacity // seen classes`` lowest priorities, which is
    a uniform sample of all its samples seen so far, also after the slots shrink.

    Args:
        capacity: samples held at most (0: none). seed: the generator's seed.

    Example:
        >>> buf = ClassBalancedBuffer(4, seed=0)
        >>> buf.update(torch.zeros(10, 1, 2, 2), torch.tensor([0] * 8 + [1] * 2))
        >>> buf.counts()
        {0: 2, 1: 2}
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = int(capacity)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.images: Tensor | None = None
        self.paired: Tensor | None = None
        self.labels = torch.empty(0, dtype=torch.long)
        self.priority = torch.empty(0)
        self.cases: list[str] = []
        self.seen: set[int] = set()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def slots(self) -> int:
        """Samples per seen class."""
        return self.capacity // max(len(self.seen), 1)

    def counts(self) -> dict[int, int]:
        """``{class: samples held}`` for every seen class."""
        held = torch.bincount(self.labels, minlength=max(self.seen, default=-1) + 1)
        return {c: int(held[c]) for c in sorted(self.seen)}

    def update(self, images: Tensor, labels: Tensor, cases: Sequence[str] | None = None,
               paired: Tensor | None = None) -> None:
        """Offer samples ``images`` ``(N, C, *spatial)`` with ``labels`` ``(N,)`` (and case ids, paired images).

        Raises:
            ValueError: mismatched lengths, or paired images offered to a buffer that holds none (or vice versa).
        """
        n = len(labels)
        if len(images) != n or (paired is not None and len(paired) != n) or (cases is not None and len(cases) != n):
            raise ValueError(f"update needs one image, label, case and paired image per sample, got {len(images)} "
                             f"images for {n} labels")
        if self.images is not None and (paired is None) != (self.paired is None):
            raise ValueError("paired images must be offered with every update or with none")
        self.seen |= set(labels.unique().tolist())
        if self.capacity == 0 or n == 0:
            return
        priority = torch.rand(n, generator=self.generator)
        cases = [str(c) for c in cases] if cases is not None else [""] * n
        all_images = images.cpu() if self.images is None else torch.cat([self.images, images.cpu()])
        all_paired = None
        if paired is not None:
            all_paired = paired.cpu() if self.paired is None else torch.cat([self.paired, paired.cpu()])
        all_labels = torch.cat([self.labels, labels.cpu().long()])
        all_priority = torch.cat([self.priority, priority])
        all_cases = self.cases + list(cases)
        keep = class_balanced_selection(all_labels, all_priority, self.slots)
        self.images, self.labels, self.priority = all_images[keep], all_labels[keep], all_priority[keep]
        self.paired = all_paired[keep] if all_paired is not None else None
        self.cases = [all_cases[i] for i in keep.tolist()]

    def sample(self, n: int, generator: torch.Generator) -> dict[str, Any]:
        """``min(n, len)`` distinct samples: ``{"image", "label", "case"[, "paired"]}`` (CPU)."""
        idx = torch.randperm(len(self), generator=generator)[:n]
        assert self.images is not None
        out: dict[str, Any] = {"image": self.images[idx], "label": self.labels[idx],
                               "case": [self.cases[i] for i in idx.tolist()]}
        if self.paired is not None:
            out["paired"] = self.paired[idx]
        return out


# ---------------------------------------------------------------------------------------------------- metrics
def _matrix(acc: Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(acc, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise ValueError(f"the accuracy matrix must be square (stages x stages), got shape {m.shape}")
    return m


def average_accuracy(acc: Sequence[Sequence[float]]) -> float:
    """Mean accuracy over every stage after the last one: the mean of the last row.

    Example:
        >>> average_accuracy([[0.9, 0.0], [0.6, 0.8]])
        0.7
    """
    return round(float(_matrix(acc)[-1].mean()), 12)


def average_forgetting(acc: Sequence[Sequence[float]]) -> float:
    """Mean over stages ``j < last`` of ``max_{i < last} acc[i][j] - acc[last][j]`` (Chaudhry et al., ECCV 2018;
    0 for one stage). A stage that the later stages improved counts negative.

    Example:
        >>> average_forgetting([[0.8, 0.1, 0.0], [0.5, 0.9, 0.2], [0.4, 0.6, 0.9]])
        0.35
    """
    m = _matrix(acc)
    if len(m) < 2:
        return 0.0
    return round(float((m[:-1, :-1].max(0) - m[-1, :-1]).mean()), 12)


def backward_transfer(acc: Sequence[Sequence[float]]) -> float:
    """Mean over ``j < last`` of ``acc[last][j] - acc[j][j]`` (Lopez-Paz & Ranzato, 2017; negative: forgetting).

    Example:
        >>> backward_transfer([[0.9, 0.0], [0.6, 0.8]])
        -0.3
    """
    m = _matrix(acc)
    if len(m) < 2:
        return 0.0
    return round(float((m[-1, :-1] - np.diag(m)[:-1]).mean()), 12)


# ---------------------------------------------------------------------------------------------------- strategy
def _evaluated_on(view: ClassificationData, full: ClassificationData) -> ClassificationData:
    """``view``'s training data, validated and evaluated on ``full`` (every class/site)."""
    staged = copy.copy(view)
    staged.validate = full.validate  # type: ignore[method-assign]
    staged.evaluate = full.evaluate  # type: ignore[method-assign]
    return staged


def _positive(name: str, value: float, strict: bool) -> float:
    value = float(value)
    if not (value > 0 if strict else value >= 0):
        raise ConfigError(f"coconut: {name} must be {'> 0' if strict else '>= 0'}, got {value}")
    return value


@register_strategy("coconut")
class Coconut(Strategy):
    """Continual distillation [recon]: class/site stages, class-balanced rehearsal, SupCon, KD from the last stage.

    Args:
        stages: class indices of each stage (``[[0, 1], [2, 3], [4]]``); default: ``num_stages`` contiguous groups.
        num_stages: stages of the default class split (1..classes).
        key: a metadata column for site-incremental stages (one per value; excludes ``stages``).
        values: the site order (default the sorted values of the training split).
        buffer: rehearsal samples (0: none).
        supcon_weight / temperature: SupCon's weight (0: off) and temperature.
        kd_weight / kd_temperature: KD from the previous stage's model (0: off) and its temperature.
        tap: the student module whose output is the embedding (``pool``).
        proj_dim: the projection head's output size.
        infonce_weight / infonce_temperature: image <-> paired-modality InfoNCE (0: off; needs ``"paired"``).
        stage_iterations: iterations per stage (0: ``optim.iterations``).

    Raises:
        ConfigError: malformed stages (empty, repeated or non-integer classes), both ``stages`` and ``key``,
            negative weights, non-positive temperatures; at run time, classes out of range.
    """

    tasks = frozenset({"classification"})

    def __init__(self, stages: Sequence[Sequence[int]] | None = None, num_stages: int = 3, key: str = "",
                 values: Sequence[Any] | None = None, buffer: int = 200, supcon_weight: float = 1.0,
                 temperature: float = 0.1, kd_weight: float = 1.0, kd_temperature: float = 2.0, tap: str = "pool",
                 proj_dim: int = 128, infonce_weight: float = 0.0, infonce_temperature: float = 0.07,
                 stage_iterations: int = 0) -> None:
        if stages is not None and key:
            raise ConfigError("coconut: give stages (class-incremental) or key (site-incremental), not both")
        if stages is not None:
            stages = self._check_stages(stages)
        if values is not None and not key:
            raise ConfigError("coconut: values orders the sites of key; set key too")
        if values is not None:
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"coconut: values must be a non-empty list, got {values!r}")
            values = [str(v) for v in values]
            if len(set(values)) != len(values):
                raise ConfigError(f"coconut: values repeat: {values}")
        for name, v in (("num_stages", num_stages), ("buffer", buffer), ("proj_dim", proj_dim),
                        ("stage_iterations", stage_iterations)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"coconut: {name} must be an integer, got {v!r}")
        if num_stages < 1 or proj_dim < 1 or buffer < 0 or stage_iterations < 0:
            raise ConfigError(f"coconut: num_stages and proj_dim must be >= 1, buffer and stage_iterations >= 0; got "
                              f"{num_stages}, {proj_dim}, {buffer}, {stage_iterations}")
        if not isinstance(tap, str) or not tap:
            raise ConfigError(f"coconut: tap must name a student module (pool), got {tap!r}")
        self.stages, self.num_stages, self.key, self.values = stages, num_stages, key, values
        self.buffer_size, self.tap, self.proj_dim, self.stage_iterations = buffer, tap, proj_dim, stage_iterations
        self.supcon_weight = _positive("supcon_weight", supcon_weight, strict=False)
        self.temperature = _positive("temperature", temperature, strict=True)
        self.kd_weight = _positive("kd_weight", kd_weight, strict=False)
        self.kd_temperature = _positive("kd_temperature", kd_temperature, strict=True)
        self.infonce_weight = _positive("infonce_weight", infonce_weight, strict=False)
        self.infonce_temperature = _positive("infonce_temperature", infonce_temperature, strict=True)
        self.head: ProjectionHead | None = None
        self.buffer = ClassBalancedBuffer(buffer)
        self._tap: FeatureTap | None = None
        self._previous: nn.Module | None = None
        self._old: Tensor | None = None
        self._stage, self._seed = 0, 0
        self._summary: dict[str, Any] = {}

    @staticmethod
    def _check_stages(stages: Any) -> list[list[int]]:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
            raise ConfigError(f"coconut: stages must be a non-empty list of class-index lists, got {stages!r}")
        out: list[list[int]] = []
        for stage in stages:
            if (isinstance(stage, (str, bytes)) or not isinstance(stage, Sequence) or not stage
                    or any(isinstance(c, bool) or not isinstance(c, int) for c in stage)):
                raise ConfigError(f"coconut: each stage must be a non-empty list of class indices, got {stage!r}")
            out.append([int(c) for c in stage])
        flat = [c for s in out for c in s]
        if len(set(flat)) != len(flat):
            raise ConfigError(f"coconut: a class appears in more than one stage: {out}")
        return out

    @property
    def _needs_embedding(self) -> bool:
        return self.supcon_weight > 0 or self.infonce_weight > 0

    # ------------------------------------------------------------------------------------------------- plan
    def _plan(self, ctx: StrategyContext) -> list[tuple[Any, ClassificationData]]:
        """``(stage label, data view)`` per stage."""
        data, cfg = ctx.data, ctx.cfg.data
        if self.key:
            found = metadata_values(data, self.key, cfg.train_split)
            values = self.values if self.values is not None else found
            absent = [v for v in values if v not in found]
            if absent:
                raise ConfigError(f"coconut: {self.key} values {absent} have no {cfg.train_split} case; the "
                                  f"{cfg.train_split} split has {found}")
            return [(v, data.subset(metadata={self.key: v})) for v in values]
        k = data.num_classes
        if self.stages is not None:
            stages = self.stages
            bad = sorted(c for s in stages for c in s if not 0 <= c < k)
            if bad:
                raise ConfigError(f"coconut: stages name classes {bad}; the data has classes 0..{k - 1} "
                                  f"({', '.join(data.class_names)})")
        else:
            if self.num_stages > k:
                raise ConfigError(f"coconut: num_stages {self.num_stages} exceeds the {k} classes")
            stages = [part.tolist() for part in np.array_split(np.arange(k), self.num_stages)]
        return [(list(s), data.subset(classes=s)) for s in stages]

    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        from medkd.distill.students import load_classifier

        cfg = ctx.cfg
        plan = self._plan(ctx)
        split = cfg.data.test_split if cfg.eval.test else cfg.data.val_split
        for label, view in plan:
            if len(view.tensors(split)[1]) == 0:
                raise DataError(ctx.data_root, f"coconut: stage {label} has no {split} case to measure it on")
        self._seed = cfg.experiment.seed
        self.buffer = ClassBalancedBuffer(self.buffer_size, seed=self._seed)
        net: nn.Module | None = None
        seen: set[int] = set()
        matrix: list[list[float]] = []
        folders: list[str] = []
        summary: dict[str, Any] = {}
        for i, (label, view) in enumerate(plan):
            last = i == len(plan) - 1
            folder = Path(".") if last else Path(STAGES) / f"s{i}"
            self._stage = i
            self._old = torch.tensor(sorted(seen), dtype=torch.long) if seen else None
            self._previous = None
            if net is not None and self.kd_weight > 0 and self._old is not None:
                self._previous = copy.deepcopy(net).eval().requires_grad_(False)
            logger.info("coconut: stage %d/%d (%s), %d training cases, buffer %d", i + 1, len(plan), label,
                        view.train_size, len(self.buffer))
            summary = ctx.train(out=ctx.out / folder, data=_evaluated_on(view, ctx.data), student=net, hooks=self,
                                iterations=self.stage_iterations or None)
            net = load_classifier(ctx.out / folder, "last", ctx.device)[1].train()
            matrix.append([float(v.evaluate(net, split, ctx.device)["accuracy"]) for _, v in plan])
            images, labels, cases = view.tensors(cfg.data.train_split)
            paired = view.paired(cfg.data.train_split) if cfg.data.paired_column else None
            self.buffer.update(images, labels, cases=cases, paired=paired)
            seen |= set(labels.unique().tolist())
            folders.append(folder.as_posix())
        self._previous = None
        self._summary = {
            "mode": "site" if self.key else "class", "key": self.key or None,
            "stages": [label for label, _ in plan], "split": split, "stage_runs": folders,
            "accuracy_matrix": matrix, "average_accuracy": average_accuracy(matrix),
            "average_forgetting": average_forgetting(matrix), "backward_transfer": backward_transfer(matrix),
            "buffer": {"capacity": self.buffer_size, "size": len(self.buffer),
                       "per_class": {str(c): n for c, n in self.buffer.counts().items()}},
        }
        logger.info("coconut: average accuracy %.4f, average forgetting %.4f", self._summary["average_accuracy"],
                    self._summary["average_forgetting"])
        return summary

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)

    # ------------------------------------------------------------------------------------------------- loop hooks
    def setup(self, task: DistillTask) -> None:
        if not self._needs_embedding:
            return
        self._tap = FeatureTap(task.student, [self.tap], what="student")
        if self.head is None:
            from medkd.distill.data import example_batch

            images = example_batch(task.data)["image"][:2].to(task.device)
            was = task.student.training
            task.student.eval()
            with torch.no_grad():
                task.student(images)
            task.student.train(was)
            task.student_tap.pop()
            feat = self._tap.pop()[tap_key(self.tap)]
            self.head = ProjectionHead(int(feat.shape[1]), self.proj_dim)

    def modules(self) -> nn.Module | None:
        return self.head if self._needs_embedding else None

    def teardown(self, task: DistillTask) -> None:
        if self._tap is not None:
            self._tap.remove()
            self._tap = None

    def _mixed(self, task: DistillTask, batch: dict[str, Any], iteration: int) -> dict[str, Any]:
        """The batch plus up to as many buffer samples (none while the buffer is empty)."""
        if self.buffer_size == 0 or len(self.buffer) == 0:
            return batch
        g = torch.Generator().manual_seed(self._seed * 1_000_003 + self._stage * 100_003 + iteration)
        replay = self.buffer.sample(len(batch["label"]), g)
        x, second = replay["image"], replay.get("paired")
        if task.data.cfg.data.augment:
            flip = (torch.rand(len(x), generator=g) < 0.5).view(-1, *[1] * (x.ndim - 1))
            x = torch.where(flip, x.flip(-1), x)
            second = torch.where(flip, second.flip(-1), second) if second is not None else None
        mixed = {"image": torch.cat([batch["image"], x]), "label": torch.cat([batch["label"], replay["label"]]),
                 "case": list(batch.get("case", [])) + replay["case"]}
        if "paired" in batch and second is not None:
            mixed["paired"] = torch.cat([batch["paired"], second])
        return mixed

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = task.step_loss(self._mixed(task, batch, iteration), iteration)
        assert task.last is not None
        logs = dict(logs)
        inputs, logits = task.last.batch, task.last.student["logits"]
        if self._needs_embedding:
            assert self._tap is not None and self.head is not None
            z = self.head(self._tap.pop()[tap_key(self.tap)])
            if self.supcon_weight > 0:
                term = supcon_loss(z, inputs["label"], self.temperature)
                loss = loss + self.supcon_weight * term
                logs["supcon"] = float(term.detach())
            if self.infonce_weight > 0 and "paired" in inputs:
                task.student(inputs["paired"].to(task.device))
                z_paired = self.head(self._tap.pop()[tap_key(self.tap)])
                term = info_nce_loss(z, z_paired, self.infonce_temperature)
                loss = loss + self.infonce_weight * term
                logs["infonce"] = float(term.detach())
        if self._previous is not None and self._old is not None:
            old = self._old.to(logits.device)
            with torch.no_grad():
                previous = self._previous(inputs["image"]).float()
            t = self.kd_temperature
            term = t**2 * tempered_kl(logits.float()[:, old], previous[:, old], t).mean()
            loss = loss + self.kd_weight * term
            logs["kd_prev"] = float(term.detach())
        return loss, logs
