# SPDX-License-Identifier: Apache-2.0
"""BCP's pure training steps: batch and networks in, loss and logs out (no optimiser, no I/O).

Logs are detached tensors: the engine turns them into numbers only when it logs, so a step adds no
host-device synchronisation of its own.

Pre-training (labelled only) mixes the two labelled halves; self-training mixes labelled and unlabelled
halves both ways through one shared box, ground truth supervising labelled pixels (weight 1) and teacher
pseudo-labels the unlabelled ones (weight ``u_weight``). Sides are mirrored between ACDC and LA, as in the
reference (spec §2): ACDC pastes labelled into unlabelled first, LA unlabelled into labelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medkd.methods.bcp.config import Dataset
from medkd.methods.bcp.losses import DiceFlavour, dice_ce, region_loss
from medkd.methods.bcp.mix import mix
from medkd.methods.bcp.pseudo import pseudo_labels_argmax_lcc, pseudo_labels_threshold_lcc

__all__ = ["StepOptions", "pretrain_step", "selftrain_step", "supervised_step", "pseudo_labels"]


@dataclass(frozen=True)
class StepOptions:
    """What differs between datasets and modes inside a step."""

    dataset: Dataset = Dataset.ACDC
    u_weight: float = 0.5
    dice_bg_unmasked: bool = False
    concat_forwards: bool = False

    @property
    def flavour(self) -> DiceFlavour:
        return DiceFlavour.ACDC if self.dataset == Dataset.ACDC else DiceFlavour.LA


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = x.shape[0] // 2
    return x[:half], x[half:]


def pseudo_labels(teacher: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, opts: StepOptions) -> torch.Tensor:
    """Teacher pseudo-labels ``(B, *S)`` for unlabelled ``images`` ``(B, C, *S)``, without gradients."""
    with torch.no_grad():
        logits = teacher(images)
    if opts.dataset == Dataset.ACDC:
        return pseudo_labels_argmax_lcc(logits)
    return pseudo_labels_threshold_lcc(logits)


def pretrain_step(
    student: nn.Module, images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, opts: StepOptions
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 1: copy-paste between the two labelled halves.

    Args:
        images: labelled images ``(B, C, *S)``, B even. labels: ``(B, *S)``. mask: ``(*S)`` box mask.

    Returns:
        ``(loss, logs)``. ACDC: ``R(S(mix(x_a, x_b)), y_a, y_b; 1, 1) / 2``; LA: unmasked Dice+CE against
        the mixed label ``mix(y_a, y_b)``.
    """
    x_a, x_b = _halves(images)
    y_a, y_b = _halves(labels)
    logits = student(mix(x_a, x_b, mask))
    if opts.dataset == Dataset.LA:
        loss = dice_ce(logits, mix(y_a, y_b, mask), DiceFlavour.LA)
        return loss, {"loss": loss.detach()}
    dice, ce = region_loss(
        logits, y_a, y_b, mask, flavour=opts.flavour, background_unmasked=opts.dice_bg_unmasked
    )
    loss = (dice + ce) / 2
    return loss, {"loss": loss.detach(), "dice_loss": dice.detach(), "ce_loss": ce.detach()}


def selftrain_step(
    student: nn.Module,
    teacher: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    unlabeled: torch.Tensor,
    mask: torch.Tensor,
    opts: StepOptions,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 2: bidirectional copy-paste with teacher pseudo-labels.

    Args:
        images, labels: labelled part ``(B, C, *S)`` / ``(B, *S)``; unlabeled: ``(B, C, *S)`` (no labels: the
            unlabelled ground truth never enters the loss).
        teacher: the EMA teacher, called separately on each unlabelled half (BN batch composition).

    Returns:
        ``(loss, logs)`` with ``loss = (R1 + R2) / 2``.
    """
    x_a, x_b = _halves(images)
    y_a, y_b = _halves(labels)
    u_a, u_b = _halves(unlabeled)
    p_a, p_b = pseudo_labels(teacher, u_a, opts), pseudo_labels(teacher, u_b, opts)
    alpha = opts.u_weight
    if opts.dataset == Dataset.ACDC:  # unlabelled outside / labelled in the box, then the reverse
        x1, sup1 = mix(u_a, x_a, mask), (p_a, y_a, alpha, 1.0)
        x2, sup2 = mix(x_b, u_b, mask), (y_b, p_b, 1.0, alpha)
    else:  # LA: labelled outside / unlabelled in the box, then the reverse
        x1, sup1 = mix(x_a, u_a, mask), (y_a, p_a, 1.0, alpha)
        x2, sup2 = mix(u_b, x_b, mask), (p_b, y_b, alpha, 1.0)
    if opts.concat_forwards:  # ablation: one forward changes BatchNorm's batch statistics
        out1, out2 = _halves(student(torch.cat([x1, x2])))
    else:
        out1, out2 = student(x1), student(x2)
    total_dice = total_ce = 0.0
    for out, (y_out, y_in, w_out, w_in) in ((out1, sup1), (out2, sup2)):
        dice, ce = region_loss(
            out, y_out, y_in, mask, w_outside=w_out, w_inside=w_in,
            flavour=opts.flavour, background_unmasked=opts.dice_bg_unmasked,
        )
        total_dice, total_ce = total_dice + dice, total_ce + ce
    loss = (total_dice + total_ce) / 2
    logs = {"loss": loss.detach(), "dice_loss": total_dice.detach(), "ce_loss": total_ce.detach()}
    return loss, logs


def supervised_step(
    student: nn.Module, images: torch.Tensor, labels: torch.Tensor, opts: StepOptions
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Labelled-only baseline: ``(Dice + CE) / 2`` on the labelled batch, no mixing."""
    loss = dice_ce(student(images), labels, opts.flavour)
    return loss, {"loss": loss.detach()}
