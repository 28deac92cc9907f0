# SPDX-License-Identifier: Apache-2.0
"""Cholec80 (Twinanda et al., EndoNet, TMI 2017): 25-fps videos, per-frame phases, tools every 25th frame.

Layout (spec ``surgfutr.md`` §5)::

    <root>/videos/videoNN.mp4                          # 25 fps
    <root>/phase_annotations/videoNN-phase.txt         # "Frame<TAB>Phase", one row per 25-fps frame, phase names
    <root>/tool_annotations/videoNN-tool.txt           # "Frame<TAB>Grasper<TAB>...<TAB>SpecimenBag", rows 0, 25, 50...

The readers align both files to 1 fps by keeping ``frame % 25 == 0``: second ``t`` has the phase of frame ``25 t``
and the tools of row ``t``, and frame ``t`` of :meth:`~medkd.data.surgical.video.SurgicalVideo.frames` is the video
frame decoded at ``t`` s. Phase indices follow :data:`CHOLEC80_PHASES` (pinned: some code reorders them). The
annotations may lack the video's last, partial second; any other disagreement in length is an error.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, write_synthetic_cholec80
    >>> cfg = SyntheticSurgicalConfig(n_videos=1, duration=(36, 36), height=16, width=16, motion_fps=1)
    >>> root = write_synthetic_cholec80(tempfile.mkdtemp(), cfg)
    >>> video = read_cholec80(root)[0]
    >>> video.name, video.num_seconds, video.labels["phase"].shape, video.labels["tool"].shape
    ('video01', 36, (36,), (36, 7))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medkd.data.surgical.video import SurgicalKeys, SurgicalVideo, probe_video
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic

__all__ = [
    "CHOLEC80_PHASES",
    "CHOLEC80_TOOLS",
    "CHOLEC80_FPS",
    "cholec80_name",
    "cholec80_files",
    "list_cholec80_videos",
    "read_phase_annotation",
    "read_tool_annotation",
    "read_cholec80_video",
    "read_cholec80",
    "write_phase_annotation",
    "write_tool_annotation",
]

logger = logging.getLogger(__name__)

#: phase names by index (the order of the TeCNO / Trans-SVNet code; the annotation files hold the names)
CHOLEC80_PHASES: tuple[str, ...] = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
#: tool columns of the tool annotation files, in their order
CHOLEC80_TOOLS: tuple[str, ...] = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
#: frame rate of the videos and of the ``Frame`` column
CHOLEC80_FPS = 25

_NAME = re.compile(r"^video(\d+)$")


def cholec80_name(video: int | str) -> str:
    """The video id: ``1`` -> ``video01``; a string is returned as given.

    Example:
        >>> cholec80_name(7), cholec80_name(80), cholec80_name("video12")
        ('video07', 'video80', 'video12')
    """
    return video if isinstance(video, str) else f"video{int(video):02d}"


def cholec80_files(root: str | Path, video: int | str) -> tuple[Path, Path, Path]:
    """``(video file, phase annotation, tool annotation)`` of one video.

    Example:
        >>> [p.as_posix() for p in cholec80_files("c80", 3)]
        ['c80/videos/video03.mp4', 'c80/phase_annotations/video03-phase.txt', 'c80/tool_annotations/video03-tool.txt']
    """
    root, name = Path(root), cholec80_name(video)
    return (root / "videos" / f"{name}.mp4", root / "phase_annotations" / f"{name}-phase.txt",
            root / "tool_annotations" / f"{name}-tool.txt")  # fmt: skip


def list_cholec80_videos(root: str | Path) -> list[str]:
    """The ids of ``<root>/videos/videoNN.mp4``, by number.

    Raises:
        DataError: if the folder is missing or holds no ``videoNN.mp4``.
    """
    folder = Path(root) / "videos"
    if not folder.is_dir():
        raise DataError(folder, "no videos folder (expected the Cholec80 layout videos/videoNN.mp4)")
    names = [p.stem for p in folder.glob("video*.mp4") if _NAME.match(p.stem)]
    if not names:
        raise DataError(folder, "holds no videoNN.mp4 file")
    return sorted(names, key=lambda n: int(_NAME.match(n).group(1)))  # type: ignore[union-attr]


def _rows(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header tokens and the tokens of every non-empty row (whitespace-separated)."""
    if not path.is_file():
        raise DataError(path, f"{what} annotation file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read: {type(err).__name__}: {err}") from None
    rows = [line.split() for line in lines]
    rows = [row for row in rows if row]
    if not rows:
        raise DataError(path, f"{what} annotation file is empty")
    return rows[0], rows[1:]


def _int_column(path: Path, rows: list[list[str]], column: int) -> np.ndarray:
    try:
        return np.asarray([row[column] for row in rows], dtype=np.int64)
    except ValueError:
        for i, row in enumerate(rows):
            if not row[column].lstrip("-").isdigit():
                raise DataError(path, f"line {i + 2}: {row[column]!r} is not an integer") from None
        raise


def _check_frames(path: Path, frames: np.ndarray, step: int) -> None:
    expected = np.arange(len(frames), dtype=np.int64) * step
    bad = np.flatnonzero(frames != expected)
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"line {i + 2}: frame {int(frames[i])}, expected {int(expected[i])} (rows must cover "
                              f"frames 0, {step}, {2 * step}, ... in order)")  # fmt: skip


def read_phase_annotation(path: str | Path, phases: Sequence[str] = CHOLEC80_PHASES) -> np.ndarray:
    """Read ``videoNN-phase.txt``: the phase index of every 25-fps frame.

    Args:
        path: the file (header ``Frame Phase``, then ``<frame> <name>`` rows for frames 0, 1, 2, ...).
        phases: the phase names, index = position.

    Returns:
        int64 ``(M,)``, one entry per frame.

    Raises:
        DataError: naming the file (and the line), if it is missing, has another header, a row without two fields,
            frames out of order, or a phase name not in ``phases``.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "video01-phase.txt"
        >>> _ = p.write_text("Frame\\tPhase\\n0\\tPreparation\\n1\\tCalotTriangleDissection\\n")
        >>> read_phase_annotation(p).tolist()
        [0, 1]
    """
    path = Path(path)
    header, rows = _rows(path, "phase")
    if [h.lower() for h in header] != ["frame", "phase"]:
        raise DataError(path, f"header must be 'Frame<TAB>Phase', got {' '.join(header)!r:.80}")
    if not rows:
        raise DataError(path, "phase annotation file has a header but no rows")
    bad = [i for i, row in enumerate(rows) if len(row) != 2]
    if bad:
        raise DataError(path, f"line {bad[0] + 2}: expected 2 fields (frame, phase), got {len(rows[bad[0]])}")
    _check_frames(path, _int_column(path, rows, 0), 1)
    names, first, inverse = np.unique(np.asarray([row[1] for row in rows]), return_index=True, return_inverse=True)
    lookup = {name: k for k, name in enumerate(phases)}
    unknown = [(int(first[j]), str(name)) for j, name in enumerate(names) if name not in lookup]
    if unknown:
        line, name = min(unknown)
        others = sorted({n for _, n in unknown} - {name})
        more = f" (also {', '.join(map(repr, others[:5]))})" if others else ""
        raise DataError(path, f"line {line + 2}: unknown phase name {name!r}{more}; expected one of {list(phases)}")
    return np.asarray([lookup[str(n)] for n in names], dtype=np.int64)[inverse.reshape(-1)]


def read_tool_annotation(
    path: str | Path, tools: Sequence[str] = CHOLEC80_TOOLS, *, step: int = CHOLEC80_FPS
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``videoNN-tool.txt``: tool presence every ``step``-th frame.

    Args:
        path: the file (header ``Frame`` + tool names, then rows for frames 0, 25, 50, ... of 0/1 values).
        tools: the tool names, column = position; the header may list them in another order.
        step: frames between rows (25: one row a second).

    Returns:
        ``(frames, presence)``: int64 ``(K,)`` frame numbers and uint8 ``(K, len(tools))`` in {0, 1}.

    Raises:
        DataError: naming the file (and the line), if it is missing, its header lacks or adds a tool, a row has the
            wrong number of fields, a value is not 0/1, or the frames are not 0, step, 2 step, ...

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "video01-tool.txt"
        >>> _ = p.write_text("Frame\\t" + "\\t".join(CHOLEC80_TOOLS) + "\\n0\\t1\\t0\\t1\\t0\\t0\\t0\\t0\\n")
        >>> frames, presence = read_tool_annotation(p)
        >>> frames.tolist(), presence.tolist()
        ([0], [[1, 0, 1, 0, 0, 0, 0]])
    """
    path = Path(path)
    header, rows = _rows(path, "tool")
    if not header or header[0].lower() != "frame":
        raise DataError(path, f"header must start with 'Frame', got {' '.join(header)!r:.80}")
    columns = header[1:]
    if sorted(columns) != sorted(tools) or len(set(columns)) != len(columns):
        raise DataError(path, f"header lists tools {columns}, expected {list(tools)}")
    if not rows:
        raise DataError(path, "tool annotation file has a header but no rows")
    bad = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if bad:
        raise DataError(path, f"line {bad[0] + 2}: expected {len(header)} fields, got {len(rows[bad[0]])}")
    frames = _int_column(path, rows, 0)
    _check_frames(path, frames, step)
    values = np.stack([_int_column(path, rows, c) for c in range(1, len(header))], axis=1)
    outside = np.argwhere((values != 0) & (values != 1))
    if outside.size:
        i, c = (int(v) for v in outside[0])
        raise DataError(path, f"line {i + 2}: {columns[c]} = {int(values[i, c])}, expected 0 or 1")
    order = [columns.index(name) for name in tools]
    return frames, values[:, order].astype(np.uint8)


def _check_length(path: Path, what: str, seconds: int, full: int, total: int, video: Path, detail: str) -> None:
    """``seconds`` (annotated, at 1 fps) must be the video's ``total`` or, when its last second is partial, ``full``."""
    if not full <= seconds <= total:
        allowed = f"{total} s" if full == total else f"{full} or {total} s (its last second is partial)"
        raise DataError(path, f"{what} covers {seconds} s at 1 fps, but {video.name} has {detail}: expected "
                              f"{allowed}; only the video's last partial second may lack annotations")  # fmt: skip


def read_cholec80_video(
    root: str | Path, video: int | str, *, tools: bool = True, phases: Sequence[str] = CHOLEC80_PHASES
) -> SurgicalVideo:
    """Read one Cholec80 video's annotations at 1 fps and check them against the video's length.

    Args:
        root: the dataset folder (``videos/``, ``phase_annotations/``, ``tool_annotations/``).
        video: number (``1``) or id (``video01``).
        tools: also read the tool file (``labels["tool"]``); without it the tool file may be absent.
        phases: the phase names, index = position (default :data:`CHOLEC80_PHASES`).

    Returns:
        A :class:`~medkd.data.surgical.video.SurgicalVideo` with ``labels["phase"]`` int64 ``(N,)`` and
        ``labels["tool"]`` uint8 ``(N, 7)``; ``N`` is the annotated seconds (the video's, or one fewer when the
        annotations lack the last partial second).

    Raises:
        DataError: naming the file: a missing video or annotation file, a video OpenCV cannot open, a malformed
            annotation (see :func:`read_phase_annotation`, :func:`read_tool_annotation`), or an annotation whose
            length disagrees with the video's.
    """
    video_path, phase_path, tool_path = cholec80_files(root, video)
    name = cholec80_name(video)
    if not phase_path.is_file():
        raise DataError(phase_path, f"phase annotation file not found (for {video_path.name})")
    if tools and not tool_path.is_file():
        raise DataError(tool_path, f"tool annotation file not found (for {video_path.name})")
    info = probe_video(video_path)
    total = info.num_seconds
    full = int(info.frame_count / info.fps + 1e-9)
    detail = f"{info.frame_count} frames at {info.fps:g} fps ({info.duration:.2f} s)"

    per_frame = read_phase_annotation(phase_path, phases)
    phase = per_frame[::CHOLEC80_FPS]
    _check_length(phase_path, f"phase annotation ({len(per_frame)} frames)", len(phase), full, total, video_path,
                  detail)
    n = len(phase)
    labels = {SurgicalKeys.PHASE.value: phase}
    names = {SurgicalKeys.PHASE.value: tuple(phases)}
    if tools:
        _, presence = read_tool_annotation(tool_path)
        _check_length(tool_path, f"tool annotation ({len(presence)} rows)", len(presence), full, total, video_path,
                      detail)
        n = min(n, len(presence))
        labels[SurgicalKeys.TOOL.value] = presence
        names[SurgicalKeys.TOOL.value] = CHOLEC80_TOOLS
    labels = {key: value[:n] for key, value in labels.items()}
    if n < total:
        logger.debug("%s: the last partial second (%d of %d s) has no annotation and is dropped", video_path, n,
                     total)
    return SurgicalVideo(name=name, source=video_path, num_seconds=n, labels=labels, class_names=names,
                         dataset="cholec80", source_fps=info.fps)


def read_cholec80(
    root: str | Path, videos: Sequence[int | str] | None = None, *, tools: bool = True
) -> list[SurgicalVideo]:
    """Read Cholec80 videos (default: every ``videos/videoNN.mp4``), as :func:`read_cholec80_video`.

    Raises:
        DataError: naming the first bad file.
    """
    names = list_cholec80_videos(root) if videos is None else [cholec80_name(v) for v in videos]
    records = [read_cholec80_video(root, name, tools=tools) for name in names]
    logger.info("read Cholec80 %s: %d videos, %d s at 1 fps", root, len(records), sum(len(r) for r in records))
    return records


def write_phase_annotation(path: str | Path, phase: np.ndarray, phases: Sequence[str] = CHOLEC80_PHASES) -> Path:
    """Write ``videoNN-phase.txt`` from int phase indices, one per 25-fps frame (atomically).

    Example:
        >>> import tempfile, pathlib
        >>> p = write_phase_annotation(pathlib.Path(tempfile.mkdtemp()) / "v-phase.txt", np.array([0, 0, 2]))
        >>> p.read_text().splitlines()
        ['Frame\\tPhase', '0\\tPreparation', '1\\tPreparation', '2\\tClippingCutting']
    """
    names = np.asarray(phases, dtype=object)[np.asarray(phase, dtype=np.int64)]
    body = "".join(f"{i}\t{name}\n" for i, name in enumerate(names))
    return write_text_atomic(path, "Frame\tPhase\n" + body)


def write_tool_annotation(path: str | Path, presence: np.ndarray, *, step: int = CHOLEC80_FPS) -> Path:
    """Write ``videoNN-tool.txt`` from uint8 ``(K, 7)`` presence, one row a second (frames 0, 25, ...; atomically).

    Example:
        >>> import tempfile, pathlib
        >>> p = write_tool_annotation(pathlib.Path(tempfile.mkdtemp()) / "v-tool.txt", np.eye(2, 7, dtype=np.uint8))
        >>> p.read_text().splitlines()[2]
        '25\\t0\\t1\\t0\\t0\\t0\\t0\\t0'
    """
    presence = np.asarray(presence, dtype=np.int64)
    if presence.ndim != 2 or presence.shape[1] != len(CHOLEC80_TOOLS):
        raise ValueError(f"presence must be (K, {len(CHOLEC80_TOOLS)}), got {presence.shape}")
    body = "".join(f"{i * step}\t" + "\t".join(map(str, row)) + "\n" for i, row in enumerate(presence.tolist()))
    return write_text_atomic(path, "Frame\t" + "\t".join(CHOLEC80_TOOLS) + "\n" + body)
