# SPDX-License-Identifier: Apache-2.0
"""Per-label volumes of a segmentation in millilitres, as table rows and as CSV with a disclaimer line.

Example:
    >>> from medkd.io.labels import labels_from_names
    >>> mask = np.zeros((4, 10, 10), np.uint8); mask[:2, :5, :5] = 1; mask[2:, :, :] = 2
    >>> rows = label_volumes(mask, labels_from_names(["bg", "RV", "LV"]), (2.0, 1.0, 1.0))
    >>> [(r["label"], r["voxels"], r["volume_ml"], r["share_pct"]) for r in rows]
    [('RV', 50, 0.1, 20.0), ('LV', 200, 0.4, 80.0)]
    >>> volumes_csv(rows).splitlines()[:2]
    ['# Research use only. Not for diagnostic use.', 'label,value,voxels,volume_ml,share_pct']
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from medkd.io.labels import LabelInfo

__all__ = ["DISCLAIMER", "VOLUME_COLUMNS", "label_counts", "label_volumes", "volumes_csv"]

DISCLAIMER = "Research use only. Not for diagnostic use."

#: keys of each :func:`label_volumes` row, in CSV column order
VOLUME_COLUMNS = ("label", "value", "voxels", "volume_ml", "share_pct")

#: voxels counted per np.bincount call: bincount widens its input to int64, so a 512x512x600 uint8 mask would need
#: 1.2 GB at once; in chunks it needs 128 MB
_CHUNK = 1 << 24


def label_counts(mask: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Voxel count of every label value ``0 .. max`` (at least ``minlength`` entries), by ``np.bincount``.

    Raises:
        ValueError: the mask has negative or non-integer values.
    """
    flat = np.asarray(mask).reshape(-1)
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if not np.issubdtype(flat.dtype, np.integer):
        if flat.size and not np.array_equal(flat, np.rint(flat)):
            raise ValueError("a label map needs integer values")
        flat = flat.astype(np.int64)
    if flat.size and flat.min() < 0:
        raise ValueError(f"a label map needs non-negative values, got minimum {flat.min()}")
    top = int(flat.max()) + 1 if flat.size else 0
    counts = np.zeros(max(top, minlength), dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):  # chunks of 16M voxels, not voxels
        part = np.bincount(flat[start : start + _CHUNK], minlength=top)
        counts[: part.size] += part
    return counts


def label_volumes(
    mask: np.ndarray, labels: Sequence[LabelInfo], spacing_zyx: Sequence[float], *, ndigits: int = 3
) -> list[dict[str, Any]]:
    """One row per label: ``label`` (name), ``value``, ``voxels``, ``volume_ml``, ``share_pct``.

    Args:
        mask: ``(z, y, x)`` label map (0 = background).
        labels: the model's labels; each gets a row, with zeros when it is absent from the mask.
        spacing_zyx: voxel size in mm ``(dz, dy, dx)`` (one entry per mask axis).
        ndigits: decimals of ``volume_ml``.

    Returns:
        Rows in label order. ``share_pct`` is the label's percentage of all non-zero voxels (including values no
        label lists), rounded to 2 decimals; 0 when the mask is empty.

    Raises:
        ValueError: spacing does not match the mask's dimensions or is not positive; the mask is not a label map.
    """
    spacing = tuple(float(s) for s in spacing_zyx)
    mask = np.asarray(mask)
    if len(spacing) != mask.ndim or not all(s > 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing_zyx)} must be {mask.ndim} positive numbers for a mask of shape "
                         f"{mask.shape}")
    counts = label_counts(mask, minlength=max([int(l.value) for l in labels], default=0) + 1)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    foreground = int(counts[1:].sum())
    return [
        {
            "label": label.name,
            "value": int(label.value),
            "voxels": int(counts[label.value]),
            "volume_ml": round(int(counts[label.value]) * voxel_ml, ndigits),
            "share_pct": round(100.0 * int(counts[label.value]) / foreground, 2) if foreground else 0.0,
        }
        for label in labels
    ]


def _cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (a label named ``=cmd()``) with a leading apostrophe."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def volumes_csv(rows: Sequence[dict[str, Any]], *, disclaimer: str = DISCLAIMER) -> str:
    """CSV text of :func:`label_volumes` rows, after a ``# disclaimer`` comment line.

    Columns are :data:`VOLUME_COLUMNS` first, then any other keys in first-seen order; missing cells are empty.
    """
    columns = list(VOLUME_COLUMNS) + [k for row in rows for k in row if k not in VOLUME_COLUMNS]
    columns = list(dict.fromkeys(columns))
    if rows:
        columns = [c for c in columns if any(c in row for row in rows)]
    out = io.StringIO()
    for line in disclaimer.splitlines() or [""]:
        out.write(f"# {line}\n")
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return out.getvalue()
