# SPDX-License-Identifier: Apache-2.0
"""Stage 1 of the DICOM batch pipeline: find every file under a folder, read its header, group image series.

Like MONAI Deploy's ``DICOMDataLoaderOperator``, but as a plain function that never raises for a bad file:
each path (regular file, symbolic link, FIFO or device) gets exactly one :class:`FileEntry`, either ``ok`` (it
belongs to a :class:`SeriesInfo`) or ``skipped`` with a :class:`Reason`. Only pixel-less headers are read, so
scanning is cheap; decoding happens in stage 3 (:func:`medkd.io.dicom_volume.load_series_volume`). Symbolic links
are never read through, so the scan never leaves the input folder.

Messages name files and DICOM keywords, never patient data (names, IDs, dates): parser errors, which may quote a
header value, are redacted (:func:`safe_short`).

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
import re
import stat
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from medkd.errors import DataError

__all__ = [
    "Reason",
    "FileEntry",
    "SeriesInfo",
    "NON_IMAGE_MODALITIES",
    "list_files",
    "safe_short",
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
      waveforms, no ``SeriesInstanceUID``, or complete header-only files (an image SOP class whose header has
      neither pixel data nor ``Rows``/``Columns``, and no file of its series has pixels: pydicom's ``TINY_ALPHA``
      test set).
    - ``secondary_capture``: Secondary Capture (screenshots, scanned documents); no patient geometry.
    - ``multiframe``: one file holds several frames (enhanced CT/MR, ...); not supported yet.
    - ``truncated``: a file cut short; re-export the series. Either the pixel data is shorter than Rows x Columns x
      bits says (found when decoding), or the header names an image series (``SeriesInstanceUID`` and an image SOP
      class, or an image ``Modality`` when the SOP class is unknown) but the file has no pixel data although it
      ends inside a data element, or its header has ``Rows``/``Columns``, or other files of its series have pixel
      data. Such a file marks its whole series ``truncated`` (the series row names the files), so a series is
      never processed with a slice missing.
    - ``no_decoder``: compressed pixel data no installed plugin can decode; install ``pylibjpeg`` with
      ``pylibjpeg-libjpeg``/``pylibjpeg-openjpeg`` or ``python-gdcm``.
    - ``missing_tags``: tags highdicom needs to write a SEG, or the geometry tags, are absent, empty or invalid
      (not finite numbers, a non-positive PixelSpacing, a wrong value count; names listed, never values).
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
    - ``invalid_uid``: ``StudyInstanceUID`` or ``SeriesInstanceUID`` is not a DICOM UID (digits and dots, at most 64
      characters, no empty component); these name output folders, so such a series is never written.
    - ``symlink``: a symbolic link, never read through. A link to a file or folder inside the input folder is
      reported here while its target is scanned under its own path; links leaving the input folder (or into the
      output folder), broken links and link loops are not followed.
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
    INVALID_UID = "invalid_uid"
    SYMLINK = "symlink"

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
    Reason.TRUNCATED: "file cut short (pixel data missing or shorter than the header says); re-export the series",
    Reason.NO_DECODER: "compressed pixel data without a decoder; pip install pylibjpeg pylibjpeg-libjpeg "
    "pylibjpeg-openjpeg, or python-gdcm",
    Reason.MISSING_TAGS: "required DICOM tags are missing, empty or invalid",
    Reason.INCONSISTENT_ORIENTATION: "slices differ in orientation or are stacked obliquely (gantry tilt)",
    Reason.INCONSISTENT_SHAPE: "slices differ in Rows, Columns or PixelSpacing",
    Reason.DUPLICATE_POSITIONS: "several slices share a position (echoes, phases or repeated acquisitions)",
    Reason.INCONSISTENT_SPACING: "slice gaps differ by more than 1 % (missing slices?); medkd never resamples",
    Reason.TOO_FEW_SLICES: "fewer slices than the selection rule's min_slices",
    Reason.NOT_SELECTED: "no selection rule matched",
    Reason.MODEL_ERROR: "inference failed; see medkd.log",
    Reason.WRITE_ERROR: "writing outputs failed; see medkd.log",
    Reason.UNSUPPORTED: "pixel data medkd cannot use yet (colour or multi-sample images)",
    Reason.INVALID_UID: "StudyInstanceUID or SeriesInstanceUID is not a valid DICOM UID; the series is not written",
    Reason.SYMLINK: "symbolic link: its target is scanned only under its own path inside the input folder",
}

#: Modality values of DICOM objects that carry no image to segment, even when they hold pixel data (RTDOSE grids).
NON_IMAGE_MODALITIES: frozenset[str] = frozenset(
    {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "PR", "KO", "DOC", "REG", "FID", "PLAN", "RWV"}
)
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # PixelData, FloatPixelData, DoubleFloatPixelData
_MAX_MESSAGE = 300
_HEADER_ONLY = "header only"


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
        header_only: an image header (``SeriesInstanceUID``, image SOP class) without pixel data; skipped as
            ``non_image`` unless its series has image files (then :func:`group_series` makes it ``truncated``).
    """

    path: Path
    status: str
    reason: Reason | None = None
    message: str = ""
    series_uid: str | None = None
    sop_uid: str | None = None
    header_only: bool = False


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
        truncated: files naming this series whose pixel data is missing (``truncated`` entries); the series is
            skipped as ``truncated`` when there is any.
        headers: each file's header (no pixel data), only when the scan was asked to keep them
            (``keep_headers=True``: per-instance pipelines select each image on its own header); else empty.
    """

    series_uid: str
    study_uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    header: Dataset = field(default_factory=Dataset, repr=False)
    truncated: list[Path] = field(default_factory=list)
    headers: dict[Path, Dataset] = field(default_factory=dict, repr=False)

    @property
    def n_files(self) -> int:
        """Number of files (slices) in the series."""
        return len(self.files)


def _cap(msg: str) -> str:
    return msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 3] + "..."


def _short(exc: BaseException) -> str:
    """``Type: first line of the message``, capped, for report rows (OS errors: no header values involved)."""
    text = str(exc).strip().splitlines()
    return _cap(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)


def safe_short(exc: BaseException, datasets: Iterable[Dataset | None] = ()) -> str:
    """:func:`_short` for parser errors, which may quote header values: the values of ``datasets``' patient and
    study attributes are redacted (:func:`medkd.io.phi.safe_error`) and so is every quoted literal (``'...'``,
    ``b'...'``), as the header may not have been readable."""
    from medkd.io.phi import REDACTED, safe_error

    text = safe_error(exc, [ds for ds in datasets if ds is not None]).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return _cap(_QUOTED.sub(f"'{REDACTED}'", first))


_QUOTED = re.compile(r"""[bBrRuU]?(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")


def _link_entry(path: Path, real_root: Path, excluded: Sequence[Path]) -> FileEntry:
    """The row of a symbolic link: never read through (see :attr:`Reason.SYMLINK`)."""
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop (RuntimeError before Python 3.13)
        return FileEntry(path, "skipped", Reason.SYMLINK, "broken symbolic link or link loop; not followed")
    if not target.is_relative_to(real_root) or any(target.is_relative_to(e) for e in excluded):
        return FileEntry(path, "skipped", Reason.SYMLINK, "symbolic link leaving the input folder; not followed")
    where = target.relative_to(real_root).as_posix() or "."
    return FileEntry(path, "skipped", Reason.SYMLINK, f"symbolic link to {where}, scanned under that path")


_SPECIAL = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))


def list_files(root: str | Path, *, exclude: Sequence[str | Path] = ()) -> tuple[list[Path], list[FileEntry]]:
    """Regular files under ``root``, recursively, without following symbolic links.

    The scan never reads outside ``root`` nor blocks on a pipe: symbolic links (to files or folders) get a
    ``symlink`` entry and are not followed (a link into ``root`` names its target, which is scanned under its own
    path); FIFOs, sockets and devices get an ``unreadable`` entry and are not opened. Folders in ``exclude`` (the
    output folder when it lies inside the input folder) are not entered and get no entry.

    Args:
        root: a folder, or a single file.
        exclude: folders to leave out (compared after resolving links).

    Returns:
        ``(files sorted by path, entries)``, where ``entries`` holds one entry per link, special file and folder
        that could not be listed.

    Raises:
        DataError: if ``root`` does not exist.
    """
    root = Path(root)
    if root.is_file():
        return [root], []
    if not root.is_dir():
        raise DataError(root, "input folder not found")
    real_root = root.resolve()
    excluded = [Path(p).resolve() for p in exclude]
    files: list[Path] = []
    errors: list[FileEntry] = []

    def on_error(err: OSError) -> None:
        where = Path(err.filename or root)
        errors.append(FileEntry(where, "skipped", Reason.UNREADABLE, f"cannot list folder: {_short(err)}"))

    for folder, dirs, names in os.walk(root, followlinks=False, onerror=on_error):
        kept = []
        for name in sorted(dirs):  # os.walk puts links to folders here, and never enters them
            path = Path(folder) / name
            if path.is_symlink():
                errors.append(_link_entry(path, real_root, excluded))
            elif path.resolve() in excluded:
                logger.info("%s: output folder inside the input folder, not scanned", path)
            else:
                kept.append(name)
        dirs[:] = kept
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
                errors.append(_link_entry(path, real_root, excluded))
            else:
                kind = next((what for test, what in _SPECIAL if test(mode)), "special file")
                errors.append(FileEntry(path, "skipped", Reason.UNREADABLE, f"not a regular file ({kind}); not read"))
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


def _ends_inside_element(ds: Dataset) -> bool:
    """Whether the file ended inside a top-level element's value (pydicom then keeps the short value silently)."""
    for elem in ds.elements():
        length, value = getattr(elem, "length", 0), getattr(elem, "value", None)
        if isinstance(value, bytes) and length not in (0, 0xFFFFFFFF) and len(value) < length:
            return True
    return False


def _is_image_class(sop_class: str, modality: str) -> bool:
    """An image storage SOP class, or (SOP class unknown to pydicom) a modality that is not a non-image one."""
    name = UID(sop_class).name if sop_class else ""
    if name and name != sop_class:
        return "Image Storage" in name
    return bool(modality) and modality.upper() not in NON_IMAGE_MODALITIES


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
        cut = _ends_inside_element(ds)
        if ds.get("SeriesInstanceUID") and _is_image_class(sop_class, modality):
            if cut or "Rows" in ds or "Columns" in ds:
                why = "the file ends inside a data element" if cut else "the header has Rows/Columns"
                return Reason.TRUNCATED, f"image header without pixel data ({why}): file cut short?"
            return Reason.NON_IMAGE, f"{_HEADER_ONLY}: no pixel data (Modality {modality or '?'}, SOP class {sop_class})"
        detail = "; the file ends inside a data element" if cut else ""
        return Reason.NON_IMAGE, f"no pixel data (Modality {modality or '?'}, SOP class {sop_class or '?'}){detail}"
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

    Messages never quote header values (parser errors are redacted with :func:`safe_short`).

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
        return FileEntry(path, "skipped", Reason.UNREADABLE, f"cannot parse header: {safe_short(err)}"), None
    try:
        series_uid = str(ds.get("SeriesInstanceUID", "") or "") or None
        sop_uid = str(ds.get("SOPInstanceUID", "") or "") or None
        verdict = _classify(ds, has_pixels)
    except Exception as err:  # noqa: BLE001 - malformed values (e.g. NumberOfFrames "abc")
        return FileEntry(path, "skipped", Reason.UNREADABLE, f"malformed header: {safe_short(err, [ds])}"), None
    if verdict is not None:
        header_only = verdict[0] == Reason.NON_IMAGE and verdict[1].startswith(_HEADER_ONLY)
        return FileEntry(path, "skipped", verdict[0], verdict[1], series_uid, sop_uid, header_only), None
    return FileEntry(path, "ok", None, "", series_uid, sop_uid), ds


def group_series(
    results: Iterable[tuple[FileEntry, Dataset | None]], *, keep_headers: bool = False
) -> list[SeriesInfo]:
    """Group ``ok`` files by ``SeriesInstanceUID``; note the series' files without pixel data.

    A ``truncated`` entry, or a header-only one (:attr:`FileEntry.header_only`), naming a series that has image
    files is listed in :attr:`SeriesInfo.truncated`; a header-only entry is then re-labelled ``truncated`` in
    place (a slice of an image series without pixels was cut short).

    Args:
        results: :func:`scan_file` outputs; the first header seen for a series becomes its ``header``.
        keep_headers: keep every file's header in :attr:`SeriesInfo.headers` (memory grows with the file count).

    Returns:
        The series sorted by UID, each with its files sorted by path.
    """
    results = list(results)
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
        if keep_headers:
            info.headers[entry.path] = header
    for entry, _ in results:
        info = series.get(entry.series_uid or "")
        if info is None or entry.status == "ok" or not (entry.reason == Reason.TRUNCATED or entry.header_only):
            continue
        if entry.reason != Reason.TRUNCATED:
            entry.reason = Reason.TRUNCATED
            entry.message = "image header without pixel data in a series of image files: file cut short?"
        info.truncated.append(entry.path)
    for info in series.values():
        info.files.sort()
        info.truncated.sort()
    return [series[uid] for uid in sorted(series)]


def scan_tree(
    root: str | Path, *, progress: bool = False, exclude: Sequence[str | Path] = (), keep_headers: bool = False
) -> tuple[list[SeriesInfo], list[FileEntry]]:
    """Scan a folder for DICOM image series (stage 1 of the batch pipeline).

    Walks ``root`` recursively without following symbolic links (see :func:`list_files`), reads each regular
    file's header (no pixel data) and groups single-frame image files by ``SeriesInstanceUID``. Bad files never
    raise: each becomes a ``skipped`` :class:`FileEntry` with a :class:`Reason`.

    Args:
        root: the input folder (a single file is scanned alone).
        progress: show a tqdm bar (only on a terminal).
        exclude: folders not to enter (the output folder, when it lies inside ``root``).
        keep_headers: keep every image file's header in :attr:`SeriesInfo.headers` (per-instance pipelines).

    Returns:
        ``(series sorted by SeriesInstanceUID, one entry per path sorted by path)``: every regular file, symbolic
        link and special file has one entry, and folders that could not be listed add an ``unreadable`` entry each.

    Raises:
        DataError: if ``root`` does not exist.

    Example:
        >>> scan_tree("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: /no/such/folder: input folder not found
    """
    from tqdm.auto import tqdm

    files, entries = list_files(root, exclude=exclude)
    results = [scan_file(p) for p in tqdm(files, desc="scan", unit="file", disable=None if progress else True)]
    series = group_series(results, keep_headers=keep_headers)
    entries.extend(entry for entry, _ in results)
    entries.sort(key=lambda e: e.path)
    n_ok = sum(e.status == "ok" for e in entries)
    logger.info("%s: %d file(s), %d image file(s) in %d series", root, len(entries), n_ok, len(series))
    return series, entries
