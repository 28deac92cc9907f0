# SPDX-License-Identifier: Apache-2.0
"""Per-label volumes (voxels, mL, share of foreground) and their CSV export with the disclaimer."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from medkd.io.labels import labels_from_names
from medkd.viz import measure
from medkd.viz.measure import DISCLAIMER, label_counts, label_volumes, volumes_csv

LABELS = labels_from_names(["background", "RV", "Myo", "LV"])


def _mask() -> np.ndarray:
    mask = np.zeros((4, 10, 10), np.uint8)
    mask[0, :3, :4] = 1  # 12 voxels
    mask[1:3, :5, :6] = 3  # 60 voxels
    return mask


def test_known_counts_and_spacing_give_millilitres():
    rows = label_volumes(_mask(), LABELS, (2.5, 0.8, 0.8))
    voxel_ml = 2.5 * 0.8 * 0.8 / 1000
    by_name = {r["label"]: r for r in rows}
    assert [r["label"] for r in rows] == ["RV", "Myo", "LV"]
    assert by_name["RV"]["voxels"] == 12 and by_name["LV"]["voxels"] == 60
    assert by_name["RV"]["volume_ml"] == round(12 * voxel_ml, 3)
    assert by_name["LV"]["volume_ml"] == round(60 * voxel_ml, 3)
    assert by_name["RV"]["share_pct"] + by_name["LV"]["share_pct"] == pytest.approx(100.0)
    assert by_name["LV"]["share_pct"] == pytest.approx(100 * 60 / 72, abs=0.01)
    assert by_name["LV"]["value"] == 3


def test_absent_label_is_listed_with_zero():
    myo = label_volumes(_mask(), LABELS, (1, 1, 1))[1]
    assert myo == {"label": "Myo", "value": 2, "voxels": 0, "volume_ml": 0.0, "share_pct": 0.0}


def test_empty_mask_gives_zeros():
    rows = label_volumes(np.zeros((3, 4, 4), np.uint8), LABELS, (1, 1, 1))
    assert len(rows) == len(LABELS)
    assert all(r["voxels"] == 0 and r["volume_ml"] == 0 and r["share_pct"] == 0 for r in rows)


def test_ndigits_and_bool_mask():
    mask = np.zeros((2, 3, 3), bool)
    mask[0, 0, 0] = True
    row = label_volumes(mask, LABELS[:1], (1.0, 1.1, 1.1), ndigits=4)[0]
    assert row["voxels"] == 1 and row["volume_ml"] == round(1.21 / 1000, 4) and row["volume_ml"] != 0


def test_counts_are_chunked_without_changing_the_result(monkeypatch):
    mask = np.random.default_rng(0).integers(0, 5, size=(5, 7, 9)).astype(np.uint16)
    monkeypatch.setattr(measure, "_CHUNK", 17)  # many chunks, a ragged last one
    assert label_counts(mask).tolist() == np.bincount(mask.ravel()).tolist()
    assert label_counts(mask, minlength=8).tolist()[5:] == [0, 0, 0]


@pytest.mark.parametrize(
    "mask, spacing",
    [(np.full((2, 2, 2), -1, np.int16), (1, 1, 1)), (np.full((2, 2, 2), 0.5), (1, 1, 1)),
     (np.zeros((2, 2, 2), np.uint8), (1, 1)), (np.zeros((2, 2, 2), np.uint8), (1, 0, 1))],
)
def test_bad_mask_or_spacing(mask, spacing):
    with pytest.raises(ValueError):
        label_volumes(mask, LABELS, spacing)


def test_csv_has_disclaimer_header_and_rows():
    rows = label_volumes(_mask(), LABELS, (2.5, 0.8, 0.8))
    text = volumes_csv(rows)
    lines = text.splitlines()
    assert lines[0] == f"# {DISCLAIMER}"
    assert lines[1] == "label,value,voxels,volume_ml,share_pct"
    parsed = list(csv.DictReader(io.StringIO("\n".join(lines[1:]))))
    assert [p["label"] for p in parsed] == ["RV", "Myo", "LV"]
    assert [int(p["voxels"]) for p in parsed] == [r["voxels"] for r in rows]
    assert float(parsed[2]["volume_ml"]) == rows[2]["volume_ml"]


def test_csv_custom_disclaimer_extra_columns_and_formula_guard():
    rows = [{"label": "=HYPERLINK(1)", "value": 1, "voxels": 2, "volume_ml": 0.1, "share_pct": 100.0, "case": "a"}]
    lines = volumes_csv(rows, disclaimer="Line one\nLine two").splitlines()
    assert lines[:2] == ["# Line one", "# Line two"]
    assert lines[2].split(",") == ["label", "value", "voxels", "volume_ml", "share_pct", "case"]
    assert lines[3].startswith("'=HYPERLINK")


def test_csv_of_no_rows_still_has_disclaimer_and_header():
    lines = volumes_csv([]).splitlines()
    assert lines == [f"# {DISCLAIMER}", "label,value,voxels,volume_ml,share_pct"]
