# SPDX-License-Identifier: Apache-2.0
"""Stage 1 of the DICOM batch pipeline: find every file under a folder, read its header, group image series.

Like MONAI Deploy's ``DICOMDataLoaderOperator``, but as a plain function that never raises for a bad file:
each regular file gets exactly one :class:`FileEntry`, either ``ok`` (it belongs to a :class:`SeriesInfo`) or
``skipped`` with a :class:`Reason`. Only pixel-less headers are read, so scanning is cheap; decoding happens in
stage 3 (:func:`medkd.io.dicom_volume.load_series_volume`).

Messages name files and DICOM keywords, never patient data (names, IDs, dates).

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic_dicom import write_dicom_series
    >>> root = tempfile.mkdtemp()
    >>> _ = write_dicom_series(root, n_slices=3, rows=8, cols=8)
    >>> series, entries = scan_tree(root)
    >>> [(s.modality, s.n_files) for s in series], [e.status for e in entries]
    ([('CT', 3)], ['ok', 'ok', 'ok'])
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medkd.errors import DataError

__all__ = [
    "Reason",
    "FileEntry",
    "SeriesInfo",
    "NON_IMAGE_MODALITIES",
    "list_files",
    "scan_file",
    "group_series",
    "scan_tree",
]

logger = logging.getLogger(__name__)


class Reason(StrEnum):
    """Why a file or series was skipped or failed; the value is what reports show.

    - ``unreadable``: the file or folder could not be opened or parsed (permissions, I/O error, corrupt header).
    - ``not_dicom``: not a DICOM file (no ``DICM`` preamble and no ``SOPClassUID`` when read with ``force``).
    - ``non_image``: DICOM without pixels to segment: DICOMDIR, SR, SEG, RTSTRUCT/RTPLAN/RTDOSE, PR, KO, DOC,
      header-only files, or no ``SeriesInstanceUID``.
    - ``secondary_capture``: Secondary Capture (screenshots, scanned documents); no patient geometry.
    - ``multiframe``: one file holds several frames (enhanced CT/MR, ...); not supported yet.
    - ``truncated``: the header reads but the pixel data is shorter than Rows x Columns x bits says (partial
      copy or transfer); re-export the series.
    - ``no_decoder``: compressed pixel data no installed plugin can decode; install ``pylibjpeg`` with
      ``pylibjpeg-libjpeg``/``pylibjpeg-openjpeg`` or ``python-gdcm``.
    - ``missing_tags``: tags highdicom needs to write a SEG, or the geometry tags, are absent (names listed).
    - ``inconsistent_orientation``: slices have different ``ImageOrientationPatient`` or are stacked obliquely
      (gantry tilt); split the series or reformat it.
    - ``inconsistent_shape``: slices differ in ``Rows``/``Columns``/``PixelSpacing`` (localisers mixed in?).
    - ``duplicate_positions``: two slices share a position (several echoes, phases or acquisitions in one series).
    - ``inconsistent_spacing``: gaps between slices differ by more than 1 % (missing slices?); medkd never
      resamples silently.
    - ``too_few_slices``: fewer slices than the selection rule's ``min_slices``.
    - ``not_selected``: no selection rule matched the series (the message says which condition failed).
    - ``model_error``: inference raised (traceback in ``medkd.log``).
    - ``write_error``: writing the outputs raised (traceback in ``medkd.log``).
    - ``unsupported``: pixel data medkd cannot use yet (colour or multi-sample images).
    """

    UNREADABLE = "unreadable"
    NOT_DICOM = "not_dicom"
    NON_IMAGE = "non_image"
    SECONDARY_CAPTURE = "secondary_capture"
    MULTIFRAME = "multiframe"
    TRUNCATED = "truncated"
    NO_DECODER = "no_decoder"
    MISSING_TAGS = "missing_tags"
    INCONSISTENT_ORIENTATION = "inconsistent_orientation"
    INCONSISTENT_SHAPE = "inconsistent_shape"
    DUPLICATE_POSITIONS = "duplicate_positions"
    INCONSISTENT_SPACING = "inconsistent_spacing"
    TOO_FEW_SLICES = "too_few_slices"
    NOT_SELECTED = "not_selected"
    MODEL_ERROR = "model_error"
    WRITE_ERROR = "write_error"
    UNSUPPORTED = "unsupported"

    @property
    def hint(self) -> str:
        """One sentence on what the reason means and what to do, for reports and logs."""
        return _HINTS[self]


_HINTS: dict[Reason, str] = {
    Reason.UNREADABLE: "the file or folder could not be opened or parsed; check permissions and the copy",
    Reason.NOT_DICOM: "not a DICOM file",
    Reason.NON_IMAGE: "DICOM object without image pixels (DICOMDIR, SR, SEG, RT, PR, KO, DOC or header only)",
    Reason.SECONDARY_CAPTURE: "secondary capture (screenshot or scanned document) without patient geometry",
    Reason.MULTIFRAME: "multi-frame (enhanced) images are not supported yet",
    Reason.TRUNCATED: "pixel data shorter than the header says; re-export the series",
    Reason.NO_DECODER: "compressed pixel data without a decoder; pip install pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg, or python-gdcm",
    Reason.MISSING_TAGS: "required DICOM tags are missing or empty",
    Reason.INCONSISTENT_ORIENTATION: "slices differ in orientation or are stacked obliquely (gantry tilt)",
    Reason.INCONSISTENT_SHAPE: "slices differ in Rows, Columns or PixelSpacing",
    Reason.DUPLICATE_POSITIONS: "several slices share a position (echoes, phases or repeated acquisitions)",
    Reason.INCONSISTENT_SPACING: "slice gaps differ by more than 1 % (missing slices?); medkd never resamples",
    Reason.TOO_FEW_SLICES: "fewer slices than the selection rule's min_slices",
    Reason.NOT_SELECTED: "no selection rule matched",
    Reason.MODEL_ERROR: "inference failed; see medkd.log",
    Reason.WRITE_ERROR: "writing outputs failed; see medkd.log",
    Reason.UNSUPPORTED: "pixel data medkd cannot use yet (colour or multi-sample images)",
}

#: Modality values of DICOM objects that carry no image to segment, even when they hold pixel data (RTDOSE grids).
NON_IMAGE_MODALITIES: frozenset[str] = frozenset(
    {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "FID", "PLAN", "RWV"}
)
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, FloatPixelData, DoubleFloatPixelData
_MAX_MESSAGE = 300


@dataclass
class FileEntry:
    """One input file and what the scan made of it.

    Attributes:
        path: the file, as found under the scanned root.
        status: ``"ok"`` (belongs to a series) or ``"skipped"``.
        reason: why it was skipped (``None`` when ok).
        message: details for the report (no patient data).
        series_uid: its ``SeriesInstanceUID`` when known.
        sop_uid: its ``SOPInstanceUID`` when known.
    """

    path: Path
    status: str
    reason: Reason | None = None
    message: str = ""
    series_uid: str | None = None
    sop_uid: str | None = None


@dataclass
class SeriesInfo:
    """Image files sharing a ``SeriesInstanceUID`` (only files that passed the scan).

    Attributes:
        series_uid: ``SeriesInstanceUID``.
        study_uid: ``StudyInstanceUID`` of the first file (empty if absent).
        modality: ``Modality`` of the first file (empty if absent).
        description: ``SeriesDescription`` of the first file (empty if absent).
        files: the series' files sorted by path (stage 3 sorts them by position).
        header: the first file's header, without pixel data, for selection rules on any keyword.
    """

    series_uid: str
    study_uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    header: Dataset = field(default_factory=Dataset, repr=False)

    @property
    def n_files(self) -> int:
        """Number of files (slices) in the series."""
        return len(self.files)


def _short(exc: BaseException) -> str:
    """``Type: first line of the message``, capped, for report rows."""
    text = str(exc).strip().splitlines()
    msg = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 3] + "..."


def list_files(root: str | Path) -> tuple[list[Path], list[FileEntry]]:
    """Regular files under ``root``, recursively, without following symbolic links.

    Symbolic links (to files or folders), FIFOs, sockets and devices are left out, so the scan never reads outside
    ``root`` nor blocks on a pipe.

    Args:
        root: a folder, or a single file.

    Returns:
        ``(files sorted by path, entries)``, where ``entries`` holds an ``unreadable`` :class:`FileEntry` for
        each folder that could not be listed.

    Raises:
        DataError: if ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise DataError(root, "input folder not found")
    files: list[Path] = []
    errors: list[FileEntry] = []

    def on_error(err: OSError) -> None:
        where = Path(err.filename or root)
        errors.append(FileEntry(where, "skipped", Reason.UNREADABLE, f"cannot list folder: {_short(err)}"))

    n_links = 0
    for folder, _dirs, names in os.walk(root, followlinks=False, onerror=on_error):
        for name in names:
            path = Path(folder) / name
            try:
                mode = os.lstat(path).st_mode
            except OSError as err:
                errors.append(FileEntry(path, "skipped", Reason.UNREADABLE, _short(err)))
                continue
            if stat.S_ISREG(mode):
                files.append(path)
            elif stat.S_ISLNK(mode):
                n_links += 1
    if n_links:
        logger.info("%s: %d symbolic link(s) not followed", root, n_links)
    return sorted(files), errors


def _has_pixel_data(fp: BinaryIO, ds: Dataset) -> bool:
    """Whether the file read with ``stop_before_pixels=True`` from ``fp`` has a pixel data element.

    ``dcmread(..., stop_before_pixels=True)`` stops at the top-level (7FE0,0010)/(7FE0,0008)/(7FE0,0009) element
    and rewinds ``fp`` to its tag, so the next 4 bytes tell whether pixel data follows, without reading it. This
    is cheaper than ``defer_size`` (which still reads encapsulated, undefined-length pixel data to find its end).
    Deflated files are inflated into memory by pydicom, leaving ``fp`` at the end; for those the caller re-reads.
    """
    head = fp.read(4)
    if len(head) < 4:
        return False
    little = ds.original_encoding[1] is not False
    group, elem = struct.unpack("<HH" if little else ">HH", head)
    return (group << 16 | elem) in _PIXEL_TAGS


def _read_header(path: Path) -> tuple[Dataset, bool]:
    """``(header without pixels, has pixel data)``; raises what pydicom raises (``InvalidDicomError``, ...)."""
    with path.open("rb") as fp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; the scan reports outcomes, not style
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True)
        except InvalidDicomError as err:
            # no preamble/``DICM``: raw datasets such as pydicom's rtstruct.dcm still parse with force=True, but so
            # does text, so keep the file only if the forced read finds a SOPClassUID
            fp.seek(0)
            try:
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
                forced_ok = "SOPClassUID" in ds and bool(ds.SOPClassUID)
            except Exception:  # noqa: BLE001 - garbage under force: not DICOM
                forced_ok = False
            if not forced_ok:
                raise err
        has_pixels = _has_pixel_data(fp, ds)
        syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
        if not has_pixels and syntax == DeflatedExplicitVRLittleEndian:
            fp.seek(0)
            has_pixels = "PixelData" in pydicom.dcmread(fp, defer_size=1024, force=True)
    return ds, has_pixels


def _classify(ds: Dataset, has_pixels: bool) -> tuple[Reason, str] | None:
    """``(reason, message)`` for a header that is not a usable single-frame image, else ``None``."""
    meta_class = str(getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID", ""))
    sop_class = str(ds.get("SOPClassUID", "") or meta_class)
    modality = str(ds.get("Modality", "") or "")
    if meta_class == _DICOMDIR_SOP_CLASS or sop_class == _DICOMDIR_SOP_CLASS:
        return Reason.NON_IMAGE, "DICOMDIR (media directory)"
    if modality.upper() in NON_IMAGE_MODALITIES:
        return Reason.NON_IMAGE, f"Modality {modality} is not an image"
    if not has_pixels:
        return Reason.NON_IMAGE, f"no pixel data (Modality {modality or '?'}, SOP class {sop_class or '?'})"
    if not ds.get("SeriesInstanceUID"):
        return Reason.NON_IMAGE, "no SeriesInstanceUID"
    if sop_class.startswith(_SECONDARY_CAPTURE_PREFIX):
        return Reason.SECONDARY_CAPTURE, f"Secondary Capture (SOP class {sop_class})"
    frames = ds.get("NumberOfFrames")
    if (frames is not None and str(frames).strip() and int(frames) > 1) or "PerFrameFunctionalGroupsSequence" in ds:
        message = f"multi-frame image ({frames or '?'} frames, SOP class {sop_class}); enhanced/multi-frame objects"
        return Reason.MULTIFRAME, f"{message} are not supported yet"
    return None


def scan_file(path: str | Path) -> tuple[FileEntry, Dataset | None]:
    """Read one file's header and decide whether it is a usable image slice; never raises (except interrupts).

    Args:
        path: the file.

    Returns:
        ``(entry, header)``: an ``ok`` entry with the header (no pixel data) for an image slice, else a
        ``skipped`` entry with its :class:`Reason` and ``None``.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return FileEntry(path, "skipped", Reason.NOT_DICOM, "empty file"), None
        ds, has_pixels = _read_header(path)
    except InvalidDicomError:
        return FileEntry(path, "skipped", Reason.NOT_DICOM, "no DICOM preamble and no SOPClassUID"), None
    except OSError as err:
        return FileEntry(path, "skipped", Reason.UNREADABLE, _short(err)), None
    except Exception as err:  # noqa: BLE001 - any parser failure on one file becomes a report row
        return FileEntry(path, "skipped", Reason.UNREADABLE, f"cannot parse header: {_short(err)}"), None
    try:
        series_uid = str(ds.get("SeriesInstanceUID", "") or "") or None
        sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
        verdict = _classify(ds, has_pixels)
    except Exception as err:  # noqa: BLE001 - malformed values (e.g. NumberOfFrames "abc")
        return FileEntry(path, "skipped", Reason.UNREADABLE, f"malformed header: {_short(err)}"), None
    if verdict is not None:
        return FileEntry(path, "skipped", verdict[0], verdict[1], series_uid, sop_uid), None
    return FileEntry(path, "ok", None, "", series_uid, sop_uid), ds


def group_series(results: Iterable[tuple[FileEntry, Dataset | None]]) -> list[SeriesInfo]:
    """Group ``ok`` files by ``SeriesInstanceUID``.

    Args:
        results: :func:`scan_file` outputs; the first header seen for a series becomes its ``header``.

    Returns:
        The series sorted by UID, each with its files sorted by path.
    """
    series: dict[str, SeriesInfo] = {}
    for entry, header in results:
        if entry.status != "ok" or header is None or not entry.series_uid:
            continue
        info = series.get(entry.series_uid)
        if info is None:
            info = series[entry.series_uid] = SeriesInfo(
                series_uid=entry.series_uid,
                study_uid=str(header.get("StudyInstanceUID", "") or ""),
                modality=str(header.get("Modality", "") or ""),
                description=str(header.get("SeriesDescription", "") or ""),
                header=header,
            )
        info.files.append(entry.path)
    for info in series.values():
        info.files.sort()
    return [series[uid] for uid in sorted(series)]


def scan_tree(root: str | Path, *, progress: bool = False) -> tuple[list[SeriesInfo], list[FileEntry]]:
    """Scan a folder for DICOM image series (stage 1 of the batch pipeline).

    Walks ``root`` recursively without following symbolic links, reads each regular file's header (no pixel data)
    and groups single-frame image files by ``SeriesInstanceUID``. Bad files never raise: each becomes a
    ``skipped`` :class:`FileEntry` with a :class:`Reason`.

    Args:
        root: the input folder (a single file is scanned alone).
        progress: show a tqdm bar (only on a terminal).

    Returns:
        ``(series sorted by SeriesInstanceUID, one entry per regular file sorted by path)``; folders that could
        not be listed add an ``unreadable`` entry each.

    Raises:
        DataError: if ``root`` does not exist.

    Example:
        >>> scan_tree("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: /no/such/folder: input folder not found
    """
    from tqdm.auto import tqdm

    files, entries = list_files(root)
    results = [scan_file(p) for p in tqdm(files, desc="scan", unit="file", disable=None if progress else True)]
    series = group_series(results)
    entries.extend(entry for entry, _ in results)
    entries.sort(key=lambda e: e.path)
    n_ok = sum(e.status == "ok" for e in entries)
    logger.info("%s: %d file(s), %d image file(s) in %d series", root, len(entries), n_ok, len(series))
    return series, entries
