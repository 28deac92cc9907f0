# SPDX-License-Identifier: Apache-2.0
"""Synthetic lesion domains (spec grounded_teacher.md §3): COCO layout, classes and imbalance, domain shift, expert."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from medkd.data.coco import read_coco_split, read_image
from medkd.data.synthetic.lesions import (
    EXPERT_CSV_COLUMNS,
    SyntheticExpert,
    SyntheticExpertConfig,
    SyntheticLesionConfig,
    make_lesion_images,
    write_lesion_domains,
)


def _small(root, k: int, seed: int = 0) -> dict:
    return write_lesion_domains(root, num_classes=k, n_source_train=60, n_source_val=20, n_target_train=50,
                                n_target_val=20, size=64, seed=seed)


@pytest.mark.parametrize("k, names", [(2, ("mass", "spiculated")), (3, ("mass", "spiculated",
                                                                         "calcification_cluster"))])
def test_layout_read_back_by_the_coco_reader(tmp_path, k, names):
    out = _small(tmp_path, k)
    assert out["class_names"] == names
    for domain, n_train, n_val in (("source", 60, 20), ("target", 50, 20)):
        for split, n in (("train", n_train), ("val", n_val)):
            ds = read_coco_split(tmp_path / domain, split, class_names=names)
            assert len(ds) == n == out["counts"][f"{domain}/{split}"]["images"]
            assert ds.class_names == names and ds.num_boxes == out["counts"][f"{domain}/{split}"]["boxes"]
            rec = ds.records[0]
            image = read_image(rec.file)
            assert image.shape == (rec.height, rec.width) == (64, 64)
            for r in ds.records:
                assert r.labels.max(initial=0) < k
                assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, :2] >= 0).all()
                assert (r.boxes[:, 2:] <= 64).all()


def test_imbalance_normals_and_lesion_counts():
    cfg = SyntheticLesionConfig(num_classes=3)
    _, boxes, labels = make_lesion_images(np.random.default_rng(1), 600, size=96, cfg=cfg)
    counts = np.array([len(b) for b in boxes])
    assert counts.max() <= 3 and 0.25 <= (counts == 0).mean() <= 0.38
    per_class = np.bincount(np.concatenate(labels), minlength=3) / sum(counts)
    np.testing.assert_allclose(per_class, [0.80, 0.15, 0.05], atol=0.06)
    assert per_class[0] > per_class[1] > per_class[2] > 0
    _, _, labels2 = make_lesion_images(np.random.default_rng(1), 400, size=96)
    share = np.bincount(np.concatenate(labels2), minlength=2) / len(np.concatenate(labels2))
    np.testing.assert_allclose(share, [0.8, 0.2], atol=0.06)


def test_deterministic_per_seed(tmp_path):
    a, b, c = (_small(tmp_path / name, 2, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    for rel in ("source/annotations/instances_train.json", "target/annotations/instances_val.json",
                "target/expert_boxes.csv", "target/images/train/t_train_00003.png"):
        assert (a["root"] / rel).read_bytes() == (b["root"] / rel).read_bytes(), rel
        assert (a["root"] / rel).read_bytes() != (c["root"] / rel).read_bytes(), rel


def test_expert_csv_columns_and_na_rows(tmp_path):
    out = _small(tmp_path, 2)
    with out["expert_csv"].open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == EXPERT_CSV_COLUMNS
    train_names = {r.file.name for r in read_coco_split(out["target"], "train").records}
    named = {row[0] for row in rows[1:]}
    assert named == train_names  # every target train image has a row, nothing else
    na = [row for row in rows[1:] if row[4] == "NA"]
    boxed = [row for row in rows[1:] if row[4] != "NA"]
    assert na and boxed and all(row[2:] == ["0", "0", "NA", "NA", "NA", "NA"] for row in na)
    for row in boxed:
        mean, high, x, y, w, h = float(row[2]), float(row[3]), *map(int, row[4:])
        assert 0 < mean <= high <= 1 and 0.6 <= high and w >= 1 and h >= 1 and x >= 0 and y >= 0
        assert row[1] in ("mass", "spiculated")


def test_target_shift_is_real_and_lesions_stay_visible():
    rng_s, rng_t = np.random.default_rng(5), np.random.default_rng(5)
    src, sboxes, _ = make_lesion_images(rng_s, 120, size=128, domain="source")
    tgt, tboxes, _ = make_lesion_images(rng_t, 120, size=128, domain="target")

    def hf(x: np.ndarray) -> float:  # high-frequency energy (noise, fine texture)
        return float(np.abs(np.diff(x, axis=-1)).mean())

    assert hf(tgt) > 1.5 * hf(src)
    assert abs(float(tgt[:, :, :8].mean() + tgt[:, :, -8:].mean()) - float(src[:, :, :8].mean() + src[:, :, -8:]
                                                                            .mean())) > 0.05
    for images, boxes in ((src, sboxes), (tgt, tboxes)):
        inside, ring = [], []
        for image, bb in zip(images, boxes):
            for x0, y0, x1, y1 in bb.astype(int):
                inside.append(image[y0:y1, x0:x1].mean())
                pad = max(3, (x1 - x0) // 2)
                window = image[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad]
                ring.append((window.sum() - image[y0:y1, x0:x1].sum()) / (window.size - (y1 - y0) * (x1 - x0)))
        contrast = np.array(inside) - np.array(ring)
        assert np.median(contrast) > 0.05 and (contrast > 0).mean() > 0.8  # lesions brighter than surroundings


def test_generation_is_fast():
    start = time.perf_counter()
    make_lesion_images(np.random.default_rng(0), 700, size=128, domain="target")
    assert time.perf_counter() - start < 10.0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_synthetic_expert_statistics_and_variants():
    rng = np.random.default_rng(0)
    gt = np.array([[20, 20, 40, 36], [60, 50, 80, 70]], np.float32)
    labels = np.array([0, 1])
    expert = SyntheticExpert(SyntheticExpertConfig(false_positives_per_image=0.0, class_flip=0.0))
    found, ious = 0, []
    for _ in range(300):
        boxes, scores, labs = expert.predict(rng, gt, labels, (100, 100), 2)
        assert ((scores >= 0.6) & (scores <= 1.0)).all()
        for box, lab in zip(boxes, labs):
            best = max(range(2), key=lambda j: _iou(box, gt[j]))
            ious.append(_iou(box, gt[best]))
            assert lab == labels[best]
        found += len(boxes)
    assert 0.72 < found / 600 < 0.88  # 20% missed
    assert 0.55 <= min(ious) and max(ious) <= 0.95 and 0.68 < np.mean(ious) < 0.82
    fp = SyntheticExpert(SyntheticExpertConfig(miss_rate=1.0))
    n_fp = sum(len(fp.predict(rng, gt, labels, (100, 100), 2)[0]) for _ in range(500))
    assert 0.2 < n_fp / 500 < 0.4
    flips = SyntheticExpert(SyntheticExpertConfig(miss_rate=0.0, false_positives_per_image=0.0))
    labs = np.concatenate([flips.predict(rng, gt, labels, (100, 100), 2)[2] for _ in range(500)])
    assert 0.06 < (labs != np.tile(labels, 500)).mean() < 0.14
    shifted = SyntheticExpert(SyntheticExpertConfig(miss_rate=0.0, false_positives_per_image=0.0, variant="shifted"))
    sb = shifted.predict(rng, gt, labels, (100, 100), 2)[0]
    assert all(_iou(b, g) < 0.5 for b, g in zip(sb, gt)) and (sb[:, 0] > gt[:, 0]).all()
    wrong = SyntheticExpert(SyntheticExpertConfig(miss_rate=0.0, false_positives_per_image=0.0,
                                                  variant="wrong_frame", wrong_frame_scale=2.0))
    wb = wrong.predict(rng, gt, labels, (100, 100), 2)[0]
    assert (wb[:, 0] > 1.5 * gt[:, 0]).all()
    with pytest.raises(ValueError, match="variant"):
        SyntheticExpertConfig(variant="nope")
