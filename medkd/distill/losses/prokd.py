# SPDX-License-Identifier: Apache-2.0
"""Prototypical knowledge distillation to an unlabelled domain (Ge et al., "ProKD: An Unsupervised Prototypical
Knowledge Distillation Network for Zero-Resource Cross-Lingual Named Entity Recognition", AAAI 2023). The abstract
describes prototype alignment by contrastive learning and prototypical self-training; the losses below are a
medkd reconstruction of both, for a new site or scanner whose samples are unlabelled.

- Prototypes: EMA class means (momentum m = 0.9, buffers) of the teacher's features over the labelled samples and
  of the student's features (projected to the teacher's width when the widths differ, by a linear layer) over the
  labelled samples and the unlabelled ones pseudo-labelled by the teacher's argmax. A class absent from the batch
  keeps its prototype; a class seen for the first time takes the batch mean. The student prototypes used in the loss
  are ``m * old + (1 - m) * batch mean`` with the batch mean's gradient, so the alignment trains the student.
- ``prokd_align``: symmetric InfoNCE between the student and teacher prototypes of the classes both have seen,
  cosine similarity over ``tau_proto`` (0.1): ``(CE(S T^T / tau, I) + CE(T S^T / tau, I)) / 2``. Coinciding
  prototypes score near the minimum, not exactly at it: InfoNCE saturates there and also rewards spreading the
  student's prototypes apart, so small perturbations (about 1-10 % of the norm) can lower it slightly.
- ``prokd_self``: on the unlabelled samples (label ``ignore_index``), cross-entropy of the student's logits with
  the soft labels ``q_k = softmax_k(-||f - c_k|| / tau_self)`` (``tau_self`` = 1): the student's projected feature
  and prototypes (``self_target="student"``) or the teacher's (``"teacher"``), detached.

Features are the first ``"feat:*"`` entry of each output dict (``"embedding"`` when there is no tap), global
average pooled to ``(B, D)`` for classification logits ``(B, C)``; for dense logits ``(B, C, *spatial)`` they are
resized (bi/trilinear) to the logits' size and every voxel is a sample (voxel-class prototypes).

Example:
    >>> import torch
    >>> y = torch.tensor([0, 1, 2, -100, -100, 0])
    >>> s = {"logits": torch.randn(6, 3), "feat:layer4": torch.randn(6, 8, 2, 2)}
    >>> t = {"logits": torch.randn(6, 3), "feat:layer4": torch.randn(6, 8, 2, 2)}
    >>> loss = ProKDLoss()
    >>> out = loss(s, t, {"label": y})
    >>> sorted(out), loss.teacher_seen.tolist()
    (['prokd_align', 'prokd_self'], [True, True, True])
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, as_rows, match_spatial, mean_or_zero
from medkd.distill.hooks import FEAT_PREFIX
from medkd.distill.registry import register_loss
from medkd.registry import resolve_option

__all__ = ["ProKDLoss", "SelfTarget", "proto_infonce", "prototype_soft_labels"]


class SelfTarget(StrEnum):
    """Whose features and prototypes give the self-training soft labels."""

    STUDENT = "student"
    TEACHER = "teacher"


def proto_infonce(student_protos: Tensor, teacher_protos: Tensor, tau: float = 0.1) -> Tensor:
    """Symmetric InfoNCE between matching rows of two prototype sets ``(K, D)`` (cosine similarity / tau).

    Example:
        >>> c = torch.eye(3)
        >>> bool(proto_infonce(c, c) < proto_infonce(c.flip(0), c))
        True
    """
    sim = F.normalize(student_protos, dim=1) @ F.normalize(teacher_protos, dim=1).T / tau
    target = torch.arange(sim.shape[0], device=sim.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))


def prototype_soft_labels(features: Tensor, protos: Tensor, tau: float = 1.0, valid: Tensor | None = None) -> Tensor:
    """``softmax_k(-||f - c_k|| / tau)``, ``(N, K)``; classes where ``valid`` is False get probability 0.

    Example:
        >>> prototype_soft_labels(torch.tensor([[0.9, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])).argmax(1)
        tensor([0])
    """
    logits = -torch.cdist(features, protos) / tau
    if valid is not None:
        logits = logits.masked_fill(~valid[None, :], float("-inf"))
    return F.softmax(logits, dim=1)


def _feature(out: Mapping[str, Any], side: str) -> Tensor:
    for key, value in out.items():
        if key.startswith(FEAT_PREFIX):
            return value
    if "embedding" in out:
        return out["embedding"]
    raise KeyError(f"prokd needs a {side} feature tap ('feat:<module>') or an 'embedding' output")


def _feature_rows(feat: Tensor, logits: Tensor) -> Tensor:
    """Features as rows matching the logits' rows: ``(B, D)`` (pooled) or ``(B * prod(spatial), D)`` (resized)."""
    if logits.ndim == 2:
        return feat.flatten(2).mean(dim=2) if feat.ndim > 2 else feat
    if feat.ndim != logits.ndim:
        raise ValueError(f"prokd with dense logits {tuple(logits.shape)} needs features with as many dims, "
                         f"got {tuple(feat.shape)}")
    if feat.shape[2:] != logits.shape[2:]:
        mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[feat.ndim]
        feat = F.interpolate(feat, size=logits.shape[2:], mode=mode, align_corners=False)
    return as_rows(feat)


def _class_means(feat: Tensor, label: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class means ``(C, D)`` of ``feat`` rows and which classes are present ``(C,)``."""
    onehot = F.one_hot(label, num_classes).to(feat.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ feat) / counts.clamp_min(1)[:, None], counts > 0


@register_loss("prokd")
class ProKDLoss(DistillLoss):
    """ProKD's prototype alignment and prototypical self-training (reconstructed).

    Args:
        num_classes: C; None: the student's logits' class count at the first forward.
        momentum: EMA momentum m of the prototypes (0.9).
        tau_proto: temperature of the prototype InfoNCE (0.1).
        tau_self: temperature of the soft labels (1).
        self_target: ``"student"`` (the student's projected features and prototypes) or ``"teacher"``.
        teacher_dim: the teacher's feature width; when given, the student's features always go through a lazy
            linear projector to it, built here. None: a projector is built on the first forward if the widths differ.
        align_weight, self_weight: weights of the two terms (1, 1).
        ignore_index: label value of the unlabelled samples or voxels.

    Raises:
        ValueError: momentum outside [0, 1), non-positive temperatures, teacher_dim or num_classes, negative
            weights, an unknown self_target.
    """

    requires = Requires(student=("logits", "feat:*"), teacher=("logits", "feat:*"), batch=("label",))

    teacher_protos: Tensor | None
    student_protos: Tensor | None
    teacher_seen: Tensor | None
    student_seen: Tensor | None

    def __init__(self, num_classes: int | None = None, momentum: float = 0.9, tau_proto: float = 0.1,
                 tau_self: float = 1.0, self_target: str = "student", teacher_dim: int | None = None,
                 align_weight: float = 1.0, self_weight: float = 1.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if not tau_proto > 0 or not tau_self > 0:
            raise ValueError(f"tau_proto and tau_self must be > 0, got {tau_proto} and {tau_self}")
        for name, value in (("num_classes", num_classes), ("teacher_dim", teacher_dim)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        if not align_weight >= 0 or not self_weight >= 0:
            raise ValueError(f"align_weight and self_weight must be >= 0, got {align_weight} and {self_weight}")
        self.self_target = resolve_option(SelfTarget, self_target, "self_target", "Options")
        self.momentum, self.tau_proto, self.tau_self = float(momentum), float(tau_proto), float(tau_self)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.align_weight, self.self_weight, self.ignore_index = float(align_weight), float(self_weight), ignore_index
        self.proj: nn.Module | None = None if teacher_dim is None else nn.LazyLinear(int(teacher_dim))
        for name in ("teacher_protos", "student_protos", "teacher_seen", "student_seen"):
            self.register_buffer(name, None)

    def _ready(self, num_classes: int, dim: int, like: Tensor) -> None:
        if self.num_classes is None:
            self.num_classes = num_classes
        if num_classes != self.num_classes:
            raise ValueError(f"prokd was built for {self.num_classes} classes, the logits have {num_classes}")
        if self.teacher_protos is None:
            self.teacher_protos = like.new_zeros(num_classes, dim)
            self.student_protos = like.new_zeros(num_classes, dim)
            self.teacher_seen = torch.zeros(num_classes, dtype=torch.bool, device=like.device)
            self.student_seen = torch.zeros(num_classes, dtype=torch.bool, device=like.device)
        elif self.teacher_protos.shape[1] != dim:
            raise ValueError(f"prokd's prototypes have width {self.teacher_protos.shape[1]}, the teacher's "
                             f"features {dim}")

    def project(self, feat: Tensor, teacher_dim: int) -> Tensor:
        """The student's feature rows in the teacher's width (a linear projector when they differ)."""
        if self.proj is None and feat.shape[1] != teacher_dim:  # built on the first forward (the runner's dry run)
            self.proj = nn.Linear(feat.shape[1], teacher_dim).to(feat.device)
        return feat if self.proj is None else self.proj(feat)

    def _blend(self, old: Tensor, seen: Tensor, batch_mean: Tensor, present: Tensor) -> Tensor:
        ema = self.momentum * old.detach() + (1.0 - self.momentum) * batch_mean
        new = torch.where(seen[:, None], ema, batch_mean)
        return torch.where(present[:, None], new, old.detach())

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        logits = student["logits"]
        s_rows = as_rows(logits)
        t_logits = as_rows(match_spatial(teacher["logits"].detach(), logits))
        f_t = _feature_rows(_feature(teacher, "teacher").detach(), logits)
        f_s = self.project(_feature_rows(_feature(student, "student"), logits), f_t.shape[1])
        label = batch["label"].reshape(-1).long()
        if label.numel() != s_rows.shape[0]:
            raise ValueError(f"label {tuple(batch['label'].shape)} does not match logits {tuple(logits.shape)}")
        n_cls = s_rows.shape[1]
        self._ready(n_cls, f_t.shape[1], f_t)
        assert self.teacher_protos is not None and self.student_protos is not None
        assert self.teacher_seen is not None and self.student_seen is not None
        labelled = label != self.ignore_index
        seen_t_old, seen_s_old = self.teacher_seen.clone(), self.student_seen.clone()  # the buffers change below

        # prototypes: teacher from labelled rows; student from labelled (GT) and unlabelled (teacher argmax) rows
        t_mean, t_present = _class_means(f_t[labelled], label[labelled], n_cls)
        pseudo = torch.where(labelled, label, t_logits.argmax(dim=1))
        s_mean, s_present = _class_means(f_s, pseudo, n_cls)
        c_t = self._blend(self.teacher_protos.clone(), seen_t_old, t_mean, t_present)
        c_s = self._blend(self.student_protos.clone(), seen_s_old, s_mean.to(c_t.dtype), s_present)
        seen_t, seen_s = seen_t_old | t_present, seen_s_old | s_present
        if self.training:
            with torch.no_grad():
                self.teacher_protos.copy_(c_t)
                self.student_protos.copy_(c_s.detach())
                self.teacher_seen.copy_(seen_t)
                self.student_seen.copy_(seen_s)

        both = seen_t & seen_s
        align = proto_infonce(c_s[both], c_t[both], self.tau_proto) if bool(both.any()) else s_rows.sum() * 0.0

        # prototypical self-training on the unlabelled rows
        if self.self_target is SelfTarget.STUDENT:
            feat, protos, valid = f_s.detach()[~labelled], c_s.detach(), seen_s
        else:
            feat, protos, valid = f_t[~labelled], c_t, seen_t
        if bool(valid.any()) and feat.shape[0]:
            q = prototype_soft_labels(feat.to(protos.dtype), protos, self.tau_self, valid)
            per_row = -(q.to(s_rows.dtype) * F.log_softmax(s_rows[~labelled], dim=1)).sum(dim=1)
            self_loss = mean_or_zero(per_row, s_rows)
        else:
            self_loss = s_rows.sum() * 0.0
        return {"prokd_align": self.align_weight * align, "prokd_self": self.self_weight * self_loss}

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # lazily sized buffers and projector: allocate them so that a checkpoint loads into a fresh loss
        protos = state_dict.get(prefix + "teacher_protos")
        if self.teacher_protos is None and protos is not None:
            self._ready(protos.shape[0], protos.shape[1], protos)
        weight = state_dict.get(prefix + "proj.weight")
        if self.proj is None and weight is not None:
            self.proj = nn.Linear(weight.shape[1], weight.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Logits ``(6, 5)``; labels with two unlabelled samples (``-100``); feature taps ``feat:layer4``, the
        student's ``(6, 8, 2, 2)`` and the teacher's ``(6, 12, 2, 2)`` (a projector is built: seed torch's global
        RNG before the first forward)."""
        student, teacher, batch, ctx = super().example_inputs(seed)
        g = torch.Generator().manual_seed(seed + 1)
        student["feat:layer4"] = torch.randn(6, 8, 2, 2, generator=g)
        teacher["feat:layer4"] = torch.randn(6, 12, 2, 2, generator=g)
        batch["label"] = batch["label"].clone()
        batch["label"][[2, 5]] = IGNORE_INDEX
        return student, teacher, batch, ctx
