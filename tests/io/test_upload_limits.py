# SPDX-License-Identifier: Apache-2.0
"""Hostile uploads (issue 8, case 5): zip bombs, many same-named members, non-DICOM files, headers that announce
huge arrays, DICOM headers of millions of tiny elements, deflate bombs; every refusal is quick, names the file and
the limit, and shows no server path."""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")
Image = pytest.importorskip("PIL.Image")
from pydicom.data import get_testdata_file

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.errors import ConfigError, DataError
from medkd.io import upload, volume_io
from medkd.io.upload import UploadLimits, load_upload, sniff, upload_limits

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the system temp folder at an empty folder: nothing may be written there (only under workdir)."""
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    for name in ("MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "MAX_VOXELS", "MAX_DECODE_BYTES", "MAX_DICOM_READS"):
        monkeypatch.delenv(f"MEDKD_UPLOAD_{name}", raising=False)
    yield systmp
    assert not any(systmp.iterdir()), "files written outside workdir"


@pytest.fixture
def dcmread_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``pydicom.dcmread`` call (the file's name), still reading."""
    calls: list[str] = []
    original = pydicom.dcmread

    def counted(fp, *args, **kwargs):
        calls.append(Path(getattr(fp, "name", fp)).name)
        return original(fp, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counted)
    return calls


@pytest.fixture
def disk_at_cleanup(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Bytes under the upload folder when a failed upload removes it (what was written to disk)."""
    sizes: list[int] = []
    original = shutil.rmtree

    def spy(path, *args, **kwargs):
        sizes.append(sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(upload.shutil, "rmtree", spy)
    return sizes


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def _refused(files: list[tuple[str, bytes]], work: Path, seconds: float = 5.0, **limits: int) -> DataError:
    """The DataError of an upload refused within ``seconds``, its message free of every server path."""
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_upload(files, work, limits=upload_limits(**limits) if limits else None)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.1f} s"
    text = str(info.value)
    for root in {str(work), str(work.resolve()), tempfile.gettempdir(), "upload-", "/files/"}:
        assert root not in text, text
    assert "Traceback" not in text
    assert not any(work.iterdir()), "a failed upload must not leave files behind"
    return info.value


def _nifti(
    tmp_path: Path, dims: tuple[int, ...], datatype: int = 16, bitpix: int = 32, nbytes: int | None = None
) -> bytes:
    """A small real NIfTI-1 file whose header is rewritten to announce ``dims`` of ``datatype``."""
    image = sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32))
    path = tmp_path / "src.nii"
    sitk.WriteImage(image, str(path))
    data = bytearray(path.read_bytes())
    data[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    data[70:74] = struct.pack("<hh", datatype, bitpix)
    return bytes(data if nbytes is None else data[:nbytes])


def _png_claiming(width: int, height: int) -> bytes:
    """A valid 8 x 8 PNG whose IHDR (CRC fixed) claims ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


# --------------------------------------------------------------------------------------------- zip archives
def test_zip_bomb_is_refused_at_the_byte_limit(tmp_path: Path, disk_at_cleanup: list[int]) -> None:
    bomb = _zip([("zeros.bin", bytes(64 * MiB))])
    assert len(bomb) < MiB // 4
    err = _refused([("bomb.zip", bomb)], tmp_path / "work", seconds=3, max_zip_bytes=4 * MiB)
    assert err.path == "bomb.zip" and "unpacks to more than 4 MiB" in err.problem
    assert "MEDKD_UPLOAD_MAX_ZIP_BYTES" in err.problem
    assert disk_at_cleanup and max(disk_at_cleanup) <= 4 * MiB
    # a file list that under-declares the size: zipfile stops at the declared size, the CRC fails
    lying = bytearray(bomb)
    entry = lying.rfind(b"PK\x01\x02")
    lying[entry + 24 : entry + 28] = struct.pack("<L", 1000)
    err = _refused([("lying.zip", bytes(lying))], tmp_path / "work", seconds=3, max_zip_bytes=4 * MiB)
    assert err.path == "lying.zip" and "damaged" in err.problem
    assert max(disk_at_cleanup) <= 4 * MiB
    # several archives share one budget
    half = _zip([("zeros.bin", bytes(3 * MiB))])
    err = _refused([("a.zip", half), ("b.zip", half)], tmp_path / "work", seconds=3, max_zip_bytes=4 * MiB)
    assert err.path == "b.zip" and "unpacks to more than 4 MiB" in err.problem


def test_zeros_under_the_limit_never_reach_pydicom(tmp_path: Path, dcmread_calls: list[str]) -> None:
    start = time.perf_counter()
    err = _refused([("zeros.zip", _zip([("IM0001", bytes(16 * MiB))]))], tmp_path / "work", seconds=3)
    assert str(err) == "IM0001: not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file"
    noise = np.random.default_rng(0).integers(0, 256, MiB, dtype=np.uint8).tobytes()
    _refused([("noise", noise), ("notes.txt", b"\x08\x00 not a tag " * 100)], tmp_path / "work", seconds=3)
    assert dcmread_calls == [], "non-DICOM files were parsed by pydicom"
    assert time.perf_counter() - start < 5


def test_raw_datasets_without_preamble_are_still_sniffed(tmp_path: Path) -> None:
    assert sniff(get_testdata_file("rtstruct.dcm"))[0] == "dicom"  # group 0008, explicit VR, no preamble
    series = write_dicom_series(tmp_path / "src", n_slices=1, rows=8, cols=8, seed=1)
    ds = pydicom.dcmread(series.paths[0])
    ds.preamble, ds.file_meta = None, pydicom.dataset.FileMetaDataset()
    raw = tmp_path / "raw"
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)  # implicit VR, no preamble
    assert raw.read_bytes()[:2] == b"\x08\x00" and sniff(raw)[0] == "dicom"
    (tmp_path / "fake").write_bytes(b"\x08\x00\x05\x00CS\xff\xff" + b"x" * 20)  # length beyond the file
    assert sniff(tmp_path / "fake")[0] == "unknown"


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_many_same_named_members_take_linear_time(tmp_path: Path) -> None:
    seconds = {}
    for n in (1000, 4000):
        archive = _zip([("study/IM0001", b"not an image")] * n)
        start = time.perf_counter()
        err = _refused([("many.zip", archive)], tmp_path / "work")
        seconds[n] = time.perf_counter() - start
        assert f"none of the {n} files" in err.problem
    assert seconds[4000] < 2.5, seconds  # 40 s before (quadratic name probing)
    assert seconds[4000] < 8 * seconds[1000] + 0.5, seconds  # linear: about 4x; quadratic: 16x


def test_same_names_get_distinct_paths_in_constant_time(tmp_path: Path) -> None:
    staging = upload.UploadFolder(tmp_path, upload_limits())
    paths = [staging.fresh(tmp_path, "IM.dcm") for _ in range(20_000)] + [staging.fresh(tmp_path, "im_2.DCM")]
    assert len({str(p).casefold() for p in paths}) == len(paths)
    assert paths[:3] == [tmp_path / "IM.dcm", tmp_path / "IM_2.dcm", tmp_path / "IM_3.dcm"]
    assert paths[-1] == tmp_path / "im_2_2.DCM"  # taken (case-insensitively) by the second IM.dcm


def test_member_count_is_refused_before_the_file_list_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    many = _zip([(f"f{i}", b"x") for i in range(30)])
    lying = bytearray(_zip([(f"{'n' * 60}{i}", b"") for i in range(2000)]))
    end = lying.rfind(b"PK\x05\x06")
    lying[end + 8 : end + 12] = struct.pack("<HH", 5, 5)  # an end record that under-counts
    opened: list[object] = []
    original = zipfile.ZipFile
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: opened.append(a) or original(*a, **k))
    err = _refused([("big.zip", many)], tmp_path / "work", max_zip_members=10)
    assert "holds 30 files and folders" in err.problem and "MEDKD_UPLOAD_MAX_ZIP_MEMBERS" in err.problem
    err = _refused([("lying.zip", bytes(lying))], tmp_path / "work", max_zip_members=10)  # the list's length tells
    assert "file list" in err.problem and "too long" in err.problem
    assert opened == []


# --------------------------------------------------------------------------------------------- DICOM headers
def test_dicm_followed_by_tiny_elements_stops_at_the_read_limit(tmp_path: Path) -> None:
    zeros = bytes(128) + b"DICM" + bytes(8 * MiB)  # a million (0000,0000) elements of length 0
    err = _refused([("scan.zip", _zip([("IM0001.dcm", zeros)]))], tmp_path / "work", seconds=4,
                   max_dicom_reads=50_000)  # fmt: skip
    assert err.path == "IM0001.dcm" and "50,000 reads" in err.problem and "MEDKD_UPLOAD_MAX_DICOM_READS" in err.problem
    raw = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100" + bytes(8 * MiB)  # a raw dataset start, then the same
    err = _refused([("IM0002", raw)], tmp_path / "work", seconds=4, max_dicom_reads=50_000)
    assert err.path == "IM0002" and "MEDKD_UPLOAD_MAX_DICOM_READS" in err.problem


def test_deflate_bomb_is_inflated_only_to_the_limit(tmp_path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import CTImageStorage, DeflatedExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, "1.2.3.4"
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta)
    bomb = bytes(128) + b"DICM" + fp.getvalue() + _deflate(bytes(32 * MiB))
    assert len(bomb) < MiB // 8
    err = _refused([("IM0001.dcm", bomb)], tmp_path / "work", seconds=4, max_zip_bytes=8 * MiB)
    assert err.path == "IM0001.dcm" and "(Deflated) DICOM file unpacks to more than 8 MiB" in err.problem
    assert "MEDKD_UPLOAD_MAX_ZIP_BYTES" in err.problem
    err = _refused([("IM0001.dcm", bomb)], tmp_path / "work", seconds=4, max_dicom_reads=50_000)  # within 1 GiB
    assert "MEDKD_UPLOAD_MAX_DICOM_READS" in err.problem  # but four million (0000,0000) elements
    dfl = Path(get_testdata_file("image_dfl.dcm"))  # a real deflated file still reaches the scan
    err = _refused([(dfl.name, dfl.read_bytes())], tmp_path / "work")
    assert "secondary capture" in err.problem


def test_dicom_series_beyond_the_voxel_limit_is_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medkd.io import dicom_volume

    monkeypatch.setattr(dicom_volume, "load_series_volume", lambda *a, **k: pytest.fail("decoded"))
    series = write_dicom_series(tmp_path / "src", n_slices=6, rows=16, cols=20, seed=3)
    files = [(p.name, p.read_bytes()) for p in series.paths]
    err = _refused(files, tmp_path / "work", max_voxels=1000)
    assert "1,920 voxels (6 × 16 × 20)" in err.problem and "MEDKD_UPLOAD_MAX_VOXELS" in err.problem


# --------------------------------------------------------------------------------------------- NIfTI and images
@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volume_io, "read_volume", lambda *a, **k: pytest.fail("the NIfTI was decoded"))


@pytest.mark.parametrize("gz", [False, True])
def test_nifti_announcing_a_huge_array_is_refused_before_decoding(gz: bool, tmp_path: Path, no_decoding) -> None:
    import gzip

    huge = _nifti(tmp_path, (4000, 4000, 4000), datatype=64, bitpix=64)  # 476 GiB of float64, in a 400-byte file
    name = "huge.nii.gz" if gz else "huge.nii"
    err = _refused([(name, gzip.compress(huge) if gz else huge)], tmp_path / "work")
    assert err.path == name and "64,000,000,000 voxels (4000 × 4000 × 4000)" in err.problem
    assert "MEDKD_UPLOAD_MAX_VOXELS" in err.problem
    # under the old check (2 GB of stored voxels), yet 1.2e9 voxels, or 4 GiB to decode 1.7 GB of float64
    big = _nifti(tmp_path, (1200, 1000, 1000), datatype=2, bitpix=8)
    err = _refused([("big.nii", big)], tmp_path / "work")
    assert "1,200,000,000 voxels" in err.problem and "MEDKD_UPLOAD_MAX_VOXELS" in err.problem
    big = _nifti(tmp_path, (600, 600, 600), datatype=64, bitpix=64)
    err = _refused([("big.nii", big)], tmp_path / "work")
    assert "216,000,000 voxels" in err.problem and "needs about 4.02 GiB of memory" in err.problem
    assert "MEDKD_UPLOAD_MAX_DECODE_BYTES" in err.problem


def test_nifti_limits_are_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _nifti(tmp_path, (6, 5, 4))
    assert load_upload([("ok.nii", data)], tmp_path / "fine").array.shape == (4, 5, 6)
    err = _refused([("ok.nii", data)], tmp_path / "work", max_voxels=100)
    assert "120 voxels (6 × 5 × 4)" in err.problem and "the upload limit is 100 voxels" in err.problem
    err = _refused([("ok.nii", data)], tmp_path / "work", max_decode_bytes=1000)  # 120 x (2 x 4 + 4) bytes
    assert "needs about 1.41 KiB" in err.problem
    monkeypatch.setenv("MEDKD_UPLOAD_MAX_VOXELS", "1_00")
    assert upload_limits().max_voxels == 100 and upload_limits(max_voxels=7).max_voxels == 7
    assert "120 voxels" in _refused([("ok.nii", data)], tmp_path / "work").problem
    monkeypatch.setenv("MEDKD_UPLOAD_MAX_VOXELS", "lots")
    with pytest.raises(ConfigError, match="MEDKD_UPLOAD_MAX_VOXELS"):
        upload_limits()
    with pytest.raises(ConfigError, match="max_zip_bytes"):
        UploadLimits(max_zip_bytes=0)
    with pytest.raises(TypeError, match="max_voxel"):
        upload_limits(max_voxel=3)


def test_nifti_4d_and_truncated_are_refused_before_decoding(tmp_path: Path, no_decoding) -> None:
    err = _refused([("series.nii", _nifti(tmp_path, (6, 5, 4, 3)))], tmp_path / "work")
    assert "4 dimensions (6 × 5 × 4 × 3)" in err.problem
    err = _refused([("cut.nii", _nifti(tmp_path, (6, 5, 4), nbytes=400))], tmp_path / "work")
    assert err.path == "cut.nii" and "shorter than its header says" in err.problem


def test_images_beyond_the_pixel_limit_are_not_decoded(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(buf, format="PNG")
    err = _refused([("photo.png", buf.getvalue())], tmp_path / "work", max_voxels=1000)
    assert err.path == "photo.png" and "8,000 pixels (100 × 80)" in err.problem
    assert "MEDKD_UPLOAD_MAX_VOXELS" in err.problem
    err = _refused([("bomb.png", _png_claiming(60_000, 60_000))], tmp_path / "work", seconds=3)
    assert err.path == "bomb.png" and "pixels" in err.problem and "MEDKD_UPLOAD_MAX_VOXELS" in err.problem
    err = _refused([("wide.png", _png_claiming(12_000, 12_000))], tmp_path / "work", seconds=3,
                   max_decode_bytes=64 * MiB)  # fmt: skip
    assert "144,000,000 pixels" in err.problem and "MEDKD_UPLOAD_MAX_DECODE_BYTES" in err.problem


# --------------------------------------------------------------------------------------------- messages
def test_reader_errors_show_the_uploaded_name_not_the_server_path(tmp_path: Path) -> None:
    bad = bytearray(_nifti(tmp_path, (6, 5, 4)))
    bad[70:74] = struct.pack("<hh", 999, 8)  # a datatype ITK does not know: its message quotes the file's path
    work = tmp_path / "work"
    err = _refused([("scan.nii", bytes(bad))], work)
    assert err.path == "scan.nii" and "scan.nii" in err.problem
    err = _refused([("study.zip", _zip([("a/b/scan", bytes(bad))]))], work)
    assert err.path == "scan"
