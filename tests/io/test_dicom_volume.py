# SPDX-License-Identifier: Apache-2.0
"""DICOM series -> volume (batch stage 3): sorting, rescale, geometry (cross-checked with highdicom, SimpleITK and
MONAI), one reason per broken series, pickling for spawn workers."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
from pydicom.data import get_testdata_file, get_testdata_files  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from medkd.data.synthetic_dicom import write_dicom_series  # noqa: E402
from medkd.io.dicom_scan import Reason  # noqa: E402
from medkd.io.dicom_volume import DicomVolume, SeriesError, load_series_volume  # noqa: E402
from medkd.io.volume_io import read_volume, write_mask_like  # noqa: E402

CT5N = "dicomdirtests/98892001/CT5N/*"


def _files(pattern: str) -> list[str]:
    files = get_testdata_files(pattern)
    assert files, pattern
    return files


def _edit(paths: list[Path], change: Callable[[Dataset, int], None]) -> None:
    """Apply ``change(ds, slice_index)`` to each file and save it back."""
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        change(ds, i)
        ds.save_as(path, enforce_file_format=True)


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _oblique(paths: list[Path], origin=(10.0, -20.0, 30.0), gap: float = 2.5, angles=(0.3, -0.2, 0.5)) -> np.ndarray:
    """Rewrite a synthetic series (paths in slice order) on an oblique grid; returns the rotation (cols = axes)."""
    rot = _rotation(*angles)

    def change(ds: Dataset, i: int) -> None:
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*rot[:, 0], *rot[:, 1])]
        ds.ImagePositionPatient = [round(float(v), 6) for v in np.asarray(origin) + i * gap * rot[:, 2]]

    _edit(paths, change)
    return rot


def _assert_same_image(vol: DicomVolume, array_b: np.ndarray, index_to_world_b: np.ndarray) -> None:
    """Every voxel of ``vol`` lands on a voxel of ``array_b`` (whose affine maps its own axis order to LPS) with the
    same value, so both describe one image whatever their axis order or slice direction."""
    n_s, n_r, n_c = vol.array.shape
    s, r, c = np.meshgrid(np.arange(n_s), np.arange(n_r), np.arange(n_c), indexing="ij")
    ijk = np.stack([c.ravel(), r.ravel(), s.ravel(), np.ones(s.size)])  # (col, row, slice, 1)
    world = vol.affine_lps @ ijk
    other = np.linalg.inv(index_to_world_b) @ world
    assert np.allclose(other, np.round(other), atol=1e-3), "grids do not coincide"
    idx = np.round(other[:3]).astype(int)  # already in array_b's axis order
    values = array_b[idx[0], idx[1], idx[2]]
    assert np.allclose(values, vol.array.ravel(), atol=1e-4)


def test_ct5n_shape_spacing_and_highdicom():
    files = _files(CT5N)
    vol = load_series_volume(files)
    assert vol.array.shape == (5, 16, 16) and vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    ref = hd.get_volume_from_series([pydicom.dcmread(f) for f in files])
    assert np.allclose(np.sort(ref.array.ravel()), np.sort(vol.array.ravel()))  # same HU values
    _assert_same_image(vol, ref.array, ref.affine)
    assert sorted(ref.spacing) == pytest.approx(sorted(vol.spacing))
    # sorted by increasing position along the normal; datasets and files follow the array
    z = [float(ds.ImagePositionPatient[2]) for ds in vol.datasets]
    assert z == sorted(z)
    assert vol.affine_lps[:3, 3] == pytest.approx([float(v) for v in vol.datasets[0].ImagePositionPatient])
    assert [Path(ds.filename) for ds in vol.datasets] == vol.files
    assert vol.study_uid == vol.datasets[0].StudyInstanceUID and vol.series_uid == vol.datasets[0].SeriesInstanceUID
    assert vol.array.min() < -500  # rescaled to HU (stored values are unsigned)


@pytest.mark.parametrize(
    "pattern, reason, hd_error",
    [
        ("dicomdirtests/77654033/CT2/*", Reason.INCONSISTENT_SPACING, "regularly-spaced"),  # z -99.5, 103, 104.3, 105.5
        ("dicomdirtests/98892001/CT2N/*", Reason.INCONSISTENT_ORIENTATION, "orientation"),  # sagittal + coronal
        ("dicomdirtests/98892003/MR700/*", Reason.INCONSISTENT_ORIENTATION, "orientation"),  # 7 radial slices
    ],
)
def test_irregular_pydicom_series(pattern, reason, hd_error):
    files = _files(pattern)
    with pytest.raises(SeriesError) as info:
        load_series_volume(files)
    assert info.value.reason == reason and info.value.message
    with pytest.raises(ValueError, match=hd_error):
        hd.get_volume_from_series([pydicom.dcmread(f) for f in files])


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_synthetic_shuffled_names_sort_by_position(tmp_path: Path, modality: str):
    series = write_dicom_series(tmp_path, n_slices=6, rows=10, cols=12, modality=modality, shuffle_names=True)
    assert [p.name for p in series.paths] != sorted(p.name for p in series.paths)  # names do not give the order
    vol = load_series_volume(sorted(series.paths, reverse=True))
    offset = 1024 if modality == "CT" else 0
    assert np.array_equal(vol.array, series.pixels.astype(np.float32) - offset)
    assert vol.files == series.paths
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert vol.series_uid == series.series_uid and vol.study_uid == series.study_uid


def test_descending_positions_are_reversed(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=4, rows=8, cols=8)
    _edit(series.paths, lambda ds, i: setattr(ds, "ImagePositionPatient", [0.0, 0.0, 100.0 - 3.0 * i]))
    vol = load_series_volume(series.paths)
    assert np.array_equal(vol.array, series.pixels[::-1].astype(np.float32) - 1024)
    assert vol.affine_lps[:3, 3] == pytest.approx([0.0, 0.0, 91.0]) and vol.spacing[0] == pytest.approx(3.0)


def test_oblique_series_matches_highdicom_and_simpleitk(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=5, rows=9, cols=7, pixel_spacing=(0.6, 0.9), shuffle_names=True)
    rot = _oblique(series.paths)
    vol = load_series_volume(series.paths)
    assert np.array_equal(vol.array, series.pixels.astype(np.float32) - 1024)
    # columns of the affine: row cosines * column spacing, column cosines * row spacing, normal * gap
    assert vol.affine_lps[:3, 0] == pytest.approx(rot[:, 0] * 0.9, abs=1e-6)
    assert vol.affine_lps[:3, 1] == pytest.approx(rot[:, 1] * 0.6, abs=1e-6)
    assert vol.affine_lps[:3, 2] == pytest.approx(rot[:, 2] * 2.5, abs=1e-5)
    assert np.allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-6) and np.linalg.det(vol.direction) > 0
    ref = hd.get_volume_from_series([pydicom.dcmread(p) for p in series.paths])
    _assert_same_image(vol, ref.array, ref.affine)
    itk = read_volume(tmp_path)  # SimpleITK/GDCM reads the same files
    assert np.array_equal(itk.array, vol.array)
    image = vol.reference_image()
    assert image.GetSize() == itk.image.GetSize()
    assert np.allclose(image.GetOrigin(), itk.image.GetOrigin(), atol=1e-4)
    assert np.allclose(image.GetSpacing(), itk.image.GetSpacing(), atol=1e-4)
    assert np.allclose(image.GetDirection(), itk.image.GetDirection(), atol=1e-5)


def test_reference_image_round_trip(tmp_path: Path):
    series = write_dicom_series(tmp_path / "dcm", n_slices=4, rows=8, cols=6)
    _oblique(series.paths, angles=(0.1, 0.4, -0.7))
    vol = load_series_volume(series.paths)
    mask = (np.arange(vol.array.size).reshape(vol.array.shape) % 3).astype(np.uint8)
    out = write_mask_like(mask, vol.reference_image(), tmp_path / "mask.nii.gz")
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), mask)
    first_ipp = [float(v) for v in vol.datasets[0].ImagePositionPatient]
    assert back.TransformIndexToPhysicalPoint((0, 0, 0)) == pytest.approx(first_ipp, abs=1e-4)
    corner = (5, 7, 3)  # (col, row, slice)
    expected = vol.affine_lps @ np.array([*corner, 1.0])
    assert back.TransformIndexToPhysicalPoint(corner) == pytest.approx(expected[:3], abs=1e-3)
    last_ipp = [float(v) for v in vol.datasets[-1].ImagePositionPatient]
    assert back.TransformIndexToPhysicalPoint((0, 0, 3)) == pytest.approx(last_ipp, abs=1e-3)


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
def test_metatensor_matches_monai_reader():
    pytest.importorskip("monai")
    from monai.transforms import LoadImage

    files = _files(CT5N)
    vol = load_series_volume(files)
    mt = vol.metatensor()
    assert tuple(mt.shape) == (1, 16, 16, 5)
    assert np.allclose(mt.affine.numpy(), vol.affine_ras)
    assert np.allclose(vol.affine_ras, np.diag([-1, -1, 1, 1]) @ vol.affine_lps)
    assert np.array_equal(mt[0].numpy(), vol.array.transpose(2, 1, 0))
    assert np.allclose(vol.affine_ras[:3, 3], [72.199997, 143.0, -1.2375], atol=1e-4)  # L, P negated
    folder = Path(files[0]).parent
    ref = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True)(str(folder))
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    as_lps = DicomVolume(vol.array, vol.datasets, vol.spacing, ras_to_lps @ mt.affine.numpy(), "", "")
    _assert_same_image(as_lps, ref[0].numpy(), ras_to_lps @ ref.affine.numpy())


def _drop(tag: str) -> Callable[[Dataset, int], None]:
    return lambda ds, i: delattr(ds, tag) if i == 1 else None


@pytest.mark.parametrize(
    "tag", ["PatientSex", "StudyID", "FrameOfReferenceUID", "ImagePositionPatient", "SliceThickness"]
)
def test_missing_tags(tmp_path: Path, tag: str):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8)
    _edit(series.paths, _drop(tag))
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.MISSING_TAGS and tag in info.value.message and "1/3" in info.value.message


def test_missing_tags_via_writer_option(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8, drop_tags=("AccessionNumber",))
    with pytest.raises(SeriesError, match="AccessionNumber") as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.MISSING_TAGS


def test_empty_but_present_tags_are_fine(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8)

    def blank(ds: Dataset, i: int) -> None:
        ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber, ds.SliceThickness = "", "", "", None

    _edit(series.paths, blank)
    assert load_series_volume(series.paths).array.shape == (3, 8, 8)
    _edit(series.paths, lambda ds, i: setattr(ds, "FrameOfReferenceUID", "") if i == 0 else None)
    with pytest.raises(SeriesError, match="FrameOfReferenceUID empty"):
        load_series_volume(series.paths)


@pytest.mark.parametrize(
    "option, reason",
    [
        ({"jitter_slice": 2}, Reason.INCONSISTENT_SPACING),
        ({"duplicate_slice": 2}, Reason.DUPLICATE_POSITIONS),
        ({"odd_shape_slice": 1}, Reason.INCONSISTENT_SHAPE),
        ({"truncate_slice": 3}, Reason.TRUNCATED),
    ],
)
def test_broken_synthetic_series(tmp_path: Path, option: dict, reason: Reason):
    series = write_dicom_series(tmp_path, n_slices=5, rows=8, cols=8, **option)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason == reason and info.value.message
    assert str(info.value).startswith(f"{reason}: ")


def test_inconsistent_orientation_and_pixel_spacing(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=4, rows=8, cols=8)
    _edit(series.paths, lambda ds, i: setattr(ds, "PixelSpacing", [0.8, 0.9]) if i == 2 else None)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.INCONSISTENT_SHAPE
    tilted = [1.0, 0.0, 0.0, 0.0, 0.9998, 0.02]
    _edit(series.paths, lambda ds, i: setattr(ds, "ImageOrientationPatient", tilted) if i == 1 else None)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.INCONSISTENT_ORIENTATION


def test_gantry_tilt_is_not_silently_sheared(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=4, rows=8, cols=8)
    _edit(series.paths, lambda ds, i: setattr(ds, "ImagePositionPatient", [0.0, 0.5 * i, 2.5 * i]))  # ~11 deg tilt
    with pytest.raises(SeriesError, match="deg off") as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.INCONSISTENT_ORIENTATION


def test_too_few_slices_and_single_slice(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths, min_slices=4)
    assert info.value.reason == Reason.TOO_FEW_SLICES
    one = load_series_volume(series.paths[:1])
    assert one.array.shape == (1, 8, 8) and one.spacing[0] == pytest.approx(2.5)  # SliceThickness
    assert one.reference_image().GetSpacing()[2] == pytest.approx(2.5)


def test_per_slice_rescale(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8)
    _edit(series.paths, lambda ds, i: setattr(ds, "RescaleSlope", 2) if i == 1 else None)
    vol = load_series_volume(series.paths)
    expected = series.pixels.astype(np.float32) - 1024
    expected[1] = 2 * series.pixels[1].astype(np.float32) - 1024
    assert np.array_equal(vol.array, expected)


def test_no_decoder(tmp_path: Path):
    """Real 12-bit JPEG Extended pixel data: ``no_decoder`` unless libjpeg/gdcm plugins are installed."""
    jpeg_path = get_testdata_file("JPEG-lossy.dcm", download=False)
    if jpeg_path is None:
        pytest.skip("JPEG-lossy.dcm not bundled")
    jpeg = pydicom.dcmread(jpeg_path)
    series = write_dicom_series(tmp_path, n_slices=2, rows=int(jpeg.Rows), cols=int(jpeg.Columns))

    def transplant(ds: Dataset, i: int) -> None:
        ds.file_meta.TransferSyntaxUID = jpeg.file_meta.TransferSyntaxUID
        for kw in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PhotometricInterpretation"):
            setattr(ds, kw, jpeg[kw].value)
        ds.PixelData = jpeg.PixelData
        ds["PixelData"].is_undefined_length = True

    _edit(series.paths, transplant)
    try:
        vol = load_series_volume(series.paths)
    except SeriesError as err:
        assert err.reason == Reason.NO_DECODER
        assert "pylibjpeg" in err.message and "gdcm" in err.message
    else:
        assert vol.array.shape == (2, int(jpeg.Rows), int(jpeg.Columns))


def test_no_decoder_mapped_from_runtime_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import pydicom.pixels

    series = write_dicom_series(tmp_path, n_slices=2, rows=8, cols=8)

    def fail(ds, **kwargs):
        raise RuntimeError("Unable to decode as exceptions were raised by all available plugins:\n  pillow: nope")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", fail)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason == Reason.NO_DECODER and "pillow: nope" in info.value.message


def test_unreadable_and_not_dicom_files(tmp_path: Path):
    series = write_dicom_series(tmp_path / "s", n_slices=2, rows=8, cols=8)
    with pytest.raises(SeriesError) as info:
        load_series_volume([*series.paths, tmp_path / "gone.dcm"])
    assert info.value.reason == Reason.UNREADABLE
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 10)
    with pytest.raises(SeriesError) as info:
        load_series_volume([*series.paths, text])
    assert info.value.reason in (Reason.NOT_DICOM, Reason.UNREADABLE)


def test_pickle_and_spawn_worker(tmp_path: Path):
    series = write_dicom_series(tmp_path, n_slices=3, rows=8, cols=8)
    vol = load_series_volume(series.paths)
    clone = pickle.loads(pickle.dumps(vol))
    assert np.array_equal(clone.array, vol.array) and np.array_equal(clone.affine_lps, vol.affine_lps)
    assert [ds.SOPInstanceUID for ds in clone.datasets] == [ds.SOPInstanceUID for ds in vol.datasets]
    assert clone.datasets[0].PixelData == vol.datasets[0].PixelData
    err = pickle.loads(pickle.dumps(SeriesError(Reason.TRUNCATED, "a.dcm: short")))
    assert (err.reason, err.message) == (Reason.TRUNCATED, "a.dcm: short")
    bad = write_dicom_series(tmp_path / "bad", n_slices=3, rows=8, cols=8, jitter_slice=1)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = pool.submit(load_series_volume, [str(p) for p in series.paths]).result(timeout=120)
        failed = pool.submit(load_series_volume, [str(p) for p in bad.paths]).exception(timeout=120)
    assert np.array_equal(remote.array, vol.array) and remote.spacing == vol.spacing
    assert isinstance(failed, SeriesError) and failed.reason == Reason.INCONSISTENT_SPACING


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("ImagePositionPatient", ["nan", "0", "0"]),
        ("ImagePositionPatient", ["inf", "0", "0"]),
        ("ImageOrientationPatient", ["nan", "0", "0", "0", "1", "0"]),
        ("ImageOrientationPatient", ["0", "0", "0", "0", "0", "0"]),
        ("PixelSpacing", ["0", "0.8"]),
        ("PixelSpacing", ["-1", "0.8"]),
        ("PixelSpacing", ["nan", "0.8"]),
        ("RescaleSlope", "nan"),
        ("RescaleIntercept", "inf"),
        ("RescaleSlope", "1e38"),  # finite, but the rescaled values overflow float32
    ],
)
def test_non_finite_geometry_and_rescale_are_rejected(tmp_path: Path, keyword: str, value):
    """Hostile values never become a NaN affine or NaN voxels silently handed to the model."""
    import warnings

    series = write_dicom_series(tmp_path / "s", n_slices=3, rows=8, cols=8)

    def change(ds: Dataset, i: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            setattr(ds, keyword, value)

    _edit(series.paths, change)
    with pytest.raises(SeriesError) as info:
        load_series_volume(series.paths)
    assert info.value.reason in (Reason.MISSING_TAGS, Reason.INCONSISTENT_ORIENTATION)
    assert keyword.split("Patient")[0] in info.value.message or "orthogonal" in info.value.message
