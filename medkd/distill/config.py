# SPDX-License-Identifier: Apache-2.0
"""The distillation experiment: one YAML per experiment (``apps/distill/*.yaml``), checked key by key.

Sections (spec ``distillation_plugins.md`` §1): ``experiment``, ``data``, ``teacher``, ``student``, ``distill``
(``terms``: named weighted plugin terms; ``strategy``), ``optim`` and ``eval``. No executable tags: the YAML is
read with ``yaml.safe_load``; ``--set section.key=value`` overrides any key.

The task follows from ``data.layout``: ``folders`` or ``csv`` (classification: ``<root>/<split>/<class>/*.png|
*.nii.gz`` or a CSV datalist ``image,label``) or ``acdc``, ``la``, ``nifti`` (segmentation, the layouts
``medkd bcp`` reads).

Example:
    >>> cfg = config_from_dict(DistillConfig, {
    ...     "data": {"layout": "folders"}, "student": {"net": "kd_cnn"},
    ...     "teacher": {"checkpoint": "runs/teacher"},
    ...     "distill": {"terms": [{"name": "kd", "plugin": "kd", "params": {"temperature": 4}}]}})
    >>> cfg.task, cfg.distill.terms[0].params
    ('classification', {'temperature': 4})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from medkd.config import config_from_dict
from medkd.distill.terms import TermSpec
from medkd.errors import ConfigError
from medkd.registry import resolve_option

__all__ = [
    "DataConfig", "DistillConfig", "DistillSection", "EvalConfig", "ExperimentConfig", "Layout", "NetConfig",
    "OptimConfig", "TeacherConfig", "config_from_dict",
]


class Layout(StrEnum):
    """On-disk layouts: classification ``folders``/``csv``; segmentation ``acdc`` (2D h5), ``la`` (3D h5),
    ``nifti`` (an MSD ``dataset.json`` or ``imagesTr``/``labelsTr``)."""

    FOLDERS = "folders"
    CSV = "csv"
    ACDC = "acdc"
    LA = "la"
    NIFTI = "nifti"

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation``."""
        return "classification" if self in (Layout.FOLDERS, Layout.CSV) else "segmentation"


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """``name``: shown in logs and summaries; ``seed``; ``device``: ``auto`` (CUDA if available), ``cpu``,
    ``cuda``."""

    name: str = "distill"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"experiment.device must be auto, cpu or cuda; got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the images come from.

    Args:
        layout: see :class:`Layout`.
        datalist: the CSV datalist (``layout: csv``), relative to the data root unless absolute.
        train_split / val_split / test_split: split names (classification folders or the CSV's ``split`` column;
            segmentation: ACDC/LA lists, ``val`` for NIfTI is the tail of the training entries).
        in_channels: image channels. num_classes: classes (0: from the data, classification only).
        image_size: classification images are resized to it; segmentation patch size.
        batch_size: images per iteration. labeled: segmentation labelled patients/volumes (0: all).
        augment: random flips for classification (off: deterministic inputs, which the teacher cache needs).
        num_workers: DataLoader workers.
        paired_column: a CSV column naming each case's paired second modality (``layout: csv``; empty: none).
            When set, its images are read like the main ones (relative to the CSV's folder, same size and
            channels) and every batch carries them as ``"paired"`` ``(B, C, H, W)`` (flipped with the image):
            multi-modal teacher -> single-modality student methods (``mst_distill``). SynthLesion-2D writes it
            with ``paired=True`` (column ``paired``).
    """

    layout: Layout = Layout.FOLDERS
    datalist: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    in_channels: int = 1
    num_classes: int = 0
    image_size: tuple[int, ...] = (64, 64)
    batch_size: int = 32
    labeled: int = 0
    augment: bool = True
    num_workers: int = 0
    paired_column: str = ""

    def __post_init__(self) -> None:
        for name, low in (("in_channels", 1), ("num_classes", 0), ("batch_size", 1), ("labeled", 0),
                          ("num_workers", 0)):
            if getattr(self, name) < low:
                raise ConfigError(f"data.{name} must be >= {low}, got {getattr(self, name)}")
        if not self.image_size or any(s < 1 for s in self.image_size):
            raise ConfigError(f"data.image_size must hold positive sizes, got {list(self.image_size)}")
        if self.layout == Layout.CSV and not self.datalist:
            raise ConfigError("data.layout csv needs data.datalist (a CSV with columns image,label)")
        if self.paired_column and self.layout != Layout.CSV:
            raise ConfigError(f"data.paired_column ({self.paired_column!r}) needs data.layout: csv (a datalist with "
                              f"that column); got layout {getattr(self.layout, 'value', self.layout)!r}")
        if self.layout.task == "segmentation" and self.num_classes < 2:
            raise ConfigError(f"data.num_classes must be >= 2 for segmentation ({self.layout.value}); "
                              f"got {self.num_classes}")


@dataclass(frozen=True, kw_only=True)
class NetConfig:
    """The student: a registered network (``medkd.nets.list_nets()``), its extra keywords, its feature taps."""

    net: str = ""
    net_params: dict[str, Any] = field(default_factory=dict)
    taps: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class TeacherConfig:
    """The teacher: a trained model, or one trained first.

    Args:
        checkpoint: a medkd run folder (``medkd bcp train``, ``medkd distill run``) or a medkd MONAI bundle;
            relative paths are relative to the current folder. Empty: train ``net`` first into ``RUN/teacher``.
        net / net_params: the network to train first (when ``checkpoint`` is empty).
        iterations: iterations of that teacher training (the student's optimiser settings, CE (+ Dice)).
        train_split: the split that teacher trains on (default the student's ``data.train_split``).
        taps: teacher modules to tap (``feat:<name>`` keys, detached).
        cache: keep the teacher's fp16 outputs per case on disk; needs ``data.augment: false`` (deterministic
            inputs). cache_dir: where (default ``RUN/teacher_cache``); entries are keyed by the teacher's weights,
            so experiments with the same teacher can share one folder.
    """

    checkpoint: str = ""
    net: str = ""
    net_params: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0
    train_split: str = ""
    taps: tuple[str, ...] = ()
    cache: bool = False
    cache_dir: str = ""

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"teacher.iterations must be >= 0, got {self.iterations}")


@dataclass(frozen=True, kw_only=True)
class DistillSection:
    """``terms``: the loss terms (:class:`~medkd.distill.terms.TermSpec`); ``strategy``: a strategy plugin key
    (issue 13; empty: plain per-step distillation)."""

    terms: tuple[TermSpec, ...] = ()
    strategy: str = ""
    strategy_params: dict[str, Any] = field(default_factory=dict)


class Optimizer(StrEnum):
    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class Schedule(StrEnum):
    CONST = "const"
    COSINE = "cosine"
    POLY = "poly"


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser and schedule (the same for every plugin of an experiment).

    Args:
        name: ``sgd``, ``adam``, ``adamw``. lr, momentum (SGD), weight_decay.
        schedule: ``const``, ``cosine`` or ``poly`` (power 0.9, as BCP/nnU-Net).
        iterations: optimiser steps. iterations_per_epoch: steps per "epoch" for ramps and ``ctx["epoch"]``
            (0: one pass over the training split).
        grad_clip: gradient-norm clip (None: off). precision: ``fp32``, ``bf16`` or ``fp16`` (CUDA).
    """

    name: Optimizer = Optimizer.SGD
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: Schedule = Schedule.COSINE
    iterations: int = 1000
    iterations_per_epoch: int = 0
    grad_clip: float | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.iterations < 1 or self.iterations_per_epoch < 0:
            raise ConfigError("optim.iterations must be >= 1 and optim.iterations_per_epoch >= 0")


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """``val_interval``: validate (and keep ``best.pt``) every N iterations; ``log_interval``; ``test``: also
    evaluate best and last checkpoints on the test split at the end; ``teacher``: evaluate the teacher on it too."""

    val_interval: int = 200
    log_interval: int = 20
    test: bool = True
    teacher: bool = True

    def __post_init__(self) -> None:
        if self.val_interval < 1 or self.log_interval < 1:
            raise ConfigError("eval.val_interval and eval.log_interval must be >= 1")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """A whole experiment (see the module docstring)."""

    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: NetConfig = field(default_factory=NetConfig)
    distill: DistillSection = field(default_factory=DistillSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not self.student.net:
            raise ConfigError("student.net is required (a registered network, see medkd.nets.list_nets())")
        if not self.distill.terms:
            raise ConfigError("distill.terms is empty: list at least one term, e.g. "
                              "[{name: kd, plugin: kd, weight: 0.9}]")
        if self.teacher.cache and self.data.augment:
            raise ConfigError("teacher.cache needs deterministic inputs: set data.augment: false")
        resolve_option(Layout, self.data.layout, "data.layout", "Layouts")

    @property
    def task(self) -> str:
        """``classification`` or ``segmentation`` (from ``data.layout``)."""
        return Layout(self.data.layout).task

    @property
    def has_teacher(self) -> bool:
        """Whether the experiment uses a teacher (a checkpoint or one trained first)."""
        return bool(self.teacher.checkpoint or self.teacher.net)
