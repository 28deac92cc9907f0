# SPDX-License-Identifier: Apache-2.0
"""BCP's region losses: Dice and cross-entropy normalised within the box or outside it (spec §2).

``R(o, y_out, y_in; w_out, w_in) = w_out [Dice_M + CE_M](o, y_out) + w_in [Dice_{1-M} + CE_{1-M}](o, y_in)``

- ``CE_r = sum(CE(o, y) r) / (sum(r) + 1e-16)``: normalised by the region, not by all voxels (MONAI's
  ``MaskedLoss`` divides by all voxels, MONAI #4193, so it is written here).
- Dice is MONAI's ``DiceLoss`` on softmax probabilities and a one-hot target, both multiplied by the region
  (what ``MaskedDiceLoss`` does; done here so a per-channel region can reproduce the reference's old
  background bug). Flavours: ``acdc`` = squared, summed over batch and space, eps 1e-10 (reference
  ``losses.DiceLoss``); ``la`` = non-squared, per sample, eps 1e-5 (``losses.mask_DiceLoss``).
  Feeding probabilities, not ``softmax=True``, matters: MONAI would mask the logits before the softmax.
"""

from __future__ import annotations

from enum import StrEnum

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = ["DiceFlavour", "region_ce", "region_dice", "region_loss", "dice_ce"]


class DiceFlavour(StrEnum):
    """Which reference Dice: ``acdc`` (squared, batch, 1e-10) or ``la`` (plain, per sample, 1e-5)."""

    ACDC = "acdc"
    LA = "la"


_DICE = {
    DiceFlavour.ACDC: DiceLoss(
        include_background=True, squared_pred=True, batch=True, smooth_nr=1e-10, smooth_dr=1e-10
    ),
    DiceFlavour.LA: DiceLoss(include_background=True, squared_pred=False, batch=False, smooth_nr=1e-5, smooth_dr=1e-5),
}


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).to(torch.float32)


def region_ce(logits: torch.Tensor, labels: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the voxels where ``region`` is 1.

    Args:
        logits: ``(B, C, *S)``. labels: ``(B, *S)`` integer. region: ``(*S)`` or ``(B, *S)`` in {0, 1}.
    """
    ce = F.cross_entropy(logits, labels.long(), reduction="none")
    region = region.expand_as(ce)
    return (ce * region).sum() / (region.sum() + 1e-16)


def region_dice(
    probs: torch.Tensor,
    labels: torch.Tensor,
    region: torch.Tensor,
    flavour: DiceFlavour | str = DiceFlavour.ACDC,
    *,
    background_unmasked: bool = False,
) -> torch.Tensor:
    """Dice loss of softmax ``probs`` ``(B, C, *S)`` against ``labels`` ``(B, *S)`` within ``region``.

    Args:
        background_unmasked: reproduce the reference before commit ``a925e30`` (issue #25), whose
            background channel used an all-ones mask; the paper's numbers were produced with it.

    Example:
        >>> p = torch.softmax(torch.randn(2, 4, 8, 8), 1); y = torch.randint(0, 4, (2, 8, 8))
        >>> float(region_dice(p, y, torch.ones(8, 8))) > 0
        True
    """
    num_classes = probs.shape[1]
    target = _one_hot(labels, num_classes)
    spatial = probs.shape[2:]
    region = region.to(probs.dtype).expand(probs.shape[0], *spatial).unsqueeze(1)  # (B, 1, *S)
    if background_unmasked:
        region = region.repeat(1, num_classes, *([1] * len(spatial)))
        region[:, 0] = 1.0
    return _DICE[DiceFlavour(flavour)](probs * region, target * region)


def region_loss(
    logits: torch.Tensor,
    labels_outside: torch.Tensor,
    labels_inside: torch.Tensor,
    mask: torch.Tensor,
    *,
    w_outside: float = 1.0,
    w_inside: float = 1.0,
    flavour: DiceFlavour | str = DiceFlavour.ACDC,
    background_unmasked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Dice part, CE part)`` of ``R``; BCP's loss of one mixed batch is ``(dice + ce) / 2``.

    Args:
        logits: student output ``(B, C, *S)`` on the mixed input.
        labels_outside: supervision outside the box (``mask == 1``), ``(B, *S)``.
        labels_inside: supervision inside the box (``mask == 0``).
        mask: ``(*S)`` box mask, 1 outside.
        w_outside, w_inside: 1 for ground truth, ``u_weight`` for pseudo-labels.
    """
    probs = torch.softmax(logits, dim=1)
    inside = 1.0 - mask
    dice = w_outside * region_dice(probs, labels_outside, mask, flavour, background_unmasked=background_unmasked)
    dice = dice + w_inside * region_dice(probs, labels_inside, inside, flavour, background_unmasked=background_unmasked)
    ce = w_outside * region_ce(logits, labels_outside, mask) + w_inside * region_ce(logits, labels_inside, inside)
    return dice, ce


def dice_ce(logits: torch.Tensor, labels: torch.Tensor, flavour: DiceFlavour | str = DiceFlavour.ACDC) -> torch.Tensor:
    """Unmasked ``(Dice + CE) / 2``: the supervised baseline and LA's pre-training loss."""
    probs = torch.softmax(logits, dim=1)
    ones = torch.ones(logits.shape[2:], device=logits.device)
    dice = region_dice(probs, labels, ones, flavour)
    return 0.5 * (dice + F.cross_entropy(logits, labels.long()))
