# SPDX-License-Identifier: Apache-2.0
"""Classification students as :class:`~medkd.inference.Predictor` objects, routed by their key where partitioned.

A distill run of kind ``classification`` (``RUN/student.json``) or a ``partition_students`` run (``RUN/routing.json``
and one student per key value) loads as a ``classification`` predictor (:mod:`medkd.methods.classification_kind`):
an image (``(c, y, x)`` float32, as :func:`~medkd.data.classification.load_image` reads it) in, class probabilities
and the label out. A routed predictor takes ``{"image": array, <key>: value}`` and answers with the student of that
value, exactly as the run's own evaluation does (:func:`~medkd.distill.routing.predict_routed`); a missing or
unknown value raises, naming the key and the known values. Segmentation students load with BCP's predictor.

:func:`classify_files` is the batch front door (``medkd distill predict``, :func:`predict_to_csv`): it reads image
files, takes each file's key value from its metadata (a CSV datalist's columns: :func:`datalist_files`), and skips
and reports files that cannot be read or routed.

Example:
    >>> predictor = load_run_predictor("runs/msd")  # doctest: +SKIP
    >>> predictor({"image": image, "modality": "MR"})["label"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from medkd.data.classification import load_image, read_datalist_rows, resize_image
from medkd.errors import DataError, MedkdError
from medkd.inference import Predictor, file_sha256, resolve_device
from medkd.io.labels import labels_from_names
from medkd.runs import read_run_info

__all__ = [
    "ClassifiedFile", "LoadedClassifier", "classification_predictor", "classify_files", "datalist_files",
    "load_classification_run", "load_run_predictor", "predict_to_csv",
]

logger = logging.getLogger(__name__)


def _forward(network: nn.Module, image: np.ndarray, size: Sequence[int], device: torch.device,
             keys: list[str] | None) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(image))
    if x.ndim == len(size):  # no channel axis
        x = x[None]
    x = resize_image(x, size)[None].to(device)
    logits = network(x) if keys is None else network(x, keys)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


def classification_predictor(
    network: nn.Module, *, class_names: Sequence[str], image_size: Sequence[int], name: str, version: str,
    weights: Path, source: Path, device: torch.device | str = "cpu", route_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Predictor:
    """A ``classification`` predictor of ``network`` (eval mode, moved to ``device``).

    Args:
        network: maps ``(1, C, *image_size)`` to logits ``(1, classes)``; with ``route_key``, a
            :class:`~medkd.distill.routing.PartitionedStudent` called as ``network(x, [value])``.
        class_names: names by class index. image_size: the size images are resized to (the training size).
        name, version, weights, source: what the predictor reports (``weights`` is fingerprinted).
        route_key: the metadata key each input must carry (routed models).
        metadata: extra entries of the predictor's ``metadata``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> p = classification_predictor(net, class_names=["a", "b", "c"], image_size=(4, 4), name="toy",
        ...                              version="0", weights=Path(__file__), source=Path("."))
        >>> out = p(np.zeros((1, 8, 8), np.float32))
        >>> sorted(out), round(float(out["probabilities"].sum()), 4)
        (['label', 'probabilities'], 1.0)
    """
    dev = resolve_device(device) if isinstance(device, str) else device
    model = network.to(dev).eval()
    size = tuple(int(s) for s in image_size)

    def run(prepared: dict[str, Any]) -> dict[str, Any]:
        keys = None
        if route_key is not None:
            value = prepared["metadata"].get(route_key)
            if value is None:
                raise ValueError(f"{name} routes each image by {route_key!r} (known values: "
                                 f"{', '.join(model.values)}): give each image's value (Python: {{'image': ..., "
                                 f"{route_key!r}: value}}; CLI: --meta {route_key}=VALUE or a datalist column)")
            keys = [value]
        probs = _forward(model, prepared["image"], size, dev, keys)
        out: dict[str, Any] = {"probabilities": probs.astype(np.float32), "label": int(probs.argmax())}
        if keys is not None:
            out["partition"] = keys[0]
        return out

    return Predictor(
        kind="classification", name=name, version=version, weights_sha256=file_sha256(weights),
        labels=labels_from_names([str(n) for n in class_names], background=False), run=run, source=source,
        metadata={"route_key": route_key, "route_values": list(getattr(model, "values", ())) if route_key else [],
                  "image_size": list(size), **dict(metadata or {})},
    )


class LoadedClassifier(NamedTuple):
    """A classification run's network and what predicting with it needs (:func:`load_classification_run`)."""

    network: nn.Module
    class_names: tuple[str, ...]
    image_size: tuple[int, ...]
    route_key: str | None
    weights: Path


def load_classification_run(run: str | Path, which: str = "best",
                            device: str | torch.device = "cpu") -> LoadedClassifier:
    """The network (eval mode), class names, image size, routing key and weights file of a classification run.

    A run with ``routing.json`` gives its :class:`~medkd.distill.routing.PartitionedStudent` (every partition's
    ``which`` checkpoint) and its key; ``weights`` is then the first partition's checkpoint.

    Raises:
        DataError: not a classification run, a missing checkpoint, partitions that disagree.
    """
    from medkd.distill.routing import ROUTING_FILE, load_partitioned, read_routing
    from medkd.distill.students import classifier_info, load_classifier, student_checkpoint

    run = Path(run)
    if (run / ROUTING_FILE).is_file():
        key, partitions = read_routing(run)
        model = load_partitioned(run, which, device)
        first = run / next(iter(partitions.values()))
        return LoadedClassifier(model, tuple(model.class_names), tuple(classifier_info(first).image_size), key,
                                student_checkpoint(first, which))
    info, net = load_classifier(run, which, device)
    return LoadedClassifier(net, tuple(info.class_names), tuple(info.image_size), None,
                            student_checkpoint(run, which))


def load_run_predictor(run: str | Path, device: str | torch.device | None = None, *,
                       trust: bool = False) -> Predictor:
    """The ``distill`` method's ``load_predictor``: a classification (or routed) predictor for classification
    runs, BCP's segmentation predictor for segmentation students (``trust`` is unused: a run folder holds no code).

    Raises:
        DataError: see :func:`load_classification_run`.
    """
    run = Path(run)
    if read_run_info(run)["kind"] != "classification":
        from medkd.methods.bcp.predict import load_run_predictor as load_segmentation

        return load_segmentation(run, device, trust=trust)
    dev = resolve_device(device or "auto") if not isinstance(device, torch.device) else device
    loaded = load_classification_run(run, "best", dev)
    return classification_predictor(
        loaded.network, class_names=loaded.class_names, image_size=loaded.image_size, name=run.resolve().name,
        version="run:student/best", weights=loaded.weights, source=run, device=dev, route_key=loaded.route_key,
        metadata={"method": "distill"},
    )


@dataclass
class ClassifiedFile:
    """One file's outcome in :func:`classify_files`: ``label``/``probabilities`` when it worked, ``error`` when
    skipped."""

    path: Path
    metadata: dict[str, str] = field(default_factory=dict)
    label: int | None = None
    class_name: str | None = None
    probabilities: list[float] | None = None
    partition: str | None = None
    error: str | None = None


def classify_files(
    predictor: Predictor, files: Iterable[tuple[Path, Mapping[str, str]]],
    on_file: Callable[[ClassifiedFile], None] | None = None,
) -> list[ClassifiedFile]:
    """Classify image files with their metadata; unreadable or unroutable files are skipped and reported.

    Args:
        predictor: a ``classification`` predictor (a routed one reads its key from each file's metadata).
        files: ``(image path, {metadata key: value})`` pairs.
        on_file: called with each outcome as it comes (progress bars, streaming writers).

    Returns:
        One :class:`ClassifiedFile` per input, in order; failed ones carry ``error`` (the file and the reason).
    """
    if predictor.kind != "classification":
        raise MedkdError(f"{predictor.source} is a {predictor.kind} model, not a classification model")
    names = [label.name for label in predictor.labels]
    results = []
    for path, meta in files:
        item = ClassifiedFile(Path(path), dict(meta))
        try:
            out = predictor({"image": load_image(path), **item.metadata})
        except (DataError, ValueError, KeyError, RuntimeError) as err:
            item.error = str(err) if isinstance(err, DataError) else f"{path}: {err}"
            logger.warning("skipped %s", item.error)
        else:
            item.label, item.probabilities = out["label"], [float(p) for p in out["probabilities"]]
            item.class_name = names[item.label] if item.label < len(names) else str(item.label)
            item.partition = out.get("partition")
        results.append(item)
        if on_file is not None:
            on_file(item)
    return results


def datalist_files(datalist: str | Path, split: str | None = None) -> list[tuple[Path, dict[str, str]]]:
    """``(image path, metadata)`` of a CSV datalist: an ``image`` column (relative to the CSV's folder) and any
    metadata columns (``modality``, ``site``); with ``split``, only the rows of that ``split`` column value.

    Raises:
        DataError: naming the file: missing, without an ``image`` column, a ``split`` filter without that column,
            or no row left.
    """
    path = Path(datalist)
    rows = read_datalist_rows(path, required=("image",))
    if not rows:
        raise DataError(path, "datalist CSV has no rows")
    if split is not None:
        if "split" not in rows[0]:
            raise DataError(path, f"has no 'split' column to select {split!r} from")
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise DataError(path, f"has no row of split {split!r}")
    return [(path.parent / r["image"], {k: v for k, v in r.items() if k != "image"}) for r in rows]


def predict_to_csv(predictor: Predictor, files: Sequence[tuple[Path, Mapping[str, str]]], out: str | Path,
                   *, progress: bool = False) -> dict[str, int]:
    """Classify ``files`` (:func:`classify_files`) into the CSV ``out``, a row per file as it is done (file, status,
    label, class, one probability column per class, partition, error): a failure is a row, never a lost run.

    Returns:
        ``{"ok": n, "failed": n}``.
    """
    import csv

    from tqdm import tqdm

    names = [label.name for label in predictor.labels]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "failed": 0}
    with out.open("w", newline="", encoding="utf-8") as f, tqdm(total=len(files), disable=not progress,
                                                                 desc="classify", unit="image") as bar:
        writer = csv.writer(f)
        writer.writerow(["file", "status", "label", "class", *(f"p_{n}" for n in names), "partition", "error"])

        def write(item: ClassifiedFile) -> None:
            probs = item.probabilities or [None] * len(names)
            writer.writerow([str(item.path), "failed" if item.error else "ok", item.label, item.class_name,
                             *("" if p is None else f"{p:.6f}" for p in probs), item.partition or "",
                             item.error or ""])
            f.flush()
            counts["failed" if item.error else "ok"] += 1
            bar.update()

        classify_files(predictor, files, on_file=write)
    return counts
