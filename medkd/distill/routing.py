# SPDX-License-Identifier: Apache-2.0
"""Hard routing of cases to partition students by a metadata key (MSD, Song et al., "Multi-Student Diffusion
Distillation for Better One-Step Generators", ICML 2025; medkd ``partition_students``).

Each student owns one value of a metadata key (``modality``, ``anatomy``, ``site``): a case goes to the student of
its own value, at training and at inference alike. :class:`PartitionedStudent` holds the students and routes a
batch by grouping its cases per value (one forward per partition present, no per-case loop);
``RUN/routing.json`` records the key and the run folder of each partition (relative to ``RUN``)::

    {"key": "modality", "partitions": {"A": "partitions/A", "B": "partitions/B"}}

and :func:`load_partitioned` rebuilds the routed model from it. A key value without a student raises
:class:`UnknownPartitionError`, naming the value and the known ones: there is no silent fallback.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Const(nn.Module):
    ...     def __init__(self, c):
    ...         super().__init__()
    ...         self.c = c
    ...     def forward(self, x):
    ...         return torch.full((len(x), 2), float(self.c))
    >>> model = PartitionedStudent({"A": Const(1), "B": Const(2)}, key="modality")
    >>> model(torch.zeros(3, 1, 4, 4), ["B", "A", "B"])[:, 0].tolist()
    [2.0, 1.0, 2.0]
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medkd.errors import ConfigError, DataError
from medkd.io.atomic import write_text_atomic

__all__ = [
    "ROUTING_FILE", "PartitionedStudent", "UnknownPartitionError", "key_values", "load_partitioned", "metadata_values",
    "predict_routed", "read_routing", "routed_predictions", "write_routing",
]

#: the routing file of a partitioned run
ROUTING_FILE = "routing.json"


class UnknownPartitionError(KeyError):
    """A case's key value has no partition student (the message names the value and the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _check_value(value: str) -> str:
    if not value or "." in value:
        raise ConfigError(f"partition value {value!r} cannot name a student: use values without '.' (and not empty)")
    return value


def key_values(keys: Sequence[Any] | Tensor | np.ndarray) -> np.ndarray:
    """Key values as a string array ``(B,)`` (ints of a tensor or list become their text, as CSV metadata is)."""
    if isinstance(keys, Tensor):
        keys = keys.detach().cpu().numpy()
    return np.asarray(keys).astype(str).reshape(-1)


class PartitionedStudent(nn.Module):
    """Students that each own one value of a metadata key; ``forward(x, keys)`` sends each case to its own.

    Args:
        students: ``{value: network}`` (values are text, without ``.``); every network maps ``(B, C, *spatial)``
            to outputs of one shape ``(B, *out)``.
        key: the metadata key the values belong to (``modality``); recorded, named in errors.

    Attributes:
        students: an ``nn.ModuleDict`` keyed by value. values: the values in order.

    Raises:
        ConfigError: no student, or a value that cannot name a module (empty or with ``.``).
    """

    def __init__(self, students: Mapping[str, nn.Module], key: str = "key") -> None:
        super().__init__()
        if not students:
            raise ConfigError("a PartitionedStudent needs at least one student")
        self.key = key
        self.values = tuple(_check_value(str(v)) for v in students)
        self.students = nn.ModuleDict({str(v): m for v, m in students.items()})
        self._index = {v: i for i, v in enumerate(self.values)}

    def _keys_from_meta(self, x: Tensor) -> list[Any]:
        meta = getattr(x, "meta", None)
        if not isinstance(meta, Mapping) or self.key not in meta:
            raise ValueError(f"this model routes each case by its {self.key!r}: pass keys, or a MetaTensor whose "
                             f"metadata has {self.key!r} (bundles: a sidecar JSON per image with {self.key!r})")
        value = meta[self.key]
        return list(value) if isinstance(value, (list, tuple, np.ndarray, Tensor)) else [value] * len(x)

    def codes(self, keys: Sequence[Any] | Tensor | np.ndarray) -> Tensor:
        """The partition index ``(B,)`` (long, CPU) of each case's key value.

        Raises:
            UnknownPartitionError: a value without a student (named, with the known ones and close matches).
        """
        text = key_values(keys)
        unique, inverse = np.unique(text, return_inverse=True)
        unknown = [str(u) for u in unique if u not in self._index]
        if unknown:
            close = difflib.get_close_matches(unknown[0], self.values, n=2)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownPartitionError(
                f"no partition student for {self.key}={unknown[0]!r}"
                f"{f' (nor {unknown[1:]})' if len(unknown) > 1 else ''}; known {self.key} values: "
                f"{', '.join(map(repr, self.values))}.{hint}")
        table = np.asarray([self._index[str(u)] for u in unique], dtype=np.int64)  # one entry per distinct value
        return torch.from_numpy(table[inverse.reshape(-1)])

    def forward(self, x: Tensor, keys: Sequence[Any] | Tensor | np.ndarray | None = None) -> Tensor:
        """Outputs ``(B, *out)`` of ``x`` ``(B, C, *spatial)``, row ``b`` from the student of ``keys[b]``.

        Cases are grouped by value: one forward per partition present in the batch. Without ``keys``, ``x`` must be a
        MONAI ``MetaTensor`` whose metadata holds :attr:`key` (one value per case, as a bundle's
        ``LoadClassificationImaged`` puts it there from each image's sidecar JSON).

        Raises:
            ValueError: ``keys`` and ``x`` differ in length, or no keys and none in ``x``'s metadata.
            UnknownPartitionError: a value without a student.
        """
        if keys is None:
            keys = self._keys_from_meta(x)
        if hasattr(x, "as_tensor"):  # a MetaTensor: route on plain tensors (its batch metadata is not indexed)
            x = x.as_tensor()
        codes = self.codes(keys)
        if len(codes) != len(x):
            raise ValueError(f"{len(codes)} keys for {len(x)} cases")
        if len(x) == 0:
            return self.students[self.values[0]](x)
        codes = codes.to(x.device)
        out: Tensor | None = None
        for j in torch.unique(codes).tolist():  # partitions, not cases
            idx = (codes == j).nonzero().flatten()
            y = self.students[self.values[j]](x[idx])
            if out is None:
                out = y.new_empty((len(x), *y.shape[1:]))
            out[idx] = y
        assert out is not None
        return out


def predict_routed(model: PartitionedStudent, images: Tensor, keys: Sequence[Any] | Tensor | np.ndarray,
                   device: str | torch.device = "cpu", batch: int = 256) -> Tensor:
    """Outputs ``(N, *out)`` (float, CPU) of ``images`` ``(N, C, *spatial)`` routed by ``keys`` (eval mode, no grad).

    Example:
        >>> net = PartitionedStudent({"0": nn.Flatten(), "1": nn.Flatten()})
        >>> predict_routed(net, torch.ones(5, 1, 2, 1), [0, 1, 1, 0, 1], batch=2).shape
        torch.Size([5, 2])
    """
    text = key_values(keys)
    model.codes(text)  # unknown values fail before any forward
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            parts = [model(images[i:i + batch].to(device), text[i:i + batch]).float().cpu()
                     for i in range(0, len(images), batch)]
    finally:
        model.train(was)
    return torch.cat(parts) if parts else torch.empty(0)


def routed_predictions(model: PartitionedStudent, data: Any, split: str,
                       device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, np.ndarray]:
    """``(predicted labels, labels, key values)`` of every case of ``split`` of a
    :class:`~medkd.distill.data.ClassificationData`, each case through the student of its own key value.

    Raises:
        UnknownPartitionError: a case whose value has no student (a case without the key has value ``""``).
    """
    images, labels, _ = data.tensors(split)
    keys = np.asarray([m.get(model.key, "") for m in data.metadata(split)], dtype=str)
    return predict_routed(model, images, keys, device).argmax(1), labels, keys


def metadata_values(data: Any, key: str, split: str) -> list[str]:
    """The sorted distinct values of metadata ``key`` in ``split`` of a
    :class:`~medkd.distill.data.ClassificationData` (its :meth:`metadata`).

    Raises:
        DataError: a case without that key (class folders carry no metadata: use a CSV datalist).
    """
    meta = data.metadata(split)
    missing = sum(key not in m for m in meta)
    if missing:
        columns = sorted(meta[0]) if meta and meta[0] else []
        raise DataError(data.root, f"split {split!r}: {missing} of {len(meta)} cases have no metadata {key!r} "
                                   f"(columns: {', '.join(columns) or 'none'}); use data.layout csv with a datalist "
                                   f"that has a {key!r} column")
    return sorted({m[key] for m in meta})


def write_routing(run: str | Path, key: str, partitions: Mapping[str, str]) -> Path:
    """Write ``RUN/routing.json``: the key and each value's run folder, relative to ``run``."""
    path = Path(run) / ROUTING_FILE
    write_text_atomic(path, json.dumps({"key": key, "partitions": {str(v): str(p) for v, p in partitions.items()}},
                                       indent=1))
    return path


def read_routing(run: str | Path) -> tuple[str, dict[str, str]]:
    """The key and ``{value: run folder relative to run}`` of ``RUN/routing.json``.

    Raises:
        DataError: a missing or malformed routing file.
    """
    path = Path(run) / ROUTING_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        key, partitions = str(raw["key"]), {str(v): str(p) for v, p in dict(raw["partitions"]).items()}
    except FileNotFoundError:
        raise DataError(path, "missing: not a partitioned run (medkd distill run with strategy "
                              "partition_students)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"malformed ({type(err).__name__}: {err})") from None
    if not partitions:
        raise DataError(path, "lists no partition")
    return key, partitions


def load_partitioned(run: str | Path, which: str = "best", device: str | torch.device = "cpu") -> PartitionedStudent:
    """The routed model of a ``partition_students`` run (each partition's ``which`` checkpoint), in eval mode.

    Attributes of the result: ``key``, ``values`` and ``class_names`` (shared by every partition).

    Raises:
        DataError: no or a malformed ``routing.json``, a partition that is not a classification run, or
            partitions with different classes.

    Example:
        >>> model = load_partitioned("runs/msd")  # doctest: +SKIP
        >>> model(images, ["A", "B"]).argmax(1)  # doctest: +SKIP
    """
    from medkd.distill.students import load_classifier

    run = Path(run)
    key, partitions = read_routing(run)
    students, names = {}, None
    for value, folder in partitions.items():
        info, net = load_classifier(run / folder, which, device)
        if names is not None and tuple(info.class_names) != names:
            raise DataError(run / folder, f"classes {list(info.class_names)} differ from the other partitions' "
                                          f"{list(names)}")
        names = tuple(info.class_names)
        students[value] = net
    model = PartitionedStudent(students, key=key).to(device).eval()
    model.class_names = names
    return model
