# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's teacher and student (spec §3): separate copies of encoder, state encoder, graph and decoder.

* The **student** sees the causal window ``C_t`` only (L clips of T seconds ending at ``t``, stride s). It owns the
  K prototypes (shared with the teacher, so both speak of the same states), ActDyn, the future-state, transition and
  change heads and the SFPBench task heads. It is what gets deployed.
* The **teacher** sees ``C_t`` plus the future clip ``c_{t+Δ}`` (L + 1 nodes) and is discarded at inference.

The student's forward is split so offline prediction and streaming share every step: :meth:`Student.frame_features`
(each frame once), :meth:`Student.clip_features` (a clip from its frames' features), :meth:`Student.forward_window`
(a window of clip features). Nothing in it can see a frame after ``t``.

Example:
    >>> import torch
    >>> from medkd.methods.surgfutr.config import SurgFUTRConfig
    >>> from medkd.methods.surgfutr.modules import HeadLayout
    >>> from medkd.config import config_from_dict
    >>> cfg = config_from_dict(SurgFUTRConfig, {"model": {"feature_dim": 32, "state_dim": 16, "width": 8, "window": 3}})
    >>> layout = HeadLayout(4, 5, 1, (1, 2), (5,), (2.0,))
    >>> student = Student(cfg, layout)
    >>> out = student(torch.randint(0, 255, (2, 3, 4, 3, 32, 32), dtype=torch.uint8), torch.zeros(2))
    >>> tuple(out["presence"].shape), tuple(out["transition"].shape)
    ((2, 2, 5), (2, 256))
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medkd.errors import ConfigError
from medkd.methods.surgfutr.config import SurgFUTRConfig, Variant
from medkd.methods.surgfutr.modules import (
    ActDyn,
    ClipAggregator,
    HeadLayout,
    StateDecoder,
    StateEncoder,
    StateGraph,
    TaskHeads,
)
from medkd.methods.surgfutr.sinkhorn import Prototypes

__all__ = ["Branch", "Student", "Teacher", "build_encoder", "encoder_kwargs"]

logger = logging.getLogger(__name__)


def encoder_kwargs(cfg: SurgFUTRConfig) -> dict[str, Any]:
    """The factory keywords of the frame encoder: ``in_channels=3``; ``cnn``: ``feature_dim`` and ``width``; another
    encoder: ``feature_dim`` and ``image_size`` (``data.frame_size``) when its factory takes them, then
    ``model.encoder_params``.

    Example:
        >>> from medkd.config import config_from_dict
        >>> cfg = config_from_dict(SurgFUTRConfig, {"model": {"encoder": "salt_frames", "encoder_params": {"dim": 32}}})
        >>> encoder_kwargs(cfg)
        {'in_channels': 3, 'feature_dim': 128, 'image_size': [64, 64], 'dim': 32}
    """
    from medkd.nets import NETS

    m = cfg.model
    name = "surgfutr_cnn" if m.encoder == "cnn" else m.encoder
    kwargs: dict[str, Any] = {"in_channels": 3}
    if name == "surgfutr_cnn":
        kwargs.update(feature_dim=m.feature_dim, width=m.width)
    else:
        accepted = inspect.signature(NETS.get(name)).parameters
        filled = {"feature_dim": m.feature_dim, "image_size": [int(s) for s in cfg.data.frame_size]}
        kwargs.update({k: v for k, v in filled.items() if k in accepted})
    kwargs.update(m.encoder_params)
    return kwargs


def build_encoder(cfg: SurgFUTRConfig) -> nn.Module:
    """The registered clip encoder ``cfg.model.encoder`` (``cnn`` is ``surgfutr_cnn``), per-frame output, built with
    :func:`encoder_kwargs`; with ``model.encoder_weights`` its ``encoder`` starts from a SALT-pretrained one
    (:func:`~medkd.methods.surgfutr.pretrained.load_salt_encoder`).

    Raises:
        ConfigError: keywords the encoder rejects, or SALT weights that are missing, unreadable or do not fit.
    """
    from medkd.nets import create_net

    name = "surgfutr_cnn" if cfg.model.encoder == "cnn" else cfg.model.encoder
    kwargs = encoder_kwargs(cfg)
    if name == "surgfutr_cnn":
        net = create_net(name, **kwargs)
    else:
        try:
            net = create_net(name, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"model.encoder {name!r} with {kwargs}: {err} (check model.encoder_params and "
                              f"data.frame_size)") from None
    if cfg.model.encoder_weights:
        from medkd.methods.surgfutr.pretrained import load_salt_encoder

        file = load_salt_encoder(net, cfg.model.encoder_weights)
        logger.info("SurgFUTR frame encoder %r starts from the SALT encoder %s", name, file)
    return net


class Branch(nn.Module):
    """What teacher and student share in structure: encoder, clip aggregator, state encoder, graph, decoder, and
    the future-state projection, transition (K²) and change heads."""

    def __init__(self, cfg: SurgFUTRConfig, slots: int) -> None:
        super().__init__()
        m = cfg.model
        self.temperature = m.temperature
        self.encoder = build_encoder(cfg)
        self.aggregate = ClipAggregator(m.feature_dim)
        self.state = StateEncoder(m.feature_dim, m.state_dim)
        self.graph = StateGraph(m.state_dim, heads=m.heads, layers=m.graph_layers, slots=slots)
        self.decoder = StateDecoder(m.state_dim, m.heads)
        self.future = nn.Linear(m.state_dim, m.state_dim)
        self.transition = nn.Linear(m.state_dim, m.prototypes**2)
        self.change = nn.Linear(m.state_dim, 1)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(..., T, 3, H, W)`` -> per-frame features ``(..., T, D)``."""
        lead = frames.shape[:-4]
        feats = self.encoder(frames.reshape(-1, *frames.shape[-4:]))
        if feats.ndim == 2:  # a per-clip encoder: one feature for the clip, repeated per frame
            feats = feats[:, None].expand(-1, frames.shape[-4], -1)
        return feats.reshape(*lead, *feats.shape[-2:])

    def clip_features(self, frame_features: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(..., T, D)`` of clips -> clip features ``(..., D)``."""
        return self.aggregate(frame_features)

    def states(self, f: torch.Tensor, prototypes: Prototypes) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clip features ``(B, n, D)`` -> unit states ``z``, cosine scores ``s`` and soft states ``p``."""
        z = self.state(f)
        s = prototypes(z)
        return z, s, torch.softmax(s / self.temperature, dim=-1)

    def decode(self, z: torch.Tensor, p: torch.Tensor, prototypes: Prototypes) -> dict[str, torch.Tensor]:
        """Graph and decoder over nodes ``z``; the representation ``o`` and its state-level heads."""
        o = self.decoder(self.graph(z, p))
        return self.heads(o, prototypes)

    def heads(self, o: torch.Tensor, prototypes: Prototypes) -> dict[str, torch.Tensor]:
        """Future-state logits (cosine of the projected ``o`` against the prototypes, over τ), transition and
        change logits."""
        future = prototypes(F.normalize(self.future(o), dim=-1)) / self.temperature
        return {"o": o, "future_state": future, "transition": self.transition(o), "change": self.change(o)[:, 0]}


class Student(Branch):
    """The deployed network: the causal window -> states, representation, state-level and task outputs.

    Variant ``feature_regression`` adds a regressor of the future clip's feature and puts the task heads on it.
    """

    def __init__(self, cfg: SurgFUTRConfig, layout: HeadLayout) -> None:
        super().__init__(cfg, slots=cfg.model.window)
        m = cfg.model
        self.layout = layout
        self.window, self.clip_frames, self.clip_stride = m.window, m.clip_frames, m.clip_stride
        self.prototypes = Prototypes(m.state_dim, m.prototypes)
        self.actdyn = ActDyn(m.state_dim) if m.actdyn and cfg.variant is Variant.SURGFUTR else None
        self.regress = (nn.Sequential(nn.Linear(m.state_dim, m.feature_dim), nn.GELU(),
                                      nn.Linear(m.feature_dim, m.feature_dim))
                        if cfg.variant is Variant.FEATURE_REGRESSION else None)
        self.from_feature = (nn.Linear(m.feature_dim, m.state_dim)
                             if cfg.variant is Variant.FEATURE_REGRESSION else None)
        self.tasks = TaskHeads(m.state_dim, layout)

    def forward_window(self, f: torch.Tensor, elapsed_min: torch.Tensor) -> dict[str, torch.Tensor]:
        """A window of clip features ``(B, L, D)`` (oldest first, the last ends at ``t``) and the elapsed minutes
        ``(B,)`` -> every output (``o``, ``z``, ``future_state``, ``transition``, ``change``, ``delta_z``, the task
        heads; ``future_feature`` for feature regression)."""
        z, s, p = self.states(f, self.prototypes)
        o = self.decoder(self.graph(z, p))
        extra: dict[str, torch.Tensor] = {}
        if self.actdyn is not None:
            delta, gamma, beta = self.actdyn(z)
            o = gamma * o + beta
            extra["delta_z"] = delta
        out = self.heads(o, self.prototypes)
        task_input = o
        if self.regress is not None and self.from_feature is not None:
            extra["future_feature"] = self.regress(o)
            task_input = self.from_feature(extra["future_feature"])
        out.update(extra, z=z, scores=s, **self.tasks(task_input, elapsed_min))
        return out

    def forward(self, frames: torch.Tensor, elapsed_min: torch.Tensor) -> dict[str, torch.Tensor]:
        """Window frames ``(B, L, T, 3, H, W)`` and elapsed minutes ``(B,)`` -> :meth:`forward_window`'s outputs."""
        f = self.clip_features(self.frame_features(frames))
        return self.forward_window(f, elapsed_min)


class Teacher(Branch):
    """Sees the window and the future clip (L + 1 nodes, the future one last); uses the student's prototypes.

    It keeps task heads too (on its own representation, which has seen the future), so the representation the
    student distils carries the tasks' information [recon].
    """

    def __init__(self, cfg: SurgFUTRConfig, layout: HeadLayout) -> None:
        super().__init__(cfg, slots=cfg.model.window + 1)
        self.tasks = TaskHeads(cfg.model.state_dim, layout)

    def forward(self, frames: torch.Tensor, future: torch.Tensor, elapsed_min: torch.Tensor,
                prototypes: Prototypes) -> dict[str, torch.Tensor]:
        """Window frames ``(B, L, T, 3, H, W)``, the future clip ``(B, T, 3, H, W)`` -> outputs, with ``z`` the
        L + 1 node states (``z[:, -2]`` is ``z_t``, ``z[:, -1]`` is ``z_{t+Δ}``)."""
        clips = torch.cat([frames, future[:, None]], dim=1)
        f = self.clip_features(self.frame_features(clips))
        z, s, p = self.states(f, prototypes)
        out = self.decode(z, p, prototypes)
        out.update(z=z, scores=s, **self.tasks(out["o"], elapsed_min))
        return out
