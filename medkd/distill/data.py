# SPDX-License-Identifier: Apache-2.0
"""The data of a distillation experiment: training batches, validation score and evaluation, per task.

- :class:`ClassificationData`: folders or a CSV datalist (:mod:`medkd.data.classification`); images resized to
  ``data.image_size`` and held in memory; random flips when ``data.augment``; accuracy for model selection;
  accuracy, balanced accuracy, macro F1, per-class recall and the confusion matrix for evaluation.
- :class:`SegmentationData`: the ACDC/LA/NIfTI layouts through BCP's readers and evaluation protocol (the
  student's BCP-format config, :func:`medkd.distill.students.segmentation_config`): foreground Dice for model
  selection; Dice, Jaccard, HD95 and ASD for evaluation.

Batches are dicts ``{"image": (B, C, *spatial), "label": (B,) or (B, *spatial), "case": [ids]}``; with
``data.paired_column`` (CSV layout) classification batches also carry ``"paired"`` ``(B, C, *spatial)``, each case's
paired second modality (:meth:`ClassificationData.paired`).

Example:
    >>> import torch
    >>> m = classification_metrics(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    >>> m["accuracy"], round(m["balanced_accuracy"], 3)
    (0.75, 0.833)
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from medkd.distill.config import DistillConfig, Layout
from medkd.errors import DataError

__all__ = [
    "ClassificationData", "SegmentationData", "TaskData", "build_data", "classification_metrics", "example_batch",
]

logger = logging.getLogger(__name__)

_PRELOAD_LIMIT = 500_000_000  # floats held in memory at most (2 GB)


class TaskData(Protocol):
    """What :class:`~medkd.distill.task.DistillTask` needs from the data."""

    task: str
    num_classes: int
    class_names: tuple[str, ...]
    train_size: int
    batch_keys: set[str]

    def batches(self, seed: int) -> Iterator[dict[str, Any]]: ...

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, Any]: ...


def classification_metrics(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean recall of the present classes), macro F1, per-class recall, confusion."""
    confusion = torch.bincount(label * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    confusion = confusion.double()
    support, predicted, correct = confusion.sum(1), confusion.sum(0), confusion.diag()
    recall = correct / support.clamp(min=1)
    precision = correct / predicted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    present = support > 0
    return {
        "accuracy": float(correct.sum() / confusion.sum().clamp(min=1)),
        "balanced_accuracy": float(recall[present].mean()) if bool(present.any()) else 0.0,
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
        "recall": [float(r) for r in recall],
        "confusion": confusion.long().tolist(),
        "n": int(confusion.sum()),
    }


class ClassificationData:
    """A classification experiment's splits (see the module docstring)."""

    task = "classification"

    def __init__(self, cfg: DistillConfig, root: str | Path) -> None:
        from medkd.data.classification import read_classification_split

        self.cfg, self.root = cfg, Path(root)
        data = cfg.data
        datalist = Path(data.datalist or "") if data.layout == Layout.CSV else None  # relative to root, or absolute
        self._read = lambda split: read_classification_split(self.root, split, datalist=datalist)
        self._datalist = self.root / datalist if datalist is not None else None
        self.train = self._read(data.train_split)
        self.class_names = tuple(self.train.class_names)
        self.num_classes = len(self.class_names)
        if data.num_classes and data.num_classes != self.num_classes:
            raise DataError(self.root, f"data.num_classes is {data.num_classes}, the {data.train_split} split has "
                                       f"{self.num_classes} classes ({', '.join(self.class_names)})")
        self.train_size = len(self.train.items)
        if self.train_size == 0:
            raise DataError(self.root, f"the {data.train_split} split has no images")
        self.batch_keys = {"image", "label", "case"}
        if data.paired_column:
            self.batch_keys.add("paired")
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}
        self._paired: dict[str, torch.Tensor] = {}
        self._metadata: dict[str, list[dict[str, str]]] = {}
        self._parent: ClassificationData | None = None
        self._keep: tuple[frozenset[int] | None, dict[str, str]] = (None, {})

    def subset(self, *, classes: Sequence[int] | None = None,
               metadata: Mapping[str, Any] | None = None) -> ClassificationData:
        """A view of the same data restricted, in every split, to ``classes`` (label indices, which keep their
        meaning) and to the images whose metadata matches every ``metadata`` key (CSV columns such as
        ``modality``, ``site``; values compared as text).

        Raises:
            DataError: the training split keeps no image, or an image lacks a ``metadata`` key.

        Example:
            >>> # data.subset(classes=[0, 1]) trains on the first two classes; data.subset(metadata={"site": "A"})
        """
        view = copy.copy(self)
        view._parent = self
        view._keep = (frozenset(int(c) for c in classes) if classes is not None else None,
                      {str(k): str(v) for k, v in (metadata or {}).items()})
        view._tensors, view._metadata, view._paired = {}, {}, {}
        view.__dict__.pop("_example_batch", None)
        view.train_size = len(view.tensors(self.cfg.data.train_split)[1])
        if view.train_size == 0:
            raise DataError(self.root, f"no {self.cfg.data.train_split} image has classes {sorted(view._keep[0] or [])}"
                                       f" and metadata {view._keep[1]}")
        return view

    def metadata(self, split: str) -> list[dict[str, str]]:
        """The CSV metadata of each image of a split (empty dicts for class folders), in :meth:`tensors` order."""
        self.tensors(split)
        return self._metadata[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Images ``(N, C, *size)``, labels ``(N,)`` and case ids of a split (read once)."""
        if split not in self._tensors and self._parent is not None:
            images, labels, cases = self._parent.tensors(split)
            meta = self._parent.metadata(split)
            classes, where = self._keep
            keep = torch.ones(len(labels), dtype=torch.bool)
            if classes is not None:
                keep &= torch.isin(labels, torch.tensor(sorted(classes), dtype=labels.dtype))
            for key, value in where.items():
                missing = [cases[i] for i, m in enumerate(meta) if key not in m]
                if missing:
                    raise DataError(self.root, f"split {split!r}: case {missing[0]} has no metadata {key!r} (use a "
                                               "CSV datalist with that column)")
                keep &= torch.tensor([m[key] == value for m in meta], dtype=torch.bool)
            idx = keep.nonzero().flatten()
            self._tensors[split] = (images[idx], labels[idx], [cases[i] for i in idx.tolist()])
            self._metadata[split] = [meta[i] for i in idx.tolist()]
            if self.cfg.data.paired_column:
                self._paired[split] = self._parent.paired(split)[idx]
        if split not in self._tensors:
            from medkd.data.classification import ClassificationDataset

            part = self.train if split == self.cfg.data.train_split else self._read(split)
            if tuple(part.class_names) != self.class_names:
                raise DataError(self.root, f"split {split!r} has classes {list(part.class_names)}, the training "
                                           f"split {list(self.class_names)}")
            ds = ClassificationDataset(part, size=tuple(self.cfg.data.image_size))
            copies = 2 if self.cfg.data.paired_column else 1
            if copies * len(ds) * math.prod(self.cfg.data.image_size) * self.cfg.data.in_channels > _PRELOAD_LIMIT:
                raise DataError(self.root, f"split {split!r} is too large to hold in memory for distillation "
                                           f"({len(ds)} images); lower data.image_size")
            items = [ds[i] for i in range(len(ds))]
            if not items:
                raise DataError(self.root, f"split {split!r} has no images")
            images = torch.stack([it["image"] for it in items]).float()
            if images.shape[1] != self.cfg.data.in_channels:
                raise DataError(self.root, f"images have {images.shape[1]} channels, data.in_channels is "
                                           f"{self.cfg.data.in_channels}")
            labels = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
            if self.cfg.data.paired_column:
                self._paired[split] = self._read_paired(part, split, images.shape)
            self._tensors[split] = (images, labels, [str(it["case"]) for it in items])
            self._metadata[split] = [dict(item.metadata) for item in part.items]
        return self._tensors[split]

    def paired(self, split: str) -> torch.Tensor:
        """The paired second modality ``(N, C, *size)`` of a split, in :meth:`tensors` order (read once).

        Raises:
            DataError: ``data.paired_column`` is not set, or (when read) a case without a paired image, a listed
                paired image that does not exist, or one of another channel count.
        """
        if not self.cfg.data.paired_column:
            raise DataError(self.root, "the experiment has no paired modality: set data.paired_column (a column of "
                                       "the CSV datalist naming each case's paired image)")
        self.tensors(split)
        return self._paired[split]

    def _read_paired(self, part: Any, split: str, shape: torch.Size) -> torch.Tensor:
        """The images named in ``data.paired_column`` for the items of ``part``, like the main images."""
        from dataclasses import replace as replace_item

        from medkd.data.classification import ClassificationDataset, ClassificationSplit, image_channels

        column, source = self.cfg.data.paired_column, Path(self._datalist or self.root)
        items = []
        for item in part.items:
            name = item.metadata.get(column, "")
            if not name:
                raise DataError(source, f"split {split!r}: case {item.case} has no paired image (column "
                                        f"{column!r} {'is empty' if column in item.metadata else 'is missing'})")
            path = (source.parent / name).resolve()
            if not path.is_file():
                raise DataError(path, f"paired image of case {item.case} ({column!r} of {source}) not found")
            items.append(replace_item(item, path=path))
        channels = image_channels(items[0].path) if items else part.channels
        ds = ClassificationDataset(ClassificationSplit(items, part.class_names, split, source, channels),
                                   size=tuple(self.cfg.data.image_size))
        paired = torch.stack([ds[i]["image"] for i in range(len(ds))]).float()
        if paired.shape != shape:
            raise DataError(source, f"split {split!r}: paired images {tuple(paired.shape)} do not match the images "
                                    f"{tuple(shape)} (same channels and size expected)")
        return paired

    def batches(self, seed: int) -> Iterator[dict[str, Any]]:
        images, labels, cases = self.tensors(self.cfg.data.train_split)
        paired = self.paired(self.cfg.data.train_split) if self.cfg.data.paired_column else None
        g = torch.Generator().manual_seed(seed)
        n, bs = len(labels), self.cfg.data.batch_size
        while True:
            order = torch.randperm(n, generator=g)
            if n < bs:
                order = torch.randint(0, n, (bs,), generator=g)
            for start in range(0, len(order) - bs + 1, bs):
                idx = order[start:start + bs]
                x = images[idx]
                second = paired[idx] if paired is not None else None
                if self.cfg.data.augment:
                    flip = torch.rand(len(idx), generator=g) < 0.5
                    x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(-1), x)
                    if second is not None:  # the same flip: the two modalities stay registered
                        second = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), second.flip(-1), second)
                batch = {"image": x, "label": labels[idx], "case": [cases[i] for i in idx.tolist()]}
                if second is not None:
                    batch["paired"] = second
                yield batch

    def predict(self, model: nn.Module, split: str, device: torch.device, batch: int = 256) -> torch.Tensor:
        """Logits ``(N, C)`` of ``model`` on a split (eval mode, no grad)."""
        images, _, _ = self.tensors(split)
        was = model.training
        model.eval()
        with torch.inference_mode():
            out = torch.cat([model(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])
        model.train(was)
        return out

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        _, labels, _ = self.tensors(self.cfg.data.val_split)
        pred = self.predict(model, self.cfg.data.val_split, device).argmax(1)
        m = classification_metrics(pred, labels, self.num_classes)
        return {"score": m["accuracy"], "accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"]}

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, Any]:
        _, labels, cases = self.tensors(split)
        logits = self.predict(model, split, device)
        out = classification_metrics(logits.argmax(1), labels, self.num_classes)
        out["class_names"] = list(self.class_names)
        return out


def _all_labelled(layout: Layout, root: Path) -> int:
    """Every labelled training patient/volume of a segmentation layout (``data.labeled: 0``)."""
    if layout == Layout.ACDC:
        from medkd.data.acdc import patient_of, read_list

        return len({patient_of(n) for n in read_list(root / "train_slices.list")})
    if layout == Layout.LA:
        from medkd.data.acdc import read_list

        return len(read_list(root / "train.list"))
    from medkd.data.nifti import load_datalist

    return len(load_datalist(root))


class SegmentationData:
    """A segmentation experiment's data through BCP's readers and protocol (see the module docstring)."""

    task = "segmentation"

    def __init__(self, cfg: DistillConfig, root: str | Path) -> None:
        from dataclasses import replace

        from medkd.distill.students import segmentation_config
        from medkd.methods.bcp.data import build_run_data
        from medkd.methods.bcp.evaluate import class_names

        self.cfg, self.root = cfg, Path(root)
        seg = segmentation_config(cfg)
        if not cfg.data.labeled:
            seg = replace(seg, labeled=_all_labelled(cfg.data.layout, self.root))
            if cfg.data.layout != Layout.ACDC:  # LA / NIfTI validate on the tail of the training list
                seg = replace(seg, labeled=max(1, seg.labeled - seg.val_from_train))
        self.seg = seg
        self.run_data = build_run_data(seg, self.root)
        self.num_classes = seg.num_classes
        self.class_names = tuple(class_names(seg))
        self.train_size = len(self.run_data.labeled)
        self.batch_keys = {"image", "label"}
        self._val: list | None = None

    def batches(self, seed: int) -> Iterator[dict[str, Any]]:
        from medkd.methods.bcp.data import labeled_loader

        for batch in labeled_loader(self.run_data, self.seg, seed):
            yield {"image": batch["image"], "label": batch["label"].long()}

    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        from medkd.methods.bcp.data import eval_cases
        from medkd.methods.bcp.evaluate import validation_dice

        if self._val is None:
            self._val = list(eval_cases(self.seg, self.root, self.run_data.val_split, self.run_data.val_ids))
        return validation_dice(model, self._val, self.seg, device)

    def evaluate(self, model: nn.Module, split: str, device: torch.device) -> dict[str, Any]:
        from medkd.methods.bcp.data import eval_cases
        from medkd.methods.bcp.evaluate import evaluate_cases

        return evaluate_cases(model, eval_cases(self.seg, self.root, split), self.seg, device)


def example_batch(data: TaskData) -> dict[str, Any]:
    """The first training batch (seed 0) of ``data``, read once and kept: dry runs, shape checks, latency."""
    cached = getattr(data, "_example_batch", None)
    if cached is None:
        cached = next(iter(data.batches(0)))
        data._example_batch = cached  # type: ignore[attr-defined]
    return cached


def build_data(cfg: DistillConfig, root: str | Path) -> ClassificationData | SegmentationData:
    """The experiment's data for its task (from ``data.layout``).

    Raises:
        DataError: a missing or malformed dataset (the file is named).
    """
    return ClassificationData(cfg, root) if cfg.task == "classification" else SegmentationData(cfg, root)
