# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.metrics.seg: medpy parity, empty policies, summaries, table and CSV."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from medkd.metrics.seg import (
    METRIC_KEYS,
    EmptyPolicy,
    binary_metrics,
    case_metrics,
    format_table,
    summarize_cases,
    write_cases_csv,
)

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _blobs(shape: tuple[int, ...], seed: int, level: float = 0.55) -> np.ndarray:
    noise = np.random.default_rng(seed).random(shape)
    smooth = gaussian_filter(noise, sigma=2.0)
    return smooth > np.quantile(smooth, level)


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    square = np.zeros((40, 40), bool)
    square[5:30, 8:25] = True
    edge = np.zeros((24, 24), bool)
    vol = (24, 26, 20)
    edge[0:10, :7] = True  # touches the image border: border voxels count as surface
    return [
        ("random_2d", _blobs((48, 40), 0), _blobs((48, 40), 1)),
        ("random_3d", _blobs((20, 24, 16), 2), _blobs((20, 24, 16), 3)),
        ("shifted_square", np.roll(square, (3, -2), axis=(0, 1)), square),
        ("edge_touching", edge, np.roll(edge, 4, axis=1)),
        ("ball_vs_ellipsoid", _ball(vol, (12, 12, 9), (7, 7, 6)), _ball(vol, (11, 14, 10), (9, 6, 5))),
        ("identical", _blobs((30, 30), 4), _blobs((30, 30), 4)),
        ("single_voxel", np.eye(9, dtype=bool) & (np.arange(9) == 4), _ball((9, 9), (3, 5), (2, 2))),
    ]


SPACINGS = {2: [None, (0.7, 1.3)], 3: [None, (1.0, 0.5, 2.5)]}
PARITY_CASES = [(name, p, g, sp) for name, p, g in _pairs() for sp in SPACINGS[p.ndim]]


@pytest.mark.parametrize("name,pred,gt,spacing", PARITY_CASES, ids=[f"{c[0]}-{c[3]}" for c in PARITY_CASES])
def test_matches_medpy(name: str, pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...] | None) -> None:
    ours = binary_metrics(pred, gt, spacing=spacing)
    expected = {
        "dice": medpy_binary.dc(pred, gt),
        "jaccard": medpy_binary.jc(pred, gt),
        "hd95": medpy_binary.hd95(pred, gt, voxelspacing=spacing),
        "asd": medpy_binary.asd(pred, gt, voxelspacing=spacing),
    }
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-6), key
    assert ours["empty_pred"] is False


def test_asd_is_directed_and_spacing_scales() -> None:
    small, big = _ball((30, 30), (15, 15), (5, 5)), _ball((30, 30), (15, 15), (10, 10))
    forward, backward = binary_metrics(small, big), binary_metrics(big, small)
    assert forward["asd"] != pytest.approx(backward["asd"])
    assert forward["hd95"] == pytest.approx(backward["hd95"])  # pooled percentile is symmetric
    scaled = binary_metrics(small, big, spacing=(2.0, 2.0))
    assert scaled["hd95"] == pytest.approx(2 * forward["hd95"]) and scaled["asd"] == pytest.approx(2 * forward["asd"])


def test_monai_hd95_is_not_pooled() -> None:
    """MONAI's percentile=95 takes the max of the directed percentiles, which differs from medpy's pooled one."""
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_hausdorff_distance

    gt = np.zeros((32, 32), bool)
    gt[8:20, 8:20] = True
    pred = gt.copy()
    pred[12:16, 20:30] = True  # a protrusion far from the ground truth

    def onehot(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~mask, mask]))[None].float()

    with warnings.catch_warnings():  # MONAI 1.6 deprecation noise inside get_mask_edges
        warnings.simplefilter("ignore")
        monai_hd95 = float(compute_hausdorff_distance(onehot(pred), onehot(gt), percentile=95))
    ours = binary_metrics(pred, gt)["hd95"]
    assert ours == pytest.approx(medpy_binary.hd95(pred, gt), abs=1e-6)
    assert abs(monai_hd95 - ours) > 1.0


DIAG_2D = math.hypot(10, 12)
EMPTY_CASES = [
    # policy, pred empty, gt empty, expected (dice, jaccard, hd95, asd)
    ("bcp_zero", True, False, (0.0, 0.0, 0.0, 0.0)),
    ("bcp_zero", False, True, (0.0, 0.0, 0.0, 0.0)),
    ("bcp_zero", True, True, (0.0, 0.0, 0.0, 0.0)),
    ("worst", True, False, (0.0, 0.0, DIAG_2D, DIAG_2D)),
    ("worst", False, True, (0.0, 0.0, DIAG_2D, DIAG_2D)),
    ("worst", True, True, (1.0, 1.0, 0.0, 0.0)),
    ("nan_excluded", True, False, (math.nan,) * 4),
    ("nan_excluded", False, True, (0.0, 0.0, math.nan, math.nan)),
    ("nan_excluded", True, True, (1.0, 1.0, 0.0, 0.0)),
]


@pytest.mark.parametrize("policy,pred_empty,gt_empty,expected", EMPTY_CASES)
def test_empty_policies(policy: str, pred_empty: bool, gt_empty: bool, expected: tuple[float, ...]) -> None:
    blob = np.zeros((10, 12), bool)
    blob[2:6, 3:8] = True
    pred, gt = np.zeros_like(blob) if pred_empty else blob, np.zeros_like(blob) if gt_empty else blob
    result = binary_metrics(pred, gt, empty_policy=policy)
    np.testing.assert_allclose([result[k] for k in METRIC_KEYS], expected, rtol=1e-12)
    assert result["empty_pred"] is pred_empty


def test_worst_diagonal_uses_spacing() -> None:
    gt = np.zeros((10, 12, 4), bool)
    gt[2:5, 2:5, 1:3] = True
    result = binary_metrics(np.zeros_like(gt), gt, spacing=(1.0, 2.0, 3.0), empty_policy=EmptyPolicy.WORST)
    assert result["hd95"] == pytest.approx(math.sqrt(10**2 + 24**2 + 12**2))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"empty_policy": "zero"}, "unknown empty_policy"),
        ({"spacing": (1.0, 1.0, 1.0)}, "spacing must be 2"),
        ({"spacing": (1.0, -1.0)}, "spacing must be 2"),
    ],
)
def test_binary_metrics_rejects_bad_options(kwargs: dict, match: str) -> None:
    mask = np.ones((4, 4), bool)
    with pytest.raises(ValueError, match=match):
        binary_metrics(mask, mask, **kwargs)


def test_case_metrics_per_class() -> None:
    gt = np.zeros((3, 20, 20), np.uint8)
    gt[:, 2:8, 2:8], gt[:, 10:16, 10:16], gt[1, 3:5, 12:18] = 1, 2, 3
    pred = np.roll(gt, 1, axis=2)
    pred[pred == 3] = 0  # class 3 missed
    result = case_metrics(pred, gt, 4, empty_policy="bcp_zero")
    assert sorted(result) == [1, 2, 3]
    assert result[1] == binary_metrics(pred == 1, gt == 1)
    assert result[3]["empty_pred"] and result[3]["dice"] == 0.0 and result[3]["hd95"] == 0.0
    floats = case_metrics(pred.astype(np.float64), gt.astype(np.float32), 4, empty_policy="bcp_zero")
    assert floats == result


@pytest.mark.parametrize(
    "pred,gt,match",
    [
        (np.zeros((4, 5), np.uint8), np.zeros((4, 6), np.uint8), r"\(4, 5\).*\(4, 6\)"),
        (np.full((4, 4), 3, np.uint8), np.zeros((4, 4), np.uint8), r"prediction labels must lie in \[0, 2\]"),
        (np.zeros((4, 4), np.uint8), np.full((4, 4), 0.5), "non-integral"),
    ],
)
def test_case_metrics_rejects_bad_maps(pred: np.ndarray, gt: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        case_metrics(pred, gt, 3)


def _two_cases(policy: str) -> list[tuple[str, dict[int, dict[str, float]]]]:
    gt = np.zeros((16, 16), np.uint8)
    gt[2:8, 2:8], gt[9:14, 9:14] = 1, 2
    good = np.roll(gt, 1, axis=0)
    missed = gt.copy()
    missed[missed == 2] = 0
    return [(case_id, case_metrics(pred, gt, 3, empty_policy=policy)) for case_id, pred in (("a", good), ("b", missed))]


@pytest.mark.parametrize("policy", list(EmptyPolicy))
def test_summarize_averages_cases_then_classes(policy: EmptyPolicy) -> None:
    cases = _two_cases(policy)
    summary = summarize_cases(cases, ["bg", "RV", "LV"])  # background name skipped
    assert list(summary["per_class"]) == ["RV", "LV"] and summary["empty_predictions"] == 1
    dice_lv = [cases[0][1][2]["dice"], cases[1][1][2]["dice"]]
    expected_lv = np.nanmean(dice_lv)
    assert summary["per_class"]["LV"]["dice"] == pytest.approx(expected_lv)
    assert summary["per_class"]["LV"]["std_dice"] == pytest.approx(np.nanstd(dice_lv))
    expected_mean = (summary["per_class"]["RV"]["dice"] + expected_lv) / 2
    assert summary["mean"]["dice"] == pytest.approx(expected_mean)
    assert summary["cases"][1]["per_class"]["LV"]["empty_pred"] is True
    assert summary["cases"][0]["mean"]["hd95"] == pytest.approx(np.mean([cases[0][1][c]["hd95"] for c in (1, 2)]))
    json.dumps(summary, allow_nan=policy is EmptyPolicy.NAN_EXCLUDED)  # plain types only


def test_summarize_rejects_mismatch() -> None:
    cases = _two_cases("worst")
    with pytest.raises(ValueError, match="class names"):
        summarize_cases(cases, ["RV"])
    with pytest.raises(ValueError, match="at least one case"):
        summarize_cases([], ["RV", "LV"])
    with pytest.raises(ValueError, match="has classes"):
        summarize_cases([cases[0], ("c", {1: cases[0][1][1]})], ["RV", "LV"])


def test_table_and_csv(tmp_path) -> None:
    summary = summarize_cases(_two_cases("worst"), ["RV", "LV"])
    table = format_table(summary).splitlines()
    assert table[0].split() == ["class", "Dice", "%", "Jaccard", "%", "HD95", "ASD"]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:-1] if not line.startswith("-")}
    assert set(rows) == {"RV", "LV", "mean"}
    assert float(rows["mean"][0]) == pytest.approx(100 * summary["mean"]["dice"], abs=0.006)
    assert table[-1] == "2 cases, 1 empty predictions"

    path = write_cases_csv(summary, tmp_path)
    assert path == tmp_path / "metrics_per_case.csv"
    with path.open() as handle:
        records = list(csv.DictReader(handle))
    assert list(records[0]) == ["case", "class", "dice", "jaccard", "hd95", "asd"]
    assert [(r["case"], r["class"]) for r in records] == [("a", "RV"), ("a", "LV"), ("b", "RV"), ("b", "LV")]
    assert float(records[3]["hd95"]) == summary["cases"][1]["per_class"]["LV"]["hd95"]
    nested = write_cases_csv(summary, tmp_path / "run" / "eval.csv")
    assert nested.read_text() == path.read_text()
