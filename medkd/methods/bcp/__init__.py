# SPDX-License-Identifier: Apache-2.0
"""BCP: Bidirectional Copy-Paste for semi-supervised medical image segmentation (Bai et al., CVPR 2023).

Pieces: :func:`box_mask` (one box per iteration), :func:`mix`, :func:`region_loss` (region-normalised Dice+CE),
pseudo-labels with largest connected components, and the pure :func:`pretrain_step` / :func:`selftrain_step`;
:func:`train_bcp` runs them on the shared engine. Spec: ``shared/specs/bcp.md``.
"""

from __future__ import annotations

from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.losses import DiceFlavour, dice_ce, region_ce, region_dice, region_loss
from medkd.methods.bcp.masks import box_extent, box_mask
from medkd.methods.bcp.mix import mix
from medkd.methods.bcp.pseudo import (
    largest_component_per_sample,
    pseudo_labels_argmax_lcc,
    pseudo_labels_threshold_lcc,
)
from medkd.methods.bcp.steps import StepOptions, pretrain_step, selftrain_step, supervised_step
from medkd.methods.bcp.trainer import train_bcp

__all__ = [
    "BCPConfig",
    "DiceFlavour",
    "StepOptions",
    "box_extent",
    "box_mask",
    "dice_ce",
    "largest_component_per_sample",
    "mix",
    "pretrain_step",
    "pseudo_labels_argmax_lcc",
    "pseudo_labels_threshold_lcc",
    "region_ce",
    "region_dice",
    "region_loss",
    "selftrain_step",
    "supervised_step",
    "train_bcp",
]
