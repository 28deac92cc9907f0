# SPDX-License-Identifier: Apache-2.0
"""ACDC readers: list files, labelled split by patient, slice/volume datasets and their DataErrors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medkd.data.acdc import (
    PATIENTS_TO_SLICES,
    ACDCSliceDataset,
    ACDCVolumeDataset,
    acdc_labeled_split,
    patient_of,
    read_list,
)
from medkd.data.sampler import TwoStreamBatchSampler
from medkd.data.synthetic import write_synthetic_acdc
from medkd.data.transforms import acdc_train_transform
from medkd.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_synthetic_acdc(tmp_path_factory.mktemp("acdc"), n_train=6, n_val=2, n_test=2, n_slices=4, size=24)


def _train_slices(root: Path) -> list[str]:
    return (root / "train_slices.list").read_text().splitlines()


def test_read_list(tmp_path):
    path = tmp_path / "x.list"
    path.write_text("a\n\n  b \n\n")
    assert read_list(path) == ["a", "b"]


@pytest.mark.parametrize("content", [None, "", "\n \n"])
def test_read_list_errors(tmp_path, content):
    path = tmp_path / "bad.list"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match="bad.list"):
        read_list(path)


@pytest.mark.parametrize("patients", [1, 3, 6])
def test_labeled_split_by_patient(root, patients):
    names = _train_slices(root)
    labelled, unlabelled = acdc_labeled_split(root, patients)
    first = list(dict.fromkeys(patient_of(n) for n in names))[:patients]
    assert labelled + unlabelled == names
    assert {patient_of(n) for n in labelled} == set(first)
    assert labelled == [n for n in names if patient_of(n) in first]  # exactly those patients' slices
    assert not {patient_of(n) for n in unlabelled} & set(first)


@pytest.mark.parametrize("patients, match", [(0, "empty labelled set"), (-1, ">= 1"), (7, "the list has 6")])
def test_labeled_split_errors(root, patients, match):
    with pytest.raises(DataError, match=rf"train_slices\.list.*{match}"):
        acdc_labeled_split(root, patients)


def test_labeled_split_real_list_uses_reference_counts(tmp_path):
    """On the real 1312-line list, N comes from the reference table (which cuts patients mid-way for 1)."""
    rng = np.random.default_rng(0)
    counts = rng.integers(12, 26, 70)
    counts[-1] += 1312 - counts.sum()
    lines = [f"patient{p:03d}_frame01_slice_{k}" for p, c in zip(range(1, 71), counts) for k in range(c)]
    assert len(lines) == 1312
    (tmp_path / "train_slices.list").write_text("\n".join(lines) + "\n")
    for patients in (1, 3, 7):
        labelled, unlabelled = acdc_labeled_split(tmp_path, patients)
        assert len(labelled) == PATIENTS_TO_SLICES[patients] and len(labelled) + len(unlabelled) == 1312
    labelled, _ = acdc_labeled_split(tmp_path, 2)  # not in the table: by patient
    assert len(labelled) == counts[:2].sum()


def test_slice_dataset_item(root):
    labelled, _ = acdc_labeled_split(root, 1)
    ds = ACDCSliceDataset(root, labelled, cache=True)
    assert len(ds) == 4
    item = ds[1]
    assert item["image"].shape == (1, 24, 24) and item["image"].dtype == torch.float32
    assert item["label"].shape == (24, 24) and item["label"].dtype == torch.int64
    assert item["case"] == labelled[1]
    with h5py.File(root / "data" / "slices" / f"{labelled[1]}.h5") as f:
        np.testing.assert_array_equal(item["label"].numpy(), f["label"][()])
    item["image"].zero_()  # a caller mutating an item must not corrupt the cache
    assert ds[1]["image"].max() > 0


def test_slice_dataset_transform_and_two_stream_loader(root):
    labelled, unlabelled = acdc_labeled_split(root, 2)
    ds = ACDCSliceDataset(root, labelled + unlabelled, transform=acdc_train_transform((32, 32)))
    sampler = TwoStreamBatchSampler(range(len(labelled)), range(len(labelled), len(ds)), 4, 2)
    batch = next(iter(DataLoader(ds, batch_sampler=sampler)))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["label"].shape == (4, 32, 32)
    assert batch["label"].dtype == torch.int64
    assert all(name in labelled for name in batch["case"][:2]) and all(n in unlabelled for n in batch["case"][2:])


def test_slice_dataset_missing_files(root):
    names = _train_slices(root)[:2] + ["patient999_frame01_slice_0", "patient998_frame01_slice_1"]
    with pytest.raises(DataError, match=r"patient999_frame01_slice_0\.h5.*2 of 4.*patient998"):
        ACDCSliceDataset(root, names)


def _corrupt(path: Path, kind: str) -> None:
    with h5py.File(path, "r") as f:
        image, label = f["image"][()], f["label"][()]
    with h5py.File(path, "w") as f:
        if kind == "missing_label":
            f["image"] = image
        elif kind == "missing_image":
            f["label"] = label
        elif kind == "label_out_of_range":
            f["image"], f["label"] = image, np.where(label > 0, 4, 0).astype(np.uint8)
        elif kind == "negative_label":
            f["image"], f["label"] = image, label.astype(np.int16) - 1
        elif kind == "shape_mismatch":
            f["image"], f["label"] = image, label[..., :-1]
        elif kind == "wrong_ndim":
            f["image"], f["label"] = image[None], label[None]


_BAD = [
    ("missing_label", "missing key 'label'"),
    ("missing_image", "missing key 'image'"),
    ("label_out_of_range", r"labels must lie in \[0, 4\)"),
    ("negative_label", r"labels must lie in \[0, 4\)"),
    ("shape_mismatch", "differs from label shape"),
    ("wrong_ndim", "must be 2D"),
]


@pytest.mark.parametrize("kind, match", _BAD)
def test_slice_dataset_bad_file(tmp_path, kind, match):
    root = write_synthetic_acdc(tmp_path, n_train=1, n_val=1, n_test=0, n_slices=2, size=16)
    name = _train_slices(root)[0]
    _corrupt(root / "data" / "slices" / f"{name}.h5", kind)
    ds = ACDCSliceDataset(root, [name])
    with pytest.raises(DataError, match=rf"{name}\.h5: .*{match}"):
        ds[0]


def test_slice_dataset_unreadable_h5(tmp_path):
    root = write_synthetic_acdc(tmp_path, n_train=1, n_val=0, n_test=0, n_slices=2, size=16)
    name = _train_slices(root)[0]
    (root / "data" / "slices" / f"{name}.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(DataError, match=rf"{name}\.h5: unreadable"):
        ACDCSliceDataset(root, [name])[0]


@pytest.mark.parametrize("split, count", [("val", 2), ("test", 2), ("train", 6)])
def test_volume_dataset(root, split, count):
    ds = ACDCVolumeDataset(root, split)
    assert len(ds) == count
    item = ds[0]
    assert item["image"].dtype == np.float32 and item["label"].dtype == np.uint8
    assert item["image"].shape == item["label"].shape == (4, 24, 24)
    assert item["case"] == (root / f"{split}.list").read_text().split()[0]


@pytest.mark.parametrize("kind, match", [k for k in _BAD if k[0] != "wrong_ndim"] + [("wrong_ndim", "must be 3D")])
def test_volume_dataset_bad_file(tmp_path, kind, match):
    root = write_synthetic_acdc(tmp_path, n_train=1, n_val=1, n_test=0, n_slices=2, size=16)
    name = (root / "val.list").read_text().split()[0]
    path = root / "data" / f"{name}.h5"
    if kind == "wrong_ndim":
        with h5py.File(path, "r") as f:
            image, label = f["image"][()], f["label"][()]
        with h5py.File(path, "w") as f:
            f["image"], f["label"] = image[0], label[0]
    else:
        _corrupt(path, kind)
    with pytest.raises(DataError, match=rf"{name}\.h5: .*{match}"):
        ACDCVolumeDataset(root, "val")[0]


def test_volume_dataset_missing_volume(tmp_path):
    root = write_synthetic_acdc(tmp_path, n_train=1, n_val=1, n_test=0, n_slices=2, size=16)
    (root / "val.list").write_text("patient404_frame01\n")
    with pytest.raises(DataError, match=r"patient404_frame01\.h5: file not found"):
        ACDCVolumeDataset(root, "val")
    with pytest.raises(DataError, match=r"test\.list: list file is empty"):
        ACDCVolumeDataset(root, "test")
