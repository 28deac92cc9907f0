# SPDX-License-Identifier: Apache-2.0
"""Synthetic generators: array contents, and the writers' on-disk layouts (files, keys, dtypes, lists)."""

from __future__ import annotations

import json
import re
import time

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from medkd.data.synthetic import (
    make_atrium_volume,
    make_cardiac_volume,
    write_synthetic_acdc,
    write_synthetic_la,
    write_synthetic_nifti,
)


@pytest.fixture(scope="module")
def cardiac() -> list[tuple[np.ndarray, np.ndarray]]:
    return [make_cardiac_volume(np.random.default_rng(seed), n_slices=10, size=64) for seed in range(12)]


def test_cardiac_arrays(cardiac):
    for image, label in cardiac:
        assert image.shape == label.shape == (10, 64, 64)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.min() == pytest.approx(0.0) and image.max() == pytest.approx(1.0, abs=1e-5)
        assert set(np.unique(label).tolist()) == {0, 1, 2, 3}


def test_cardiac_anatomy(cardiac):
    for _, label in cardiac:
        lv = label == 3
        # the myocardium wraps the LV: no LV pixel touches background or RV
        ring = ndimage.binary_dilation(lv, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)) & ~lv
        assert not np.any(ring & (label != 2))
        assert lv[0].sum() > lv[-1].sum() > 0  # radii shrink from base to apex
        assert (label[0] == 1).any()  # the basal slice always has an RV
    rv_free_end = [not (label[-1] == 1).any() for _, label in cardiac]
    assert any(rv_free_end) and not all(rv_free_end)


def test_cardiac_is_not_trivial(cardiac):
    """Myocardium is close to the surrounding tissue, and blood intensity varies between patients."""
    myo_gap, blood_gap, blood = [], [], []
    for image, label in cardiac:
        near = ndimage.binary_dilation(label > 0, iterations=3) & (label == 0)
        bg = image[near].mean()
        myo_gap.append(abs(image[label == 2].mean() - bg))
        blood_gap.append(image[label == 3].mean() - bg)
        blood.append(image[label == 3].mean())
    assert np.mean(myo_gap) < 0.5 * np.mean(blood_gap)
    assert np.std(blood) > 0.03


@pytest.mark.parametrize("seed", [0, 7])
def test_cardiac_deterministic(seed):
    a = make_cardiac_volume(np.random.default_rng(seed), n_slices=3, size=32)
    b = make_cardiac_volume(np.random.default_rng(seed), n_slices=3, size=32)
    c = make_cardiac_volume(np.random.default_rng(seed + 1), n_slices=3, size=32)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("kwargs", [{"n_slices": 1}, {"size": 8}])
def test_cardiac_rejects_tiny(kwargs):
    with pytest.raises(ValueError):
        make_cardiac_volume(np.random.default_rng(0), **kwargs)


def test_write_synthetic_acdc_layout(tmp_path):
    start = time.perf_counter()
    root = write_synthetic_acdc(tmp_path, seed=3)  # the default 40/6/10 x 10 slices of 64^2
    assert time.perf_counter() - start < 10.0
    lists = {name: (root / f"{name}.list").read_text().splitlines() for name in
             ("train_slices", "train", "val", "test", "all_slices")}
    assert [len(lists[k]) for k in ("train", "val", "test")] == [40, 6, 10]
    assert len(lists["train_slices"]) == 400 and len(lists["all_slices"]) == 560
    volumes = lists["train"] + lists["val"] + lists["test"]
    assert len(set(volumes)) == 56 and all(re.fullmatch(r"patient\d{3}_frame01", v) for v in volumes)
    # train_slices: grouped by patient, patients in shuffled (not sorted) order, only training patients
    patients = [name.split("_frame")[0] for name in lists["train_slices"]]
    order = list(dict.fromkeys(patients))
    assert len(order) == 40 and order != sorted(order)
    assert all(patients[i * 10 : (i + 1) * 10] == [order[i]] * 10 for i in range(40))
    assert {f"{p}_frame01" for p in order} == set(lists["train"])
    for name in (lists["train_slices"][0], lists["all_slices"][-1]):
        with h5py.File(root / "data" / "slices" / f"{name}.h5") as f:
            assert f["image"].dtype == np.float32 and f["image"].shape == (64, 64)
            assert f["label"].dtype == np.uint8 and f["label"].shape == (64, 64)
    with h5py.File(root / "data" / f"{lists['val'][0]}.h5") as f:
        image, label = f["image"][()], f["label"][()]
    assert image.shape == label.shape == (10, 64, 64) and image.dtype == np.float32 and label.dtype == np.uint8
    with h5py.File(root / "data" / "slices" / f"{lists['val'][0]}_slice_4.h5") as f:
        np.testing.assert_array_equal(f["image"][()], image[4])  # slices are the volume's slices


def test_write_synthetic_acdc_reproducible(tmp_path):
    kwargs = dict(n_train=3, n_val=1, n_test=1, n_slices=2, size=16, seed=5)
    a = write_synthetic_acdc(tmp_path / "a", **kwargs)
    b = write_synthetic_acdc(tmp_path / "b", **kwargs)
    assert (a / "train_slices.list").read_text() == (b / "train_slices.list").read_text()
    name = (a / "test.list").read_text().split()[0]
    with h5py.File(a / "data" / f"{name}.h5") as fa, h5py.File(b / "data" / f"{name}.h5") as fb:
        np.testing.assert_array_equal(fa["image"][()], fb["image"][()])


def test_atrium_volume():
    image, label = make_atrium_volume(np.random.default_rng(0), shape=(24, 20, 16))
    assert image.shape == label.shape == (24, 20, 16)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert abs(image.mean()) < 1e-4 and image.std() == pytest.approx(1.0, abs=1e-3)
    assert set(np.unique(label).tolist()) == {0, 1}
    assert 0.01 < label.mean() < 0.4
    assert image[label == 1].mean() > image[label == 0].mean() + 0.5


def test_write_synthetic_la_layout(tmp_path):
    root = write_synthetic_la(tmp_path, n_train=5, n_test=2, shape=(16, 16, 12), seed=1)
    train = (root / "train.list").read_text().splitlines()
    test = (root / "test.list").read_text().splitlines()
    assert len(train) == 5 and len(test) == 2 and len(set(train + test)) == 7
    assert all(re.fullmatch(r"[A-Z0-9]{20}", case) for case in train + test)
    for case in train + test:
        with h5py.File(root / "2018LA_Seg_Training Set" / case / "mri_norm2.h5") as f:
            assert f["image"].dtype == np.float32 and f["image"].shape == (16, 16, 12)
            assert f["label"].dtype == np.uint8 and set(np.unique(f["label"][()]).tolist()) <= {0, 1}


@pytest.mark.parametrize("msd", [True, False])
def test_write_synthetic_nifti(tmp_path, msd):
    root = write_synthetic_nifti(tmp_path, n=2, shape=(8, 12, 16), msd=msd)
    images = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert images == ["case_000.nii.gz", "case_001.nii.gz"]
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == images
    assert (root / "dataset.json").is_file() == msd
    img = sitk.ReadImage(str(root / "imagesTr" / images[0]))
    assert sitk.GetArrayFromImage(img).shape == (8, 12, 16)
    assert img.GetSpacing() != (1.0, 1.0, 1.0) and img.GetOrigin() != (0.0, 0.0, 0.0)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTr" / images[0])))
    assert lab.dtype == np.uint8 and lab.max() == 1
    if msd:
        meta = json.loads((root / "dataset.json").read_text())
        assert meta["training"][0] == {"image": "./imagesTr/case_000.nii.gz", "label": "./labelsTr/case_000.nii.gz"}
        assert all(isinstance(entry, str) for entry in meta["test"])
        assert all((root / entry).is_file() for entry in meta["test"])
