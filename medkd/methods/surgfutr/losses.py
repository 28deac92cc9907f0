# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's losses (spec §3 table): future state, transition, transition KD, feature KD, ActDyn, the SFPBench task
losses, and the swapped state loss that trains the prototypes.

Example:
    >>> import torch
    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(soft_cross_entropy(torch.tensor([[10.0, 0.0], [0.0, 10.0]]), q)), 4)
    0.0
    >>> pair_transition_target(torch.tensor([[0.9, 0.1]]), torch.tensor([[0.2, 0.8]])).tolist()
    [1]
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medkd.methods.surgfutr.modules import HeadLayout

__all__ = [
    "actdyn_loss",
    "feature_kd_loss",
    "pair_transition_target",
    "soft_cross_entropy",
    "task_losses",
    "transition_kd_loss",
]


def soft_cross_entropy(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``-sum_k q_k log softmax(logits)_k``, mean over rows (``logits`` already divided by τ)."""
    return -(codes * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def pair_transition_target(q_cur: torch.Tensor, q_fut: torch.Tensor) -> torch.Tensor:
    """The ``pair`` transition class ``argmax q_cur * K + argmax q_fut`` (K² classes)."""
    k = q_cur.shape[-1]
    return q_cur.argmax(-1) * k + q_fut.argmax(-1)


def transition_kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """``T² KL(softmax(teacher/T) || softmax(student/T))``, batch mean (the teacher detached)."""
    t = temperature
    p_t = F.softmax(teacher.detach() / t, dim=-1)
    return t * t * F.kl_div(F.log_softmax(student / t, dim=-1), p_t, reduction="batchmean")


def feature_kd_loss(o_student: torch.Tensor, o_teacher: torch.Tensor) -> torch.Tensor:
    """``1 - cos(o_S, stopgrad(o_T))``, batch mean."""
    return (1.0 - F.cosine_similarity(o_student, o_teacher.detach(), dim=-1)).mean()


def actdyn_loss(delta_z: torch.Tensor, z_now: torch.Tensor, z_future: torch.Tensor) -> torch.Tensor:
    """``|Δẑ - stopgrad(z_{t+Δ} - z_t)|_1`` (mean over dimensions and rows)."""
    return F.l1_loss(delta_z, (z_future - z_now).detach())


def _bce_balanced(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE with a per-class ``pos_weight = negatives / positives`` of the batch (clamped to [1, 20])."""
    target = target.float()
    flat = target.reshape(-1, target.shape[-1])
    pos = flat.sum(0)
    weight = ((flat.shape[0] - pos) / pos.clamp_min(1.0)).clamp(1.0, 20.0)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight)


def task_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], layout: HeadLayout,
                *, phase_now_weight: float = 0.5) -> dict[str, torch.Tensor]:
    """The SFPBench losses of one output dict against a batch's targets; tasks without targets are left out.

    * presence (per Δ) and events (per h): BCE with class-balanced ``pos_weight``;
    * RSD: SmoothL1 on minutes / the mean training duration (``layout.duration_min``);
    * phase transitions: L1 on the capped time / h (next phase and per-phase time to arrival);
    * ``phase_now``: CE on the current phase, times ``phase_now_weight``.
    """
    losses: dict[str, torch.Tensor] = {}
    if layout.presence and "triplets@%ds" % layout.presence_deltas_s[0] in batch:
        target = torch.stack([batch[f"triplets@{d:g}s"] for d in layout.presence_deltas_s], dim=1)
        losses["presence"] = _bce_balanced(out["presence"], target)
    if layout.events and f"events@{layout.event_horizons_s[0]:g}s" in batch:
        target = torch.stack([batch[f"events@{h:g}s"] for h in layout.event_horizons_s], dim=1)
        losses["events"] = _bce_balanced(out["events"], target)
    if "rsd" in batch:
        scale = float(layout.duration_min)
        losses["rsd"] = F.smooth_l1_loss(out["rsd"] / scale, batch["rsd"].float() / scale)
    if layout.phases and "phase" in batch:
        hs = layout.transition_horizons_min
        nxt = torch.stack([batch[f"phase_next@{h:g}min"] for h in hs], dim=1).float()
        tta = torch.stack([batch[f"phase_tta@{h:g}min"] for h in hs], dim=1).float()
        scale = torch.tensor(hs, dtype=nxt.dtype, device=nxt.device)
        losses["phase_next"] = F.l1_loss(out["phase_next"] / scale, nxt / scale)
        losses["phase_tta"] = F.l1_loss(out["phase_tta"] / scale[:, None], tta / scale[:, None])
        losses["phase_now"] = phase_now_weight * F.cross_entropy(out["phase_now"], batch["phase"])
    return losses
