# SPDX-License-Identifier: Apache-2.0
"""One-for-All knowledge distillation (Hao et al., "One-for-All: Bridge the Gap Between Heterogeneous
Architectures in Knowledge Distillation", NeurIPS 2023; code Hao840/OFAKD).

The OFA loss sharpens the teacher's target towards the ground truth:
``L_OFA(p_s, p_t, y) = -sum_c [(p_t,c + 1[c=y])^eps - 1[c=y]] * log p_s,c`` with ``p = softmax(z / T)``, averaged
over samples (voxels for dense logits, ``ignore_index`` voxels dropped). ``eps = 1`` is the soft cross-entropy
``-sum_c p_t,c log p_s,c``; ``eps > 1`` raises the target class's weight and lowers the others.

Exit branches after the student's stages learn from the teacher's *final* logits only (no feature alignment):
every student feature tap ``"feat:<name>"`` (or those named in ``stages``) gets a branch, and the loss is
``L_OFA(final) + sum_branches L_OFA(branch)`` returned as ``{"ofa": ..., "ofa_branches": ...}`` (the paper's
cross-entropy is the separate ``ce`` term). A branch is global average pooling and a linear layer to the classes
for classification; for dense logits it is a 1x1 convolution to the classes (a linear layer on the channel axis)
and bi/trilinear interpolation to the logits' size, a medkd reconstruction (OFAKD's branches are depthwise
separable conv stacks for classification only). Gradients of the branch losses reach the student's stages.

Branches are ordinary submodules, trained with the student. With ``stages`` and ``num_classes`` given they are
built in ``__init__`` (their input width is lazy: ``nn.LazyLinear``); otherwise a branch is created on the first
forward that shows its tap, which the runner's dry forward before building the optimiser covers.

Example:
    >>> import torch
    >>> loss = OFALoss(stages=["layer1"], num_classes=5)
    >>> s = {"logits": torch.randn(4, 5), "feat:layer1": torch.randn(4, 8, 3, 3)}
    >>> out = loss(s, {"logits": torch.randn(4, 5)}, {"label": torch.tensor([0, 1, 2, 3])})
    >>> sorted(out), list(loss.branches)
    (['ofa', 'ofa_branches'], ['layer1'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, logit_rows, mean_or_zero
from medkd.distill.hooks import FEAT_PREFIX
from medkd.distill.registry import register_loss

__all__ = ["ExitBranch", "OFALoss", "ofa_loss", "ofa_target"]


def ofa_target(p_teacher: Tensor, label: Tensor, eps: float) -> Tensor:
    """OFA's target weights ``(p_t + onehot(y))^eps - onehot(y)``, ``(N, C)``.

    Example:
        >>> ofa_target(torch.tensor([[0.5, 0.5]]), torch.tensor([0]), 1.0)
        tensor([[0.5000, 0.5000]])
    """
    onehot = F.one_hot(label, p_teacher.shape[1]).to(p_teacher.dtype)
    return (p_teacher + onehot).pow(eps) - onehot


def ofa_loss(student: Tensor, teacher: Tensor, label: Tensor, eps: float = 1.0, temperature: float = 1.0) -> Tensor:
    """Per-row OFA loss ``(N,)`` of logits ``(N, C)`` against the (detached) teacher's and the labels ``(N,)``."""
    p_t = F.softmax(teacher.detach() / temperature, dim=1)
    return -(ofa_target(p_t, label, eps) * F.log_softmax(student / temperature, dim=1)).sum(dim=1)


class ExitBranch(nn.Module):
    """An exit branch: stage features ``(B, C_f, *spatial_f)`` -> logits like the student's.

    Classification (``(N, K)`` logits): global average pooling, then a linear layer. Dense (``(B, K, *spatial)``
    logits): a 1x1 convolution (the same linear layer on the channel axis), then interpolation to the logits'
    spatial size. The input width is lazy.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = nn.LazyLinear(num_classes)

    def forward(self, feat: Tensor, like: Tensor) -> Tensor:
        if like.ndim == 2:  # classification
            pooled = feat.flatten(2).mean(dim=2) if feat.ndim > 2 else feat
            return self.head(pooled)
        if feat.ndim != like.ndim:
            raise ValueError(f"a dense exit branch needs features with the logits' dims {like.ndim}, "
                             f"got {tuple(feat.shape)}")
        out = self.head(feat.movedim(1, -1)).movedim(-1, 1)
        if out.shape[2:] != like.shape[2:]:
            mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[out.ndim]
            out = F.interpolate(out, size=like.shape[2:], mode=mode, align_corners=False)
        return out


def _tap_name(key: str) -> str:
    return key[len(FEAT_PREFIX):] if key.startswith(FEAT_PREFIX) else key


def _branch_key(name: str) -> str:
    """A ``ModuleDict`` key for a tap name (``nn.Module`` names cannot hold dots)."""
    return name.replace(".", "__")


@register_loss("ofa")
class OFALoss(DistillLoss):
    """OFA-KD on the final logits plus exit branches on the student's feature taps.

    Args:
        eps: the target exponent eps (> 0; 1 on CIFAR, 1.5 on ImageNet).
        temperature: T (> 0; 1).
        stages: the student's tap names that get branches (``"encoder.layer3"`` or ``"feat:encoder.layer3"``);
            None: every ``"feat:*"`` entry of the student's outputs.
        num_classes: classes of the branches' logits; None: the student's logits' class count at the first forward.
        ignore_index: label value of voxels left out.

    Raises:
        ValueError: a non-positive eps or temperature, ``num_classes < 1``, an empty or repeated ``stages`` list.
        KeyError: (forward) a stage in ``stages`` that the student's outputs lack.
    """

    requires = Requires(student=("logits", "feat:*"), teacher=("logits",), batch=("label",))

    def __init__(self, eps: float = 1.0, temperature: float = 1.0, stages: Sequence[str] | None = None,
                 num_classes: int | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be > 0 (1 on CIFAR, 1.5 on ImageNet), got {eps}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if num_classes is not None and (int(num_classes) != num_classes or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes}")
        if stages is not None:
            if isinstance(stages, str) or not stages:
                raise ValueError(f"stages must be a non-empty list of tap names or None, got {stages!r}")
            names = [_tap_name(s) for s in stages]
            if len(set(map(_branch_key, names))) != len(names):
                raise ValueError(f"stages must name distinct taps, got {list(stages)}")
        self.eps, self.temperature, self.ignore_index = float(eps), float(temperature), ignore_index
        self.num_classes = None if num_classes is None else int(num_classes)
        self.stages = None if stages is None else [_tap_name(s) for s in stages]
        self.branches = nn.ModuleDict()
        if self.stages is not None and self.num_classes is not None:
            for name in self.stages:
                self.branches[_branch_key(name)] = ExitBranch(self.num_classes)

    def _branch(self, name: str, like: Tensor) -> ExitBranch:
        key = _branch_key(name)
        if key not in self.branches:  # lazily, on the first forward showing this tap
            self.branches[key] = ExitBranch(self.num_classes or like.shape[1]).to(like.device)
        return self.branches[key]  # type: ignore[return-value]

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        logits, label = student["logits"], batch["label"]
        t = teacher["logits"].detach()
        rows = logit_rows(logits, t, label, self.ignore_index)
        final = mean_or_zero(ofa_loss(rows.student, rows.teacher, rows.label, self.eps, self.temperature),
                             rows.student)
        if self.stages is None:
            taps = [k for k in student if k.startswith(FEAT_PREFIX)]
        else:
            missing = [n for n in self.stages if FEAT_PREFIX + n not in student]
            if missing:
                raise KeyError(f"ofa: student outputs lack the stage taps {missing}; add them to student.taps")
            taps = [FEAT_PREFIX + n for n in self.stages]
        branch_loss = logits.sum() * 0.0
        for key in taps:  # one branch per stage (a handful), each vectorised over samples and voxels
            out = self._branch(_tap_name(key), logits)(student[key], logits)
            b_rows = logit_rows(out, t, label, self.ignore_index)
            per_row = ofa_loss(b_rows.student, b_rows.teacher, b_rows.label, self.eps, self.temperature)
            branch_loss = branch_loss + mean_or_zero(per_row, b_rows.student)
        return {"ofa": final, "ofa_branches": branch_loss}

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Logits ``(6, 5)``, labels and two stage taps ``feat:layer1`` ``(6, 4, 4, 4)``, ``feat:layer2``
        ``(6, 8, 2, 2)``. The branches' weights come from torch's global RNG when they are built: seed it first."""
        student, teacher, batch, ctx = super().example_inputs(seed)
        g = torch.Generator().manual_seed(seed + 1)
        student["feat:layer1"] = torch.randn(6, 4, 4, 4, generator=g)
        student["feat:layer2"] = torch.randn(6, 8, 2, 2, generator=g)
        return student, teacher, batch, ctx
