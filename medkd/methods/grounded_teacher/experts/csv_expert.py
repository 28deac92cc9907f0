# SPDX-License-Identifier: Apache-2.0
"""The ``csv`` expert: offline expert boxes (e.g. BiomedParse output) from a CSV file (spec section 3).

Columns ``ImageName,Prompt,MeanConfidence,MaxConfidence,X,Y,W,H``; boxes in original pixels from
``cv2.boundingRect`` (``x2 = X + W``); a row with ``NA`` (or empty) ``X,Y,W,H`` says the image has no box. Rows are
joined to images on the **basename** of ``ImageName``, never by position (the reference's ``zip`` misaligns).

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "expert.csv"
    >>> _ = path.write_text("ImageName,Prompt,MeanConfidence,MaxConfidence,X,Y,W,H\\n"
    ...                     "a.png,mal,0.7,0.9,2,3,10,5\\nb.png,mal,NA,NA,NA,NA,NA,NA\\n")
    >>> expert = CsvExpert(path, ["imgs/a.png", "imgs/b.png"], score_threshold=0.5)
    >>> expert.predict(np.zeros((32, 32), np.float32), "imgs/a.png").boxes.tolist()
    [[2.0, 3.0, 12.0, 8.0]]
    >>> len(expert.predict(np.zeros((32, 32), np.float32), "b.png"))
    0
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from medkd.errors import DataError
from medkd.methods.grounded_teacher.experts.base import EXPERTS, ExpertBoxes

__all__ = ["CsvExpert", "CSV_COLUMNS", "read_expert_csv"]

logger = logging.getLogger(__name__)

CSV_COLUMNS = ("ImageName", "Prompt", "MeanConfidence", "MaxConfidence", "X", "Y", "W", "H")
_NA = {"", "na", "nan", "none", "null", "n/a"}
_BOX_COLUMNS = ("X", "Y", "W", "H")


def _basename(name: str | PathLike[str]) -> str:
    # accept both separators: the CSV may come from another OS
    return PurePath(str(name).replace("\\", "/")).name


def _is_na(value: str | None) -> bool:
    return value is None or value.strip().lower() in _NA


def _number(path: Path, line: int, column: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise DataError(path, f"line {line}: column {column} is not a number ({value.strip()[:20]!r})") from None
    if not math.isfinite(number):
        raise DataError(path, f"line {line}: column {column} is not finite")
    return number


def read_expert_csv(
    csv_path: str | PathLike[str],
    image_names: Iterable[str | PathLike[str]],
    *,
    score_column: str = "MaxConfidence",
    image_sizes: Mapping[str, tuple[int, int]] | None = None,
    tolerance: float = 1.0,
) -> dict[str, ExpertBoxes]:
    """Read an expert CSV into ``{basename: ExpertBoxes}`` (class-agnostic, prompts kept), one entry per image.

    Args:
        csv_path: the CSV.
        image_names: the images the CSV must describe (paths or names; joined on the basename).
        score_column: the score column (``MaxConfidence`` as the reference, or ``MeanConfidence``).
        image_sizes: optional ``{name or basename: (height, width)}``; boxes beyond the image by more than
            ``tolerance`` pixels are an error, boxes within it are clipped.
        tolerance: see ``image_sizes``.

    Raises:
        DataError: naming the file: unreadable, missing columns, unparsable numbers, partial boxes, scores
            outside [0, 1], images not in ``image_names`` (a few are listed), ambiguous basenames, boxes outside
            the image.
    """
    path = Path(csv_path)
    names = [_basename(n) for n in image_names]
    duplicated = {n for n, count in Counter(names).items() if count > 1}
    known = set(names)
    sizes = {_basename(k): v for k, v in (image_sizes or {}).items()}
    if score_column not in ("MaxConfidence", "MeanConfidence"):
        raise DataError(path, f"score column must be MaxConfidence or MeanConfidence, got {score_column!r}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataError(path, f"missing columns {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
            reader.fieldnames = header
            rows = [(i + 2, row) for i, row in enumerate(reader)]
    except OSError as err:
        raise DataError(path, f"cannot read the expert CSV ({err.strerror or err})") from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(path, f"not a readable CSV ({type(err).__name__})") from None

    unknown: list[str] = []
    boxes: dict[str, list[list[float]]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    prompts: dict[str, list[str]] = defaultdict(list)
    degenerate = 0
    for line, row in rows:
        name = _basename(row.get("ImageName") or "")
        if not name:
            raise DataError(path, f"line {line}: empty ImageName")
        if name not in known:
            unknown.append(name)
            continue
        if name in duplicated:
            raise DataError(path, f"line {line}: image name {name!r} matches several images (basename join)")
        boxes.setdefault(name, [])
        values = [row.get(c) for c in _BOX_COLUMNS]
        na = [_is_na(v) for v in values]
        if all(na):
            continue
        if any(na):
            raise DataError(path, f"line {line}: a box needs all of X, Y, W, H (some are NA)")
        x, y, w, h = (_number(path, line, c, v or "") for c, v in zip(_BOX_COLUMNS, values))
        raw_score = row.get(score_column)
        if _is_na(raw_score):
            raise DataError(path, f"line {line}: a box without a score in {score_column}")
        score = _number(path, line, score_column, raw_score or "")
        if not 0.0 <= score <= 1.0:
            raise DataError(path, f"line {line}: {score_column} {score:g} is outside [0, 1]")
        x1, y1, x2, y2 = x, y, x + w, y + h
        if name in sizes:
            height, width = sizes[name]
            if x1 < -tolerance or y1 < -tolerance or x2 > width + tolerance or y2 > height + tolerance:
                raise DataError(
                    path, f"line {line}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the {width} x {height} image"
                )
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 <= x1 or y2 <= y1:
            degenerate += 1
            continue
        boxes[name].append([x1, y1, x2, y2])
        scores[name].append(score)
        prompts[name].append((row.get("Prompt") or "").strip())
    if unknown:
        listed = ", ".join(sorted(set(unknown))[:5])
        more = len(set(unknown)) - 5
        raise DataError(
            path,
            f"{len(set(unknown))} image name(s) are not in the image list: {listed}"
            + (f" and {more} more" if more > 0 else ""),
        )
    if degenerate:
        logger.warning("%s: %d degenerate expert box(es) (zero width or height) dropped", path, degenerate)
    result: dict[str, ExpertBoxes] = {}
    for name in boxes:
        n = len(boxes[name])
        result[name] = ExpertBoxes(
            np.asarray(boxes[name], np.float32).reshape(n, 4),
            np.asarray(scores[name], np.float32),
            np.full(n, -1, np.int64),
            tuple(prompts[name]),
        )
    return result


class CsvExpert:
    """An expert that looks boxes up in a CSV (see the module docstring).

    Args:
        csv_path: the CSV file.
        image_names: the target images it must describe (paths or names).
        score_column: ``MaxConfidence`` (default, as the reference) or ``MeanConfidence``.
        score_threshold: ``tau_e``; boxes with a score at or below it are dropped (reference 0.8).
        image_sizes: optional ``{name: (height, width)}`` to check the boxes against.
        tolerance: pixels a box may overshoot the image before it is an error (clipped otherwise).

    Raises:
        DataError: see :func:`read_expert_csv`.
    """

    def __init__(
        self,
        csv_path: str | PathLike[str],
        image_names: Sequence[str | PathLike[str]],
        *,
        score_column: str = "MaxConfidence",
        score_threshold: float = 0.8,
        image_sizes: Mapping[str, tuple[int, int]] | None = None,
        tolerance: float = 1.0,
    ) -> None:
        self.path = Path(csv_path)
        self.score_threshold = float(score_threshold)
        self.table = read_expert_csv(
            csv_path, image_names, score_column=score_column, image_sizes=image_sizes, tolerance=tolerance
        )
        covered = len(self.table)
        total = len({_basename(n) for n in image_names})
        if covered < total:
            logger.info("%s: %d of %d images have no rows (no expert boxes)", self.path, total - covered, total)

    def predict(self, image: np.ndarray, image_id: str, prompt_boxes: Any = None) -> ExpertBoxes:
        """The CSV's boxes for ``image_id`` (joined on its basename) with a score above the threshold."""
        found = self.table.get(_basename(image_id))
        if found is None:
            return ExpertBoxes.empty()
        return found.select(found.scores > self.score_threshold)


@EXPERTS.register("csv")
def _csv_expert(csv_path: str | PathLike[str], image_names: Sequence[str | PathLike[str]], **kwargs: Any) -> CsvExpert:
    return CsvExpert(csv_path, image_names, **kwargs)
