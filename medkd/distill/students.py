# SPDX-License-Identifier: Apache-2.0
"""How a distilled student is stored, so that it is a normal medkd run.

``RUN/run.json`` names method ``distill``, the kind, the student's storage ``format`` and ``stage`` (its
checkpoint folder, ``RUN/student/{best,last}.pt``):

- segmentation (``format: bcp``): ``RUN/config.yaml`` is the student's BCP-format config (network, classes, patch,
  dataset protocol), so ``medkd distill eval``, ``medkd bundle export``, pipelines and the app load it with the
  segmentation tools medkd already has;
- classification (``format: classifier``): ``RUN/student.json`` holds the network, its keywords, the class names
  and the input size.

Example:
    >>> from medkd.distill.config import config_from_dict, DistillConfig
    >>> cfg = config_from_dict(DistillConfig, {"data": {"layout": "acdc", "num_classes": 4, "image_size": [64, 64],
    ...     "batch_size": 4, "labeled": 2}, "student": {"net": "bcp_unet2d_half"},
    ...     "distill": {"terms": [{"name": "ce", "plugin": "ce"}]}})
    >>> seg = segmentation_config(cfg)
    >>> seg.dataset.value, seg.method.value, seg.net, seg.patch
    ('acdc', 'supervised', 'bcp_unet2d_half', (64, 64))
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkd.config import config_from_dict
from medkd.distill.config import DistillConfig
from medkd.distill.moe import moe_params, wrap_stages
from medkd.engine.checkpoint import load_checkpoint
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic
from medkd.methods.bcp.config import BCPConfig
from medkd.nets import create_net
from medkd.runs import read_run_info, write_run_info

__all__ = [
    "METHOD", "STAGE", "ClassifierInfo", "classifier_info", "load_classifier", "segmentation_config",
    "student_checkpoint", "write_student_run",
]

METHOD = "distill"
#: the student's checkpoint folder inside a run
STAGE = "student"
CLASSIFIER_FILE = "student.json"


def segmentation_config(cfg: DistillConfig, net: str | None = None, iterations: int | None = None) -> BCPConfig:
    """The BCP-format config of a segmentation student (or of a teacher trained first, with ``net``).

    Raises:
        ConfigError: settings BCP's data protocol rejects (patch not a multiple of the network's divisor, ...).
    """
    data, optim = cfg.data, cfg.optim
    return config_from_dict(BCPConfig, dict(
        dataset=data.layout.value, method="supervised", net=net or cfg.student.net, in_channels=data.in_channels,
        num_classes=data.num_classes, labeled=data.labeled or 1, patch=tuple(data.image_size),
        batch_size=data.batch_size, labeled_batch_size=data.batch_size,
        pretrain_iterations=iterations or optim.iterations,
        selftrain_iterations=0, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
        seed=cfg.experiment.seed, val_interval=cfg.eval.val_interval, log_interval=cfg.eval.log_interval,
        num_workers=data.num_workers, device=cfg.experiment.device, precision=optim.precision,
    ), source="the distill experiment (data/optim sections)")


@dataclass(frozen=True)
class ClassifierInfo:
    """What rebuilds a classification student: ``create_net(net, in_channels=..., num_classes=..., **net_params)``.

    A ``moe`` entry of ``net_params`` (``{experts, top_k, stages}``, m2mKD's mixture-of-experts student) is not
    passed to the network: its stages are wrapped afterwards (:func:`medkd.distill.moe.wrap_stages`).
    """

    net: str
    net_params: dict[str, Any]
    in_channels: int
    num_classes: int
    class_names: tuple[str, ...]
    image_size: tuple[int, ...]

    def build(self) -> nn.Module:
        """The network with random weights."""
        params = dict(self.net_params)
        moe = params.pop("moe", None)
        if _takes_spatial_dims(self.net):
            params.setdefault("spatial_dims", len(self.image_size))
        net = create_net(self.net, in_channels=self.in_channels, num_classes=self.num_classes, **params)
        if moe is not None:
            net = wrap_stages(net, **moe_params(moe))
        return net


def _takes_spatial_dims(net: str) -> bool:
    import inspect

    from medkd.nets import NETS

    return "spatial_dims" in inspect.signature(NETS.get(net)).parameters


def write_student_run(out: Path, *, task: str, info: ClassifierInfo | None = None, seg: BCPConfig | None = None,
                      stage: str = STAGE, **extra: Any) -> None:
    """Write ``run.json`` and the student's config (``config.yaml`` or ``student.json``) into ``out``."""
    import yaml

    from medkd.config import config_to_dict

    out.mkdir(parents=True, exist_ok=True)
    if task == "segmentation":
        assert seg is not None
        write_text_atomic(out / "config.yaml", yaml.safe_dump(config_to_dict(seg), sort_keys=False))
        write_run_info(out, method=METHOD, kind="segmentation", format="bcp", stage=stage, **extra)
    else:
        assert info is not None
        payload = {"net": info.net, "net_params": info.net_params, "in_channels": info.in_channels,
                   "num_classes": info.num_classes, "class_names": list(info.class_names),
                   "image_size": list(info.image_size)}
        write_text_atomic(out / CLASSIFIER_FILE, json.dumps(payload, indent=1))
        write_run_info(out, method=METHOD, kind="classification", format="classifier", stage=stage, **extra)


def classifier_info(run: str | Path) -> ClassifierInfo:
    """The ``student.json`` of a classification run.

    Raises:
        DataError: missing or malformed file.
    """
    path = Path(run) / CLASSIFIER_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return ClassifierInfo(net=str(raw["net"]), net_params=dict(raw.get("net_params") or {}),
                              in_channels=int(raw["in_channels"]), num_classes=int(raw["num_classes"]),
                              class_names=tuple(raw["class_names"]), image_size=tuple(raw["image_size"]))
    except FileNotFoundError:
        raise DataError(path, "missing: not a classification run of medkd distill") from None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"malformed ({type(err).__name__}: {err})") from None


def student_checkpoint(run: str | Path, which: str = "best") -> Path:
    """``RUN/<stage>/<which>.pt`` (``best`` falls back to ``last``).

    Raises:
        DataError: no checkpoint.
    """
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    stage = read_run_info(run).get("stage") or STAGE
    for name in (which, "last"):
        path = Path(run) / stage / f"{name}.pt"
        if path.is_file():
            return path
    raise DataError(Path(run) / stage, f"no {which}.pt checkpoint: train the run first (medkd distill run ...)")


def load_classifier(run: str | Path, which: str = "best",
                    device: str | torch.device = "cpu") -> tuple[ClassifierInfo, nn.Module]:
    """A classification run's student in eval mode.

    Raises:
        DataError: not a classification run, a missing or unreadable checkpoint, weights that do not fit.
    """
    info = classifier_info(run)
    path = student_checkpoint(run, which)
    net = info.build()
    try:
        net.load_state_dict(load_checkpoint(path)["student"])
    except RuntimeError as err:
        raise DataError(path, f"weights do not fit {info.net!r} of {CLASSIFIER_FILE}: {err}") from None
    return info, net.to(device).eval()


