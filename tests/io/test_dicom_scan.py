# SPDX-License-Identifier: Apache-2.0
"""DICOM scan (batch stage 1): every file gets one entry with the right reason; image files group into series."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

from medkd.data.synthetic_dicom import write_dicom_series  # noqa: E402
from medkd.errors import DataError  # noqa: E402
from medkd.io import dicom_scan  # noqa: E402
from medkd.io.dicom_scan import FileEntry, Reason, SeriesInfo, scan_file, scan_tree  # noqa: E402

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _by_rel(entries: list[FileEntry], root: Path) -> dict[str, FileEntry]:
    return {str(e.path.relative_to(root)): e for e in entries}


def _testdata(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not bundled with this pydicom")
    return Path(path)


@pytest.fixture(scope="module")
def dicomdir_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SeriesInfo], list[FileEntry]]:
    root = tmp_path_factory.mktemp("scan") / "dicomdirtests"
    shutil.copytree(TEST_FILES / "dicomdirtests", root)
    series, entries = scan_tree(root)
    return root, series, entries


def test_every_file_once_sorted(dicomdir_tree):
    root, series, entries = dicomdir_tree
    paths = [e.path for e in entries]
    assert paths == _regular_files(root)
    assert all(e.status in ("ok", "skipped") for e in entries)
    assert all((e.status == "ok") == (e.reason is None) for e in entries)
    assert [s.series_uid for s in series] == sorted(s.series_uid for s in series)


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("DICOMDIR", Reason.NON_IMAGE),
        ("DICOMDIR-bigEnd", Reason.NON_IMAGE),
        ("TINY_ALPHA/DICOMDIR", Reason.NON_IMAGE),
        ("TINY_ALPHA/PT000000/ST000000/SE000000/IM000000", Reason.NON_IMAGE),  # header only, no pixel data
        ("README.txt", Reason.NOT_DICOM),
        ("TINY_ALPHA/README", Reason.NOT_DICOM),
        ("98892001/CT5N/2062", None),
        ("77654033/CR1/6154", None),
    ],
)
def test_dicomdir_tree_reasons(dicomdir_tree, rel, reason):
    root, _, entries = dicomdir_tree
    entry = _by_rel(entries, root)[rel]
    assert entry.reason == reason
    assert entry.status == ("ok" if reason is None else "skipped")
    if reason is not None:
        assert entry.message


def test_dicomdir_tree_series(dicomdir_tree):
    root, series, entries = dicomdir_tree
    ok = [e for e in entries if e.status == "ok"]
    assert sum(s.n_files for s in series) == len(ok)
    assert {e.series_uid for e in ok} == {s.series_uid for s in series}
    ct5n = [s for s in series if s.files[0].parent == root / "98892001" / "CT5N"]
    assert len(ct5n) == 1
    info = ct5n[0]
    assert info.n_files == 5 and info.modality == "CT"
    assert info.files == sorted((root / "98892001" / "CT5N").iterdir())
    assert info.series_uid == pydicom.dcmread(info.files[0], stop_before_pixels=True).SeriesInstanceUID
    assert "PixelData" not in info.header and info.header.Modality == "CT"
    assert all(s.files == sorted(s.files) for s in series)
    # ok entries carry the SOP instance UID (the runner fingerprints them)
    by_rel = _by_rel(entries, root)
    assert by_rel["98892001/CT5N/2062"].sop_uid == pydicom.dcmread(root / "98892001/CT5N/2062").SOPInstanceUID


def test_odd_files(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    rtstruct = shutil.copy(_testdata("rtstruct.dcm"), root / "rtstruct.dcm")
    assert Path(rtstruct).read_bytes()[128:132] != b"DICM"  # no preamble: only the force=True read finds it
    shutil.copy(_testdata("CT_small.dcm"), root / "CT_small.dcm")
    (root / "empty.dcm").write_bytes(b"")
    (root / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not a DICOM file\n" * 20)
    outside = tmp_path / "outside"
    write_dicom_series(outside, n_slices=2, rows=8, cols=8)
    (root / "link_dir").symlink_to(outside, target_is_directory=True)
    (root / "link_file.dcm").symlink_to(root / "CT_small.dcm")

    series, entries = scan_tree(root)
    by_rel = _by_rel(entries, root)
    assert sorted(by_rel) == ["CT_small.dcm", "empty.dcm", "link_dir", "link_file.dcm", "notes.txt", "random.bin",
                              "rtstruct.dcm"]
    # links get a row each and are never read through: the one leaving the tree is not followed, the one inside
    # names its target, which is scanned under its own path (once)
    assert by_rel["link_dir"].reason == Reason.SYMLINK and "leaving the input folder" in by_rel["link_dir"].message
    assert by_rel["link_file.dcm"].reason == Reason.SYMLINK and "CT_small.dcm" in by_rel["link_file.dcm"].message
    assert by_rel["rtstruct.dcm"].reason == Reason.NON_IMAGE and "RTSTRUCT" in by_rel["rtstruct.dcm"].message
    assert by_rel["rtstruct.dcm"].sop_uid  # read through the force path
    assert by_rel["CT_small.dcm"].status == "ok"
    for name in ("empty.dcm", "random.bin", "notes.txt"):
        assert by_rel[name].reason == Reason.NOT_DICOM, name
    assert len(series) == 1 and series[0].files == [root / "CT_small.dcm"]


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_file_and_folder(tmp_path: Path):
    root = tmp_path / "in"
    write_dicom_series(root / "a", n_slices=2, rows=8, cols=8)
    locked = root / "a" / "locked.dcm"
    shutil.copy(_testdata("CT_small.dcm"), locked)
    locked.chmod(0)
    (root / "closed").mkdir()
    shutil.copy(_testdata("CT_small.dcm"), root / "closed" / "x.dcm")
    (root / "closed").chmod(0)
    try:
        _, entries = scan_tree(root)
    finally:
        (root / "closed").chmod(0o755)
        locked.chmod(0o644)
    by_rel = _by_rel(entries, root)
    assert by_rel["a/locked.dcm"].reason == Reason.UNREADABLE
    assert by_rel["closed"].reason == Reason.UNREADABLE


def test_os_error_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = shutil.copy(_testdata("CT_small.dcm"), tmp_path / "a.dcm")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(dicom_scan.pydicom, "dcmread", deny)
    entry, header = scan_file(path)
    assert (entry.status, entry.reason, header) == ("skipped", Reason.UNREADABLE, None)
    assert "Permission denied" in entry.message


def test_unlistable_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write_dicom_series(tmp_path / "in" / "ok", n_slices=2, rows=8, cols=8)
    closed = tmp_path / "in" / "closed"
    write_dicom_series(closed, n_slices=2, rows=8, cols=8)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == closed:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    series, entries = scan_tree(tmp_path / "in")
    by_rel = _by_rel(entries, tmp_path / "in")
    assert by_rel["closed"].reason == Reason.UNREADABLE and "cannot list folder" in by_rel["closed"].message
    assert len(series) == 1 and sum(e.status == "ok" for e in entries) == 2


def test_parser_crash_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = shutil.copy(_testdata("CT_small.dcm"), tmp_path / "a.dcm")

    def crash(*args, **kwargs):
        raise RuntimeError("parser exploded")

    monkeypatch.setattr(dicom_scan.pydicom, "dcmread", crash)
    entry, _ = scan_file(path)
    assert entry.reason == Reason.UNREADABLE and "parser exploded" in entry.message


def test_whole_pydicom_test_files(tmp_path: Path):
    root = tmp_path / "test_files"
    shutil.copytree(TEST_FILES, root, symlinks=True)
    series, entries = scan_tree(root)
    assert [e.path for e in entries] == _regular_files(root)
    by_rel = _by_rel(entries, root)
    expected = {
        "test-SR.dcm": Reason.NON_IMAGE,
        "rtdose.dcm": Reason.NON_IMAGE,
        "rtplan.dcm": Reason.NON_IMAGE,
        "SC_rgb_rle.dcm": Reason.SECONDARY_CAPTURE,
        "image_dfl.dcm": Reason.SECONDARY_CAPTURE,  # deflated: pixel data found by the fallback read
        "examples_ybr_color.dcm": Reason.MULTIFRAME,
        "crayons.icc": Reason.NOT_DICOM,
        "CT_small.dcm": None,
        "MR_small.dcm": None,
    }
    for name, reason in expected.items():
        if name in by_rel:
            assert by_rel[name].reason == reason, name
    assert sum(s.n_files for s in series) == sum(e.status == "ok" for e in entries)
    assert all(e.path in set().union(*(s.files for s in series)) for e in entries if e.status == "ok")


def test_messages_hold_no_patient_data(tmp_path: Path):
    root = tmp_path / "in"
    shutil.copytree(TEST_FILES / "dicomdirtests", root / "d")
    write_dicom_series(root / "syn", n_slices=2, rows=8, cols=8)
    _, entries = scan_tree(root)
    secrets = set()
    for entry in entries:
        if entry.reason in (None, Reason.NON_IMAGE, Reason.SECONDARY_CAPTURE):
            ds = pydicom.dcmread(entry.path, stop_before_pixels=True, force=True)
            secrets |= {str(ds.get(k, "")) for k in ("PatientName", "PatientID", "PatientBirthDate")} - {""}
    assert secrets
    assert not [e.message for e in entries if any(s in e.message for s in secrets)]


def test_synthetic_series_grouped(tmp_path: Path):
    a = write_dicom_series(tmp_path / "a", n_slices=4, rows=8, cols=8, series_description="axial CT", seed=1)
    b = write_dicom_series(tmp_path / "b", n_slices=3, rows=8, cols=8, modality="MR", seed=2, study_uid=a.study_uid)
    series, entries = scan_tree(tmp_path)
    assert len(entries) == 7 and all(e.status == "ok" for e in entries)
    got = {s.series_uid: s for s in series}
    assert set(got) == {a.series_uid, b.series_uid}
    assert got[a.series_uid].n_files == 4 and got[a.series_uid].description == "axial CT"
    assert got[b.series_uid].modality == "MR" and got[b.series_uid].study_uid == a.study_uid
    assert set(got[a.series_uid].files) == set(a.paths)
    clone = pickle.loads(pickle.dumps(series))  # the runner may ship SeriesInfo to worker processes
    assert [s.files for s in clone] == [s.files for s in series]


def test_single_file_root_and_missing_root(tmp_path: Path):
    path = shutil.copy(_testdata("CT_small.dcm"), tmp_path / "a.dcm")
    series, entries = scan_tree(path)
    assert len(series) == 1 and [e.path for e in entries] == [Path(path)]
    with pytest.raises(DataError, match="not found"):
        scan_tree(tmp_path / "missing")


def test_reason_values_and_hints():
    assert Reason("no_decoder") is Reason.NO_DECODER and str(Reason.TRUNCATED) == "truncated"
    assert all(reason.hint for reason in Reason)
    assert "pylibjpeg" in Reason.NO_DECODER.hint and "gdcm" in Reason.NO_DECODER.hint


def test_parser_errors_never_quote_header_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = shutil.copy(_testdata("CT_small.dcm"), tmp_path / "a.dcm")

    def crash(*args, **kwargs):
        raise ValueError("Invalid value for VR DA: '1945-03-17' in PatientBirthDate (b'Doe^Jane')")

    monkeypatch.setattr(dicom_scan.pydicom, "dcmread", crash)
    entry, _ = scan_file(path)
    assert entry.reason == Reason.UNREADABLE and "Invalid value for VR DA" in entry.message
    assert "1945" not in entry.message and "Doe" not in entry.message and "PatientBirthDate" in entry.message


def _offset(data: bytes, group: int, element: int) -> int:
    """Byte offset of an explicit VR little endian element's tag in the dataset (after the file meta)."""
    return data.index(group.to_bytes(2, "little") + element.to_bytes(2, "little"), 132 + 12)


@pytest.mark.parametrize(
    "cut, why",
    [
        (lambda d: _offset(d, 0x0020, 0x1041) + 10, "ends inside a data element"),  # inside SliceLocation's value
        (lambda d: _offset(d, 0x7FE0, 0x0010), "Rows/Columns"),  # pixel data cut off
        (lambda d: _offset(d, 0x0028, 0x0010), "series of image files"),  # header only, next to image files
    ],
)
def test_slice_cut_in_its_header_is_truncated_and_marks_its_series(tmp_path: Path, cut, why):
    series = write_dicom_series(tmp_path / "s", n_slices=3, rows=8, cols=8)
    victim = series.paths[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: cut(data)])
    found, entries = scan_tree(tmp_path)
    by_path = {e.path: e for e in entries}
    assert by_path[victim].reason == Reason.TRUNCATED and why in by_path[victim].message
    assert by_path[victim].series_uid == series.series_uid
    [info] = found
    assert info.truncated == [victim] and victim not in info.files and info.n_files == 2


def test_header_only_series_stays_non_image(tmp_path: Path):
    """A lone header-only slice (no Rows/Columns, complete file), as in pydicom's TINY_ALPHA set, is non_image."""
    series = write_dicom_series(tmp_path / "s", n_slices=1, rows=8, cols=8)
    data = series.paths[0].read_bytes()
    series.paths[0].write_bytes(data[: _offset(data, 0x0028, 0x0010)])
    found, entries = scan_tree(tmp_path)
    assert not found and entries[0].reason == Reason.NON_IMAGE and entries[0].header_only
    tiny = TEST_FILES / "dicomdirtests" / "TINY_ALPHA" / "PT000000" / "ST000000" / "SE000000" / "IM000000"
    entry, _ = scan_file(tiny)
    assert entry.reason == Reason.NON_IMAGE and entry.header_only and "header only" in entry.message


def test_special_files_get_an_unreadable_row_and_are_not_opened(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")  # opening it would block the scan
    write_dicom_series(tmp_path / "s", n_slices=2, rows=8, cols=8)
    _, entries = scan_tree(tmp_path)
    by_rel = _by_rel(entries, tmp_path)
    assert by_rel["pipe"].reason == Reason.UNREADABLE and "FIFO" in by_rel["pipe"].message
    assert len(entries) == 3


def test_links_loops_and_excluded_output(tmp_path: Path):
    root = tmp_path / "in"
    write_dicom_series(root / "s", n_slices=2, rows=8, cols=8)
    (root / "out" / "x").mkdir(parents=True)
    (root / "out" / "x" / "seg.dcm").write_bytes(b"an output")
    (root / "loop").symlink_to(root / "loop")
    (root / "to_out").symlink_to(root / "out" / "x" / "seg.dcm")
    (root / "to_s").symlink_to(root / "s", target_is_directory=True)
    series, entries = scan_tree(root, exclude=[root / "out"])
    by_rel = _by_rel(entries, root)
    assert sorted(by_rel) == ["loop", "s/IM0000.dcm", "s/IM0001.dcm", "to_out", "to_s"]
    assert {by_rel[k].reason for k in ("loop", "to_out", "to_s")} == {Reason.SYMLINK}
    assert "loop" in by_rel["loop"].message and "leaving" in by_rel["to_out"].message
    assert by_rel["to_s"].message.endswith("symbolic link to s, scanned under that path")
    assert len(series) == 1 and series[0].n_files == 2
