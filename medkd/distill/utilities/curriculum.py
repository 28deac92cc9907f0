# SPDX-License-Identifier: Apache-2.0
"""Curriculum Designer [recon]: a class curriculum from the teacher's features, easy classes first, with pacing.

Spec ``distillation_plugins.md`` §4 (reconstructed, no paper confirmed):

1. **prototypes**: the mean teacher feature (tap ``pool`` by default; spatial maps are averaged) of each class on the
   training split (:func:`class_prototypes`);
2. **order**: each class's cosine similarity to its nearest other class; the least similar (most distinct, easy)
   first, ties by class index (:func:`class_order`). With ``center`` (default) the mean of the prototypes is
   subtracted first: pooled post-ReLU features share a large positive component that would put every cosine near 1;
   [recon];
3. **pacing**: ``g(epoch)``, the number of classes available at an epoch: ``start`` at epoch 0, growing linearly
   (``linear``) or as the square root of the progress (``root``) to all classes at ``full_at`` of the training,
   rounded down, so it is monotone non-decreasing (:func:`pacing_table`).

The utility (``medkd distill tool curriculum``) writes the order, the similarities and the pacing table to
``OUT/curriculum.json`` and, with ``train``, trains the student with the experiment's terms into ``OUT`` (a normal
run) where each step's batch is restricted to the classes available at its epoch: rows of other classes are replaced
by training cases of the available classes drawn at random (the batch size stays constant; drawn rows are not
flipped by ``data.augment``). Labels are the training split's own (noisy) labels.

Example:
    >>> import torch
    >>> protos = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> order, nearest = class_order(protos)
    >>> order, [round(v, 3) for v in nearest.tolist()]
    ([2, 0, 1], [0.994, 0.994, 0.11])
    >>> pacing_table(5, 5, start=1, full_at=1.0), pacing_table(5, 5, start=1, full_at=1.0, kind="root")
    ([1, 2, 3, 4, 5], [1, 3, 3, 4, 5])
"""

from __future__ import annotations

import logging
import math
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.registry import register_utility
from medkd.distill.strategy import Strategy
from medkd.distill.tools import ToolContext, Utility
from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medkd.distill.task import DistillTask

__all__ = ["Curriculum", "Pacing", "class_order", "class_prototypes", "pacing_table"]

logger = logging.getLogger(__name__)


class Pacing(StrEnum):
    """How the number of available classes grows: ``linear`` or ``root`` (square root of the progress: fast first)."""

    LINEAR = "linear"
    ROOT = "root"


def class_prototypes(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """The mean feature of each class: ``(N, D)``, ``(N,)`` -> ``(K, D)`` (a class without cases gets zeros).

    Example:
        >>> class_prototypes(torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]]), torch.tensor([0, 0, 1]), 2).tolist()
        [[2.0, 1.0], [0.0, 5.0]]
    """
    features = features.flatten(2).mean(2) if features.ndim > 2 else features
    sums = torch.zeros(num_classes, features.shape[1], dtype=features.dtype).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).to(features.dtype)
    return sums / counts[:, None]


def class_order(prototypes: Tensor) -> tuple[list[int], Tensor]:
    """Classes ordered by the cosine similarity to their nearest other class, least similar (easy) first.

    Args:
        prototypes: ``(K, D)``, K >= 2.

    Returns:
        ``(order, nearest)``: class indices, and ``(K,)`` each class's similarity to its nearest other class.

    Raises:
        ValueError: fewer than two classes.
    """
    if prototypes.ndim != 2 or len(prototypes) < 2:
        raise ValueError(f"class_order needs (K, D) prototypes of K >= 2 classes, got {tuple(prototypes.shape)}")
    unit = F.normalize(prototypes.double(), dim=1)
    sim = unit @ unit.T
    sim.fill_diagonal_(-math.inf)
    nearest = sim.max(dim=1).values
    order = sorted(range(len(nearest)), key=lambda k: (float(nearest[k]), k))
    return order, nearest.float()


def pacing_table(num_classes: int, epochs: int, *, start: int = 2, full_at: float = 0.5,
                 kind: str | Pacing = Pacing.LINEAR) -> list[int]:
    """``g(epoch)`` for ``epoch = 0 .. epochs - 1``: classes available, ``start`` first, all from ``full_at``.

    ``g(e) = floor(start + (K - start) * f(min(e / (full_at * (epochs - 1)), 1)))`` with ``f(p) = p`` (linear) or
    ``sqrt(p)`` (root): all classes from epoch ``ceil(full_at * (epochs - 1))`` on, so the last epoch always has
    them; ``full_at = 0`` (or a single epoch) gives all classes from the start.

    Args:
        num_classes: K >= 1. epochs: >= 1. start: classes at epoch 0 (clamped to [1, K]).
        full_at: fraction of the training at which every class is available, in [0, 1]. kind: ``linear``/``root``.

    Raises:
        ValueError: values out of range, an unknown kind (allowed: linear, root).
    """
    from medkd.registry import resolve_option

    kind = resolve_option(Pacing, kind, "pacing", "Pacings")
    if num_classes < 1 or epochs < 1 or not 0.0 <= full_at <= 1.0:
        raise ValueError(f"need num_classes >= 1, epochs >= 1, full_at in [0, 1], got {num_classes}, {epochs}, "
                         f"{full_at}")
    start = min(max(int(start), 1), num_classes)
    span = full_at * (epochs - 1)
    table = []
    for epoch in range(epochs):
        p = min(epoch / span, 1.0) if span > 0 else 1.0
        f = p if kind is Pacing.LINEAR else math.sqrt(p)
        table.append(min(num_classes, int(math.floor(start + (num_classes - start) * f + 1e-9))))
    return table


class _Paced(Strategy):
    """Batches restricted to the classes the pacing allows at each epoch (private: run by :class:`Curriculum`)."""

    def __init__(self, order: list[int], table: list[int], seed: int = 0) -> None:
        self.order, self.table, self.seed = order, table, seed
        self.classes_per_epoch: list[int] = []

    def setup(self, task: DistillTask) -> None:
        self.images, self.labels, self.cases = task.data.tensors(task.data.cfg.data.train_split)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.allowed = torch.tensor(self.order)

    def pre_epoch(self, task: DistillTask, epoch: int) -> None:
        n = self.table[min(epoch, len(self.table) - 1)]
        self.allowed = torch.tensor(self.order[:n], dtype=self.labels.dtype)
        self.pool = torch.isin(self.labels, self.allowed).nonzero().flatten()
        self.classes_per_epoch.append(n)
        if len(self.pool) == 0:
            logger.warning("curriculum: no training case of classes %s: epoch %d trains on every class",
                           self.allowed.tolist(), epoch)

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[Tensor, dict[str, float]]:
        keep = torch.isin(batch["label"], self.allowed)
        if len(self.pool) and not bool(keep.all()):
            draw = self.pool[torch.randint(len(self.pool), (len(keep),), generator=self.generator)]
            image = torch.where(keep.view(-1, *[1] * (batch["image"].ndim - 1)), batch["image"], self.images[draw])
            label = torch.where(keep, batch["label"], self.labels[draw])
            case = [c if k else self.cases[d] for c, k, d in zip(batch["case"], keep.tolist(), draw.tolist())]
            batch = {**batch, "image": image, "label": label, "case": case}
        loss, logs = task.step_loss(batch, iteration)
        logs["curriculum/classes"] = float(len(self.allowed))
        logs["curriculum/replaced"] = float((~keep).float().mean())
        return loss, logs

    def summary(self) -> dict[str, Any]:
        return {"classes_per_epoch": self.classes_per_epoch}


def _teacher_features(teacher: nn.Module, images: Tensor, tap: str, device: torch.device,
                      batch: int = 256) -> Tensor:
    from medkd.distill.hooks import FeatureTap, tap_key

    chunks = []
    with FeatureTap(teacher, [tap], detach=True, what="teacher") as hook, torch.inference_mode():
        for i in range(0, len(images), batch):
            teacher(images[i:i + batch].to(device))
            feat = hook.pop()[tap_key(tap)].float()
            chunks.append((feat.flatten(2).mean(2) if feat.ndim > 2 else feat).cpu())
    return torch.cat(chunks)


@register_utility("curriculum")
class Curriculum(Utility):
    """Curriculum Designer [recon]: classes ordered by teacher-feature distinctness, easy first, with pacing.

    ``medkd distill tool curriculum --config apps/distill/synth_lesion_curriculum.yaml --data-root DIR --out OUT``
    writes ``OUT/curriculum.json`` (order, similarities, pacing table) and, with ``train``, the student trained on
    the paced classes into ``OUT`` (a normal run; ``student.best.test.accuracy`` and ``test_accuracy`` in the JSON).

    Args:
        tap: the teacher module whose output is the feature (``pool`` for kd_cnn, ``avgpool`` for MONAI ResNets).
        start: classes available at epoch 0 (default 2). full_at: fraction of training with all classes (0.5).
        pacing: ``linear`` or ``root``. train: train the student on the curriculum.
        center: subtract the mean prototype before the cosine similarities.

    Raises:
        ValueError: ``full_at`` outside [0, 1], ``start`` < 1, an unknown pacing (allowed: linear, root).
    """

    command = "tool"

    def __init__(self, tap: str = "pool", start: int = 2, full_at: float = 0.5, pacing: str = "linear",
                 train: bool = True, center: bool = True) -> None:
        from medkd.registry import resolve_option

        if not 0.0 <= float(full_at) <= 1.0 or int(start) < 1:
            raise ValueError(f"full_at must lie in [0, 1] and start be >= 1, got {full_at}, {start}")
        self.tap, self.start, self.full_at, self.train = str(tap), int(start), float(full_at), bool(train)
        self.pacing = resolve_option(Pacing, pacing, "pacing", "Pacings")
        self.center = bool(center)

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        import json

        from medkd.io.atomic import write_text_atomic

        cfg = ctx.cfg
        if cfg.task != "classification":
            raise ConfigError(f"the curriculum orders classes: a classification experiment, not {cfg.task}")
        teacher = ctx.load_teacher()
        data = ctx.data
        images, labels, _ = data.tensors(cfg.data.train_split)
        if len(data.class_names) < 2:
            raise DataError(ctx.data_root, "a class curriculum needs at least two classes")
        features = _teacher_features(teacher.network, images, self.tap, ctx.device)
        prototypes = class_prototypes(features, labels, data.num_classes)
        if self.center:
            prototypes = prototypes - prototypes.mean(dim=0, keepdim=True)
        order, nearest = class_order(prototypes)
        unit = F.normalize(prototypes.double(), dim=1)
        per_epoch = cfg.optim.iterations_per_epoch or max(1, data.train_size // cfg.data.batch_size)
        epochs = math.ceil(cfg.optim.iterations / per_epoch)
        table = pacing_table(data.num_classes, epochs, start=self.start, full_at=self.full_at, kind=self.pacing)
        names = data.class_names
        result: dict[str, Any] = {
            "tap": self.tap, "center": self.center, "order": [names[k] for k in order], "order_index": order,
            "nearest_similarity": {names[k]: round(float(nearest[k]), 5) for k in order},
            "similarity": [[round(float(v), 5) for v in row] for row in unit @ unit.T],
            "class_names": list(names), "pacing": {"kind": self.pacing.value, "start": self.start,
                                                   "full_at": self.full_at, "iterations_per_epoch": per_epoch,
                                                   "classes_per_epoch": table},
        }
        logger.info("curriculum: %s (easy first); all %d classes from epoch %d of %d", " < ".join(result["order"]),
                    data.num_classes, table.index(data.num_classes), epochs)
        write_text_atomic(ctx.out / "curriculum.json", json.dumps(result, indent=1))
        if self.train:
            strategy = _Paced(order, table, seed=cfg.experiment.seed)
            summary = ctx.train(hooks=strategy)
            result["student"] = summary
            result["test_accuracy"] = summary.get("best", {}).get("test", {}).get("accuracy")
            result["trained_classes_per_epoch"] = strategy.summary()["classes_per_epoch"]
        return result
