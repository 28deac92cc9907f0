# SPDX-License-Identifier: Apache-2.0
"""LA readers: splits, test ids, the volume dataset and its DataErrors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from medkd.data.la import LAVolumeDataset, la_case_path, la_split, la_test_ids
from medkd.data.synthetic import write_synthetic_la
from medkd.data.transforms import la_train_transform
from medkd.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_synthetic_la(tmp_path_factory.mktemp("la"), n_train=8, n_test=2, shape=(16, 14, 12))


def _ids(root: Path, split: str = "train") -> list[str]:
    return (root / f"{split}.list").read_text().split()


@pytest.mark.parametrize(
    "labeled, val, sizes", [(4, 0, (4, 4, 0)), (2, 3, (2, 3, 3)), (8, 0, (8, 0, 0)), (1, 7, (1, 0, 7))]
)
def test_la_split(root, labeled, val, sizes):
    ids = _ids(root)
    labelled, unlabelled, validation = la_split(root, labeled, val_from_train=val)
    assert (len(labelled), len(unlabelled), len(validation)) == sizes
    assert labelled == ids[:labeled] and validation == ids[len(ids) - val :]
    assert labelled + unlabelled + validation == ids


@pytest.mark.parametrize("labeled, val, match", [(0, 0, "empty labelled set"), (9, 0, "the list has 8"),
                                                 (4, 5, "the list has 8"), (2, -1, ">= 0")])
def test_la_split_errors(root, labeled, val, match):
    with pytest.raises(DataError, match=rf"train\.list: .*{match}"):
        la_split(root, labeled, val_from_train=val)


def test_la_test_ids_and_case_path(root):
    assert la_test_ids(root) == _ids(root, "test")
    assert la_test_ids(root, "train") == _ids(root)
    case = _ids(root)[0]
    assert la_case_path(root, case) == root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5"
    with pytest.raises(DataError, match=r"val\.list: list file not found"):
        la_test_ids(root, "val")


def test_volume_dataset_item(root):
    ids = _ids(root)[:2]
    item = LAVolumeDataset(root, ids)[1]
    assert isinstance(item["image"], torch.Tensor) and isinstance(item["label"], torch.Tensor)
    assert item["image"].shape == (1, 16, 14, 12) and item["image"].dtype == torch.float32
    assert item["label"].shape == (16, 14, 12) and item["label"].dtype == torch.int64
    assert item["case"] == ids[1]
    with h5py.File(la_case_path(root, ids[1])) as f:
        np.testing.assert_array_equal(item["image"][0].numpy(), f["image"][()])


def test_volume_dataset_transform(root):
    item = LAVolumeDataset(root, _ids(root)[:1], transform=la_train_transform((8, 8, 8)))[0]
    assert item["image"].shape == (1, 8, 8, 8) and item["label"].shape == (8, 8, 8)
    assert item["label"].dtype == torch.int64 and item["case"] == _ids(root)[0]


def test_volume_dataset_missing_case(root):
    with pytest.raises(DataError, match=r"NOSUCHCASE.*mri_norm2\.h5: file not found"):
        LAVolumeDataset(root, _ids(root)[:1] + ["NOSUCHCASE"])


@pytest.mark.parametrize(
    "kind, match",
    [
        ("label_2", r"labels must lie in \[0, 2\)"),
        ("no_label", "missing key 'label'"),
        ("mismatch", "differs from label shape"),
        ("2d", "must be 3D"),
    ],
)
def test_volume_dataset_bad_file(tmp_path, kind, match):
    root = write_synthetic_la(tmp_path, n_train=1, n_test=0, shape=(8, 8, 8))
    case = _ids(root)[0]
    path = la_case_path(root, case)
    with h5py.File(path, "r") as f:
        image, label = f["image"][()], f["label"][()]
    with h5py.File(path, "w") as f:
        f["image"] = image[..., 0] if kind == "2d" else image
        if kind == "label_2":
            label[0, 0, 0] = 2
            f["label"] = label
        elif kind == "mismatch":
            f["label"] = label[:-1]
        elif kind == "2d":
            f["label"] = label[..., 0]
    with pytest.raises(DataError, match=rf"{case}/mri_norm2\.h5: .*{match}"):
        LAVolumeDataset(root, [case])[0]
