# SPDX-License-Identifier: Apache-2.0
"""Typed configuration of a BCP run (presets in ``apps/bcp/*.yaml``).

Bai et al., "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation", CVPR 2023.
Fields default to the paper's ACDC settings; ``auto`` values resolve per dataset and ``faithful``.

Example:
    >>> cfg = BCPConfig(dataset="acdc", labeled=3)
    >>> cfg.resolved_ema_mode(), cfg.resolved_empty_policy()
    ('state_dict', 'worst')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import StrEnum

from medkd.errors import ConfigError

__all__ = ["BCPConfig", "Dataset", "Method"]

#: ``(key, lowest, highest or None, lowest allowed)``: numeric ranges checked before anything is built
_RANGES: tuple[tuple[str, float, float | None, bool], ...] = (
    ("in_channels", 1, None, True),
    ("num_classes", 2, 256, True),  # background plus at least one label; label maps are uint8
    ("batch_size", 1, None, True),
    ("eval_batch_size", 1, None, True),
    ("lr", 0.0, None, False),
    ("momentum", 0.0, 1.0, True),
    ("weight_decay", 0.0, None, True),
    ("lr_step", 0, None, True),
    ("lr_gamma", 0.0, None, False),
    ("u_weight", 0.0, None, True),
    ("seed", 0, 2**32 - 1, True),  # numpy's seed range
    ("val_from_train", 0, None, True),
    ("num_workers", 0, None, True),
    ("snapshot_interval", 0, None, True),
    ("grad_accum_steps", 1, None, True),
)
_MAX_PATCH = 4096


class Dataset(StrEnum):
    """On-disk layouts BCP trains on: ACDC (SSL4MIS h5 slices, 2D), LA (UA-MT h5 volumes, 3D), and ``nifti``:
    users' own 3D volumes from an MSD ``dataset.json`` or ``imagesTr/``+``labelsTr/`` folders (LA protocol,
    volumes z-scored on the fly, arrays in SimpleITK's ``(z, y, x)`` order)."""

    ACDC = "acdc"
    LA = "la"
    NIFTI = "nifti"


class Method(StrEnum):
    """``bcp``: the two BCP stages; ``supervised``: the labelled-only baseline with the same loop."""

    BCP = "bcp"
    SUPERVISED = "supervised"


@dataclass(frozen=True, kw_only=True)
class BCPConfig:
    """Every setting of a BCP or supervised-baseline run.

    Args:
        dataset: ``acdc`` (2D), ``la`` (3D) or ``nifti`` (3D, your own NIfTI datalist).
        method: ``bcp`` or ``supervised`` (labelled-only baseline, Dice+CE, no mixing).
        faithful: reproduce the reference code's quirks (spec §6) instead of the clean behaviour.
        net: registered network name (``medkd.nets.list_nets()``).
        labeled: labelled patients (ACDC: 3 = 5%, 7 = 10%) or volumes (LA: 4 = 5%, 8 = 10%; nifti: the first
            N training entries of the datalist).
        patch: training patch; ACDC slices are nearest-resized to it, LA volumes random-cropped.
        batch_size / labeled_batch_size: total batch and its labelled part (reference 24/12, LA 8/4).
        pretrain_iterations / selftrain_iterations: iterations of the two stages; the supervised
            baseline trains for their sum; ``selftrain_iterations=0`` stops after stage 1 (ablation).
        lr, momentum, weight_decay: SGD settings. ``lr_step``: if > 0, self-training lr is
            ``lr * lr_gamma ** (it // lr_step)`` (LA reference: 2500).
        ema_decay: teacher EMA decay. ``ema_mode``: ``state_dict`` | ``params`` | ``auto``.
        mask_ratio: side of the pasted box as a fraction of the patch (2/3).
        u_weight: loss weight of pseudo-labelled pixels (α = 0.5).
        val_interval: validate every N iterations; ``val_split``: ``auto``, ``val``, ``test`` or
            ``train_tail`` (LA clean: the last ``val_from_train`` IDs of train.list).
        empty_policy: ``auto`` (faithful: ``bcp_zero``, clean: ``worst``), ``bcp_zero``, ``worst``, ``nan_excluded``.
        dice_bg_unmasked: reproduce the pre-``a925e30`` Dice whose background mask was all ones.
        concat_forwards: ablation: one student forward over both mixed halves (changes BN statistics).
        teacher_train_mode: ``auto`` (= ``true``: the teacher stays in ``train()``, as in the reference; measured
            better than ``eval()``, see :meth:`resolved_teacher_train_mode`) or ``true``/``false``.
        restore_optimizer: ``auto`` (ACDC: True, LA: False) or ``true``/``false``.
        sliding_stride: LA evaluation stride (18, 18, 4).
        num_workers: DataLoader workers; 0 loads in the main process.
        snapshot_interval: every N iterations (a multiple of ``log_interval``) save a PNG of a mixed input, its
            supervision and the student's prediction to ``RUN/<stage>/snapshots/``; 0 = never.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        tensorboard: also log scalars to ``RUN/<stage>/tensorboard`` (needs ``pip install "medkd[tensorboard]"``).
        channels_last: 2D networks and inputs in ``torch.channels_last`` memory format (faster convolutions on
            CPU and tensor cores; no effect on the numbers beyond float rounding).
        precision: ``fp32``, ``bf16`` (autocast; fast on CPUs with bf16 instructions and on recent GPUs) or
            ``fp16`` (CUDA only, with a grad scaler). Validation and inference stay in fp32.
        grad_accum_steps: batches whose gradients add up to one optimiser step (the labelled/unlabelled batch is
            drawn that many times per iteration).
    """

    dataset: Dataset = Dataset.ACDC
    method: Method = Method.BCP
    faithful: bool = False
    net: str = "bcp_unet2d"
    in_channels: int = 1
    num_classes: int = 4
    labeled: int = 3
    patch: tuple[int, ...] = (256, 256)
    batch_size: int = 24
    labeled_batch_size: int = 12
    pretrain_iterations: int = 10000
    selftrain_iterations: int = 30000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 0
    lr_gamma: float = 0.1
    ema_decay: float = 0.99
    ema_mode: str = "auto"
    mask_ratio: float = 2 / 3
    u_weight: float = 0.5
    seed: int = 1337
    deterministic: bool = False
    val_interval: int = 200
    log_interval: int = 10
    val_split: str = "auto"
    val_from_train: int = 8
    empty_policy: str = "auto"
    dice_bg_unmasked: bool = False
    concat_forwards: bool = False
    teacher_train_mode: str = "auto"
    restore_optimizer: str = "auto"
    sliding_stride: tuple[int, ...] = (18, 18, 4)
    eval_batch_size: int = 16
    num_workers: int = 2
    device: str = "auto"
    snapshot_interval: int = 0
    channels_last: bool = True
    tensorboard: bool = False
    precision: str = "fp32"
    grad_accum_steps: int = 1

    def __post_init__(self) -> None:
        self._check_ranges()
        dims = 2 if self.dataset == Dataset.ACDC else 3
        if len(self.patch) != dims:
            raise ConfigError(f"patch {list(self.patch)} must have {dims} values for dataset {self.dataset.value!r}")
        if self.dataset != Dataset.ACDC and len(self.sliding_stride) != dims:
            raise ConfigError(f"sliding_stride {list(self.sliding_stride)} must have {dims} values like patch")
        if not 0 < self.labeled_batch_size <= self.batch_size:
            raise ConfigError("labeled_batch_size must be in 1..batch_size")
        if self.method == Method.BCP and (self.labeled_batch_size % 2 or (self.batch_size - self.labeled_batch_size) % 2):
            raise ConfigError("BCP splits the labelled and unlabelled batch parts in halves: both must be even")
        if self.method == Method.BCP and self.batch_size - self.labeled_batch_size != self.labeled_batch_size:
            raise ConfigError("BCP mixes labelled and unlabelled halves pairwise: labeled_batch_size must be batch_size/2")
        if self.labeled < 1:
            raise ConfigError("labeled must be at least 1 (an empty labelled set cannot be trained on)")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not 0.0 <= self.ema_decay <= 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1], got {self.ema_decay}")
        for name, value, allowed in (
            ("ema_mode", self.ema_mode, ("auto", "state_dict", "params")),
            ("val_split", self.val_split, ("auto", "val", "test", "train_tail")),
            ("empty_policy", self.empty_policy, ("auto", "bcp_zero", "worst", "nan_excluded")),
            ("teacher_train_mode", self.teacher_train_mode, ("auto", "true", "false")),
            ("restore_optimizer", self.restore_optimizer, ("auto", "true", "false")),
            ("device", self.device, ("auto", "cpu", "cuda")),
            ("precision", self.precision, ("fp32", "bf16", "fp16")),
        ):
            if str(value).lower() not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.dataset == Dataset.ACDC and self.val_split == "train_tail":
            raise ConfigError("val_split=train_tail is for LA; ACDC has val.list")
        if self.dataset == Dataset.NIFTI and self.val_split not in ("auto", "train_tail"):
            raise ConfigError("nifti datasets validate on the last val_from_train training entries (val_split=auto)")
        if self.faithful and self.dataset == Dataset.LA and tuple(self.patch) != (112, 112, 80):
            raise ConfigError(
                "faithful LA reproduces the reference's box hard-coded for a 112x112x80 patch; "
                "set patch=[112, 112, 80] or faithful=false"
            )
        for name, least in (("pretrain_iterations", 1), ("selftrain_iterations", 0), ("val_interval", 1), ("log_interval", 1)):
            if getattr(self, name) < least:
                raise ConfigError(f"{name} must be at least {least}, got {getattr(self, name)}")

    def _check_ranges(self) -> None:
        """Every number finite and in its range (``lr=nan``, ``patch=[0, 0]``, ``num_classes=0`` are errors naming
        the key, not tracebacks from deep inside training)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value}")
        for name, low, high, closed_low in _RANGES:
            value = getattr(self, name)
            if value < low or (value == low and not closed_low) or (high is not None and value > high):
                span = f"{'[' if closed_low else '('}{low}, {'inf)' if high is None else f'{high}]'}"
                raise ConfigError(f"{name} must be in {span}, got {value}")
        for name in ("patch", "sliding_stride"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise ConfigError(f"{name} must hold positive sizes, got {list(values)}")
        if max(self.patch) > _MAX_PATCH:
            raise ConfigError(f"patch sizes must be at most {_MAX_PATCH}, got {list(self.patch)}")

    # ---- resolved "auto" settings -------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        """2 for ACDC slices, 3 for LA volumes."""
        return 2 if self.dataset == Dataset.ACDC else 3

    def resolved_ema_mode(self) -> str:
        """ACDC averages the whole state dict, LA only the parameters (reference ``BCP_utils``)."""
        if self.ema_mode != "auto":
            return self.ema_mode
        return "params" if self.dataset == Dataset.LA and self.faithful else "state_dict"

    def resolved_empty_policy(self) -> str:
        """Faithful: the reference's all-zero metrics; clean: worst-case metrics plus a count."""
        if self.empty_policy != "auto":
            return self.empty_policy
        return "bcp_zero" if self.faithful else "worst"

    def resolved_val_split(self) -> str:
        """ACDC: ``val``; LA: the reference selects on ``test`` (faithful), clean uses ``train_tail``."""
        if self.val_split != "auto":
            return self.val_split
        if self.dataset == Dataset.ACDC:
            return "val"
        return "test" if self.faithful and self.dataset == Dataset.LA else "train_tail"

    def resolved_teacher_train_mode(self) -> bool:
        """``auto`` keeps the teacher in ``train()`` (dropout on, batch-statistics BN), as the reference does.

        The spec's clean column proposed ``eval()``; bench/results/bcp_synthetic.md measured it: with an eval-mode
        teacher self-training drifts after a few hundred iterations (last-checkpoint test Dice 67.4 vs 81.9 over
        3 seeds), so the default keeps the reference's behaviour and ``teacher_train_mode=false`` opts in to eval().
        """
        if self.teacher_train_mode == "auto":
            return True
        return self.teacher_train_mode.lower() == "true"

    def resolved_restore_optimizer(self) -> bool:
        """ACDC self-training restores the pre-training SGD state; LA does not."""
        if self.restore_optimizer == "auto":
            return self.dataset == Dataset.ACDC
        return self.restore_optimizer.lower() == "true"

    @property
    def intensity(self) -> str:
        """How inputs are normalised at prediction time: ACDC min-max to [0, 1], LA z-score."""
        return "minmax" if self.dataset == Dataset.ACDC else "zscore"
