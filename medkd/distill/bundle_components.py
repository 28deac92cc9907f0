# SPDX-License-Identifier: Apache-2.0
"""Components a classification student's MONAI bundle names in ``configs/inference.json`` (allowlisted by its
bundle spec's ``component_modules``): the network builders, the image reader and the predictions writer.

- :func:`classifier` / :func:`routed_classifier`: ``network_def`` targets; they build exactly what the run loads
  (``student.json`` fields; a ``partition_students`` run's students keyed by value, in a
  :class:`~medkd.distill.routing.PartitionedStudent`).
- :class:`LoadClassificationImaged`: reads an image as :func:`~medkd.data.classification.load_image` does (the
  training reader) into a ``MetaTensor``; for a routed bundle it also reads the image's key value from its sidecar
  JSON (``case.png`` -> ``case.json``, the BIDS convention: ``{"modality": "MR"}``) into the metadata, where the
  routed network finds it.
- :class:`WriteClassificationd`: appends one row per image to ``OUTPUT_DIR/predictions.csv`` (file, label, class
  name, one probability column per class, and the partition of a routed bundle).

Example:
    >>> net = classifier(net="kd_cnn", in_channels=1, num_classes=3, image_size=[16, 16], net_params={"width": 4})
    >>> net(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from torch import nn

from medkd.data.classification import CLASSIFICATION_IMAGE_SUFFIXES, load_image
from medkd.errors import DataError

__all__ = ["LoadClassificationImaged", "WriteClassificationd", "classifier", "read_sidecar_value", "routed_classifier",
           "sidecar_path"]

PREDICTIONS_FILE = "predictions.csv"


def classifier(*, net: str, in_channels: int, num_classes: int, image_size: Sequence[int],
               net_params: Mapping[str, Any] | None = None) -> nn.Module:
    """The student network of a classification run's ``student.json`` (random weights)."""
    from medkd.distill.students import ClassifierInfo

    return ClassifierInfo(net=net, net_params=dict(net_params or {}), in_channels=int(in_channels),
                          num_classes=int(num_classes), class_names=(), image_size=tuple(image_size)).build()


def routed_classifier(*, key: str, students: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """A :class:`~medkd.distill.routing.PartitionedStudent` of ``{value: classifier arguments}``, routed by ``key``."""
    from medkd.distill.routing import PartitionedStudent

    return PartitionedStudent({str(v): classifier(**dict(args)) for v, args in students.items()}, key=key)


def sidecar_path(image: str | Path) -> Path:
    """The sidecar JSON of an image file: its image ending replaced by ``.json``.

    Example:
        >>> sidecar_path("data/case_001.nii.gz").name
        'case_001.json'
    """
    path = Path(image)
    for suffix in sorted(CLASSIFICATION_IMAGE_SUFFIXES, key=len, reverse=True):
        if path.name.lower().endswith(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def read_sidecar_value(image: str | Path, key: str) -> str:
    """``key``'s value in the image's sidecar JSON.

    Raises:
        DataError: naming the sidecar: missing, not a JSON object, or without ``key``.
    """
    path = sidecar_path(image)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, f"missing: this bundle routes each image by {key!r}; write {{\"{key}\": ...}} next to "
                              f"{Path(image).name}") from None
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable sidecar JSON ({err})") from None
    if not isinstance(data, dict) or key not in data:
        raise DataError(path, f"has no {key!r} (this bundle routes each image by it)")
    return str(data[key])


class LoadClassificationImaged(MapTransform):
    """Read ``d[key]`` (an image file) with medkd's training reader into a ``MetaTensor`` ``(C, *spatial)``; with
    ``route_key``, also the image's value of it from its sidecar JSON (:func:`sidecar_path`) into the metadata."""

    def __init__(self, keys: KeysCollection = "image", route_key: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.route_key = route_key

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            meta: dict[str, Any] = {"filename_or_obj": str(path)}
            if self.route_key is not None:
                meta[self.route_key] = read_sidecar_value(path, self.route_key)
            d[key] = MetaTensor(torch.from_numpy(load_image(path)), meta=meta)
        return d


class WriteClassificationd(MapTransform):
    """Append ``file, label, class, p_<class>..., [partition]`` of ``d[key]`` (probabilities ``(C,)``) to
    ``output_dir/predictions.csv`` (header written when the file is new); the file name comes from ``d[image_key]``'s
    metadata. Returns ``d`` unchanged."""

    def __init__(self, keys: KeysCollection = "pred", *, output_dir: str | Path, class_names: Sequence[str],
                 image_key: str = "image", route_key: str | None = None, filename: str = PREDICTIONS_FILE) -> None:
        super().__init__(keys)
        self.path = Path(output_dir) / filename
        self.class_names, self.image_key, self.route_key = [str(n) for n in class_names], image_key, route_key

    def __call__(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        d = dict(data)
        meta = getattr(d.get(self.image_key), "meta", {}) or {}
        for key in self.key_iterator(d):
            probs = torch.as_tensor(d[key]).detach().float().cpu().reshape(-1)
            label = int(probs.argmax())
            row = [Path(str(meta.get("filename_or_obj", "?"))).name, label, self.class_names[label],
                   *(f"{float(p):.6f}" for p in probs)]
            if self.route_key is not None:
                row.append(str(meta.get(self.route_key, "")))
            self._append(row)
        return d

    def _append(self, row: list[Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file()
        with self.path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["file", "label", "class", *(f"p_{n}" for n in self.class_names),
                                 *([self.route_key] if self.route_key else [])])
            writer.writerow(row)
