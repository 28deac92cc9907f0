# SPDX-License-Identifier: Apache-2.0
"""SynthLesion-2D: determinism, split sizes, label noise, metadata, both reader layouts, and separability bounds."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medkd.data.classification import ClassificationDataset, load_image, read_classification_split
from medkd.data.synthetic.lesion_classes import (
    LESION_CLASS_NAMES,
    METADATA_COLUMNS,
    LesionClassConfig,
    make_lesion_class_images,
    write_classification_datalist,
    write_synth_lesion_2d,
)

COUNTS = {"teacher_train": 600, "train": 200, "val": 50, "test": 400, "unlabelled": 20}
SORTED_NAMES = tuple(sorted(LESION_CLASS_NAMES))


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "metadata.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(
        tmp_path_factory.mktemp("synth"),
        n_teacher_train=COUNTS["teacher_train"],
        n_train=COUNTS["train"],
        n_val=COUNTS["val"],
        n_test=COUNTS["test"],
        n_unlabelled=COUNTS["unlabelled"],
        seed=0,
    )
    write_classification_datalist(root)
    return root


def _small(root: Path, seed: int = 3, n_test: int = 5) -> Path:
    return write_synth_lesion_2d(root, n_teacher_train=6, n_train=10, n_val=5, n_test=n_test, n_unlabelled=3,
                                 size=32, seed=seed)


def _files(root: Path, split: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / split).rglob("*.png"))}


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a, b, c = _small(tmp_path / "a"), _small(tmp_path / "b"), _small(tmp_path / "c", seed=4)
    assert (a / "metadata.csv").read_bytes() == (b / "metadata.csv").read_bytes()
    for split in ("teacher_train", "train", "val", "test", "unlabelled"):
        assert _files(a, split) == _files(b, split)
    assert _files(a, "train") != _files(c, "train")
    # each split has its own stream: a larger test split leaves the others as they were
    d = _small(tmp_path / "d", n_test=9)
    assert _files(a, "train") == _files(d, "train") and _files(a, "unlabelled") == _files(d, "unlabelled")
    assert len(_files(d, "test")) == 9


def test_counts_layout_and_metadata(synth: Path) -> None:
    rows = _rows(synth)
    assert list(rows[0]) == list(METADATA_COLUMNS)
    assert Counter(r["split"] for r in rows) == COUNTS
    assert len({r["case"] for r in rows}) == len(rows)
    for split, n in COUNTS.items():
        if split == "unlabelled":
            assert len(list((synth / split).glob("*.png"))) == n
            continue
        assert sorted(p.name for p in (synth / split).iterdir()) == list(SORTED_NAMES)  # every class folder
        assert len(list((synth / split).rglob("*.png"))) == n
    for r in rows:
        path = synth / r["image"]
        assert path.is_file()
        if r["split"] == "unlabelled":
            assert r["label"] == "" and path.parent.name == "unlabelled"
        else:
            assert path.parent.name == r["label"] and path.parent.parent.name == r["split"]
        assert r["true_label"] in LESION_CLASS_NAMES and r["modality"] in ("A", "B") and r["anatomy"] in "012"
        assert 0.0 <= float(r["severity"]) <= 1.0
    clean = Counter(r["true_label"] for r in rows if r["split"] == "test")
    assert set(clean.values()) == {COUNTS["test"] // 5}  # balanced classes
    assert set(Counter(r["modality"] for r in rows).values()) != {0} and len({r["anatomy"] for r in rows}) == 3
    image = load_image(synth / rows[0]["image"])
    assert image.shape == (1, 64, 64) and 0.0 <= image.min() < image.max() <= 1.0


@pytest.mark.parametrize("noise, n_train", [(0.2, 200), (0.35, 60), (0.0, 40)])
def test_label_noise(tmp_path: Path, synth: Path, noise: float, n_train: int) -> None:
    root = synth if (noise, n_train) == (0.2, 200) else write_synth_lesion_2d(
        tmp_path, n_teacher_train=10, n_train=n_train, n_val=10, n_test=10, n_unlabelled=0, size=32,
        label_noise=noise, seed=1)
    rows = _rows(root)
    flipped = Counter(r["split"] for r in rows if r["label"] != r["true_label"] and r["split"] != "unlabelled")
    assert flipped["train"] == round(noise * n_train)  # exact count, so within any tolerance of the fraction
    assert abs(flipped["train"] / n_train - noise) < 0.01
    assert sum(flipped.values()) == flipped["train"]  # zero on teacher_train, val and test


def test_noisy_labels_are_other_classes_spread_evenly(synth: Path) -> None:
    train = [r for r in _rows(synth) if r["split"] == "train"]
    pairs = [(r["true_label"], r["label"]) for r in train if r["label"] != r["true_label"]]
    assert len({new for _, new in pairs}) == 5 and len({old for old, _ in pairs}) == 5


def test_reader_reads_both_layouts(synth: Path) -> None:
    for split in ("teacher_train", "train", "val", "test"):
        folders = read_classification_split(synth, split)
        table = read_classification_split(synth, split, datalist="datalist.csv")
        assert folders.class_names == table.class_names == SORTED_NAMES
        assert len(folders) == len(table) == COUNTS[split]
        assert sorted((i.case, i.path, i.label) for i in folders.items) == sorted(
            (i.case, i.path, i.label) for i in table.items
        )
    train = read_classification_split(synth, "train", datalist=synth / "datalist.csv")
    meta = train.items[0].metadata
    assert set(meta) == {"split", "case", "true_label", "modality", "anatomy", "severity"}
    noisy = sum(SORTED_NAMES[i.label] != i.metadata["true_label"] for i in train.items)
    assert noisy == round(0.2 * COUNTS["train"])
    item = ClassificationDataset(train, size=32)[0]
    assert item["image"].shape == (1, 32, 32) and item["case"] == train.items[0].case


def test_datalist_leaves_out_unlabelled(synth: Path) -> None:
    with (synth / "datalist.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["image", "label", "split"]
    assert len(rows) == sum(COUNTS.values()) - COUNTS["unlabelled"] and all(r["label"] for r in rows)


def _pixel_features(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    images = np.stack([load_image(i.path)[0] for i in split.items])
    n = len(images)
    pooled = images.reshape(n, 16, 4, 16, 4).mean(axis=(2, 4)).reshape(n, -1)  # 64² -> 16²
    groups = np.array([i.metadata["modality"] + i.metadata["anatomy"] for i in split.items])
    return pooled, np.array(split.labels), groups


def test_pixel_nearest_class_mean_is_weak(synth: Path) -> None:
    """Nearest class mean on 16x16-pooled pixels, with class means per modality and anatomy (so the inverted
    contrast of modality B and the lesion region do not blur the templates), fitted on teacher_train, scored on
    test. Measured 0.28 here (0.27-0.29 over seeds 0-2 at these sizes): above chance (0.2) but far from the ~0.5
    a small CNN reaches after a short CPU run, since lesions move, turn and change size: the class is in the
    lesion's shape and texture, not in a pixel template. Bounds: 0.22 (lower: the classes stopped showing) to 0.5
    (higher: a pixel template suffices and the task lost its point for distillation)."""
    fit = _pixel_features(read_classification_split(synth, "teacher_train", datalist="datalist.csv"))
    x, y, groups = _pixel_features(read_classification_split(synth, "test", datalist="datalist.csv"))
    pred = np.zeros_like(y)
    for g in np.unique(groups):
        means = np.stack([fit[0][(fit[1] == k) & (fit[2] == g)].mean(0) for k in range(5)])
        here = groups == g
        pred[here] = ((x[here, None] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = float((pred == y).mean())
    assert 0.22 < accuracy < 0.5, accuracy


def _shape_features(images: np.ndarray, masks: np.ndarray, modality: np.ndarray) -> np.ndarray:
    """Aspect ratio, compactness (perimeter² / 4π area) and interior heterogeneity of the lesion masks."""
    size = masks.shape[-1]
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    m = masks.astype(np.float64)
    area = m.sum((1, 2)) + 1e-8
    cy, cx = (m * yy).sum((1, 2)) / area, (m * xx).sum((1, 2)) / area
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    cyy, cxx, cxy = ((m * d).sum((1, 2)) / area for d in (dy**2, dx**2, dx * dy))
    half, root = (cyy + cxx) / 2, np.sqrt(np.maximum(((cyy - cxx) / 2) ** 2 + cxy**2, 0))
    aspect = np.sqrt(np.maximum(half - root, 0) / (half + root + 1e-8))
    inner = m.copy()
    inner[:, 1:-1, 1:-1] = m[:, 1:-1, 1:-1] * m[:, :-2, 1:-1] * m[:, 2:, 1:-1] * m[:, 1:-1, :-2] * m[:, 1:-1, 2:]
    compact = (m - inner).sum((1, 2)) ** 2 / (4 * np.pi * area)
    z = images * np.where(modality == "A", 1.0, -1.0)[:, None, None]
    mean_in = (z * m).sum((1, 2)) / area
    hetero = np.sqrt(((z - mean_in[:, None, None]) ** 2 * m).sum((1, 2)) / area) / (np.abs(mean_in) + 1e-3)
    return np.stack([aspect, compact, hetero], 1)


def test_lesion_shapes_separate_classes_only_partly() -> None:
    """Nearest class mean on shape features of the true lesion masks (the lesion found for free): measured 0.56
    (0.53-0.56 over seeds 0-2), confusions between neighbouring classes (round~oval~lobulated~irregular), spiculated the
    clearest. Bounds 0.4-0.8: the shape carries the class, yet the classes overlap, so posteriors stay soft."""
    rng = np.random.default_rng(0)
    n = 1500
    labels = np.arange(n) % 5
    modality = np.where(rng.random(n) < 0.5, "A", "B")
    severity = rng.beta(2, 2, n)
    images, masks = make_lesion_class_images(rng, labels, modality=modality, anatomy=rng.integers(0, 3, n),
                                             severity=severity)
    features = _shape_features(images, masks, modality)
    features = (features - features.mean(0)) / features.std(0)
    fit, score = slice(0, 900), slice(900, None)
    means = np.stack([features[fit][labels[fit] == k].mean(0) for k in range(5)])
    pred = ((features[score][:, None] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = float((pred == labels[score]).mean())
    assert 0.4 < accuracy < 0.8, accuracy
    assert np.corrcoef(masks.sum((1, 2)), severity)[0, 1] > 0.7  # severity sets the lesion size


def test_overlap_knob_controls_confusion() -> None:
    """With ``overlap=0`` every case sits on its class prototype: round and oval masks differ in aspect ratio."""
    rng = np.random.default_rng(1)
    n = 200
    labels = np.arange(n) % 2  # round, oval
    images, masks = make_lesion_class_images(rng, labels, modality=["A"] * n, anatomy=[0] * n, severity=[0.8] * n,
                                             config=LesionClassConfig(overlap=0.0))
    aspect = _shape_features(images, masks, np.array(["A"] * n))[:, 0]
    assert aspect[labels == 0].min() > aspect[labels == 1].max()


def test_make_images_values_and_masks() -> None:
    images, masks = make_lesion_class_images(np.random.default_rng(0), [0, 1, 2, 3, 4], modality="AABBA",
                                             anatomy=[0, 1, 2, 0, 1], severity=[0, 0.25, 0.5, 0.75, 1], size=48)
    assert images.shape == masks.shape == (5, 48, 48) and images.dtype == np.float32 and masks.dtype == np.uint8
    assert images.min() >= 0 and images.max() <= 1 and (masks.sum((1, 2)) > 0).all()
    empty, _ = make_lesion_class_images(np.random.default_rng(0), [], modality=[], anatomy=[], severity=[])
    assert empty.shape == (0, 64, 64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"labels": [5]}, r"labels must lie in \[0, 5\)"),
        ({"modality": ["C"]}, "modality must be 'A'/'B'"),
        ({"anatomy": [3]}, "anatomy 0-2"),
        ({"severity": [1.5]}, r"severity in \[0, 1\]"),
        ({"severity": [0.1, 0.2]}, "differ in length"),
        ({"size": 8}, "size must be >= 16"),
    ],
)
def test_make_images_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"labels": [0], "modality": ["A"], "anatomy": [0], "severity": [0.5], **kwargs}
    labels = args.pop("labels")
    with pytest.raises(ValueError, match=match):
        make_lesion_class_images(np.random.default_rng(0), labels, **args)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes must be in 2..5"),
        ({"num_classes": 6}, "num_classes must be in 2..5"),
        ({"label_noise": 1.0}, r"label_noise must lie in \[0, 1\)"),
        ({"n_train": 0}, "n_train >= 1"),
        ({"n_val": -1}, "non-negative"),
    ],
)
def test_write_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_synth_lesion_2d(tmp_path, **kwargs)
    assert not (tmp_path / "metadata.csv").exists()


def test_fewer_classes(tmp_path: Path) -> None:
    root = write_synth_lesion_2d(tmp_path, n_teacher_train=6, n_train=6, n_val=3, n_test=3, n_unlabelled=0, size=32,
                                 num_classes=3)
    split = read_classification_split(root, "teacher_train")
    assert split.class_names == tuple(sorted(LESION_CLASS_NAMES[:3]))
    assert Counter(split.labels) == {0: 2, 1: 2, 2: 2}


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="overlap"):
        LesionClassConfig(overlap=-1)
    with pytest.raises(ValueError, match="radius"):
        LesionClassConfig(radius=(0.2, 0.1))
    with pytest.raises(ValueError, match="severity_beta"):
        LesionClassConfig(severity_beta=(1.0, 2.0))
