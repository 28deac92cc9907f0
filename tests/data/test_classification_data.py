# SPDX-License-Identifier: Apache-2.0
"""Classification datasets: class folders and CSV datalists, PNG/JPEG/NIfTI images, ClassificationDataset, and the
DataError raised for every kind of bad input."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from PIL import Image

from medkd.data.classification import (
    ClassificationDataset,
    ClassificationSplit,
    image_channels,
    load_image,
    read_classification_split,
)
from medkd.errors import DataError

CLASSES = ("benign", "malignant", "normal")


def _png(path: Path, value: int = 100, size: tuple[int, int] = (12, 10), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0]) + ((3,) if mode == "RGB" else ()), value, np.uint8)
    array[0, 0] = 255  # not constant, so resizing is tested on a real pattern
    Image.fromarray(array, mode=mode).save(path)
    return path


def _nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def _write_csv(path: Path, rows: Sequence[dict[str, object]], columns: Sequence[str] | None = None) -> Path:
    columns = list(columns or rows[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> Path:
    """train: 2 benign, 1 malignant, 2 normal; val: 1 benign, 1 normal (no malignant folder); test: empty normal."""
    root = tmp_path / "folders"
    for name, count in zip(CLASSES, (2, 1, 2), strict=True):
        for i in range(count):
            _png(root / "train" / name / f"{name}_{i}.png", value=40 * (i + 1))
    _png(root / "val" / "benign" / "v_0.png")
    _png(root / "val" / "normal" / "v_1.png")
    (root / "val" / "notes.txt").write_text("ignored: not in a class folder")
    (root / "val" / "benign" / "readme.md").write_text("ignored: not an image")
    (root / "test" / "normal").mkdir(parents=True)
    _png(root / "test" / "benign" / "t_0.png")
    return root


def test_folders_png(folders: Path) -> None:
    split = read_classification_split(folders, "train")
    assert isinstance(split, ClassificationSplit)
    assert split.class_names == CLASSES and split.num_classes == 3 and len(split) == 5
    assert [(i.case, i.label) for i in split.items] == [
        ("benign_0", 0), ("benign_1", 0), ("malignant_0", 1), ("normal_0", 2), ("normal_1", 2)
    ]
    assert split.labels == [0, 0, 1, 2, 2]
    assert all(i.path.is_absolute() and i.path.is_file() and i.metadata == {} for i in split.items)
    assert split.split == "train" and split.source == folders / "train" and split.channels == 1


def test_folders_other_splits_use_train_classes(folders: Path) -> None:
    val = read_classification_split(folders, "val")
    assert val.class_names == CLASSES
    assert [(i.case, i.label) for i in val.items] == [("v_0", 0), ("v_1", 2)]  # normal is index 2, as in train
    test = read_classification_split(folders, "test")  # an empty class folder is allowed
    assert [(i.case, i.label) for i in test.items] == [("t_0", 0)]


def test_folders_without_train_use_own_classes(tmp_path: Path) -> None:
    _png(tmp_path / "test" / "b" / "x.png")
    _png(tmp_path / "test" / "a" / "y.png")
    split = read_classification_split(tmp_path, "test")
    assert split.class_names == ("a", "b") and [(i.case, i.label) for i in split.items] == [("y", 0), ("x", 1)]


def test_folders_duplicate_names_get_class_prefix(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a" / "img.png")
    _png(tmp_path / "train" / "b" / "img.png")
    _png(tmp_path / "train" / "b" / "other.png")
    split = read_classification_split(tmp_path, "train")
    assert [i.case for i in split.items] == ["a/img", "b/img", "b/other"]


def test_folders_nifti_2d_3d(tmp_path: Path) -> None:
    volume = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5)
    _nifti(tmp_path / "train" / "a" / "vol_0.nii.gz", volume)
    _nifti(tmp_path / "train" / "b" / "vol_1.nii", volume * 2)
    split = read_classification_split(tmp_path, "train")
    assert [(i.case, i.label) for i in split.items] == [("vol_0", 0), ("vol_1", 1)] and split.channels == 1
    ds = ClassificationDataset(split)
    item = ds[1]
    assert item["image"].shape == (1, 4, 6, 5) and item["image"].dtype == torch.float32
    np.testing.assert_array_equal(item["image"][0].numpy(), volume * 2)  # (z, y, x), raw intensities
    assert ClassificationDataset(split, size=8)[0]["image"].shape == (1, 8, 8, 8)  # trilinear
    flat = _nifti(tmp_path / "flat.nii.gz", volume[0])  # a 2-D NIfTI
    single = _nifti(tmp_path / "single.nii.gz", volume[:1])  # a 3-D NIfTI of one slice
    assert load_image(flat).shape == load_image(single).shape == (1, 6, 5)


def test_csv_layout_with_metadata(folders: Path) -> None:
    rows = [
        {"image": "train/benign/benign_0.png", "label": "benign", "split": "train", "case": "p1", "severity": 0.25,
         "modality": "A"},
        {"image": "train/normal/normal_0.png", "label": "normal", "split": "train", "case": "p2", "severity": 0.5,
         "modality": "B"},
        {"image": "val/benign/v_0.png", "label": "malignant", "split": "val", "case": "", "severity": 1,
         "modality": "A"},
        {"image": str((folders / "val" / "normal" / "v_1.png").resolve()), "label": "1", "split": "val",
         "case": "p4", "severity": 0, "modality": "B"},
    ]
    path = _write_csv(folders / "lists" / "datalist.csv", rows)
    for img in ("train/benign/benign_0.png", "train/normal/normal_0.png", "val/benign/v_0.png"):  # relative to CSV
        _png(folders / "lists" / img)
    train = read_classification_split(folders, "train", datalist="lists/datalist.csv")  # relative to root
    assert train.class_names == CLASSES[:3] and train.source == path
    assert [(i.case, i.label) for i in train.items] == [("p1", 0), ("p2", 2)]
    assert train.items[0].metadata == {"split": "train", "case": "p1", "severity": "0.25", "modality": "A"}
    assert train.items[0].path == (folders / "lists" / "train/benign/benign_0.png").resolve()
    val = read_classification_split(folders, "val", datalist=path.resolve())  # absolute datalist
    assert [(i.case, i.label) for i in val.items] == [("v_0", 1), ("p4", 1)]  # empty case -> file stem; "1" index
    assert val.class_names == train.class_names  # from every row, whatever the split


def test_csv_without_split_column_is_the_requested_split(folders: Path) -> None:
    rows = [{"image": f"train/{c}/{c}_0.png", "label": k} for k, c in enumerate(CLASSES)]
    path = _write_csv(folders / "val.csv", rows)
    for split in ("val", "anything"):
        read = read_classification_split(folders, split, datalist=path)
        assert read.class_names == ("0", "1", "2")  # integer labels only
        assert [(i.case, i.label) for i in read.items] == [("benign_0", 0), ("malignant_0", 1), ("normal_0", 2)]


def test_class_names_override(folders: Path) -> None:
    names = ("normal", "benign", "malignant", "other")
    split = read_classification_split(folders, "val", class_names=names)
    assert split.class_names == names and [(i.case, i.label) for i in split.items] == [("v_1", 0), ("v_0", 1)]
    rows = [{"image": "train/benign/benign_0.png", "label": "benign"}]
    from_csv = read_classification_split(folders, "x", datalist=_write_csv(folders / "b.csv", rows), class_names=names)
    assert from_csv.class_names == names and from_csv.labels == [1]
    with pytest.raises(ValueError, match="distinct"):
        read_classification_split(folders, "val", class_names=("a", "a"))


def test_csv_and_folders_agree(folders: Path) -> None:
    split = read_classification_split(folders, "train")
    rows = [{"image": i.path.relative_to(folders).as_posix(), "label": split.class_names[i.label], "split": "train"}
            for i in split.items]
    from_csv = read_classification_split(folders, "train", datalist=_write_csv(folders / "d.csv", rows))
    assert [(i.case, i.path, i.label) for i in from_csv.items] == [(i.case, i.path, i.label) for i in split.items]


@pytest.mark.parametrize(
    "mode, value, channels, expected",
    [
        ("L", 51, 1, [0.2]),
        ("RGB", (255, 0, 51), 3, [1.0, 0.0, 0.2]),
        ("RGBA", (0, 255, 0, 10), 3, [0.0, 1.0, 0.0]),  # alpha dropped
        ("LA", (102, 0), 1, [0.4]),
        ("I;16", 13107, 1, [0.2]),  # 16-bit grayscale / 65535
        ("1", 1, 1, [1.0]),
    ],
)
def test_load_image_modes(tmp_path: Path, mode: str, value: object, channels: int, expected: list[float]) -> None:
    path = tmp_path / "x.png"
    Image.new(mode, (5, 4), value).save(path)
    image = load_image(path)
    assert image.shape == (channels, 4, 5) and image.dtype == np.float32 and image_channels(path) == channels
    np.testing.assert_allclose(image[:, 2, 3], expected, atol=1e-6)
    assert image.min() >= 0.0 and image.max() <= 1.0


def test_load_image_palette_and_jpeg(tmp_path: Path) -> None:
    Image.new("RGB", (6, 6), (200, 100, 0)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").shape == (3, 6, 6)
    Image.new("L", (8, 6), 128).save(tmp_path / "g.JPG")  # upper-case ending
    gray = load_image(tmp_path / "g.JPG")
    assert gray.shape == (1, 6, 8) and abs(float(gray.mean()) - 128 / 255) < 0.01
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "c.jpeg")
    assert load_image(tmp_path / "c.jpeg").shape == (3, 6, 8)


def test_dataset_items_and_resize(folders: Path) -> None:
    split = read_classification_split(folders, "train")
    ds = ClassificationDataset(split)
    assert len(ds) == 5 and ds.class_names == CLASSES
    item = ds[2]
    assert set(item) == {"image", "label", "case"}
    assert item["image"].shape == (1, 10, 12) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.long and item["label"].ndim == 0 and int(item["label"]) == 1
    assert item["case"] == "malignant_0"
    resized = ClassificationDataset(split, size=(20, 16))[2]["image"]
    expected = F.interpolate(item["image"][None], size=(20, 16), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(resized, expected)
    assert ClassificationDataset(split, size=10)[0]["image"].shape == (1, 10, 10)
    doubled = ClassificationDataset(split, transform=lambda d: {**d, "image": d["image"] * 2})[2]["image"]
    torch.testing.assert_close(doubled, item["image"] * 2)
    batch = next(iter(torch.utils.data.DataLoader(ClassificationDataset(split, size=8), batch_size=5)))
    assert batch["image"].shape == (5, 1, 8, 8) and batch["label"].tolist() == [0, 0, 1, 2, 2]


def test_dataset_rgb(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a" / "x.png", mode="RGB")
    split = read_classification_split(tmp_path, "train")
    assert split.channels == 3 and ClassificationDataset(split, size=4)[0]["image"].shape == (3, 4, 4)


# ---- bad input ------------------------------------------------------------------------------------------------------


def _bad_folders(kind: str, root: Path) -> tuple[Path, str, dict]:
    """Set up one bad class-folder dataset; returns (root, split, kwargs)."""
    if kind == "missing_split":
        _png(root / "train" / "a" / "x.png")
        return root, "val", {}
    if kind == "no_class_folders":
        (root / "train").mkdir(parents=True)
        _png(root / "train" / "loose.png")
        return root, "train", {}
    if kind == "no_images":
        (root / "train" / "a").mkdir(parents=True)
        (root / "train" / "a" / "x.txt").write_text("not an image")
        return root, "train", {}
    if kind == "unknown_class":
        _png(root / "train" / "a" / "x.png")
        _png(root / "val" / "zebra" / "y.png")
        return root, "val", {}
    if kind == "not_in_class_names":
        _png(root / "train" / "a" / "x.png")
        return root, "train", {"class_names": ("b", "c")}
    if kind == "corrupt_png":
        _png(root / "train" / "a" / "x.png")
        (root / "train" / "b").mkdir(parents=True)
        (root / "train" / "b" / "broken.png").write_bytes(b"this is not a png")
        return root, "train", {}
    if kind == "mixed_channels":
        _png(root / "train" / "a" / "gray1.png")
        _png(root / "train" / "a" / "gray2.png")
        _png(root / "train" / "b" / "colour.png", mode="RGB")
        return root, "train", {}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing_split", r"/val: split folder not found \(splits here: train\)"),
        ("no_class_folders", r"/train: no class folders"),
        ("no_images", r"/train: no images \(\.png"),
        ("unknown_class", r"/val/zebra: class 'zebra' is not among the classes of .*/train: \('a',\)"),
        ("not_in_class_names", r"/train/a: class 'a' is not among the given class_names"),
        ("corrupt_png", r"/train/b/broken\.png: cannot read image"),
        ("mixed_channels", r"/train/b/colour\.png: image has 3 channel\(s\) but the other images of .*/train have 1"),
    ],
)
def test_bad_folders_raise(tmp_path: Path, kind: str, match: str) -> None:
    root, split, kwargs = _bad_folders(kind, tmp_path / "d")
    with pytest.raises(DataError, match=match) as err:
        read_classification_split(root, split, **kwargs)
    assert str(err.value).startswith(err.value.path) and str(tmp_path) in err.value.path


def _bad_csv(kind: str, root: Path) -> tuple[Path, str, dict]:
    """Set up one bad CSV datalist; returns (datalist, split, kwargs)."""
    _png(root / "img" / "a.png")
    _png(root / "img" / "b.png")
    _png(root / "img" / "c.png", mode="RGB")
    path = root / "list.csv"
    ok = [{"image": "img/a.png", "label": "x", "split": "train"}, {"image": "img/b.png", "label": "y", "split": "val"}]
    if kind == "missing_file":
        return root / "nope.csv", "train", {}
    if kind == "no_label_column":
        _write_csv(path, [{"image": "img/a.png", "class": "x"}])
    elif kind == "no_image_column":
        _write_csv(path, [{"file": "img/a.png", "label": "x"}])
    elif kind == "empty":
        path.write_text("")
    elif kind == "label_not_in_classes":
        _write_csv(path, ok)
        return path, "val", {"class_names": ("x", "z")}
    elif kind == "index_out_of_range":
        _write_csv(path, ok + [{"image": "img/b.png", "label": "5", "split": "val"}])
        return path, "val", {}
    elif kind == "empty_label":
        _write_csv(path, [{"image": "img/a.png", "label": "x"}, {"image": "img/b.png", "label": ""}])
    elif kind == "missing_image":
        _write_csv(path, ok + [{"image": "img/gone.png", "label": "x", "split": "train"}])
    elif kind == "no_rows_of_split":
        _write_csv(path, ok)
        return path, "test", {}
    elif kind == "mixed_channels":
        _write_csv(path, ok + [{"image": "img/c.png", "label": "y", "split": "train"}])
    elif kind == "corrupt_image":
        (root / "img" / "bad.png").write_bytes(b"\x89PNG garbage")
        _write_csv(path, ok + [{"image": "img/bad.png", "label": "y", "split": "train"}])
    else:
        raise AssertionError(kind)
    return path, "train", {}


@pytest.mark.parametrize(
    "kind, match",
    [
        ("missing_file", r"nope\.csv: datalist CSV not found"),
        ("no_label_column", r"list\.csv: datalist CSV lacks the column\(s\) \['label'\]"),
        ("no_image_column", r"list\.csv: datalist CSV lacks the column\(s\) \['image'\]"),
        ("empty", r"list\.csv: datalist CSV lacks the column\(s\) \['image', 'label'\]"),
        ("label_not_in_classes", r"list\.csv: line 3: label 'y' is not among the classes \('x', 'z'\)"),
        ("index_out_of_range", r"list\.csv: line 4: label index 5 is out of range for 2 classes"),
        ("empty_label", r"list\.csv: line 3: label '' is not among the classes"),
        ("missing_image", r"img/gone\.png: image listed on line 4 of .*list\.csv not found"),
        ("no_rows_of_split", r"list\.csv: no rows of split 'test' \(splits: \['train', 'val'\]\)"),
        ("mixed_channels", r"img/c\.png: image has 3 channel\(s\) but the other images of .*list\.csv have 1"),
        ("corrupt_image", r"img/bad\.png: cannot read image"),
    ],
)
def test_bad_csv_raise(tmp_path: Path, kind: str, match: str) -> None:
    path, split, kwargs = _bad_csv(kind, tmp_path)
    with pytest.raises(DataError, match=match):
        read_classification_split(tmp_path, split, datalist=path, **kwargs)


def test_corrupt_pixels_raise_when_read(tmp_path: Path) -> None:
    """A PNG whose header is fine but whose pixel data is cut off, and a corrupt NIfTI: the dataset names them."""
    good = _png(tmp_path / "train" / "a" / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "train" / "a" / "truncated.png").write_bytes(data[: len(data) // 2])
    _nifti(tmp_path / "train" / "b" / "vol.nii.gz", np.zeros((2, 4, 4), np.float32))
    split = read_classification_split(tmp_path, "train")  # headers only: reading the split succeeds
    ds = ClassificationDataset(split)
    with pytest.raises(DataError, match=r"truncated\.png: cannot decode image"):
        ds[[i.case for i in split.items].index("truncated")]
    nifti = tmp_path / "train" / "b" / "vol.nii.gz"
    nifti.write_bytes(nifti.read_bytes()[:40])
    with pytest.raises(DataError, match=r"vol\.nii\.gz: cannot read image"):
        ds[[i.case for i in split.items].index("vol")]


def test_dataset_shape_errors(tmp_path: Path) -> None:
    _nifti(tmp_path / "train" / "a" / "vol.nii.gz", np.zeros((3, 4, 4), np.float32))
    split = read_classification_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"vol\.nii\.gz: image has 3 spatial axes \(3, 4, 4\), size has 2"):
        ClassificationDataset(split, size=(8, 8))[0]
    rgb = _png(tmp_path / "train" / "a" / "late.png", mode="RGB")  # changed after the split was read
    stale = ClassificationSplit([*split.items[:0], type(split.items[0])("late", rgb, 0)], ("a",), channels=1)
    with pytest.raises(DataError, match=r"late\.png: image has 3 channel\(s\), the split .* has 1"):
        ClassificationDataset(stale)[0]
    with pytest.raises(ValueError, match="positive"):
        ClassificationDataset(split, size=0)


@pytest.mark.parametrize("name, match", [("x.bmp", "not an image file"), ("missing.png", "image file not found"),
                                         ("missing.nii.gz", "file or folder not found")])
def test_load_image_errors(tmp_path: Path, name: str, match: str) -> None:
    if name.endswith(".bmp"):
        (tmp_path / name).write_bytes(b"BM")
    with pytest.raises(DataError, match=f"{name}: {match}"):
        load_image(tmp_path / name)
