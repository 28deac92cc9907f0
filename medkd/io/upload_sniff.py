# SPDX-License-Identifier: Apache-2.0
"""What an uploaded file holds, from its first bytes (never its name): DICOM, NIfTI, PNG/JPEG, video, zip.

:func:`medkd.io.upload.load_upload` sniffs every uploaded (or unzipped) file with :func:`sniff_file`:

- **DICOM**: ``DICM`` after the 128-byte preamble, or a raw dataset whose first bytes are a plausible little-endian
  group 0002/0008 element (:func:`starts_like_raw_dicom`, as pydicom's ``rtstruct.dcm``) and whose header parses,
  within the upload's DICOM read budget, with a ``SOPClassUID``; nothing else reaches pydicom;
- **NIfTI** (``.nii`` or gzip-compressed, NIfTI-1 or -2): the header's size and magic; :func:`nifti_layout` reads
  its shape, voxel size and offset without decoding anything (a ``.hdr`` without its image is refused);
- **PNG/JPEG**: their signatures;
- **video** (:func:`video_container`): MP4/MOV/M4V (an ISO base media ``ftyp`` box) or AVI (``RIFF....AVI ``);
- **zip**: ``PK`` and a readable central directory.

Example:
    >>> import struct
    >>> head = struct.pack("<i", 348) + bytes(36) + struct.pack("<8h", 3, 64, 64, 10, 1, 1, 1, 1)
    >>> head += bytes(14) + struct.pack("<hh", 4, 16) + bytes(34) + struct.pack("<3f", 352.0, 1.0, 0.0)
    >>> head += bytes(224) + b"n+1\\0"
    >>> layout = nifti_layout(head)
    >>> layout.single, layout.shape, layout.itemsize, layout.offset
    (True, (64, 64, 10), 2, 352)
    >>> video_container(bytes(4) + b"ftypisom"), video_container(b"RIFF" + bytes(4) + b"AVI LIST")
    ('mp4', 'avi')
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from medkd.io.upload_limits import OutOfReads, TooBig, UploadLimits, over_limit, read_header, upload_limits
from medkd.io.zip_extract import UploadFolder

__all__ = [
    "HEAD_BYTES",
    "NOT_SUPPORTED",
    "NiftiLayout",
    "nifti_layout",
    "sniff",
    "sniff_file",
    "starts_like_raw_dicom",
    "video_container",
]

logger = logging.getLogger(__name__)

#: bytes read to sniff a file: enough for a NIfTI-2 header (540) and the DICOM preamble (132)
HEAD_BYTES = 544
#: why a file of no supported kind is not used
NOT_SUPPORTED = "not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file"
_HEADER_ONLY = "a NIfTI header (.hdr) without its image; upload the single-file .nii or .nii.gz"

#: bytes per voxel of the NIfTI datatype codes (uint8 ... RGBA32)
_NIFTI_ITEMSIZE = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                   1536: 16, 1792: 16, 2048: 32, 2304: 4}  # fmt: skip


@dataclass(frozen=True)
class NiftiLayout:
    """What a NIfTI-1/-2 header says about its voxels (nothing decoded)."""

    single: bool  # image in the same file (``n+1``/``n+2``), not a ``.hdr`` of a ``.img``
    shape: tuple[int, ...]  # dim[1] ... dim[dim[0]], as stored (x, y, z, t, ...)
    itemsize: int  # stored bytes per voxel
    decoded_itemsize: int  # bytes per voxel once read (scl_slope/scl_inter make integers float)
    offset: int  # vox_offset: where the voxels start


def nifti_layout(head: bytes) -> NiftiLayout | None:
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
        return NiftiLayout(single, shape, itemsize, max(itemsize, 4) if rescaled else itemsize, offset)
    return None


#: explicit VRs with a 2-byte reserved field and a 4-byte length
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})  # fmt: skip
_UNDEFINED = 0xFFFFFFFF


def starts_like_raw_dicom(head: bytes, size: int) -> bool:
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


def sniff_file(path: Path, upload: UploadFolder) -> tuple[str, str]:
    """:func:`sniff` within an upload's budgets (``upload.reads_left``, ``upload.unpacked``), which it spends.

    Raises:
        OutOfReads, TooBig: parsing a raw DICOM dataset ran out of the upload's budget
            (:mod:`medkd.io.upload_limits`).
    """
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    if not head:
        return "empty", "the file is empty"
    if head[128:132] == b"DICM":
        return "dicom", ""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return "image", ""
    if video_container(head):
        return "video", ""
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as f:
                inner = f.read(HEAD_BYTES)
        except (OSError, EOFError, ValueError, zlib.error):
            return "unknown", "a damaged gzip file"
        layout = nifti_layout(inner)
        if layout is None:
            return "unknown", "a gzip file that holds no NIfTI image"
        return ("nifti.gz", "") if layout.single else ("unknown", _HEADER_ONLY)
    layout = nifti_layout(head)
    if layout is not None:
        return ("nifti", "") if layout.single else ("unknown", _HEADER_ONLY)
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "zip", ""
    if starts_like_raw_dicom(head, path.stat().st_size):
        try:  # a raw dataset: a header that parses (within the budget) with a SOPClassUID
            if read_header(path, upload).get("SOPClassUID"):
                return "dicom", ""
        except (OutOfReads, TooBig):
            raise
        except Exception as err:  # noqa: BLE001 - anything pydicom chokes on is not DICOM
            logger.debug("raw DICOM candidate does not parse: %s", type(err).__name__)
    return "unknown", NOT_SUPPORTED


def video_container(head: bytes) -> str:
    """``"mp4"`` for an ISO base media file (MP4, MOV, M4V: an ``ftyp`` box first), ``"avi"`` for RIFF AVI,
    else ``""``."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return ""


def sniff(path: str | Path, limits: UploadLimits | None = None) -> tuple[str, str]:
    """What a file holds, from its content (never its name); only files that start like DICOM reach pydicom.

    Args:
        path: the file.
        limits: the budgets (:attr:`UploadLimits.max_dicom_reads` bounds parsing a raw DICOM dataset); default
            :func:`upload_limits`.

    Returns:
        ``(kind, detail)``: kind ``"dicom"``, ``"nifti"``, ``"nifti.gz"``, ``"image"`` (PNG/JPEG), ``"video"``
        (MP4/MOV/AVI), ``"zip"``,
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
    upload = UploadFolder(path.parent, limits or upload_limits())
    try:
        return sniff_file(path, upload)
    except (OutOfReads, TooBig) as err:
        return "unknown", over_limit(err, upload.limits)

