# SPDX-License-Identifier: Apache-2.0
"""Volume I/O: NIfTI round trips keep geometry, DICOM series read with the right shape, bad input -> DataError."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medkd.errors import DataError
from medkd.io.volume_io import list_inputs, output_name, read_volume, write_mask_like

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402


def _reference(shape=(5, 6, 7)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.random.default_rng(0).random(shape).astype(np.float32))
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 33.5))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return image


def write_dicom_series(folder: Path, n: int = 5, rows: int = 8, cols: int = 6, spacing: float = 2.5) -> str:
    """Write a small CT series (one file per slice, shuffled instance numbers) with pydicom."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^Series", "T1"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.5, 0.75]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.full((rows, cols), 100 * k, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"IM{(k * 7) % n:04d}", enforce_file_format=True)
    return series_uid


def test_nifti_round_trip_keeps_geometry(tmp_path):
    ref = _reference()
    mask = (sitk.GetArrayFromImage(ref) > 0.5).astype(np.int64) * 3
    out = write_mask_like(mask, ref, tmp_path / "sub" / "case_seg.nii.gz")
    assert out == tmp_path / "sub" / "case_seg.nii.gz"
    assert sorted(p.name for p in out.parent.iterdir()) == ["case_seg.nii.gz"]  # no temporary left behind
    vol = read_volume(out)
    assert vol.array.shape == (5, 6, 7) and vol.array.dtype == np.float32 and vol.source == out
    np.testing.assert_array_equal(vol.array, mask)
    assert vol.image.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_allclose(vol.image.GetSpacing(), ref.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(vol.image.GetOrigin(), ref.GetOrigin(), rtol=1e-6)
    np.testing.assert_allclose(vol.image.GetDirection(), ref.GetDirection(), atol=1e-6)
    # nibabel agrees on the affine: same voxel -> same world point as the reference (LPS -> RAS flip)
    affine = nib.load(out).affine
    world_lps = np.array(ref.TransformIndexToPhysicalPoint((2, 3, 4)))
    np.testing.assert_allclose(affine @ [2, 3, 4, 1], [*(world_lps * [-1, -1, 1]), 1], atol=1e-4)


def test_write_mask_overwrites_and_checks_shape(tmp_path):
    ref = _reference()
    path = tmp_path / "m.nii.gz"
    write_mask_like(np.zeros((5, 6, 7), np.uint8), ref, path)
    write_mask_like(np.ones((5, 6, 7), np.uint8), ref, path)
    assert read_volume(path).array.min() == 1
    with pytest.raises(ValueError, match="does not match"):
        write_mask_like(np.zeros((7, 6, 5), np.uint8), ref, path)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        write_mask_like(np.full((5, 6, 7), 300), ref, path)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    ref = _reference()
    path = write_mask_like(np.ones((5, 6, 7), np.uint8), ref, tmp_path / "m.nii.gz")

    def crash(image, name, *args, **kwargs):
        Path(name).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        write_mask_like(np.zeros((5, 6, 7), np.uint8), ref, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.nii.gz"]
    assert read_volume(path).array.min() == 1


@pytest.mark.parametrize("suffix", [".nii", ".mha", ".nrrd"])
def test_read_other_formats(tmp_path, suffix):
    ref = _reference((3, 4, 5))
    sitk.WriteImage(ref, str(tmp_path / f"x{suffix}"))
    vol = read_volume(tmp_path / f"x{suffix}")
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.image.GetSpacing(), ref.GetSpacing(), rtol=1e-6)


def test_read_synthetic_dicom_series(tmp_path):
    write_dicom_series(tmp_path / "series1", n=5, rows=8, cols=6)
    vol = read_volume(tmp_path / "series1")
    assert vol.array.shape == (5, 8, 6)
    np.testing.assert_array_equal(vol.array[:, 0, 0], [0, 100, 200, 300, 400])  # sorted by position
    np.testing.assert_allclose(vol.image.GetSpacing(), (0.75, 0.5, 2.5), rtol=1e-6)
    out = write_mask_like(np.ones((5, 8, 6), np.uint8), vol.image, tmp_path / output_name(tmp_path / "series1"))
    assert out.name == "series1_seg.nii.gz"
    np.testing.assert_allclose(read_volume(out).image.GetSpacing(), (0.75, 0.5, 2.5), rtol=1e-6)


def test_read_bundled_pydicom_ct_series():
    folder = Path(get_testdata_file("dicomdirtests/77654033/CT2/17106")).parent
    vol = read_volume(folder)
    assert vol.array.shape == (4, 16, 16) and vol.array.dtype == np.float32


def test_folder_with_two_series_reads_the_largest(tmp_path, caplog):
    big = write_dicom_series(tmp_path / "mixed", n=4)
    write_dicom_series(tmp_path / "other", n=2)
    for p in (tmp_path / "other").iterdir():
        p.rename(tmp_path / "mixed" / f"B{p.name}")
    with caplog.at_level("INFO", logger="medkd.io.volume_io"):
        vol = read_volume(tmp_path / "mixed")
    assert vol.array.shape[0] == 4
    assert big in caplog.text and "2 DICOM series" in caplog.text


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b"\x1f\x8b\x08 not really gzip"), "cannot read image"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: None, "file or folder not found"),
    ],
    ids=["corrupt", "empty", "missing"],
)
def test_bad_file_raises_data_error(tmp_path, make, match):
    path = tmp_path / "case1.nii.gz"
    make(path)
    with pytest.raises(DataError, match=rf"case1\.nii\.gz: {match}"):
        read_volume(path)


def test_bad_folders_raise_data_error(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="notes: folder holds no readable DICOM series"):
        read_volume(tmp_path / "notes")
    with pytest.raises(DataError, match="notes: no NIfTI/MHA/NRRD files and no DICOM series"):
        list_inputs(tmp_path / "notes")
    with pytest.raises(DataError, match="not found"):
        list_inputs(tmp_path / "absent")
    broken = tmp_path / "broken"
    write_dicom_series(broken, n=3)
    for p in broken.iterdir():
        p.write_bytes(p.read_bytes()[:200])  # truncated pixel data
    with pytest.raises(DataError, match="broken"):
        read_volume(broken)


def test_list_inputs(tmp_path):
    ref = _reference((2, 3, 4))
    for name in ("b.nii.gz", "a.nii", "c.mha"):
        sitk.WriteImage(ref, str(tmp_path / name))
    (tmp_path / "notes.txt").write_text("x")
    write_dicom_series(tmp_path / "series2", n=2)
    write_dicom_series(tmp_path / "series1", n=2)
    (tmp_path / "empty_dir").mkdir()
    assert [p.name for p in list_inputs(tmp_path)] == ["a.nii", "b.nii.gz", "c.mha", "series1", "series2"]
    assert list_inputs(tmp_path / "series1") == [tmp_path / "series1"]
    assert list_inputs(tmp_path / "b.nii.gz") == [tmp_path / "b.nii.gz"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("case1.nii.gz", "case1_seg.nii.gz"),
        ("dir/case.v2.nii", "case.v2_seg.nii.gz"),
        ("scan.MHA", "scan_seg.nii.gz"),
        ("x.nrrd", "x_seg.nii.gz"),
        ("dicom/series1", "series1_seg.nii.gz"),
        ("slice.dcm", "slice_seg.nii.gz"),
    ],
)
def test_output_name(path, expected):
    assert output_name(path) == expected
