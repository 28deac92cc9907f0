# SPDX-License-Identifier: Apache-2.0
"""Typed configuration of a Grounded Teacher run (presets in ``apps/grounded_teacher/*.yaml``).

Ashraf et al., "Context Aware Grounded Teacher for Source Free Object Detection", arXiv 2504.15404. Fields default
to the reference's hyperparameters (spec section 2.4) on a RetinaNet detector; ``cpu_synthetic.yaml`` shrinks them
for two CPU cores. ``method`` picks the arm (``gt``, ``mean_teacher``, ``source_only``), ``mode`` the reference's
defects (``gt_compat``) or their fixes (``clean``, default), ``expert`` the expert branch (``none``, ``csv``,
``sam``).

Example:
    >>> from medkd.config import config_from_dict
    >>> cfg = config_from_dict(GTConfig, {"expert": "csv", "expert_csv": "boxes.csv"}, overrides=["adapt.iterations=8"])
    >>> cfg.adapt.iterations, cfg.burn_in(), cfg.uses_expert(), cfg.label_names(["mass"])
    (8, 4, True, ['background', 'mass'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from medkd.errors import ConfigError

__all__ = [
    "AdaptConfig",
    "DecodeConfig",
    "DomainConfig",
    "ExpertName",
    "GTConfig",
    "GTMethod",
    "Mode",
    "NetConfig",
    "PseudoLabelConfig",
    "SourceTrainConfig",
]


class GTMethod(StrEnum):
    """The arm a run trains: full Grounded Teacher, a plain mean teacher (no expert, no RCM), or the source model."""

    GT = "gt"
    MEAN_TEACHER = "mean_teacher"
    SOURCE_ONLY = "source_only"


class Mode(StrEnum):
    """``clean`` fixes the reference's defects (spec section 6); ``gt_compat`` reproduces them."""

    CLEAN = "clean"
    GT_COMPAT = "gt_compat"


class ExpertName(StrEnum):
    """The expert branch: none, offline boxes from a CSV (e.g. BiomedParse output), or segment-anything."""

    NONE = "none"
    CSV = "csv"
    SAM = "sam"


@dataclass(frozen=True, kw_only=True)
class DomainConfig:
    """A COCO dataset folder ``<data-root>/<dataset>`` and its split names.

    Attributes:
        dataset: folder name under ``--data-root`` (``DDSM``, ``INbreast``, ``RSNA-BSD1K``; ``source``/``target`` for
            the synthetic data).
        train_split: annotation split used for training (source: supervised; target: unlabelled). RSNA-BSD1K's
            training split is ``full``.
        val_split: annotation split used for validation (source) or evaluation (target).
    """

    dataset: str
    train_split: str = "train"
    val_split: str = "val"


@dataclass(frozen=True, kw_only=True)
class NetConfig:
    """The registered detector (``medkd.nets``, task ``detection``) and its keywords.

    Attributes:
        name: registry name (``retinanet2d``: MONAI RetinaNet, ATSS matcher, hard-negative sampler, focal loss).
        backbone: ``resnet10`` or ``resnet18``.
        extractor: ``torchvision`` (MONAI's BackboneWithFPN) or ``plain`` (torchvision-free ResNet + FPN).
        fpn_channels: FPN width.
        anchor_sizes: square anchor sides on the finest pyramid level (stride 4), in pixels of the network input;
            the next two levels use twice and four times these.
    """

    name: str = "retinanet2d"
    backbone: str = "resnet18"
    extractor: str = "torchvision"
    fpn_channels: int = 64
    anchor_sizes: tuple[int, ...] = (8, 12, 16)


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """How the detector's outputs become detections.

    Attributes:
        score_threshold: the network's candidate threshold (COCO AP and FROC use every box above it).
        nms_threshold: IoU of the final non-maximum suppression (spec: 0.22).
        max_detections: boxes per image at most.
        report_threshold: default score for ``gt predict``, the DICOM pipeline and the app's slider.
    """

    score_threshold: float = 0.05
    nms_threshold: float = 0.22
    max_detections: int = 100
    report_threshold: float = 0.5


@dataclass(frozen=True, kw_only=True)
class SourceTrainConfig:
    """Stage S: supervised training on the source domain (SGD with linear warm-up).

    Attributes:
        iterations, batch_size, lr, momentum, weight_decay, warmup: the schedule (spec 2.4: SGD 0.01, momentum 0.9,
            weight decay 1e-4, 1000 warm-up iterations).
        val_interval: validate (AP50 on the source val split) and checkpoint every this many iterations.
    """

    iterations: int = 20000
    batch_size: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 1000
    val_interval: int = 1000


@dataclass(frozen=True, kw_only=True)
class PseudoLabelConfig:
    """Stage P: the source model's offline pseudo-labels on the target training images.

    Attributes:
        score_threshold: keep boxes above it; ``None``: the mode's default (``gt_compat`` 0.8; ``clean`` the score
            giving ``target_precision`` on the source val split at the end of stage S).
        target_precision: precision the clean threshold is calibrated to.
        nms_threshold: IoU of the NMS applied before thresholding (``gt_compat`` skips it: raw proposals).
    """

    score_threshold: float | None = None
    target_precision: float = 0.8
    nms_threshold: float = 0.5


@dataclass(frozen=True, kw_only=True)
class AdaptConfig:
    """Stage A: mean-teacher adaptation with burn-in (spec 2.2).

    Attributes:
        iterations: adaptation iterations; ``burn_in``: fraction of them (or, if >= 1, a count) trained on the
            source pseudo-labels alone before the teacher is copied from the student.
        batch_size / unlabeled_batch_size: pseudo-labelled and unlabelled target images per iteration.
        lr, momentum, weight_decay, warmup: SGD (as stage S).
        ema_decay: kappa of the EMA teacher (per iteration, parameters and buffers).
        teacher_threshold: teacher pseudo-label score; ``None``: the mode's default (as
            :attr:`PseudoLabelConfig.score_threshold`).
        lambda_u, lambda_e: weights of the teacher and expert losses. (The reference's GRL discriminator, off by
            default on RetinaNet in the spec, is not implemented.)
        rcm: the relational context module (confusion matrices, semantic augmentation, semantic-aware loss);
            switched off (and logged) at one class, where it is an identity.
        fuse: clean mode only: one forward over teacher and expert boxes fused by NMS instead of two losses.
        val_interval: evaluate the teacher on the target val split every this many iterations (0: only at the end;
            the last teacher is the model, target-val selection would be an oracle).
    """

    iterations: int = 40000
    burn_in: float = 0.5
    batch_size: int = 2
    unlabeled_batch_size: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup: int = 1000
    ema_decay: float = 0.9996
    teacher_threshold: float | None = None
    lambda_u: float = 1.0
    lambda_e: float = 1.0
    rcm: bool = True
    fuse: bool = False
    val_interval: int = 0


@dataclass(frozen=True, kw_only=True)
class GTConfig:
    """Every setting of a Grounded Teacher run.

    Attributes:
        method: ``gt``, ``mean_teacher`` or ``source_only`` (:class:`GTMethod`).
        mode: ``clean`` or ``gt_compat`` (:class:`Mode`).
        classes: foreground class names (label values 1..K); empty: the source dataset's categories.
        source, target: the two :class:`DomainConfig`.
        image_size: short side of the network input (reference 600); images are resized, boxes follow.
        net: the :class:`NetConfig`.
        source_train, pseudo_label, adapt: the stages' settings.
        expert: ``none``, ``csv`` or ``sam`` (:class:`ExpertName`); ``method=mean_teacher`` ignores it.
        expert_csv: the CSV of ``expert: csv`` (columns ``ImageName,Prompt,MeanConfidence,MaxConfidence,X,Y,W,H``).
        sam_checkpoint, sam_arch, sam_mode: ``expert: sam``: a user-supplied checkpoint, ``vit_b``/``vit_l``/``vit_h``,
            ``auto`` (automatic masks, offline) or ``refine`` (box prompts from the source pseudo-labels).
        expert_threshold: expert boxes above this score are kept (tau_e = 0.8).
        expert_class_policy: ``fixed:<id>``, ``teacher_match`` or ``prompt_map`` (how class-agnostic expert boxes
            get a class); ``auto``: ``fixed:0`` at one class, else ``teacher_match``.
        decode: the :class:`DecodeConfig`.
        seed, device, precision, log_interval: as in every medkd method.
    """

    method: GTMethod = GTMethod.GT
    mode: Mode = Mode.CLEAN
    classes: tuple[str, ...] = ()
    source: DomainConfig = field(default_factory=lambda: DomainConfig(dataset="source"))
    target: DomainConfig = field(default_factory=lambda: DomainConfig(dataset="target"))
    image_size: int = 600
    net: NetConfig = field(default_factory=NetConfig)
    source_train: SourceTrainConfig = field(default_factory=SourceTrainConfig)
    pseudo_label: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    expert: ExpertName = ExpertName.NONE
    expert_csv: str = ""
    sam_checkpoint: str = ""
    sam_arch: str = "vit_b"
    sam_mode: str = "auto"
    expert_threshold: float = 0.8
    expert_class_policy: str = "auto"
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    log_interval: int = 20

    def __post_init__(self) -> None:
        checks = [
            ("image_size", self.image_size, 16, None), ("seed", self.seed, 0, 2**32 - 1),
            ("log_interval", self.log_interval, 1, None), ("expert_threshold", self.expert_threshold, 0.0, 1.0),
            ("source_train.iterations", self.source_train.iterations, 1, None),
            ("source_train.batch_size", self.source_train.batch_size, 1, None),
            ("source_train.lr", self.source_train.lr, 0.0, None),
            ("source_train.val_interval", self.source_train.val_interval, 0, None),
            ("adapt.iterations", self.adapt.iterations, 1, None), ("adapt.burn_in", self.adapt.burn_in, 0.0, None),
            ("adapt.batch_size", self.adapt.batch_size, 1, None),
            ("adapt.unlabeled_batch_size", self.adapt.unlabeled_batch_size, 1, None),
            ("adapt.ema_decay", self.adapt.ema_decay, 0.0, 1.0), ("adapt.lambda_u", self.adapt.lambda_u, 0.0, None),
            ("adapt.lambda_e", self.adapt.lambda_e, 0.0, None), ("adapt.val_interval", self.adapt.val_interval, 0, None),
            ("pseudo_label.target_precision", self.pseudo_label.target_precision, 0.0, 1.0),
            ("decode.score_threshold", self.decode.score_threshold, 0.0, 1.0),
            ("decode.report_threshold", self.decode.report_threshold, 0.0, 1.0),
            ("decode.nms_threshold", self.decode.nms_threshold, 0.0, 1.0),
            ("decode.max_detections", self.decode.max_detections, 1, None),
        ]
        for name, value, low, high in checks:
            if value < low or (high is not None and value > high):
                bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
                raise ConfigError(f"{name} must be {bound}, got {value!r}")
        for name, value in (("pseudo_label.score_threshold", self.pseudo_label.score_threshold),
                            ("adapt.teacher_threshold", self.adapt.teacher_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1] or null (the mode's default), got {value!r}")
        if self.burn_in() >= self.adapt.iterations and self.method is not GTMethod.SOURCE_ONLY:
            raise ConfigError(f"adapt.burn_in ({self.burn_in()} iterations) must be below adapt.iterations "
                              f"({self.adapt.iterations})")
        if self.sam_mode not in ("auto", "refine"):
            raise ConfigError(f"sam_mode must be 'auto' or 'refine', got {self.sam_mode!r}")
        if self.uses_expert() and self.expert is ExpertName.CSV and not self.expert_csv:
            raise ConfigError("expert: csv needs expert_csv: PATH (a CSV of expert boxes)")
        if self.uses_expert() and self.expert is ExpertName.SAM and not self.sam_checkpoint:
            raise ConfigError("expert: sam needs sam_checkpoint: PATH (a segment-anything checkpoint; nothing is "
                              "downloaded)")
        policy = self.expert_class_policy
        if not (policy in ("auto", "teacher_match", "prompt_map") or policy.startswith("fixed:")):
            raise ConfigError(f"expert_class_policy must be auto, teacher_match, prompt_map or fixed:<id>, "
                              f"got {policy!r}")

    def burn_in(self) -> int:
        """Burn-in iterations B: ``adapt.burn_in`` as a fraction of ``adapt.iterations``, or a count if >= 1."""
        b = self.adapt.burn_in
        return int(b) if b >= 1 else int(round(b * self.adapt.iterations))

    def uses_expert(self) -> bool:
        """Whether the adaptation uses an expert branch (``method: gt`` with an expert other than ``none``)."""
        return self.method is GTMethod.GT and self.expert is not ExpertName.NONE

    def uses_rcm(self, num_classes: int) -> bool:
        """Whether the relational context module runs: ``method: gt``, ``adapt.rcm`` on, and at least two classes
        (``gt_compat`` runs it even at one class, where it is an identity, as the reference does)."""
        if self.method is not GTMethod.GT or not self.adapt.rcm:
            return False
        return num_classes >= 2 or self.mode is Mode.GT_COMPAT

    def label_names(self, classes: tuple[str, ...] | list[str] | None = None) -> list[str]:
        """Names by label value, background first (``classes`` overrides the config's)."""
        return ["background", *(self.classes if classes is None else classes)]

    def net_kwargs(self, num_classes: int | None = None) -> dict[str, Any]:
        """Keywords of the registered detector (what a bundle's ``network_def`` holds)."""
        k = num_classes if num_classes is not None else len(self.classes)
        if k < 1:
            raise ConfigError("classes is empty: the run's classes are set from the source dataset at stage S")
        return {"in_channels": 1, "num_classes": k, "backbone": self.net.backbone,
                "extractor": self.net.extractor, "fpn_channels": self.net.fpn_channels,
                "anchor_sizes": list(self.net.anchor_sizes), "score_threshold": self.decode.score_threshold,
                "nms_threshold": self.decode.nms_threshold, "detections_per_image": self.decode.max_detections}
