# SPDX-License-Identifier: Apache-2.0
"""App upload decoding: content sniffing (DICOM, zip, NIfTI, PNG/JPEG), safe zip extraction, clear errors without
patient data, and the bundled synthetic examples."""

from __future__ import annotations

import gzip
import io
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")
Image = pytest.importorskip("PIL.Image")
from pydicom.data import get_testdata_file, get_testdata_files  # noqa: E402

from medkd.data import examples  # noqa: E402
from medkd.data.examples import example_names, load_example  # noqa: E402
from medkd.data.synthetic import make_cardiac_volume  # noqa: E402
from medkd.data.synthetic_dicom import write_dicom_series  # noqa: E402
from medkd.errors import DataError  # noqa: E402
from medkd.io import upload_limits  # noqa: E402
from medkd.io.upload import LoadedImage, load_upload, sniff  # noqa: E402
from medkd.io.volume_io import write_mask_like  # noqa: E402

#: identifying values write_dicom_series puts in every file; none may reach info() or a message
PHI = ("Synthetic^Phantom", "SYN0001", "ACC0001", "19700101")


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the system temp folder at an empty folder: nothing may be written there (only under workdir)."""
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    yield systmp
    assert not any(systmp.iterdir()), "files written outside workdir"


def _read(paths: list[Path]) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in paths]


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def _nifti_bytes(tmp_path: Path, array: np.ndarray, spacing: tuple[float, ...], suffix: str) -> bytes:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path = tmp_path / f"src{suffix}"
    sitk.WriteImage(image, str(path), useCompression=suffix.endswith(".gz"))
    return path.read_bytes()


def _under(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _error(files: list[tuple[str, bytes]], workdir: Path) -> DataError:
    with pytest.raises(DataError) as info:
        load_upload(files, workdir)
    err = info.value
    text = str(err)
    assert "Traceback" not in text and not any(value in text for value in PHI), text
    assert not workdir.exists() or not any(workdir.iterdir()), "a failed upload must not leave files behind"
    return err


@pytest.fixture
def series(tmp_path: Path):
    return write_dicom_series(tmp_path / "src", n_slices=6, rows=16, cols=20, seed=3)


# --------------------------------------------------------------------------------------------- DICOM
def test_dicom_files_in_any_order_become_the_sorted_hu_volume(series, tmp_path: Path) -> None:
    files = _read(series.paths)
    files = [files[i] for i in np.random.default_rng(0).permutation(len(files))]
    work = tmp_path / "work"
    img = load_upload(files, work)
    assert img.kind == "dicom" and img.modality == "CT" and img.n_files == 6
    np.testing.assert_array_equal(img.array, series.pixels.astype(np.float32) - 1024)
    assert img.array.dtype == np.float32
    assert img.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert [ds.SOPInstanceUID for ds in img.dicom.datasets] == [pydicom.dcmread(p).SOPInstanceUID for p in series.paths]
    assert img.reference.GetSize() == (20, 16, 6) and img.note == ""
    assert _under(img.folder, work) and all(_under(p, img.folder) for p in img.dicom.files)
    mask = write_mask_like(series.mask, img.reference, work / "mask.nii.gz")
    assert sitk.ReadImage(str(mask)).GetSpacing() == pytest.approx((0.8, 0.8, 2.5))


def test_zipped_series_with_folders_and_junk(series, tmp_path: Path) -> None:
    members = {f"study/series1/{p.name}": p.read_bytes() for p in series.paths}
    members |= {"__MACOSX/study/._IM0001.dcm": b"junk", "study/.DS_Store": b"\0\0", "README.txt": b"hello"}
    img = load_upload([("study.zip", _zip(members))], tmp_path / "work")
    np.testing.assert_array_equal(img.array, series.pixels.astype(np.float32) - 1024)
    assert img.name == "study.zip"
    assert "1 file ignored" in img.note and "README.txt" in img.note
    assert not list(img.folder.rglob("*MACOSX*")) and not list(img.folder.rglob(".DS_Store"))


@pytest.mark.parametrize("member", ["../evil.dcm", "a/../../evil.dcm", "/tmp/evil.dcm", "C:/evil.dcm", "..\\evil"])
def test_zip_with_unsafe_path_is_rejected(member: str, series, tmp_path: Path) -> None:
    data = _zip({"ok/IM1.dcm": series.paths[0].read_bytes(), member: b"payload"})
    err = _error([("bad.zip", data)], tmp_path / "work")
    assert err.path == "bad.zip" and "unsafe path" in err.problem
    assert not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize(
    ("limit", "value", "words"),
    [("MAX_ZIP_MEMBERS", 2, "holds 3 files"), ("MAX_ZIP_BYTES", 100, "unpacks to more than")],
)
def test_zip_limits(limit: str, value: int, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upload_limits, limit, value)  # the module upload_limits() reads
    data = _zip({f"f{i}": bytes(60) for i in range(3)})
    assert words in _error([("big.zip", data)], tmp_path / "work").problem


def test_several_series_pick_the_largest_and_say_so(tmp_path: Path) -> None:
    big = write_dicom_series(tmp_path / "a", n_slices=5, rows=8, cols=8, seed=1)
    small = write_dicom_series(tmp_path / "b", n_slices=3, rows=8, cols=8, seed=2)
    img = load_upload(_read(small.paths) + _read(big.paths), tmp_path / "work")
    assert img.dicom.series_uid == big.series_uid and img.array.shape == (5, 8, 8)
    assert "2 image series" in img.note and "largest" in img.info()["note"]


def test_pydicom_test_files(tmp_path: Path) -> None:
    work = tmp_path / "work"
    ct = Path(get_testdata_file("CT_small.dcm"))
    img = load_upload([(ct.name, ct.read_bytes())], work)
    raw = pydicom.dcmread(ct)
    assert img.array.shape == (1, 128, 128) and img.modality == "CT"
    expected = raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    np.testing.assert_allclose(img.array[0], expected)
    ct5n = [Path(p) for p in get_testdata_files("dicomdirtests/98892001/CT5N/*")]
    img = load_upload(_read(ct5n), work)
    assert img.array.shape == (5, 16, 16) and img.n_files == 5


# --------------------------------------------------------------------------------------------- NIfTI and images
@pytest.mark.parametrize(
    ("suffix", "name"), [(".nii", "scan.nii"), (".nii", "upload"), (".nii.gz", "gz"), (".nii.gz", "scan.nii.gz")]
)
def test_nifti_from_bytes_keeps_spacing(suffix: str, name: str, tmp_path: Path) -> None:
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    data = _nifti_bytes(tmp_path, array, (0.7, 0.9, 2.5), suffix)
    img = load_upload([(name, data)], tmp_path / "work")
    assert img.kind == "nifti" and img.modality == "" and img.name == name
    np.testing.assert_array_equal(img.array, array)
    assert img.spacing == pytest.approx((2.5, 0.9, 0.7))
    assert img.reference.GetSize() == (6, 5, 4)


def test_nifti_2d_is_one_slice(tmp_path: Path) -> None:
    data = _nifti_bytes(tmp_path, np.arange(12, dtype=np.float32).reshape(3, 4), (0.5, 0.25), ".nii.gz")
    img = load_upload([("slice", data)], tmp_path / "work")
    assert img.array.shape == (1, 3, 4) and img.spacing == pytest.approx((1.0, 0.25, 0.5))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_and_jpeg_become_grey_one_slice(fmt: str, mode: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    grey = np.kron(rng.integers(0, 255, (6, 8)), np.ones((8, 8))).astype(np.uint8)  # blocky: JPEG keeps it
    array = grey if mode == "L" else np.stack([grey, grey // 2, 255 - grey], axis=-1).astype(np.uint8)
    img = load_upload([("photo", _png(array, fmt))], tmp_path / "work")
    assert img.kind == "image" and img.array.shape == (1, 48, 64) and img.array.dtype == np.float32
    assert img.spacing == (1.0, 1.0, 1.0) and img.info()["modality"] == "unknown"
    expected = np.asarray(Image.fromarray(array).convert("L"), dtype=np.float32)
    tolerance = 0 if fmt == "PNG" else 12
    assert np.abs(img.array[0] - expected).mean() <= tolerance


def test_16_bit_png_keeps_its_values(tmp_path: Path) -> None:
    array = np.arange(0, 4000 * 6, 4000, dtype=np.uint16).reshape(2, 3)
    img = load_upload([("x.png", _png(array))], tmp_path / "work")
    np.testing.assert_array_equal(img.array[0], array.astype(np.float32))


# --------------------------------------------------------------------------------------------- broken inputs
def test_random_bytes_and_text_name_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    err = _error([("IM0001", noise)], tmp_path / "work")
    assert str(err) == "IM0001: not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file"
    err = _error([("notes.txt", b"Patient looked fine.\n" * 20)], tmp_path / "work")
    assert str(err) == "notes.txt: not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file"
    err = _error([("a", b"text"), ("b", noise)], tmp_path / "work")
    assert err.path == "a + 1 more" and "none of the 2 files" in err.problem


def test_empty_upload_and_empty_file(tmp_path: Path) -> None:
    assert _error([], tmp_path / "work").problem == "no files were uploaded"
    assert str(_error([("IM9", b"")], tmp_path / "work")) == "IM9: the file is empty"


def test_gzip_without_nifti(tmp_path: Path) -> None:
    err = _error([("scan.nii.gz", gzip.compress(b"not a header" * 100))], tmp_path / "work")
    assert "holds no NIfTI image" in err.problem


def test_truncated_pixel_data_names_the_slice(tmp_path: Path) -> None:
    series = write_dicom_series(tmp_path / "src", n_slices=4, rows=16, cols=16, truncate_slice=1)
    err = _error(_read(series.paths), tmp_path / "work")
    assert err.path == series.paths[1].name and err.problem.startswith("truncated pixel data")


def test_inconsistent_spacing(tmp_path: Path) -> None:
    series = write_dicom_series(tmp_path / "src", n_slices=5, rows=8, cols=8, jitter_slice=2)
    err = _error(_read(series.paths), tmp_path / "work")
    assert err.path == f"{series.paths[0].name} + 4 more"
    assert "inconsistent slice spacing" in err.problem and "does not resample" in err.problem


def test_structured_report_only(tmp_path: Path) -> None:
    sr = Path(get_testdata_file("test-SR.dcm"))
    err = _error([(sr.name, sr.read_bytes())], tmp_path / "work")
    assert err.path == "test-SR.dcm" and "no image series in the upload" in err.problem and "SR" in err.problem


def test_mixed_kinds_and_several_volumes(series, tmp_path: Path) -> None:
    nifti = _nifti_bytes(tmp_path, np.zeros((2, 3, 4), np.float32), (1.0, 1.0, 1.0), ".nii.gz")
    err = _error(_read(series.paths[:2]) + [("vol.nii.gz", nifti)], tmp_path / "work")
    assert "mixes DICOM (2 files), NIfTI (1 file)" in err.problem
    err = _error([("a.nii.gz", nifti), ("b.nii.gz", nifti)], tmp_path / "work")
    assert "2 NIfTI files" in err.problem and "one at a time" in err.problem


def test_unusable_files_beside_a_series_are_ignored(series, tmp_path: Path) -> None:
    img = load_upload(_read(series.paths) + [("notes.txt", b"hello")], tmp_path / "work")
    assert img.array.shape == (6, 16, 20) and "notes.txt" in img.note


# --------------------------------------------------------------------------------------------- PHI, sniffing
def test_info_is_technical_and_patient_free(series, tmp_path: Path) -> None:
    img = load_upload(_read(series.paths), tmp_path / "work")
    info = img.info()
    assert info["size"] == "6 × 16 × 20" and info["spacing"] == "2.5 × 0.8 × 0.8 mm" and info["slices"] == "6"
    assert info["modality"] == "CT" and info["bits stored"] == "12" and info["files"] == "6"
    text = repr(info) + img.name + img.note
    assert not any(value in text for value in PHI)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "image"),
        (b"\xff\xd8\xff\xe0" + bytes(30), "image"),
        (bytes(128) + b"DICM" + bytes(30), "dicom"),
        (b"PK\x05\x06" + bytes(18), "zip"),
        (b"", "empty"),
        (b"%PDF-1.4 hello", "unknown"),
    ],
)
def test_sniff(content: bytes, kind: str, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(content)
    assert sniff(path)[0] == kind


def test_sniff_raw_dicom_without_preamble_and_nifti_header_only(tmp_path: Path) -> None:
    assert sniff(get_testdata_file("rtstruct.dcm"))[0] == "dicom"  # no preamble
    header = bytearray(_nifti_bytes(tmp_path, np.zeros((2, 2, 2), np.float32), (1.0, 1.0, 1.0), ".nii")[:352])
    header[344:348] = b"ni1\0"
    path = tmp_path / "x.hdr"
    path.write_bytes(bytes(header))
    kind, detail = sniff(path)
    assert kind == "unknown" and ".hdr" in detail


# --------------------------------------------------------------------------------------------- examples
@pytest.mark.parametrize("name", example_names())
def test_examples_load_deterministically_with_ground_truth(name: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    first, second = load_example(name, work), load_example(name, work)
    assert first.name == name and first.ground_truth is not None
    assert first.ground_truth.shape == first.array.shape and first.array.dtype == np.float32
    assert first.ground_truth.max() == len(first.ground_truth_names) - 1
    np.testing.assert_array_equal(first.array, second.array)
    np.testing.assert_array_equal(first.ground_truth, second.ground_truth)
    assert first.folder != second.folder and _under(first.folder, work) and _under(second.folder, work)
    if first.kind == "dicom":
        assert first.dicom.series_uid == second.dicom.series_uid and len(first.dicom.datasets) == first.array.shape[0]


def test_cardiac_example_is_the_training_distribution(tmp_path: Path) -> None:
    img = load_example("Synthetic cine MR (cardiac, ACDC-like)", tmp_path / "work")
    image, label = make_cardiac_volume(np.random.default_rng(examples._CARDIAC_SEED), n_slices=10, size=64)
    np.testing.assert_array_equal(img.array, np.round(image * 1000))
    np.testing.assert_array_equal(img.ground_truth, label)
    assert img.modality == "MR" and img.spacing == pytest.approx((10.0, 1.5, 1.5))
    assert img.ground_truth_names == ("background", "RV", "Myo", "LV")


def test_unknown_example_suggests_names(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="Synthetic CT phantom"):
        load_example("CT phantom", tmp_path / "work")


def test_loaded_image_pickles(series, tmp_path: Path) -> None:
    img = load_upload(_read(series.paths), tmp_path / "work")  # st.cache_data pickles what it returns
    back: LoadedImage = pickle.loads(pickle.dumps(img))
    np.testing.assert_array_equal(back.array, img.array)
    assert back.reference.GetSize() == img.reference.GetSize() and back.info() == img.info()
