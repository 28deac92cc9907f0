# SPDX-License-Identifier: Apache-2.0
"""Turn what a user uploads to the app (or a bundled synthetic example) into a volume to segment and display.

:func:`load_upload` takes ``(file name, bytes)`` pairs, as ``st.file_uploader`` gives them, and sniffs the content,
never the extension (DICOM files often have none, and a ``.nii.gz`` may arrive named ``gz``):

- **zip** archives are extracted safely (no absolute or ``..`` paths; folders, ``__MACOSX`` and ``.DS_Store``
  skipped; within the limits below) and their files treated like uploaded ones; a zip inside is not opened;
- **DICOM** files (``DICM`` after the 128-byte preamble, or a raw dataset whose first bytes are a plausible
  little-endian group 0002/0008 element, as pydicom's ``rtstruct.dcm``) are scanned
  (:func:`medkd.io.dicom_scan.scan_file`) and the image series with the most files becomes the volume
  (:func:`medkd.io.dicom_volume.load_series_volume`: sorted by position, rescaled to HU for CT); a series with a
  truncated slice is refused, naming the slice;
- **NIfTI** (``.nii`` or gzip-compressed, NIfTI-1 or -2, found by the header's size and magic) is read with
  :func:`medkd.io.volume_io.read_volume`;
- **PNG/JPEG** becomes a greyscale ``(1, H, W)`` float32 image.

Files that are none of these are ignored when the rest of the upload is usable (``LoadedImage.note`` says so);
they are never handed to pydicom. Every problem raises :class:`~medkd.errors.DataError` naming the file as the
user called it (or its name inside the zip) and saying, in clinical words, what is wrong; no message holds patient
data or a server path. Everything is written under ``workdir`` (the app's session folder).

Limits (hostile uploads cost seconds, not minutes or gigabytes). Each is a module constant, overridden by the
environment variable ``MEDKD_UPLOAD_<NAME>`` (a positive whole number; read on every upload) and by
``load_upload(..., limits=upload_limits(max_voxels=...))``:

========================  ==============  =================================================================
name                      default         what it bounds
========================  ==============  =================================================================
``MAX_ZIP_BYTES``         1 GiB           bytes unpacked from one upload: zip members, counted while they are
                                          extracted (the declared sizes only refuse early), and Deflated DICOM
                                          datasets, inflated a chunk at a time: a bomb stops at the limit
``MAX_ZIP_MEMBERS``       20,000          entries (files and folders) of one zip archive, checked from its end
                                          record before its file list is parsed
``MAX_VOXELS``            2**28           voxels of a NIfTI volume, pixels of an image, voxels of a DICOM
                                          series (512 x 512 x 1024), read from the header before decoding
``MAX_DECODE_BYTES``      3 GiB           memory to decode one volume or image: header shape x (twice the
                                          stored voxel size + 4 bytes of float32), checked before decoding
``MAX_DICOM_READS``       1,000,000       pydicom reads of all DICOM headers of one upload (about two per
                                          element; 2,000 slices of 500): a file of tiny elements stops there
========================  ==============  =================================================================

Streamlit's own ``server.maxUploadSize`` (200 MB by default) bounds what reaches :func:`load_upload`.

The bundled synthetic examples are in :mod:`medkd.io.examples`.

Example:
    >>> limits = upload_limits(max_voxels=10**6)
    >>> limits.max_voxels, limits.max_zip_members
    (1000000, 20000)
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medkd.io.dicom_scan import FileEntry
    from medkd.io.dicom_volume import DicomVolume, SeriesError

__all__ = [
    "ENV_PREFIX",
    "MAX_DECODE_BYTES",
    "MAX_DICOM_READS",
    "MAX_VOXELS",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "LoadedImage",
    "UploadLimits",
    "load_upload",
    "loaded_from_dicom",
    "sniff",
    "spacing_zyx",
    "upload_limits",
]

logger = logging.getLogger(__name__)

#: most bytes one upload may unpack to (zip members extracted, Deflated DICOM inflated), counted as they come
MAX_ZIP_BYTES = 1024**3
#: most entries (files and folders) one zip archive may hold
MAX_ZIP_MEMBERS = 20_000
#: most voxels (pixels) one NIfTI volume, image or DICOM series may decode to
MAX_VOXELS = 2**28
#: most memory decoding one volume or image may take: shape x (2 x stored bytes per voxel + 4 for float32)
MAX_DECODE_BYTES = 3 * 1024**3
#: most pydicom reads of the DICOM headers of one upload (about two per data element)
MAX_DICOM_READS = 1_000_000
#: environment variables ``MEDKD_UPLOAD_MAX_...`` override the constants above
ENV_PREFIX = "MEDKD_UPLOAD_"
_HEAD = 544  # enough for a NIfTI-2 header (540) and the DICOM preamble (132)
_CHUNK = 1 << 20
_EOCD_SEARCH = 22 + 65535  # the zip end record and the longest comment
_DIR_BYTES_PER_MEMBER = 1024  # a zip file list longer than this per allowed entry is refused before it is parsed
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_KIND_WORDS = {"dicom": "DICOM", "nifti": "NIfTI", "image": "PNG/JPEG"}
_NOT_SUPPORTED = "not a DICOM, NIfTI, PNG or JPEG file"


# --------------------------------------------------------------------------------------------- limits
@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    """The budgets of one upload (see the module docstring); build one with :func:`upload_limits`.

    Attributes:
        max_zip_bytes: bytes unpacked (zip members extracted, Deflated DICOM inflated), counted as they come.
        max_zip_members: entries (files and folders) of one zip archive.
        max_voxels: voxels (pixels) of one NIfTI volume, image or DICOM series.
        max_decode_bytes: memory to decode one volume or image, estimated from its header.
        max_dicom_reads: pydicom reads of all DICOM headers of the upload.
    """

    max_zip_bytes: int = MAX_ZIP_BYTES
    max_zip_members: int = MAX_ZIP_MEMBERS
    max_voxels: int = MAX_VOXELS
    max_decode_bytes: int = MAX_DECODE_BYTES
    max_dicom_reads: int = MAX_DICOM_READS

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"upload limit {f.name}={value!r}: expected a positive whole number")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def upload_limits(**overrides: int | None) -> UploadLimits:
    """The upload budgets: the module constants (as they are now), then ``MEDKD_UPLOAD_<NAME>`` environment
    variables, then ``overrides`` that are not ``None``.

    Args:
        overrides: ``max_zip_bytes``, ``max_zip_members``, ``max_voxels``, ``max_decode_bytes``, ``max_dicom_reads``.

    Raises:
        ConfigError: an environment variable or override that is not a positive whole number (naming it).
        TypeError: an unknown name.

    Example:
        >>> upload_limits(max_zip_bytes=1024).max_zip_bytes
        1024
    """
    names = [f.name for f in dataclasses.fields(UploadLimits)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"unknown upload limit(s) {unknown}; expected {names}")
    values: dict[str, int] = {}
    for f in dataclasses.fields(UploadLimits):
        values[f.name] = globals()[f.name.upper()]
        text = os.environ.get(_env_name(f.name), "").strip()
        if text:
            try:
                values[f.name] = int(text.replace("_", ""))
            except ValueError:
                raise ConfigError(f"${_env_name(f.name)}={text!r}: expected a positive whole number") from None
            if values[f.name] <= 0:
                raise ConfigError(f"${_env_name(f.name)}={text!r}: expected a positive whole number")
    values.update({name: value for name, value in overrides.items() if value is not None})
    return UploadLimits(**values)


def _size(n: float) -> str:
    """``1 GiB``, ``3.5 MiB``, ``100 bytes``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def _limit(name: str, shown: str) -> str:
    return f"the upload limit is {shown} (${_env_name(name)})"


class _OutOfReads(Exception):
    """The upload's DICOM header reads are spent."""


class _ReadsAll(Exception):
    """pydicom asked for the rest of the file: the Deflated transfer syntax, which it inflates in one go."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _CountsReads:
    """Mixin for binary files: each ``read`` spends one of the upload's ``reads_left``; ``read()`` of everything
    (how pydicom inflates a Deflated dataset) is refused with :class:`_ReadsAll`."""

    upload: _Upload

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise _ReadsAll(self.tell())  # type: ignore[attr-defined]
        self.upload.reads_left -= 1
        if self.upload.reads_left < 0:
            raise _OutOfReads
        return super().read(size)  # type: ignore[misc]


class _CountedFile(_CountsReads, io.BufferedReader):
    def __init__(self, path: Path, upload: _Upload) -> None:
        super().__init__(io.FileIO(path))
        self.upload = upload


class _CountedBytes(_CountsReads, io.BytesIO):
    def __init__(self, data: bytes, upload: _Upload) -> None:
        super().__init__(data)
        self.upload = upload


@dataclass
class LoadedImage:
    """A decoded upload or example, ready to segment and display.

    Attributes:
        array: float32 ``(z, y, x)``; a 2D image is ``(1, y, x)``; DICOM is ``(slices, rows, cols)``, HU for CT.
        spacing: ``(z, y, x)`` in mm; ``(1.0, 1.0, 1.0)`` when unknown (PNG/JPEG).
        kind: ``"dicom"``, ``"nifti"`` or ``"image"``.
        name: display name: the uploaded file name (or a summary of several) or the example's name.
        modality: DICOM ``Modality`` (``"CT"``, ``"MR"``, ...); ``""`` when unknown (NIfTI, PNG/JPEG).
        reference: geometry for :func:`medkd.io.volume_io.write_mask_like` (2D for PNG/JPEG and 2D NIfTI; the
            mask is still ``(1, y, x)``).
        dicom: the sorted series (datasets for a DICOM SEG) when ``kind == "dicom"``.
        ground_truth: uint8 ``(z, y, x)`` labels of a synthetic example, else ``None``.
        ground_truth_names: class names of ``ground_truth`` by value (``("background", "RV", ...)``).
        note: what the user should know (files ignored, several series), ``""`` if nothing.
        n_files: files the volume was read from.
        folder: the fresh folder under ``workdir`` that holds this upload's files (delete it when done).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    kind: str
    name: str
    modality: str
    reference: sitk.Image
    dicom: DicomVolume | None = None
    ground_truth: np.ndarray | None = None
    ground_truth_names: tuple[str, ...] = ()
    note: str = ""
    n_files: int = 1
    folder: Path | None = None

    def info(self) -> dict[str, str]:
        """Technical, patient-free metadata for display (no names, IDs, dates or descriptions).

        Returns:
            ``kind``, ``modality``, ``size`` (``"z × y × x"``), ``spacing`` (``"a × b × c mm"``), ``slices``,
            ``files``, ``intensity range``; for DICOM also ``bits stored``; ``note`` when there is one.
        """
        z, y, x = self.array.shape
        out = {
            "kind": _KIND_WORDS.get(self.kind, self.kind),
            "modality": self.modality or "unknown",
            "size": f"{z} × {y} × {x}",
            "spacing": " × ".join(f"{s:.4g}" for s in self.spacing) + " mm",
            "slices": str(z),
            "files": str(self.n_files),
            "intensity range": f"{float(self.array.min()):.4g} to {float(self.array.max()):.4g}",
        }
        if self.dicom is not None and self.dicom.datasets:
            bits = self.dicom.datasets[0].get("BitsStored")
            out["bits stored"] = str(int(bits)) if bits not in (None, "") else "unknown"
        if self.note:
            out["note"] = self.note
        return out


# --------------------------------------------------------------------------------------------- sniffing
@dataclass
class _Staged:
    path: Path
    name: str  # the user's name for it (basename, or its name inside the zip), for messages
    kind: str = ""  # dicom | nifti | nifti.gz | image | zip | empty | unknown
    detail: str = ""  # why it is unknown


#: bytes per voxel of the NIfTI datatype codes (uint8 ... RGBA32)
_NIFTI_ITEMSIZE = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                   1536: 16, 1792: 16, 2048: 32, 2304: 4}  # fmt: skip


@dataclass(frozen=True)
class _NiftiLayout:
    """What a NIfTI-1/-2 header says about its voxels (nothing decoded)."""

    single: bool  # image in the same file (``n+1``/``n+2``), not a ``.hdr`` of a ``.img``
    shape: tuple[int, ...]  # dim[1] ... dim[dim[0]], as stored (x, y, z, t, ...)
    itemsize: int  # stored bytes per voxel
    decoded_itemsize: int  # bytes per voxel once read (scl_slope/scl_inter make integers float)
    offset: int  # vox_offset: where the voxels start


def _nifti_layout(head: bytes) -> _NiftiLayout | None:
    """The layout of a NIfTI-1/-2 header at the start of ``head``, or ``None``."""
    for e in "<>":
        if len(head) >= 348 and struct.unpack(f"{e}i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
            single, dims = head[345:346] == b"+", struct.unpack(f"{e}8h", head[40:56])
            datatype, bitpix = struct.unpack(f"{e}hh", head[70:74])
            offset, slope, inter = struct.unpack(f"{e}3f", head[108:120])
            default_offset = 352
        elif len(head) >= 540 and struct.unpack(f"{e}i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
            single, dims = head[5:6] == b"+", struct.unpack(f"{e}8q", head[16:80])
            datatype, bitpix = struct.unpack(f"{e}hh", head[12:16])
            (offset,), (slope, inter) = struct.unpack(f"{e}q", head[168:176]), struct.unpack(f"{e}2d", head[176:192])
            default_offset = 544
        else:
            continue
        n_dims = min(max(int(dims[0]), 0), 7)
        shape = tuple(max(int(d), 1) for d in dims[1 : n_dims + 1]) or (1,)
        itemsize = max(_NIFTI_ITEMSIZE.get(int(datatype), 1), int(bitpix) // 8, 1)
        rescaled = math.isfinite(slope) and math.isfinite(inter) and (slope not in (0.0, 1.0) or inter != 0.0)
        offset = int(offset) if math.isfinite(offset) and offset >= default_offset else default_offset
        return _NiftiLayout(single, shape, itemsize, max(itemsize, 4) if rescaled else itemsize, offset)
    return None


#: explicit VRs with a 2-byte reserved field and a 4-byte length
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})  # fmt: skip
_UNDEFINED = 0xFFFFFFFF


def _starts_like_raw_dicom(head: bytes, size: int) -> bool:
    """Whether ``head`` starts with a plausible little-endian DICOM element of group 0002 (file meta) or 0008
    (identification): pydicom's raw datasets without preamble (``rtstruct.dcm``) do, text and noise do not."""
    if len(head) < 12:
        return False
    group = struct.unpack("<H", head[:2])[0]
    if group not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    if vr in _LONG_VRS:  # explicit VR, 4-byte length
        length, header = struct.unpack("<L", head[8:12])[0], 12
        if head[6:8] != b"\0\0":
            return False
    elif vr in _SHORT_VRS:  # explicit VR, 2-byte length
        length, header = struct.unpack("<H", head[6:8])[0], 8
    else:  # implicit VR
        length, header = struct.unpack("<L", head[4:8])[0], 8
    return length == _UNDEFINED or header + length <= size


def _sniff(path: Path, upload: _Upload) -> tuple[str, str]:
    """:func:`sniff`; parsing a raw dataset may raise :class:`_OutOfReads` or :class:`_TooBig` (the upload's limits)."""
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if not head:
        return "empty", "the file is empty"
    if head[128:132] == b"DICM":
        return "dicom", ""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return "image", ""
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                inner = f.read(_HEAD)
        except (OSError, EOFError, ValueError, zlib.error):
            return "unknown", "a damaged gzip file"
        layout = _nifti_layout(inner)
        if layout is None:
            return "unknown", "a gzip file that holds no NIfTI image"
        return ("nifti.gz", "") if layout.single else ("unknown", _HEADER_ONLY)
    layout = _nifti_layout(head)
    if layout is not None:
        return ("nifti", "") if layout.single else ("unknown", _HEADER_ONLY)
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "zip", ""
    if _starts_like_raw_dicom(head, path.stat().st_size):
        try:  # a raw dataset: a header that parses (within the budget) with a SOPClassUID
            if _read_header(path, upload).get("SOPClassUID"):
                return "dicom", ""
        except (_OutOfReads, _TooBig):
            raise
        except Exception as err:  # noqa: BLE001 - anything pydicom chokes on is not DICOM
            logger.debug("raw DICOM candidate does not parse: %s", type(err).__name__)
    return "unknown", _NOT_SUPPORTED


_HEADER_ONLY = "a NIfTI header (.hdr) without its image; upload the single-file .nii or .nii.gz"


def sniff(path: str | Path, limits: UploadLimits | None = None) -> tuple[str, str]:
    """What a file holds, from its content (never its name); only files that start like DICOM reach pydicom.

    Args:
        path: the file.
        limits: the budgets (:attr:`UploadLimits.max_dicom_reads` bounds parsing a raw DICOM dataset); default
            :func:`upload_limits`.

    Returns:
        ``(kind, detail)``: kind ``"dicom"``, ``"nifti"``, ``"nifti.gz"``, ``"image"`` (PNG/JPEG), ``"zip"``,
        ``"empty"`` or ``"unknown"``; detail says why an unknown file cannot be used.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "IM1"
        >>> _ = path.write_bytes(bytes(128) + b"DICM" + bytes(64))
        >>> sniff(path)
        ('dicom', '')
    """
    path = Path(path)
    upload = _Upload(path.parent, limits or upload_limits())
    try:
        return _sniff(path, upload)
    except (_OutOfReads, _TooBig) as err:
        return "unknown", _over_limit(err, upload)


# --------------------------------------------------------------------------------------------- DICOM headers
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


class _TooBig(Exception):
    """A Deflated DICOM dataset inflates beyond what is left of :attr:`UploadLimits.max_zip_bytes`."""


def _inflated(path: Path, offset: int, limit: int) -> bytes:
    """The Deflated transfer syntax's dataset after ``offset``, inflated a chunk at a time (a deflate bomb stops at
    ``limit`` bytes with :class:`_TooBig`, where pydicom would inflate all of it into memory)."""
    inflater, out, total = zlib.decompressobj(-zlib.MAX_WBITS), [], 0
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(_CHUNK):
            while chunk:
                piece = inflater.decompress(chunk, _CHUNK)
                total += len(piece)
                if total > limit:
                    raise _TooBig
                out.append(piece)
                chunk = inflater.unconsumed_tail
    return b"".join(out)


def _read_header(path: Path, upload: _Upload) -> Any:
    """pydicom's header of ``path`` (read with ``force``, without pixel data), every read spent from the upload's
    read budget; a Deflated dataset is inflated by :func:`_inflated`, its bytes counted as unpacked, instead of by
    pydicom's unbounded ``zlib``.

    Raises:
        _OutOfReads: the read budget ran out; _TooBig: the unpacked-bytes budget ran out; pydicom's errors.
    """
    import pydicom
    from pydicom.filereader import read_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
        try:
            with _CountedFile(path, upload) as fp:
                return pydicom.dcmread(fp, stop_before_pixels=True, force=True)
        except _ReadsAll as deflated:
            data = _inflated(path, deflated.offset, upload.limits.max_zip_bytes - upload.unpacked)
            upload.unpacked += len(data)
            return read_dataset(_CountedBytes(data, upload), False, True,
                                stop_when=lambda tag, vr, length: int(tag) in _PIXEL_TAGS)  # fmt: skip


def _over_limit(err: Exception, upload: _Upload) -> str:
    """The message of a spent budget (:class:`_OutOfReads` or :class:`_TooBig`)."""
    limits = upload.limits
    if isinstance(err, _TooBig):
        shown = _size(limits.max_zip_bytes)
        return f"the compressed (Deflated) DICOM file unpacks to more than {shown}; {_limit('max_zip_bytes', shown)}"
    shown = f"{limits.max_dicom_reads:,} reads"
    return (f"the DICOM headers are too long to read (more than {shown}: a file of millions of tiny elements?); "
            f"{_limit('max_dicom_reads', shown)}")  # fmt: skip


def _check_dicom_headers(items: Sequence[_Staged], upload: _Upload) -> dict[Path, str]:
    """Parse every DICOM file's header once within the upload's budgets, before the scan parses them again; raises
    a :class:`DataError` naming the file where a budget ran out (other parse errors are left to the scan).

    Returns:
        Each file's ``Modality`` (``""`` if unknown or unreadable).
    """
    modalities: dict[Path, str] = {}
    for item in items:
        try:
            modalities[item.path] = str(_read_header(item.path, upload).get("Modality", "") or "")
        except (_OutOfReads, _TooBig) as err:
            raise DataError(item.name, _over_limit(err, upload)) from None
        except Exception as err:  # noqa: BLE001 - the scan reports unreadable files
            logger.debug("DICOM header check: %s", type(err).__name__)
    return modalities


# --------------------------------------------------------------------------------------------- staging
def _safe_name(name: str) -> str:
    """A file name that is safe on disk: the last path component, odd characters replaced, at most 120 chars."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^\w.+-]", "_", base)[:120].strip(".")
    return base or "file"


@dataclass
class _Upload:
    """One upload being staged: its folder, budgets, the names given out and what each path is called."""

    folder: Path
    limits: UploadLimits
    reads_left: int = field(init=False)  # of limits.max_dicom_reads
    unpacked: int = 0  # bytes extracted from zips and inflated from Deflated DICOM, against limits.max_zip_bytes
    taken: set[str] = field(default_factory=set)  # casefolded paths given out
    counters: dict[str, int] = field(default_factory=dict)  # last suffix used per wanted path
    shown: dict[str, str] = field(default_factory=dict)  # path on disk -> the user's name for it

    def __post_init__(self) -> None:
        self.reads_left = self.limits.max_dicom_reads

    def fresh(self, folder: Path, name: str) -> Path:
        """A path in ``folder`` for ``name`` not given out before (``a.dcm``, ``a_2.dcm``, ...), in constant time
        per call however many files share the name (every folder is new, so only names given out here exist)."""
        wanted = folder / name
        path, key = wanted, str(wanted).casefold()
        if key in self.taken:
            stem, dot, ext = name.partition(".")
            k = self.counters.get(key, 1)
            while str(path).casefold() in self.taken:
                k += 1
                path = folder / f"{stem}_{k}{dot}{ext}"
            self.counters[key] = k
        self.taken.add(str(path).casefold())
        self.shown[str(path)] = name
        return path


def _member_parts(member: str, archive: str) -> list[str] | None:
    """Sanitised path components of a zip member; ``None`` to skip it; raises on an unsafe path."""
    name = member.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
        raise DataError(archive, f"the zip archive holds an unsafe path ({member!r}); it was not opened")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1].lower() in _JUNK_NAMES:
        return None
    return [_safe_name(p) for p in parts]


def _too_many(archive: str, count: int, limits: UploadLimits) -> DataError:
    return DataError(archive, f"the zip archive holds {count:,} files and folders; "
                              f"{_limit('max_zip_members', f'{limits.max_zip_members:,}')}")  # fmt: skip


def _check_directory(archive: _Staged, limits: UploadLimits) -> None:
    """Refuse a zip whose end record announces more entries than allowed, or a file list too long for that many,
    before :mod:`zipfile` parses it (it builds an object per entry: millions cost seconds and gigabytes)."""
    size = archive.path.stat().st_size
    with archive.path.open("rb") as f:
        f.seek(max(0, size - _EOCD_SEARCH))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile says what is wrong
    count, listed = struct.unpack_from("<HL", tail, at + 10)
    z64 = at - 20 - 56  # the zip64 end record, before its locator
    if (count == 0xFFFF or listed == 0xFFFFFFFF) and z64 >= 0 and tail[z64 : z64 + 4] == b"PK\x06\x06":
        count, listed = struct.unpack_from("<QQ", tail, z64 + 32)
    if count > limits.max_zip_members:
        raise _too_many(archive.name, count, limits)
    if listed > limits.max_zip_members * _DIR_BYTES_PER_MEMBER + _EOCD_SEARCH:
        raise DataError(archive.name, f"the zip archive's file list ({_size(listed)}) is too long for "
                                      f"{limits.max_zip_members:,} files and folders; "
                                      f"{_limit('max_zip_members', f'{limits.max_zip_members:,}')}")  # fmt: skip


def _extract_zip(archive: _Staged, dest: Path, upload: _Upload) -> list[_Staged]:
    """Extract ``archive`` into ``dest`` with path checks, counting the bytes as they are written (``unpacked``,
    shared by the upload's archives); returns the extracted files."""
    limits, out = upload.limits, []
    too_big = DataError(archive.name, f"the zip archive unpacks to more than {_size(limits.max_zip_bytes)}; "
                                      f"{_limit('max_zip_bytes', _size(limits.max_zip_bytes))}")  # fmt: skip
    _check_directory(archive, limits)
    try:
        with zipfile.ZipFile(archive.path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_members:
                raise _too_many(archive.name, len(infos), limits)
            files = [info for info in infos if not info.is_dir()]
            if upload.unpacked + sum(info.file_size for info in files) > limits.max_zip_bytes:
                raise too_big  # declared sizes refuse an honest bomb at once; they are not trusted otherwise
            for info in files:
                parts = _member_parts(info.filename, archive.name)
                if parts is None:
                    continue
                if info.flag_bits & 0x1:
                    raise DataError(archive.name, "the zip archive is password-protected; upload it unencrypted")
                folder = dest.joinpath(*parts[:-1])
                folder.mkdir(parents=True, exist_ok=True)
                target = upload.fresh(folder, parts[-1])
                with zf.open(info) as src, target.open("xb") as dst:
                    while chunk := src.read(_CHUNK):
                        upload.unpacked += len(chunk)
                        if upload.unpacked > limits.max_zip_bytes:
                            raise too_big
                        dst.write(chunk)
                out.append(_Staged(target, parts[-1]))
    except DataError:
        raise
    except NotImplementedError:
        raise DataError(archive.name, "the zip archive uses a compression method that cannot be read") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as err:
        raise DataError(archive.name, f"the zip archive is damaged ({type(err).__name__})") from None
    return out


def _stage(files: Sequence[tuple[str, bytes]], upload: _Upload) -> list[_Staged]:
    """Write the uploads under the upload's folder, sniff them and unpack zips (one level); returns every file."""
    direct = upload.folder / "files"
    direct.mkdir()
    staged: list[_Staged] = []
    for name, data in files:
        item = _Staged(upload.fresh(direct, _safe_name(name)), _safe_name(name))
        item.path.write_bytes(bytes(data))
        item.kind, item.detail = _sniffed(item, upload)
        if item.kind != "zip":
            staged.append(item)
            continue
        members = _extract_zip(item, upload.fresh(upload.folder, f"zip_{item.path.name}"), upload)
        item.path.unlink()
        if not members:
            staged.append(_Staged(item.path, item.name, "unknown", "the zip archive holds no files"))
        for member in members:
            member.kind, member.detail = _sniffed(member, upload)
            if member.kind == "zip":
                member.kind, member.detail = "unknown", "a zip inside the zip archive (not opened)"
            staged.append(member)
    return staged


def _sniffed(item: _Staged, upload: _Upload) -> tuple[str, str]:
    try:
        return _sniff(item.path, upload)
    except (_OutOfReads, _TooBig) as err:
        raise DataError(item.name, _over_limit(err, upload)) from None


def _summary(files: Sequence[tuple[str, bytes]]) -> str:
    names = [_safe_name(name) for name, _ in files]
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _scrubbed(err: DataError, upload: _Upload, roots: Sequence[Path]) -> DataError:
    """``err`` with every server path (the upload's files, ``roots`` and below) replaced by the file's name."""

    def clean(text: str) -> str:
        for path in sorted(upload.shown, key=len, reverse=True):
            if path in text:
                text = text.replace(path, upload.shown[path])
        prefixes = {str(p) for root in roots for p in (root, root.resolve()) if p.is_absolute() and len(str(p)) > 1}
        if prefixes:
            pattern = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
            text = re.sub(rf"(?:{pattern})[^\s'\"()\[\],;]*", lambda m: m.group().rstrip("/").rsplit("/", 1)[-1], text)
        return text

    return DataError(clean(err.path), clean(err.problem))


# --------------------------------------------------------------------------------------------- DICOM
#: how each series problem reads to a clinician; ``{detail}`` is the technical detail (files and tags only)
_SERIES_PROBLEMS: dict[str, str] = {
    "truncated": "truncated pixel data: the file is shorter than its header says (incomplete copy or transfer?); "
    "export the series again",
    "inconsistent_spacing": "the DICOM series has inconsistent slice spacing: {detail}",
    "duplicate_positions": "the DICOM series has several slices at the same position; upload one echo, phase or "
    "acquisition at a time: {detail}",
    "inconsistent_orientation": "the slices of the DICOM series do not form one regular stack: {detail}",
    "inconsistent_shape": "the slices of the DICOM series differ in size or pixel spacing (a localiser mixed in?): "
    "{detail}",
    "missing_tags": "the DICOM files lack information needed to place the slices: {detail}",
    "multiframe": "multi-frame (enhanced) DICOM is not supported yet: {detail}",
    "no_decoder": "the pixel data is compressed in a format this server cannot decode: {detail}",
    "unsupported": "colour or multi-sample DICOM images are not supported: {detail}",
    "not_dicom": "not a readable DICOM file",
    "unreadable": "the DICOM file cannot be read: {detail}",
    "too_few_slices": "the DICOM series has too few slices: {detail}",
}


def _series_error(err: SeriesError, files: Sequence[Path], names: dict[Path, str], upload: str) -> DataError:
    """A :class:`DataError` for a failed series: named after the file at fault, or the upload for series rules."""
    where, detail = upload, err.message
    for path in files:
        prefix = f"{path.name}: "
        if detail.startswith(prefix):
            where, detail = names.get(path, path.name), detail[len(prefix) :]
            break
    template = _SERIES_PROBLEMS.get(str(err.reason), "{detail}")
    return DataError(where, template.format(detail=detail.rstrip(". ")))


def _no_series_error(entries: Sequence[FileEntry], upload: str, modalities: dict[Path, str]) -> DataError:
    """Why no file of a DICOM upload is an image slice, grouped by reason (``modalities``: each file's)."""
    from medkd.io.dicom_scan import Reason

    by_reason: dict[Reason, list[Path]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason or Reason.UNREADABLE, []).append(entry.path)
    parts = []
    for reason, paths in by_reason.items():
        count = _plural(len(paths), "file")
        if reason == Reason.NON_IMAGE:
            mods = "/".join(sorted({modalities.get(path) or "?" for path in paths}))
            parts.append(
                f"{count} {'is' if len(paths) == 1 else 'are'} {mods} (non-image: reports, "
                "segmentations, RT or presentation objects)"
            )
        else:
            parts.append(f"{count} skipped, {reason.hint}")
    return DataError(upload, "no image series in the upload: " + "; ".join(parts))


def loaded_from_dicom(vol: DicomVolume, name: str, note: str, folder: Path | None) -> LoadedImage:
    """A :class:`LoadedImage` of a loaded DICOM series (``folder``: where its files live)."""
    return LoadedImage(
        array=vol.array,
        spacing=tuple(float(s) for s in vol.spacing),  # type: ignore[arg-type]
        kind="dicom",
        name=name,
        modality=str(vol.datasets[0].get("Modality", "") or ""),
        reference=vol.reference_image(),
        dicom=vol,
        note=note,
        n_files=len(vol.files),
        folder=folder,
    )


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _check_decode(name: str, what: str, shape: Sequence[int], itemsize: int, limits: UploadLimits) -> None:
    """Refuse, before decoding, an array of ``shape`` whose voxels or decoding memory exceed the limits: the
    decoded array, a copy of it, and the float32 volume the app keeps (``2 x itemsize + 4`` bytes per voxel)."""
    voxels, dims = math.prod(shape), " × ".join(str(s) for s in shape)
    unit = "pixels" if what == "image" else "voxels"
    if voxels > limits.max_voxels:
        raise DataError(name, f"the {what} has {voxels:,} {unit} ({dims}), too many to decode; "
                              f"{_limit('max_voxels', f'{limits.max_voxels:,} {unit}')}")  # fmt: skip
    need = voxels * (2 * itemsize + 4)
    if need > limits.max_decode_bytes:
        each = _plural(itemsize, "byte")
        raise DataError(name, f"the {what} ({dims} = {voxels:,} {unit} of {each}) needs about {_size(need)} of "
                              f"memory to decode; {_limit('max_decode_bytes', _size(limits.max_decode_bytes))}")  # fmt: skip


def _load_dicom(items: Sequence[_Staged], name: str, notes: list[str], upload: _Upload) -> LoadedImage:
    from medkd.io.dicom_scan import group_series, scan_file
    from medkd.io.dicom_volume import SeriesError, load_series_volume

    modalities = _check_dicom_headers(items, upload)
    results = [scan_file(item.path) for item in items]
    series = group_series(results)
    if not series:
        raise _no_series_error([entry for entry, _ in results], name, modalities)
    chosen = max(series, key=lambda s: s.n_files)  # first of the largest (series are sorted by UID)
    if len(series) > 1:
        sizes = ", ".join(f"{s.modality or '?'} {_plural(s.n_files, 'file')}" for s in series)
        notes.append(f"the upload holds {len(series)} image series ({sizes}); showing the largest")
        logger.info("upload holds %d image series; using the largest (%d files)", len(series), chosen.n_files)
    names = {item.path: item.name for item in items}
    truncated = list(getattr(chosen, "truncated", []))
    if truncated:  # a slice without its pixels: never a volume with a slice fewer
        raise DataError(names.get(truncated[0], truncated[0].name), _SERIES_PROBLEMS["truncated"])
    n_other = len(items) - chosen.n_files
    if len(series) == 1 and n_other:
        notes.append(f"{_plural(n_other, 'DICOM file')} without image pixels ignored")
    headers = {entry.path: ds for entry, ds in results if ds is not None}
    slices = [headers[path] for path in chosen.files if path in headers]
    shapes = {
        (_int(ds.get("Rows"), 1), _int(ds.get("Columns"), 1) * _int(ds.get("SamplesPerPixel"), 1)) for ds in slices
    }
    itemsize = max([(_int(ds.get("BitsAllocated"), 16) + 7) // 8 for ds in slices] or [2])
    if len(shapes) == 1:  # slices x rows x columns (x samples); else the total
        _check_decode(name, "DICOM series", (len(slices), *shapes.pop()), itemsize, upload.limits)
    elif shapes:
        total = sum(_int(ds.get("Rows"), 1) * _int(ds.get("Columns"), 1) * _int(ds.get("SamplesPerPixel"), 1)
                    for ds in slices)  # fmt: skip
        _check_decode(name, "DICOM series", (total,), itemsize, upload.limits)
    try:
        vol = load_series_volume(chosen.files)
    except SeriesError as err:
        raise _series_error(err, chosen.files, names, name) from None
    except Exception as err:  # noqa: BLE001 - never show a traceback to the user
        raise DataError(name, f"the DICOM series cannot be read ({type(err).__name__})") from None
    return loaded_from_dicom(vol, name, "; ".join(notes), upload.folder)


# --------------------------------------------------------------------------------------------- NIfTI and images
def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing ``(z, y, x)`` of a SimpleITK image; a 2D image gets 1.0 along z."""
    spacing = [float(s) for s in reversed(image.GetSpacing())]
    return tuple(([1.0] * (3 - len(spacing)) + spacing)[-3:])  # type: ignore[return-value]


def _load_nifti(item: _Staged, name: str, notes: list[str], upload: _Upload) -> LoadedImage:
    from medkd.io.volume_io import read_volume

    compressed = item.kind == "nifti.gz"
    with gzip.open(item.path, "rb") if compressed else item.path.open("rb") as f:
        layout = _nifti_layout(f.read(_HEAD))
    if layout is None:  # sniffed as NIfTI a moment ago
        raise DataError(item.name, "the NIfTI header cannot be read")
    if any(size > 1 for size in layout.shape[3:]):
        raise DataError(item.name, f"the NIfTI image has {len(layout.shape)} dimensions "
                                   f"({' × '.join(map(str, layout.shape))}); upload a 2D or 3D volume")  # fmt: skip
    _check_decode(item.name, "NIfTI image", layout.shape[:3], layout.decoded_itemsize, upload.limits)
    needed = layout.offset + math.prod(layout.shape) * layout.itemsize
    if not compressed and item.path.stat().st_size < needed:
        raise DataError(
            item.name,
            f"the NIfTI file is shorter than its header says ({_size(item.path.stat().st_size)}"
            f" of {_size(needed)}): an incomplete copy or transfer? export it again",
        )
    suffix = ".nii.gz" if compressed else ".nii"
    target = item.path if item.path.name.lower().endswith(suffix) else item.path.with_name(item.path.name + suffix)
    if target != item.path:
        item.path.rename(target)
        upload.shown[str(target)] = item.name
    try:
        vol = read_volume(target)
    except DataError as err:
        raise DataError(item.name, err.problem) from None
    except Exception as err:  # noqa: BLE001
        raise DataError(item.name, f"the NIfTI file cannot be read ({type(err).__name__})") from None
    return LoadedImage(
        vol.array, spacing_zyx(vol.image), "nifti", name, "", vol.image, note="; ".join(notes), folder=upload.folder
    )


def _band_bytes(mode: str) -> int:
    return 4 if mode in ("I", "F") else 2 if mode.startswith("I;16") else 1


def _load_picture(item: _Staged, name: str, notes: list[str], upload: _Upload) -> LoadedImage:
    import SimpleITK as sitk
    from PIL import Image, ImageOps

    bomb = 2 * (Image.MAX_IMAGE_PIXELS or 0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits below decide
            with Image.open(item.path) as picture:
                width, height = picture.size  # from the header: nothing decoded yet
                itemsize = len(picture.getbands()) * _band_bytes(picture.mode)
                _check_decode(item.name, "image", (width, height), itemsize, upload.limits)
                picture = ImageOps.exif_transpose(picture)  # phone photos carry their rotation in EXIF
                if picture.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                    picture = picture.convert("L")  # ITU-R 601 luma for RGB(A), palette, CMYK, ...
                array = np.asarray(picture, dtype=np.float32)
    except DataError:
        raise
    except Image.DecompressionBombError:
        shown = f"{min(upload.limits.max_voxels, bomb):,} pixels"
        raise DataError(item.name, f"the image declares more than {bomb:,} pixels (a decompression bomb?); "
                                   f"{_limit('max_voxels', shown)}") from None  # fmt: skip
    except Exception as err:  # noqa: BLE001 - truncated files, unknown modes, ...
        raise DataError(item.name, f"the image cannot be decoded ({type(err).__name__})") from None
    if array.ndim != 2 or array.size == 0:
        raise DataError(item.name, f"the image has an unexpected shape {array.shape}")
    return LoadedImage(
        array[None],
        (1.0, 1.0, 1.0),
        "image",
        name,
        "",
        sitk.GetImageFromArray(array),
        note="; ".join(notes),
        folder=upload.folder,
    )


_LOADERS: dict[str, Callable[..., LoadedImage]] = {"dicom": _load_dicom, "nifti": _load_nifti, "image": _load_picture}


def _group(item: _Staged) -> str:
    return "nifti" if item.kind.startswith("nifti") else item.kind


def _choose(staged: list[_Staged], upload: str, notes: list[str]) -> tuple[str, list[_Staged]]:
    """The one usable kind of the upload and its files; raises for nothing usable, mixed kinds or several volumes."""
    usable = [item for item in staged if _group(item) in _KIND_WORDS]
    ignored = [item for item in staged if _group(item) not in _KIND_WORDS]
    if not usable:
        first = ignored[0]
        if len(ignored) == 1:
            raise DataError(first.name, first.detail)
        raise DataError(
            upload,
            f"none of the {len(ignored)} files is a DICOM, NIfTI, PNG or JPEG file (e.g. {first.name}: {first.detail})",
        )
    kinds = Counter(_group(item) for item in usable)
    if len(kinds) > 1:
        listed = ", ".join(f"{_KIND_WORDS[k]} ({_plural(n, 'file')})" for k, n in kinds.items())
        raise DataError(
            upload, f"the upload mixes {listed}; upload one DICOM series, one NIfTI file or one image at a time"
        )
    kind = next(iter(kinds))
    if kind != "dicom" and len(usable) > 1:
        raise DataError(upload, f"{len(usable)} {_KIND_WORDS[kind]} files were uploaded; upload one at a time")
    if ignored:
        notes.append(f"{_plural(len(ignored), 'file')} ignored ({_NOT_SUPPORTED}, e.g. {ignored[0].name})")
    return kind, usable


def load_upload(
    files: Sequence[tuple[str, bytes]], workdir: str | Path, *, limits: UploadLimits | None = None
) -> LoadedImage:
    """Decode an upload: one or more DICOM files (or a zip of a series), one NIfTI file, or one PNG/JPEG image.

    Args:
        files: ``(file name, content)`` pairs; names are only used in messages.
        workdir: the session's temporary folder; the upload is written to a fresh subfolder of it.
        limits: the budgets (see the module docstring); default :func:`upload_limits` (constants and
            ``MEDKD_UPLOAD_*`` environment variables).

    Returns:
        The :class:`LoadedImage`; ``note`` tells about ignored files or a choice between several series.

    Raises:
        DataError: for an empty upload, files of no supported kind, mixed kinds, several NIfTI/image files, an
            unsafe zip, an upload beyond a limit (zip bytes or entries, voxels, decoding memory, DICOM header
            reads), no image series among DICOM files, or a series/file that cannot become a regular volume
            (truncated pixel data, inconsistent spacing, ...). The message names the file (as uploaded, or inside
            the zip) or the upload, and holds no patient data and no server path.
        ConfigError: a ``MEDKD_UPLOAD_*`` variable that is not a positive whole number.

    Example:
        >>> import tempfile
        >>> load_upload([("notes.txt", b"hello")], tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: notes.txt: not a DICOM, NIfTI, PNG or JPEG file
    """
    if not files:
        raise DataError("upload", "no files were uploaded")
    limits = limits or upload_limits()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    upload = _Upload(Path(tempfile.mkdtemp(prefix="upload-", dir=workdir)), limits)
    name = _summary(files)
    try:
        staged = _stage(files, upload)
        notes: list[str] = []
        kind, usable = _choose(staged, name, notes)
        logger.info("upload: %d %s file(s) used, %d ignored", len(usable), kind, len(staged) - len(usable))
        return _LOADERS[kind](usable if kind == "dicom" else usable[0], name, notes, upload)
    except DataError as err:
        shutil.rmtree(upload.folder, ignore_errors=True)
        raise _scrubbed(err, upload, [upload.folder, workdir, Path(tempfile.gettempdir())]) from None
    except BaseException:
        shutil.rmtree(upload.folder, ignore_errors=True)
        raise
