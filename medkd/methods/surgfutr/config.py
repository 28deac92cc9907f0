# SPDX-License-Identifier: Apache-2.0
"""Typed configuration of a SurgFUTR run (presets in ``apps/surgfutr/*.yaml``).

Sharma et al., "SurgFUTR: surgical future state prediction", arXiv 2510.12904. No code is public: every
reconstructed choice of the spec (``shared/specs/surgfutr.md`` §3) sits behind a field here. ``variant`` picks the
model arm: ``surgfutr`` (teacher + student + ActDyn), ``no_teacher`` (the student trained on the tasks alone) or
``feature_regression`` (the paper's foil: regress the future clip's feature and put the heads on it).

Example:
    >>> from medkd.config import config_from_dict
    >>> cfg = config_from_dict(SurgFUTRConfig, {"data": {"layout": "cholect50", "train": "1-8"}},
    ...                        overrides=["model.prototypes=8"])
    >>> cfg.model.prototypes, cfg.data.presence_key(), split_numbers("1-3,7")
    (8, 'triplet', [1, 2, 3, 7])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from medkd.errors import ConfigError

__all__ = [
    "DataConfig",
    "Layout",
    "LossConfig",
    "ModelConfig",
    "SurgFUTRConfig",
    "TasksConfig",
    "TeacherMode",
    "TrainConfig",
    "Variant",
    "split_numbers",
]


class Variant(StrEnum):
    """The trained arm: full SurgFUTR, the student without the teacher, or future-feature regression."""

    SURGFUTR = "surgfutr"
    NO_TEACHER = "no_teacher"
    FEATURE_REGRESSION = "feature_regression"


class Layout(StrEnum):
    """The on-disk dataset layout (spec §5)."""

    CHOLEC80 = "cholec80"
    CHOLECT50 = "cholect50"


class TeacherMode(StrEnum):
    """``joint``: the teacher trains with its own losses alongside the student; ``frozen``: it trains alone for
    ``train.teacher_iterations`` and is then frozen."""

    JOINT = "joint"
    FROZEN = "frozen"


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def split_numbers(spec: str | int | list[int] | tuple[int, ...]) -> list[int]:
    """Video numbers of a split: ``"1-40"``, ``"1-3,7,9-10"``, a number or a list of numbers.

    Raises:
        ConfigError: a malformed range.
    """
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [int(v) for v in spec]
    out: list[int] = []
    for part in str(spec).split(","):
        m = _RANGE.match(part)
        if not m:
            raise ConfigError(f"split {spec!r}: {part!r} is not a video number or a range like 1-40")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"split {spec!r}: range {part!r} runs backwards")
        out.extend(range(lo, hi + 1))
    return out


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the videos are and how they are read.

    Attributes:
        layout: ``cholec80`` (``videos/videoNN.mp4`` + txt annotations) or ``cholect50`` (1-fps PNG folders + json).
        dataset: folder under ``--data-root`` holding the layout.
        train, val, test: video-number ranges (``"1-40"``, ``"1-3,7"``); numbers without files are skipped.
        frame_size: (rows, cols) every 1-fps frame is resized to.
        cache_dir: decoded frames are cached here (keyed by video file, size and decoder); ``""``: the
            ``MEDKD_CACHE`` folder or ``~/.cache/medkd``, under ``surgical_frames``.
        presence: label key forecast at the short horizons; ``""``: the layout's default (``tool`` for Cholec80,
            ``triplet`` for CholecT50, whose instrument scores are then the maximum over each instrument's
            triplets, as in CholecT50's official AP_i).
        events: ``name=Class`` pairs: event ``name`` is an onset of tool ``Class`` (Cholec80 tools, CholecT50
            instruments; case-insensitive), e.g. clipping = Clipper onset. Empty: no event task.
    """

    layout: Layout = Layout.CHOLEC80
    dataset: str = "cholec80"
    train: str = "1-40"
    val: str = "41-48"
    test: str = "49-80"
    frame_size: tuple[int, int] = (64, 64)
    cache_dir: str = ""
    presence: str = ""
    events: tuple[str, ...] = ("clipping=Clipper", "cutting=Scissors", "bagging=SpecimenBag")

    def presence_key(self) -> str:
        """The label key forecast at the short horizons."""
        if self.presence:
            return self.presence
        return "tool" if self.layout is Layout.CHOLEC80 else "triplet"

    def tool_key(self) -> str:
        """The tool-level label key (``tool`` for Cholec80, ``instrument`` for CholecT50)."""
        return "tool" if self.layout is Layout.CHOLEC80 else "instrument"

    def event_pairs(self) -> list[tuple[str, str]]:
        """``[(event name, class name)]`` of :attr:`events`."""
        pairs = []
        for item in self.events:
            name, sep, cls = item.partition("=")
            if not sep or not name.strip() or not cls.strip():
                raise ConfigError(f"data.events: {item!r} is not of the form name=Class (e.g. clipping=Clipper)")
            pairs.append((name.strip(), cls.strip()))
        return pairs


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The networks (spec §3; CPU preset: 4-layer CNN, D=128, d=64, K=16, T=4).

    Attributes:
        encoder: registered clip encoder (``cnn``: per-frame CNN + temporal conv + mean; ``salt_frames``: a per-frame
            ViT that SALT can pretrain).
        encoder_params: keywords of a non-``cnn`` encoder (``salt_frames``: ``dim``, ``depth``, ``heads``,
            ``patch``, ...; ``feature_dim`` and ``image_size`` come from ``feature_dim`` and ``data.frame_size``
            when the encoder takes them).
        encoder_weights: a SALT run folder (``distill`` strategy ``salt``) or its ``RUN/salt/student.pt``: the
            pretrained encoder the frame encoder's ``encoder`` starts from (``""``: random initialisation).
        width: channels of the CNN's first layer (doubling to its third).
        feature_dim: D, the clip feature.
        state_dim: d, the unit state embedding.
        prototypes: K state prototypes.
        clip_frames: T frames (1-fps seconds) per clip.
        window: L clips in the causal window.
        clip_stride: seconds between the window's clips.
        delta: Δ, seconds from t to the end of the future clip the teacher sees.
        graph_layers: attention layers of the state graph.
        heads: attention heads (graph and decoder).
        temperature: τ of the soft states and the future-state loss.
        actdyn: the student's ActDyn (GRU over [z_i, z_i - z_{i-1}], latent change, FiLM on the decoder).
        sinkhorn_epsilon, sinkhorn_iterations: SK (ε=0.05, 3 iterations).
        freeze_prototypes: iterations the prototypes stay fixed (SwAV: 313).
        queue: past current-clip embeddings kept for SK (0: none); used from iteration ``queue_start``.
        queue_start: first iteration the queue joins the SK batch.
        transition: ``pair`` (argmax q_cur * K + argmax q_fut, K² classes).
    """

    encoder: str = "cnn"
    encoder_params: dict[str, Any] = field(default_factory=dict)
    encoder_weights: str = ""
    width: int = 16
    feature_dim: int = 128
    state_dim: int = 64
    prototypes: int = 16
    clip_frames: int = 4
    window: int = 8
    clip_stride: int = 4
    delta: int = 4
    graph_layers: int = 1
    heads: int = 4
    temperature: float = 0.1
    actdyn: bool = True
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iterations: int = 3
    freeze_prototypes: int = 313
    queue: int = 256
    queue_start: int = 200
    transition: str = "pair"


@dataclass(frozen=True, kw_only=True)
class TasksConfig:
    """SFPBench horizons (spec §4). The first of each is the one ``eval`` reports under the plain keys.

    Attributes:
        presence_deltas_s: Δ in seconds of the presence forecasts (tools, instruments, triplets).
        event_horizons_s: event horizons in seconds.
        transition_horizons_min: phase-transition horizons in minutes.
        presence_mode: ``point`` (label at t+Δ) or ``union`` (any presence in (t, t+Δ]).
    """

    presence_deltas_s: tuple[int, ...] = (1, 2, 3, 5)
    event_horizons_s: tuple[int, ...] = (5, 10, 30)
    transition_horizons_min: tuple[float, ...] = (2.0, 3.0, 5.0)
    presence_mode: str = "point"


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Loss weights (spec §3 table). ``tasks`` weighs the SFPBench heads; ``phase_now`` the current-phase CE."""

    future_state: float = 1.0
    transition: float = 1.0
    transition_kd: float = 1.0
    kd_temperature: float = 2.0
    feature_kd: float = 0.5
    actdyn: float = 0.5
    tasks: float = 1.0
    phase_now: float = 0.5
    feature_regression: float = 1.0


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The schedule (AdamW, cosine decay after a linear warm-up).

    Attributes:
        iterations, batch_size, lr, weight_decay, warmup, grad_clip: the optimiser.
        change_fraction: share of each batch drawn from anchors whose labels change between t and t+Δ.
        label_free_iterations: stage B alone (no task heads) before the tasks join (stage C).
        teacher_mode: ``joint`` or ``frozen`` (:class:`TeacherMode`).
        teacher_iterations: ``frozen``: teacher pre-training iterations before it is frozen.
        val_interval: validate on the val split every this many iterations (0: at the end only).
        workers: 0 (data come from memory).
    """

    iterations: int = 20000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    grad_clip: float = 5.0
    change_fraction: float = 0.5
    label_free_iterations: int = 0
    teacher_mode: TeacherMode = TeacherMode.JOINT
    teacher_iterations: int = 0
    val_interval: int = 1000


@dataclass(frozen=True, kw_only=True)
class SurgFUTRConfig:
    """Every setting of a SurgFUTR run.

    Attributes:
        variant: ``surgfutr``, ``no_teacher`` or ``feature_regression`` (:class:`Variant`).
        data, model, tasks, loss, train: the parts above.
        analysis_fps: analysed seconds per second of video (1: the CAMMA convention).
        seed, device, precision, log_interval: as in every medkd method.
    """

    variant: Variant = Variant.SURGFUTR
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    log_interval: int = 50

    def __post_init__(self) -> None:
        m, t, tr = self.model, self.tasks, self.train
        positive = {
            "model.width": m.width, "model.feature_dim": m.feature_dim, "model.state_dim": m.state_dim,
            "model.prototypes": m.prototypes, "model.clip_frames": m.clip_frames, "model.window": m.window,
            "model.clip_stride": m.clip_stride, "model.delta": m.delta, "model.heads": m.heads,
            "model.sinkhorn_iterations": m.sinkhorn_iterations, "train.iterations": tr.iterations,
            "train.batch_size": tr.batch_size, "log_interval": self.log_interval,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value!r}")
        for name, value in (("model.temperature", m.temperature), ("model.sinkhorn_epsilon", m.sinkhorn_epsilon),
                            ("loss.kd_temperature", self.loss.kd_temperature), ("train.lr", tr.lr)):
            if not value > 0:
                raise ConfigError(f"{name} must be > 0, got {value!r}")
        if m.graph_layers < 0 or m.queue < 0 or m.freeze_prototypes < 0:
            raise ConfigError("model.graph_layers, model.queue and model.freeze_prototypes must be >= 0")
        if m.state_dim % m.heads:
            raise ConfigError(f"model.state_dim ({m.state_dim}) must be divisible by model.heads ({m.heads})")
        if m.encoder == "cnn" and (m.encoder_params or m.encoder_weights):
            raise ConfigError("model.encoder_params and model.encoder_weights are for a registered encoder such as "
                              "salt_frames; model.encoder 'cnn' takes model.width and model.feature_dim")
        fixed = sorted({"in_channels", "feature_dim"} & set(m.encoder_params))
        if fixed:
            raise ConfigError(f"model.encoder_params: {fixed} are set by SurgFUTR (3 RGB channels, model.feature_dim); "
                              f"remove them")
        if m.transition != "pair":
            raise ConfigError(f"model.transition must be 'pair' (K² current x future state classes), "
                              f"got {m.transition!r}")
        if not 0.0 <= tr.change_fraction <= 1.0:
            raise ConfigError(f"train.change_fraction must be in [0, 1], got {tr.change_fraction!r}")
        if not t.presence_deltas_s or not t.transition_horizons_min:
            raise ConfigError("tasks.presence_deltas_s and tasks.transition_horizons_min need one value at least")
        if min(t.presence_deltas_s) < 1 or (t.event_horizons_s and min(t.event_horizons_s) < 1):
            raise ConfigError("tasks.presence_deltas_s and tasks.event_horizons_s are whole seconds >= 1")
        if min(t.transition_horizons_min) <= 0:
            raise ConfigError("tasks.transition_horizons_min must be > 0 minutes")
        if t.presence_mode not in ("point", "union"):
            raise ConfigError(f"tasks.presence_mode must be 'point' or 'union', got {t.presence_mode!r}")
        if min(self.data.frame_size) < 16:
            raise ConfigError(f"data.frame_size must be at least 16 x 16, got {self.data.frame_size}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        self.data.event_pairs()
        for name in ("train", "val", "test"):
            split_numbers(getattr(self.data, name))

    @property
    def past_seconds(self) -> int:
        """Seconds of video the student's window covers: ``(L - 1) * stride + T``."""
        return (self.model.window - 1) * self.model.clip_stride + self.model.clip_frames

    def uses_teacher(self) -> bool:
        """Whether the run trains a teacher (variant ``surgfutr``)."""
        return self.variant is Variant.SURGFUTR
