# SPDX-License-Identifier: Apache-2.0
"""Load a distillation teacher from a medkd run folder or a medkd MONAI bundle.

- a segmentation run (``medkd bcp train``, a distilled segmentation student): its student network, best
  checkpoint;
- a classification run of ``medkd distill run``;
- a bundle folder (``configs/inference.json`` + ``models/model.pt``) whose ``network_def`` calls
  ``medkd.nets.create_net``: rebuilt by registry name, weights read with ``weights_only=True``. A bundle whose
  network is any other ``_target_`` is refused (it would run code from the bundle).

Example:
    >>> load_teacher("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    medkd.errors.DataError: /no/such/folder: teacher not found
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medkd.errors import DataError
from medkd.runs import is_run, read_run_info

__all__ = ["LoadedTeacher", "load_teacher"]

_BUNDLE_CONFIG = Path("configs/inference.json")
_BUNDLE_WEIGHTS = Path("models/model.pt")
_NET_FACTORY = "medkd.nets.create_net"


@dataclass
class LoadedTeacher:
    """A teacher network (eval mode) and what it predicts.

    Attributes:
        network: the module. task: ``classification`` or ``segmentation``. num_classes: output classes.
        source: the run or bundle folder. net: its registry name. spatial_dims: 2 or 3 (None: unknown).
    """

    network: nn.Module
    task: str
    num_classes: int
    source: Path
    net: str
    spatial_dims: int | None = None

    def __post_init__(self) -> None:
        self.network.medkd_source = str(self.source)  # named by errors about its outputs


def _from_run(path: Path, device: torch.device) -> LoadedTeacher:
    info = read_run_info(path)
    if info.get("format") == "classifier":
        from medkd.distill.students import load_classifier

        cls_info, net = load_classifier(path, "best", device)
        return LoadedTeacher(net, "classification", cls_info.num_classes, path, cls_info.net, len(cls_info.image_size))
    if info["method"] == "bcp" or info.get("format") == "bcp":
        from medkd.methods.bcp.predict import load_run

        cfg, net = load_run(path, "best", device)
        return LoadedTeacher(net, "segmentation", cfg.num_classes, path, cfg.net, cfg.spatial_dims)
    raise DataError(path, f"a {info['kind']} run of method {info['method']!r} cannot teach here: use a "
                          "segmentation run (medkd bcp / medkd distill) or a classification run of medkd distill")


def _from_bundle(path: Path, device: torch.device) -> LoadedTeacher:
    from medkd.nets import create_net, net_task

    config_file = path / _BUNDLE_CONFIG
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        net_def = dict(config["network_def"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(config_file, f"not a readable medkd bundle config ({type(err).__name__}: {err})") from None
    target = net_def.pop("_target_", None)
    if target != _NET_FACTORY:
        raise DataError(config_file, f"network_def builds {target!r}; medkd only loads teachers built by "
                                     f"{_NET_FACTORY} (a bundle exported by medkd)")
    name = str(net_def.pop("name", ""))
    try:
        net = create_net(name, **net_def)
    except KeyError as err:
        raise DataError(config_file, str(err.args[0] if err.args else err)) from None
    weights = path / _BUNDLE_WEIGHTS
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except FileNotFoundError:
        raise DataError(weights, "missing bundle weights") from None
    except Exception as err:  # noqa: BLE001 - unpickling and shape errors alike mean a bad weights file
        raise DataError(weights, f"cannot load the weights into {name!r} ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:200]})") from None
    task = str(net_task(name))
    classes = int(net_def.get("out_channels", net_def.get("num_classes", 0)))
    dims = net_def.get("spatial_dims")
    return LoadedTeacher(net.to(device).eval(), task, classes, path, name, int(dims) if dims else None)


def load_teacher(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedTeacher:
    """The teacher at ``checkpoint`` (a medkd run folder or bundle folder).

    Raises:
        DataError: the path is missing, or is neither a medkd run nor a medkd bundle, or its files are bad.
    """
    path, device = Path(checkpoint), torch.device(device)
    if not path.exists():
        raise DataError(path, "teacher not found (teacher.checkpoint: a medkd run folder or bundle folder)")
    if (path / _BUNDLE_CONFIG).is_file():
        return _from_bundle(path, device)
    if path.is_dir() and is_run(path):
        return _from_run(path, device)
    raise DataError(path, "teacher.checkpoint is neither a medkd run folder (run.json) nor a medkd bundle "
                          "(configs/inference.json)")
