# SPDX-License-Identifier: Apache-2.0
"""NIfTI datalists (MSD json, imagesTr/labelsTr folders, *_image/*_label pairs) and NiftiSegDataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medkd.data.nifti import NiftiSegDataset, case_name, load_datalist
from medkd.data.synthetic import write_synthetic_nifti
from medkd.errors import DataError

SHAPE = (6, 10, 12)  # (z, y, x)


@pytest.fixture(scope="module")
def msd(tmp_path_factory) -> Path:
    return write_synthetic_nifti(tmp_path_factory.mktemp("msd"), n=3, shape=SHAPE, seed=1)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _layout(kind: str, msd: Path, tmp_path: Path) -> Path:
    if kind == "json":
        return msd / "dataset.json"
    if kind == "json_folder":
        return msd
    if kind == "folders":
        root = _copy(msd, tmp_path / "folders")
        (root / "dataset.json").unlink()
        return root
    if kind == "nnunet":
        root = _copy(msd, tmp_path / "nnunet")
        (root / "dataset.json").unlink()
        for p in (root / "imagesTr").iterdir():
            p.rename(p.with_name(p.name.replace(".nii.gz", "_0000.nii.gz")))
        return root
    root = tmp_path / "pairs"  # "pairs"
    root.mkdir()
    for p in sorted((msd / "imagesTr").iterdir()):
        stem = p.name.replace(".nii.gz", "")
        shutil.copy(p, root / f"{stem}_image.nii.gz")
        shutil.copy(msd / "labelsTr" / p.name, root / f"{stem}_label.nii.gz")
    return root


@pytest.mark.parametrize("kind", ["json", "json_folder", "folders", "nnunet", "pairs"])
def test_load_datalist_layouts(msd, tmp_path, kind):
    items = load_datalist(_layout(kind, msd, tmp_path))
    assert [case_name(item["image"]) for item in items] == ["case_000", "case_001", "case_002"]
    for item in items:
        assert set(item) == {"image", "label"}
        assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
        assert case_name(item["label"]) == case_name(item["image"])


def test_load_datalist_test_split(msd, tmp_path):
    items = load_datalist(msd / "dataset.json", split="test")  # plain-string entries
    assert items == [{"image": str((msd / "imagesTs" / "case_003.nii.gz").resolve())}]
    folder = _layout("folders", msd, tmp_path)
    assert [Path(i["image"]).name for i in load_datalist(folder, split="test")] == ["case_003.nii.gz"]


def _json(root: Path, meta: object) -> Path:
    path = root / "dataset.json"
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    "meta, match",
    [
        (
            {"training": [{"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/nope.nii.gz"}]},
            r"nope\.nii\.gz: label",
        ),
        ({"training": [{"image": "./imagesTr/case_000.nii.gz"}]}, r"case_000\.nii\.gz: training image without 'label'"),
        ({"training": []}, r"dataset\.json: datalist is empty"),
        ({"validation": []}, r"dataset\.json: no 'training' entry"),
        ({"training": [{"label": "./labelsTr/case_000.nii.gz"}]}, r"dataset\.json: training\[0\] has no 'image'"),
    ],
)
def test_load_datalist_json_errors(msd, tmp_path, meta, match):
    root = _copy(msd, tmp_path / "d")
    with pytest.raises(DataError, match=match):
        load_datalist(_json(root, meta))


def test_load_datalist_folder_errors(msd, tmp_path):
    root = _layout("folders", msd, tmp_path)
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr/case_001\.nii\.gz: image has no label"):
        load_datalist(root)
    pairs = _layout("pairs", msd, tmp_path)
    (pairs / "case_002_label.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case_002_image\.nii\.gz: image has no matching case_002_label"):
        load_datalist(pairs)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: datalist is empty"):
        load_datalist(empty)
    with pytest.raises(DataError, match="not found"):
        load_datalist(tmp_path / "missing")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match=r"broken\.json: cannot read datalist json"):
        load_datalist(tmp_path / "broken.json")


def test_dataset_item(msd):
    ds = NiftiSegDataset(msd / "dataset.json", num_classes=2)
    assert len(ds) == 3
    item = ds[2]
    assert item["image"].shape == (1, *SHAPE) and item["image"].dtype == torch.float32
    assert item["label"].shape == SHAPE and item["label"].dtype == torch.int64
    assert item["case"] == "case_002"
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(msd / "labelsTr" / "case_002.nii.gz")))
    np.testing.assert_array_equal(item["label"].numpy(), expected)  # (z, y, x) order, as read_volume
    unlabelled = NiftiSegDataset(msd, split="test")[0]
    assert "label" not in unlabelled and unlabelled["image"].shape == (1, *SHAPE)


def test_dataset_transform(msd):
    ds = NiftiSegDataset(msd, transform=lambda d: {**d, "image": d["image"] * 0})
    assert ds[0]["image"].abs().sum() == 0


def _write(path: Path, array: np.ndarray) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


@pytest.mark.parametrize(
    "label, match",
    [
        (
            np.zeros((6, 10, 11), np.uint8),
            r"bad_label\.nii\.gz: label shape \(6, 10, 11\) differs .* of .*case_000\.nii\.gz",
        ),
        (np.full(SHAPE, 3, np.uint8), r"bad_label\.nii\.gz: labels must lie in \[0, 2\)"),
        (np.full(SHAPE, 0.5, np.float32), r"bad_label\.nii\.gz: label holds non-integer values"),
    ],
)
def test_dataset_bad_label(msd, tmp_path, label, match):
    _write(tmp_path / "bad_label.nii.gz", label)
    entry = {"image": str(msd / "imagesTr" / "case_000.nii.gz"), "label": str(tmp_path / "bad_label.nii.gz")}
    with pytest.raises(DataError, match=match):
        NiftiSegDataset([entry], num_classes=2)[0]


def test_dataset_corrupt_image(msd, tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8b garbage")
    entry = {"image": str(tmp_path / "junk.nii.gz"), "label": str(msd / "labelsTr" / "case_000.nii.gz")}
    with pytest.raises(DataError, match=r"junk\.nii\.gz: cannot read image"):
        NiftiSegDataset([entry])[0]
