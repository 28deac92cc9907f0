# SPDX-License-Identifier: Apache-2.0
"""Fresh networks for an experiment's task, and the supervised terms a network trains on without a teacher.

Example:
    >>> [t.plugin for t in supervised_terms("segmentation")]
    ['ce', 'dice']
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from medkd.distill.config import DistillConfig
from medkd.distill.data import ClassificationData, SegmentationData
from medkd.distill.students import ClassifierInfo
from medkd.distill.terms import TermSpec
from medkd.errors import ConfigError


def supervised_terms(task: str) -> tuple[TermSpec, ...]:
    """The supervised loss of a network trained without a teacher: CE, plus Dice for segmentation."""
    terms = [TermSpec(name="ce", plugin="ce")]
    if task == "segmentation":
        terms.append(TermSpec(name="dice", plugin="dice"))
    return tuple(terms)


def build_network(cfg: DistillConfig, data: ClassificationData | SegmentationData, net: str,
                  params: dict[str, Any]) -> tuple[nn.Module, ClassifierInfo | None]:
    """A fresh network ``net`` for the experiment's task (and, for classification, what rebuilds it)."""
    if isinstance(data, SegmentationData):
        from medkd.methods.bcp.trainer import build_student

        if params:
            raise ConfigError(f"net_params {sorted(params)}: segmentation networks take in/out channels only")
        return build_student(replace(data.seg, net=net), channels_last=False), None
    info = ClassifierInfo(net=net, net_params=dict(params), in_channels=cfg.data.in_channels,
                          num_classes=data.num_classes, class_names=data.class_names,
                          image_size=tuple(cfg.data.image_size))
    try:
        return info.build(), info
    except TypeError as err:
        raise ConfigError(f"net {net!r}: {err}") from None
