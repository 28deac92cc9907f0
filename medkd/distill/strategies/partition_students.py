# SPDX-License-Identifier: Apache-2.0
"""MSD multi-student distillation: one student per partition of a metadata key, each case routed to its own.

Song et al., "Multi-Student Diffusion Distillation for Better One-Step Generators", ICML 2025 (spec §3.10, [paper]):
the conditioning space is split among several students, each distilled from the shared teacher on its own part
(four students reach FID 1.20 on ImageNet-64 one-step generation). In medkd the partition is a **metadata key** of
the cases (a CSV datalist column: ``modality``, ``anatomy``, ``site``), with hard routing by the same key at
inference.

Per value ``v`` of ``key`` (``values``, default the sorted values of the training split), a student of the
experiment's architecture is trained with the YAML's ``distill.terms`` (any loss plugin, e.g. ``kd``) from the
shared teacher on ``data.subset(metadata={key: v})`` (every split restricted, so each student also selects its best
checkpoint on its own validation cases) into ``RUN/partitions/<v>``, a normal run folder. ``RUN/routing.json``
records the key and the partitions' folders; :func:`~medkd.distill.routing.load_partitioned` rebuilds the routed
model (:class:`~medkd.distill.routing.PartitionedStudent`, ``forward(x, keys)``).

The final ``RUN`` must be a normal run; two designs, by ``fallback``:

- ``fallback: true`` (default): ``RUN`` holds a **global student** trained exactly like a plain run of the same
  YAML (same terms, teacher, data, seed), so ``summary.json``'s ``student`` entry is the single-student baseline of
  the same experiment, and the routed model is compared with it case by case. It costs one more training; it is
  never used for routing (an unknown key raises, it does not fall back silently).
- ``fallback: false``: no extra training; the partition with the most training cases is trained into ``RUN``
  itself (its ``routing.json`` folder is ``.``), so ``summary.json``'s ``student`` entry covers that partition's
  validation and test cases only.

``summary()`` (``summary.json`` ``strategy``) holds the routed accuracy over the whole validation and test splits
(each case through its own partition's best checkpoint), the accuracy of each partition on its own cases, and,
with the fallback, the global student's accuracy on each partition. Every validation and test case must have a key
value with a partition: that is checked before any training.

Example:
    >>> from medkd.distill import create_strategy
    >>> s = create_strategy("partition_students", key="anatomy", values=[0, 1, 2])
    >>> s.key, s.values
    ('anatomy', ('0', '1', '2'))
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from medkd.distill.registry import register_strategy
from medkd.distill.routing import (
    PartitionedStudent, load_partitioned, metadata_values, routed_predictions, write_routing,
)
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.errors import ConfigError

__all__ = ["PartitionStudents", "PartitionedStudent", "load_partitioned"]

logger = logging.getLogger(__name__)

#: the folder of the partition runs inside the strategy's run folder
PARTITIONS = "partitions"


@register_strategy("partition_students")
class PartitionStudents(Strategy):
    """MSD (Song et al., ICML'25): one student per metadata partition (modality, anatomy, site), routed by key.

    Args:
        key: the metadata column that partitions the cases (``modality``; CSV datalist).
        values: the partitions, in order (default the sorted values found in the training split); given values are
            compared as text and must occur in the training split.
        fallback: also train a global student on all cases into the run folder (see the module docstring); false:
            the largest partition is trained there instead.

    Raises:
        ConfigError: an empty key, an empty or duplicated ``values`` list, or (at run time) values that are not in
            the training split or that validation/test cases lack.
    """

    requires_teacher = True
    tasks = frozenset({"classification"})

    def __init__(self, key: str = "modality", values: Sequence[Any] | None = None, fallback: bool = True) -> None:
        if not isinstance(key, str) or not key:
            raise ConfigError(f"partition_students: key must name a metadata column, got {key!r}")
        if values is not None:
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"partition_students: values must be a non-empty list, got {values!r}")
            values = tuple(str(v) for v in values)
            if len(set(values)) != len(values):
                raise ConfigError(f"partition_students: values repeat: {list(values)}")
            for v in values:
                if not v or "." in v:
                    raise ConfigError(f"partition_students: value {v!r} cannot name a student folder (no '.', "
                                      "not empty)")
        self.key, self.values, self.fallback = key, values, bool(fallback)
        self._summary: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------- run
    def _resolve(self, ctx: StrategyContext) -> list[str]:
        cfg = ctx.cfg.data
        found = metadata_values(ctx.data, self.key, cfg.train_split)
        values = list(self.values) if self.values is not None else found
        absent = [v for v in values if v not in found]
        if absent:
            raise ConfigError(f"partition_students: {self.key} values {absent} have no {cfg.train_split} case; "
                              f"the {cfg.train_split} split has {found}")
        for v in values:
            if not v or "." in v:
                raise ConfigError(f"partition_students: {self.key} value {v!r} cannot name a student folder "
                                  "(no '.', not empty); choose another key")
        for split in self._eval_splits(ctx):
            unrouted = sorted(set(metadata_values(ctx.data, self.key, split)) - set(values))
            if unrouted:
                raise ConfigError(f"partition_students: {split} cases have {self.key} values {unrouted} without a "
                                  f"partition (partitions: {values}); every case needs its own student")
        return values

    @staticmethod
    def _eval_splits(ctx: StrategyContext) -> list[str]:
        data = ctx.cfg.data
        return [data.val_split] + ([data.test_split] if ctx.cfg.eval.test else [])

    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        values = self._resolve(ctx)
        subsets = {v: ctx.data.subset(metadata={self.key: v}) for v in values}
        largest = max(values, key=lambda v: subsets[v].train_size)  # the first of the largest, in order
        folders: dict[str, str] = {}
        sizes = {v: subsets[v].train_size for v in values}
        logger.info("partition_students: %d students by %s: %s", len(values), self.key, sizes)
        for v in values:
            if not self.fallback and v == largest:
                continue
            folders[v] = f"{PARTITIONS}/{v}"
            ctx.train(out=ctx.out / PARTITIONS / v, data=subsets[v])
        if self.fallback:
            summary = ctx.train()
        else:
            folders[largest] = "."
            summary = ctx.train(data=subsets[largest])
        write_routing(ctx.out, self.key, {v: folders[v] for v in values})
        self._summary = self._evaluate(ctx, values, folders, sizes)
        return summary

    def _evaluate(self, ctx: StrategyContext, values: list[str], folders: dict[str, str],
                  sizes: dict[str, int]) -> dict[str, Any]:
        """Routed accuracy over whole splits, per-partition accuracy, and the global student's on each partition."""
        from medkd.distill.data import classification_metrics
        from medkd.distill.students import load_classifier

        routed_model = load_partitioned(ctx.out, "best", ctx.device)
        global_net = load_classifier(ctx.out, "best", ctx.device)[1] if self.fallback else None
        n_classes = ctx.data.num_classes
        out: dict[str, Any] = {
            "key": self.key, "values": values, "fallback": self.fallback, "routing": "routing.json",
            "routed": {}, "partitions": {v: {"run": folders[v], "train_size": sizes[v]} for v in values},
        }
        if global_net is not None:
            out["global"] = {}
        for split in self._eval_splits(ctx):
            pred, labels, keys = routed_predictions(routed_model, ctx.data, split, ctx.device)
            m = classification_metrics(pred, labels, n_classes)
            out["routed"][split] = {k: m[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "n")}
            global_pred = ctx.data.predict(global_net, split, ctx.device).argmax(1) if global_net is not None else None
            if global_pred is not None:
                g = classification_metrics(global_pred, labels, n_classes)
                out["global"][split] = {"accuracy": g["accuracy"], "balanced_accuracy": g["balanced_accuracy"],
                                        "per_partition": {}}
            for v in values:
                mask = torch.from_numpy(keys == v)
                part = classification_metrics(pred[mask], labels[mask], n_classes)
                out["partitions"][v][split] = {"accuracy": part["accuracy"], "n": part["n"]}
                if global_pred is not None:
                    out["global"][split]["per_partition"][v] = classification_metrics(
                        global_pred[mask], labels[mask], n_classes)["accuracy"]
        if ctx.cfg.eval.test:
            logger.info("partition_students: routed test accuracy %.4f%s", out["routed"][ctx.cfg.data.test_split]
                        ["accuracy"], f" (global student {out['global'][ctx.cfg.data.test_split]['accuracy']:.4f})"
                        if global_net is not None else "")
        return out

    def summary(self) -> dict[str, Any]:
        return dict(self._summary)
