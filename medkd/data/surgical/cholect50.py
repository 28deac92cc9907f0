# SPDX-License-Identifier: Apache-2.0
"""CholecT50 (Nwoye et al., Rendezvous, MedIA 2022): 1-fps frames and action-triplet labels in one JSON per video.

Layout (spec ``surgfutr.md`` §5)::

    <root>/videos/VIDxx/000000.png, 000001.png, ...    # 1 fps, frame id = second
    <root>/labels/VIDxx.json

A label file holds ``video``, ``fps``, ``num_frames``, ``categories`` (``triplet``, ``instrument``, ``verb``,
``target``, ``phase``; each maps id -> name) and ``annotations``, which maps each frame id to a list of 15-vectors
(-1 = absent)::

    [triplet, instrument, instrument score, x, y, w, h, verb, target, target score, x, y, w, h, phase]

:func:`read_cholect50_video` turns them into per-second multi-hot arrays (100 triplets, 6 instruments, 10 verbs, 15
targets in the release; the counts come from ``categories``) and one phase per second.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, write_synthetic_cholect50
    >>> cfg = SyntheticSurgicalConfig(n_videos=1, duration=(36, 36), height=16, width=16)
    >>> root = write_synthetic_cholect50(tempfile.mkdtemp(), cfg)
    >>> video = read_cholect50(root)[0]
    >>> video.name, video.num_seconds, video.labels["instrument"].shape, video.read_frames(stop=2).shape
    ('VID01', 36, (36, 6), (2, 16, 16, 3))
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkd.data.surgical.video import SurgicalVideo
from medkd.data.json_file import read_json_object
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic

__all__ = [
    "CHOLECT50_CATEGORIES",
    "CHOLECT50_VECTOR_FIELDS",
    "CholecT50Labels",
    "cholect50_name",
    "cholect50_files",
    "list_cholect50_videos",
    "read_cholect50_labels",
    "read_cholect50_video",
    "read_cholect50",
    "write_cholect50_labels",
]

logger = logging.getLogger(__name__)

#: the ``categories`` of a label file, in the order of the per-second arrays
CHOLECT50_CATEGORIES: tuple[str, ...] = ("triplet", "instrument", "verb", "target", "phase")
#: the fields of one annotation vector
CHOLECT50_VECTOR_FIELDS: tuple[str, ...] = (
    "triplet", "instrument", "instrument_score", "instrument_x", "instrument_y", "instrument_w", "instrument_h",
    "verb", "target", "target_score", "target_x", "target_y", "target_w", "target_h", "phase",
)  # fmt: skip
_COLUMN = {"triplet": 0, "instrument": 1, "verb": 7, "target": 8, "phase": 14}
_NAME = re.compile(r"^VID(\d+)$")
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


def cholect50_name(video: int | str) -> str:
    """The video id: ``1`` -> ``VID01``, ``111`` -> ``VID111``; a string is returned as given.

    Example:
        >>> cholect50_name(6), cholect50_name(111), cholect50_name("VID12")
        ('VID06', 'VID111', 'VID12')
    """
    return video if isinstance(video, str) else f"VID{int(video):02d}"


def cholect50_files(root: str | Path, video: int | str) -> tuple[Path, Path]:
    """``(frame folder, label file)`` of one video.

    Example:
        >>> [p.as_posix() for p in cholect50_files("t50", 1)]
        ['t50/videos/VID01', 't50/labels/VID01.json']
    """
    root, name = Path(root), cholect50_name(video)
    return root / "videos" / name, root / "labels" / f"{name}.json"


def list_cholect50_videos(root: str | Path) -> list[str]:
    """The ids of ``<root>/labels/VIDxx.json``, by number.

    Raises:
        DataError: if the folder is missing or holds no ``VIDxx.json``.
    """
    folder = Path(root) / "labels"
    if not folder.is_dir():
        raise DataError(folder, "no labels folder (expected the CholecT50 layout labels/VIDxx.json)")
    names = [p.stem for p in folder.glob("VID*.json") if _NAME.match(p.stem)]
    if not names:
        raise DataError(folder, "holds no VIDxx.json label file")
    return sorted(names, key=lambda n: int(_NAME.match(n).group(1)))  # type: ignore[union-attr]


@dataclass(frozen=True)
class CholecT50Labels:
    """One CholecT50 label file, per second.

    Attributes:
        path: the file.
        video: its ``video`` field.
        fps: its ``fps`` field (1).
        num_frames: ``N``, its ``num_frames`` field (= the annotated frames 0 .. N-1).
        class_names: names per category (:data:`CHOLECT50_CATEGORIES`), index = id.
        labels: ``phase`` int64 ``(N,)``; ``triplet``, ``instrument``, ``verb``, ``target`` uint8 multi-hot ``(N, K)``.
    """

    path: Path
    video: Any
    fps: float
    num_frames: int
    class_names: Mapping[str, tuple[str, ...]]
    labels: Mapping[str, np.ndarray]


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, "label file not found")
    doc = read_json_object(path)
    missing = [k for k in ("video", "fps", "num_frames", "categories", "annotations") if k not in doc]
    if missing:
        raise DataError(path, f"missing key(s) {', '.join(map(repr, missing))}")
    return doc


def _categories(path: Path, doc: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    cats = doc["categories"]
    if not isinstance(cats, dict):
        raise DataError(path, f"'categories' must be an object, got {type(cats).__name__}")
    out: dict[str, tuple[str, ...]] = {}
    for key in CHOLECT50_CATEGORIES:
        if key not in cats:
            raise DataError(path, f"'categories' lacks {key!r} (expected {list(CHOLECT50_CATEGORIES)})")
        entry = cats[key]
        if isinstance(entry, list):
            entry = {str(i): name for i, name in enumerate(entry)}
        if not isinstance(entry, dict) or not entry:
            raise DataError(path, f"categories.{key} must be a non-empty object id -> name")
        try:
            by_id = {int(k): v for k, v in entry.items()}
        except ValueError:
            raise DataError(path, f"categories.{key} has a non-integer id among {list(entry)[:5]}") from None
        if sorted(by_id) != list(range(len(entry))):
            raise DataError(path, f"categories.{key} ids must be 0 .. {len(entry) - 1}, got {sorted(by_id)[:8]}")
        out[key] = tuple(str(by_id[i]) for i in range(len(entry)))
    return out


def _positive_number(path: Path, doc: dict[str, Any], key: str) -> float:
    value = doc[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataError(path, f"{key!r} must be a positive number, got {value!r:.40}")
    return float(value)


def read_cholect50_labels(path: str | Path) -> CholecT50Labels:
    """Read and check one ``labels/VIDxx.json``.

    Args:
        path: the label file.

    Returns:
        The :class:`CholecT50Labels`.

    Raises:
        DataError: naming the file (and the frame), for missing or broken JSON, a missing key, categories whose ids
            are not 0 .. K-1, ``fps`` other than 1, ``annotations`` whose frame ids are not 0 .. num_frames-1, a
            vector that is not 15 numbers, an id outside its category, or a frame without a phase or with two.

    Example:
        >>> import tempfile, pathlib
        >>> cats = {k: {"0": k + "0", "1": k + "1"} for k in CHOLECT50_CATEGORIES}
        >>> doc = {"video": 1, "fps": 1, "num_frames": 2, "categories": cats,
        ...        "annotations": {"0": [[1, 0, 1, -1, -1, -1, -1, 1, 0, 1, -1, -1, -1, -1, 0]],
        ...                        "1": [[-1] * 14 + [1]]}}
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "VID01.json"
        >>> _ = p.write_text(json.dumps(doc))
        >>> labels = read_cholect50_labels(p)
        >>> labels.labels["phase"].tolist(), labels.labels["triplet"].tolist()
        ([0, 1], [[0, 1], [0, 0]])
    """
    path = Path(path)
    doc = _load(path)
    names = _categories(path, doc)
    fps = _positive_number(path, doc, "fps")
    if fps != 1:
        raise DataError(path, f"'fps' is {fps:g}; CholecT50 frames and labels are at 1 fps")
    n = doc["num_frames"]
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise DataError(path, f"'num_frames' must be a positive integer, got {n!r:.40}")
    annotations = doc["annotations"]
    if not isinstance(annotations, dict):
        raise DataError(path, f"'annotations' must be an object frame id -> vectors, got {type(annotations).__name__}")
    try:
        by_frame = {int(k): v for k, v in annotations.items()}
    except ValueError:
        raise DataError(path, "'annotations' has a frame id that is not an integer") from None
    frame_ids = sorted(by_frame)
    if frame_ids != list(range(n)):
        missing = sorted(set(range(n)) - set(frame_ids))
        extra = sorted(set(frame_ids) - set(range(n)))
        what = f"lacks frame(s) {missing[:5]}" if missing else f"has frame(s) {extra[:5]} beyond num_frames = {n}"
        raise DataError(path, f"'annotations' {what}; expected frames 0 .. {n - 1}")

    rows: list[list[Any]] = []
    owner: list[int] = []
    for frame in range(n):
        vectors = by_frame[frame]
        if not isinstance(vectors, list):
            raise DataError(path, f"annotations[{frame}] must be a list of 15-vectors")
        for vector in vectors:
            if (not isinstance(vector, list) or len(vector) != len(CHOLECT50_VECTOR_FIELDS)
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector)):
                raise DataError(path, f"annotations[{frame}]: each entry must be 15 numbers, got {vector!r:.80}")
            rows.append(vector)
            owner.append(frame)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(CHOLECT50_VECTOR_FIELDS))
    frames = np.asarray(owner, dtype=np.int64)

    labels: dict[str, np.ndarray] = {}
    for key in CHOLECT50_CATEGORIES:
        ids = table[:, _COLUMN[key]]
        k = len(names[key])
        bad = np.flatnonzero((ids != np.round(ids)) | (ids < -1) | (ids >= k))
        if bad.size:
            i = int(bad[0])
            raise DataError(path, f"annotations[{int(frames[i])}]: {key} id {ids[i]:g} is outside 0 .. {k - 1} "
                                  f"(or -1 for absent)")  # fmt: skip
        ids = ids.astype(np.int64)
        present = ids >= 0
        if key == "phase":
            phase = np.full(n, -1, dtype=np.int64)
            phase[frames[present]] = ids[present]
            clash = np.flatnonzero(present & (phase[frames] != ids))
            if clash.size:
                raise DataError(path, f"annotations[{int(frames[clash[0]])}] gives two phases")
            if (phase < 0).any():
                raise DataError(path, f"annotations[{int(np.argmax(phase < 0))}] gives no phase")
            labels[key] = phase
        else:
            hot = np.zeros((n, k), dtype=np.uint8)
            hot[frames[present], ids[present]] = 1
            labels[key] = hot
    return CholecT50Labels(path, doc["video"], fps, n, names, labels)


def _frame_files(folder: Path, label_path: Path) -> tuple[Path, ...]:
    if not folder.is_dir():
        raise DataError(folder, f"frame folder not found (for {label_path.name})")
    files = {}
    for p in folder.iterdir():
        if p.suffix.lower() in _FRAME_SUFFIXES and p.stem.isdigit():
            files[int(p.stem)] = p
    if not files:
        raise DataError(folder, "holds no frame images (000000.png, 000001.png, ...)")
    ids = sorted(files)
    if ids != list(range(len(ids))):
        gap = next(i for i, v in enumerate(ids) if v != i)
        raise DataError(folder / f"{gap:06d}.png", f"frame image missing (the folder has frames up to {ids[-1]})")
    return tuple(files[i] for i in ids)


def read_cholect50_video(root: str | Path, video: int | str) -> SurgicalVideo:
    """Read one CholecT50 video: its label file and the list of its 1-fps frames.

    Args:
        root: the dataset folder (``videos/``, ``labels/``).
        video: number (``1``) or id (``VID01``).

    Returns:
        A :class:`~medkd.data.surgical.video.SurgicalVideo` with ``labels`` ``phase``, ``triplet``, ``instrument``,
        ``verb``, ``target`` and the frame images in ``frame_files``.

    Raises:
        DataError: naming the file: see :func:`read_cholect50_labels`; a missing frame folder or frame, or a
            ``num_frames`` that is neither the frame count nor one less (a last partial second without labels).
    """
    folder, label_path = cholect50_files(root, video)
    labels = read_cholect50_labels(label_path)
    files = _frame_files(folder, label_path)
    if labels.num_frames not in (len(files), len(files) - 1):
        raise DataError(label_path, f"num_frames = {labels.num_frames}, but {folder.name}/ holds {len(files)} "
                                    f"frames; only the last (partial) second may lack labels")  # fmt: skip
    name = cholect50_name(video)
    number = _NAME.match(name)
    if number and isinstance(labels.video, int) and labels.video != int(number.group(1)):
        logger.warning("%s: its 'video' field is %d, its name says %s", label_path, labels.video, name)
    n = labels.num_frames
    return SurgicalVideo(name=name, source=folder, num_seconds=n, labels=dict(labels.labels),
                         class_names=dict(labels.class_names), dataset="cholect50", frame_files=files[:n],
                         source_fps=1.0)


def read_cholect50(root: str | Path, videos: Sequence[int | str] | None = None) -> list[SurgicalVideo]:
    """Read CholecT50 videos (default: every ``labels/VIDxx.json``), as :func:`read_cholect50_video`.

    Raises:
        DataError: naming the first bad file.
    """
    names = list_cholect50_videos(root) if videos is None else [cholect50_name(v) for v in videos]
    records = [read_cholect50_video(root, name) for name in names]
    logger.info("read CholecT50 %s: %d videos, %d s", root, len(records), sum(len(r) for r in records))
    return records


def write_cholect50_labels(
    path: str | Path,
    *,
    video: int,
    annotations: Mapping[int, Sequence[Sequence[float]]],
    categories: Mapping[str, Sequence[str]],
    fps: int = 1,
) -> Path:
    """Write one label file (atomically): ``annotations`` maps frame 0 .. N-1 to its 15-vectors.

    Example:
        >>> import tempfile, pathlib
        >>> cats = {k: [k + "0"] for k in CHOLECT50_CATEGORIES}
        >>> p = write_cholect50_labels(pathlib.Path(tempfile.mkdtemp()) / "VID01.json", video=1,
        ...                            annotations={0: [[-1] * 14 + [0]]}, categories=cats)
        >>> read_cholect50_labels(p).num_frames
        1
    """
    doc = {
        "video": int(video),
        "fps": fps,
        "num_frames": len(annotations),
        "categories": {key: {str(i): str(name) for i, name in enumerate(categories[key])}
                       for key in CHOLECT50_CATEGORIES},
        "annotations": {str(int(frame)): [list(v) for v in vectors] for frame, vectors in sorted(annotations.items())},
    }
    return write_text_atomic(path, json.dumps(doc, separators=(",", ":")))
