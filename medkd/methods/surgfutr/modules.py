# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's building blocks (spec §3): frame CNN, clip aggregator, state encoder, state graph, state decoder,
ActDyn and the SFPBench task heads. :mod:`medkd.methods.surgfutr.model` assembles them into teacher and student.

Example:
    >>> import torch
    >>> cnn = surgfutr_cnn(in_channels=3, feature_dim=32, width=8)
    >>> tuple(cnn(torch.rand(2, 4, 3, 32, 32)).shape)
    (2, 4, 32)
    >>> graph = StateGraph(16, heads=2, layers=1, slots=5)
    >>> tuple(graph(torch.randn(2, 5, 16), torch.softmax(torch.randn(2, 5, 4), -1)).shape)
    (2, 5, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from medkd.nets.factory import register_net

__all__ = [
    "ActDyn",
    "ClipAggregator",
    "FrameCNN",
    "HeadLayout",
    "StateDecoder",
    "StateEncoder",
    "StateGraph",
    "TaskHeads",
    "surgfutr_cnn",
]

#: softplus(_HALF) = 0.5: the remaining-time head starts at half the mean duration
_HALF = -0.43275

#: ImageNet channel statistics: frames are scaled to [0, 1] and standardised with them
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class FrameCNN(nn.Module):
    """Per-frame 4-layer CNN (stride 2 each, BatchNorm, ReLU, global average pool, linear): a clip
    ``(B, T, C, H, W)`` (uint8 0-255 or float 0-1) -> per-frame features ``(B, T, D)``."""

    def __init__(self, in_channels: int = 3, feature_dim: int = 128, width: int = 16) -> None:
        super().__init__()
        chans = [in_channels, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(chans[-1], feature_dim)
        self.register_buffer("mean", torch.tensor(_MEAN[:in_channels] if in_channels == 3 else [0.5] * in_channels)
                             .view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(_STD[:in_channels] if in_channels == 3 else [0.25] * in_channels)
                             .view(1, -1, 1, 1))
        self.feature_dim = feature_dim

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        b, t = clip.shape[:2]
        x = clip.reshape(b * t, *clip.shape[2:])
        x = x.float() / 255.0 if not x.is_floating_point() else x
        x = (x - self.mean) / self.std
        x = self.features(x).mean(dim=(2, 3))
        return self.proj(x).reshape(b, t, -1)


@register_net("surgfutr_cnn", task="video_encoder")
def surgfutr_cnn(in_channels: int = 3, feature_dim: int = 128, width: int = 16) -> FrameCNN:
    """SurgFUTR's CPU clip encoder: a per-frame 4-layer CNN, ``(B, T, C, H, W)`` -> ``(B, T, feature_dim)``."""
    return FrameCNN(in_channels, feature_dim, width)


class ClipAggregator(nn.Module):
    """Per-frame features ``(..., T, D)`` -> one clip feature ``(..., D)``: a temporal convolution (kernel 3,
    residual) and the mean over time."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.norm = nn.LayerNorm(dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        lead, (t, d) = frames.shape[:-2], frames.shape[-2:]
        x = frames.reshape(-1, t, d)
        x = x + F.gelu(self.conv(x.transpose(1, 2)).transpose(1, 2))
        return self.norm(x.mean(dim=1)).reshape(*lead, d)


class StateEncoder(nn.Module):
    """Clip features ``(..., D)`` -> unit state embeddings ``(..., d)`` (a 2-layer MLP, then L2 normalisation)."""

    def __init__(self, feature_dim: int, state_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.GELU(), nn.Linear(feature_dim, state_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(f), dim=-1)


class _GraphLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        mask = bias.repeat_interleave(self.heads, dim=0)  # (B * heads, n, n)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.ffn(self.norm2(x))


class StateGraph(nn.Module):
    """Fully connected attention over the window's state nodes; the edge ``(i, j)`` is biased by
    ``log(p_i . p_j)``, the probability that the two clips share a state (soft states ``p``). A learned embedding
    per slot (the L past slots, then the teacher's future slot) tells the nodes apart."""

    def __init__(self, dim: int, *, heads: int, layers: int, slots: int) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(slots, dim))
        nn.init.normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(_GraphLayer(dim, heads) for _ in range(layers))

    def forward(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Nodes ``z`` ``(B, n, d)`` and soft states ``p`` ``(B, n, K)`` -> node features ``(B, n, d)``."""
        x = z + self.position[: z.shape[1]]
        bias = torch.log((p @ p.transpose(1, 2)).clamp_min(1e-4))
        for layer in self.layers:
            x = layer(x, bias)
        return x


class StateDecoder(nn.Module):
    """A learned query cross-attends the graph's nodes, then an MLP: ``(B, n, d)`` -> representation ``(B, d)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.query, std=0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        q = self.query.expand(nodes.shape[0], -1, -1)
        o = self.attn(q, nodes, nodes, need_weights=False)[0][:, 0] + nodes[:, -1]
        return o + self.mlp(self.norm(o))


class ActDyn(nn.Module):
    """Action dynamics (student only): a GRU over ``[z_i, z_i - z_{i-1}]`` of the window; its last state predicts
    the latent change ``Δẑ`` (target ``z_{t+Δ} - z_t``) and FiLM parameters ``(γ, β)`` for the decoder output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = nn.GRU(2 * dim, dim, batch_first=True)
        self.delta = nn.Linear(dim, dim)
        self.film = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``z`` ``(B, L, d)`` -> ``(Δẑ (B, d), γ (B, d), β (B, d))``; γ is 1 + a learned offset."""
        diff = torch.cat([torch.zeros_like(z[:, :1]), z[:, 1:] - z[:, :-1]], dim=1)
        a = self.gru(torch.cat([z, diff], dim=-1))[1][-1]
        gamma, beta = self.film(a).chunk(2, dim=-1)
        return self.delta(a), 1.0 + gamma, beta


@dataclass(frozen=True)
class HeadLayout:
    """What the task heads predict: class counts and horizons (from the dataset and ``tasks``).

    Attributes:
        phases: P phase classes (0: no phase tasks).
        presence: C presence classes forecast at each Δ (0: none).
        events: E event classes (0: none).
        presence_deltas_s, event_horizons_s, transition_horizons_min: the horizons.
        duration_min: the mean training video length in minutes: the scale of the elapsed-time input and of the
            remaining-time output (RSD starts near half of it).
    """

    phases: int
    presence: int
    events: int
    presence_deltas_s: tuple[int, ...]
    event_horizons_s: tuple[int, ...]
    transition_horizons_min: tuple[float, ...]
    duration_min: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (lists for the horizons); :meth:`from_dict` reads them back."""
        return {"phases": self.phases, "presence": self.presence, "events": self.events,
                "presence_deltas_s": [int(d) for d in self.presence_deltas_s],
                "event_horizons_s": [int(h) for h in self.event_horizons_s],
                "transition_horizons_min": [float(h) for h in self.transition_horizons_min],
                "duration_min": float(self.duration_min)}

    @classmethod
    def from_dict(cls, d: Any) -> HeadLayout:
        """A layout from its ``dataclasses.asdict`` form (``classes.json``, bundle configs).

        Example:
            >>> HeadLayout.from_dict({"phases": 2, "presence": 1, "events": 0, "presence_deltas_s": [1],
            ...                       "event_horizons_s": [], "transition_horizons_min": [2]}).duration_min
            60.0
        """
        return cls(int(d["phases"]), int(d["presence"]), int(d["events"]),
                   tuple(int(x) for x in d["presence_deltas_s"]), tuple(int(x) for x in d["event_horizons_s"]),
                   tuple(float(x) for x in d["transition_horizons_min"]), float(d.get("duration_min", 60.0)))


class TaskHeads(nn.Module):
    """SFPBench heads on the decoder output and the elapsed time (RSDNet's idea), all in one linear layer:

    - ``phase_now`` ``(B, P)`` logits of the current phase;
    - ``phase_next`` ``(B, H)`` minutes to the next phase, ``phase_tta`` ``(B, H, P)`` per-phase time to arrival,
      each ``sigmoid * h``;
    - ``rsd`` ``(B,)`` remaining minutes: ``duration * softplus(x)``, starting near half the mean duration;
    - ``presence`` ``(B, len(Δ), C)`` and ``events`` ``(B, len(h), E)`` logits.
    """

    def __init__(self, dim: int, layout: HeadLayout) -> None:
        super().__init__()
        self.layout = layout
        p, h = layout.phases, len(layout.transition_horizons_min)
        self.sizes = {"phase_now": p, "phase_next": h if p else 0, "phase_tta": h * p, "rsd": 1,
                      "presence": len(layout.presence_deltas_s) * layout.presence,
                      "events": len(layout.event_horizons_s) * layout.events}
        self.hidden = nn.Sequential(nn.Linear(dim + 1, dim), nn.GELU())
        self.out = nn.Linear(dim, sum(self.sizes.values()))
        self.register_buffer("horizons", torch.tensor(layout.transition_horizons_min, dtype=torch.float32))
        self.duration = float(layout.duration_min)

    def forward(self, o: torch.Tensor, elapsed_min: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.hidden(torch.cat([o, (elapsed_min / self.duration).unsqueeze(-1).to(o)], dim=-1))
        parts = dict(zip(self.sizes, self.out(x).split(list(self.sizes.values()), dim=-1)))
        b, lay = o.shape[0], self.layout
        rsd = self.duration * F.softplus(parts["rsd"][:, 0] + _HALF)
        out = {"phase_now": parts["phase_now"], "rsd": rsd,
               "presence": parts["presence"].reshape(b, len(lay.presence_deltas_s), lay.presence),
               "events": parts["events"].reshape(b, len(lay.event_horizons_s), lay.events)}
        if lay.phases:
            out["phase_next"] = torch.sigmoid(parts["phase_next"]) * self.horizons
            out["phase_tta"] = (torch.sigmoid(parts["phase_tta"].reshape(b, -1, lay.phases))
                                * self.horizons[:, None])
        return out
