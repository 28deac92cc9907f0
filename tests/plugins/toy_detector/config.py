# SPDX-License-Identifier: Apache-2.0
"""The toy detector's typed config (read with :func:`medkd.config.load_config`; ``--set decode.score_threshold=0.5``
reaches the nested section).

Example:
    >>> from medkd.config import config_from_dict
    >>> cfg = config_from_dict(ToyDetectorConfig, {"iterations": 5}, overrides=["decode.max_detections=3"])
    >>> cfg.iterations, cfg.decode.max_detections, cfg.label_names()
    (5, 3, ['background', 'box'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DecodeConfig", "ToyDetectorConfig"]


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    """How heatmaps become boxes.

    Attributes:
        score_threshold: heatmap peak a detection needs.
        max_detections: detections per image (per slice of a volume) at most.
        link_iou: a detection in slice ``z`` continues a box of slice ``z - 1`` with the same label when their
            in-plane IoU reaches this (volumes are detected slice by slice).
    """

    score_threshold: float = 0.3
    max_detections: int = 20
    link_iou: float = 0.3


@dataclass(frozen=True, kw_only=True)
class ToyDetectorConfig:
    """A toy detection run.

    Attributes:
        classes: foreground class names (label values 1..K; 0 is background).
        width: hidden channels of the network (a multiple of 4).
        dilations: one dilated 3x3 convolution per entry.
        iterations: training iterations.
        batch_size: images per iteration.
        lr: Adam learning rate.
        val_interval: validate (and checkpoint) every this many iterations.
        log_interval: a metrics line every this many iterations.
        seed: seeds the weights and the batches (batch ``i`` depends only on ``seed`` and ``i``: exact resume).
        device: ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``.
        decode: the :class:`DecodeConfig`.
    """

    classes: tuple[str, ...] = ("box",)
    width: int = 16
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    iterations: int = 200
    batch_size: int = 16
    lr: float = 0.003
    val_interval: int = 50
    log_interval: int = 10
    seed: int = 0
    device: str = "cpu"
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def label_names(self) -> list[str]:
        """Class names by label value, background first."""
        return ["background", *self.classes]

    def net_kwargs(self) -> dict[str, object]:
        """Keywords of the registered network ``toy_centernet`` (what a bundle's ``network_def`` holds)."""
        return {"in_channels": 1, "num_classes": len(self.classes), "width": self.width,
                "dilations": list(self.dilations)}
