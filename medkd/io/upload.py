# SPDX-License-Identifier: Apache-2.0
"""Turn what a user uploads to the app (or a bundled synthetic example) into an image, a volume or a video.

:func:`load_upload` takes ``(file name, bytes)`` pairs, as ``st.file_uploader`` gives them, and sniffs the content,
never the extension (DICOM files often have none, and a ``.nii.gz`` may arrive named ``gz``):

- **zip** archives are extracted safely (no absolute or ``..`` paths; folders, ``__MACOSX`` and ``.DS_Store``
  skipped; within the upload limits) and their files treated like uploaded ones; a zip inside is not opened;
- **DICOM** files (``DICM`` after the 128-byte preamble, or a raw dataset whose first bytes are a plausible
  little-endian group 0002/0008 element, as pydicom's ``rtstruct.dcm``) are scanned
  (:func:`medkd.io.dicom_scan.scan_file`) and the image series with the most files becomes the volume
  (:func:`medkd.io.dicom_volume.load_series_volume`: sorted by position, rescaled to HU for CT); a series with a
  truncated slice is refused, naming the slice;
- **NIfTI** (``.nii`` or gzip-compressed, NIfTI-1 or -2, found by the header's size and magic) is read with
  :func:`medkd.io.volume_io.read_volume`;
- **PNG/JPEG** becomes a greyscale ``(1, H, W)`` float32 image;
- **video** (MP4/MOV: an ISO base media ``ftyp`` box; AVI: ``RIFF....AVI ``) is decoded with OpenCV into
  :class:`LoadedVideo` frames ``(T, H, W, 3)`` uint8 RGB, at the file's frame rate or a chosen ``fps`` (frames
  dropped evenly), within the frame budget ``MAX_VIDEO_FRAMES`` (the first frames are kept and the note says so).

Each decoded upload says what kind of input it is (:attr:`LoadedImage.input_kind`): ``"image2d"`` (one slice),
``"volume"`` or ``"video"`` (:data:`INPUT_KINDS`); the app's views declare which they take.

Files that are none of these are ignored when the rest of the upload is usable (``LoadedImage.note`` says so);
they are never handed to pydicom. Every problem raises :class:`~medkd.errors.DataError` naming the file as the
user called it (or its name inside the zip) and saying, in clinical words, what is wrong; no message holds patient
data or a server path. Everything is written under ``workdir`` (the app's session folder).

Limits (hostile uploads cost seconds, not minutes or gigabytes): the budgets of one upload (bytes unpacked, zip
entries, voxels, decoding memory, DICOM header reads), their defaults, their ``MEDKD_UPLOAD_<NAME>`` environment
variables and the counted DICOM header reads are in :mod:`medkd.io.upload_limits`; its public names
(``MAX_*``, ``ENV_PREFIX``, :class:`UploadLimits`, :func:`upload_limits`) are re-exported here, and assigning
``medkd.io.upload.MAX_VOXELS`` (as tests do) sets the constant there. Zip archives are unpacked, within those
budgets and with their member paths checked, by :mod:`medkd.io.zip_extract`.

The bundled synthetic examples are in :mod:`medkd.io.examples`.

Example:
    >>> limits = upload_limits(max_voxels=10**6)
    >>> limits.max_voxels, limits.max_zip_members
    (1000000, 20000)
"""

from __future__ import annotations

import gzip
import logging
import math
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

from medkd.errors import DataError
from medkd.io.upload_limits import (
    ENV_PREFIX,
    MAX_DECODE_BYTES,
    MAX_DICOM_READS,
    MAX_VIDEO_FRAMES,
    MAX_VOXELS,
    MAX_ZIP_BYTES,
    MAX_ZIP_MEMBERS,
    OutOfReads,
    TooBig,
    UploadLimits,
    limit_hint,
    over_limit,
    read_header,
    size_text,
    upload_limits,
)
from medkd.io.zip_extract import UploadFolder, extract_zip, safe_name

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medkd.io.dicom_scan import FileEntry
    from medkd.io.dicom_volume import DicomVolume, SeriesError

__all__ = [
    "ENV_PREFIX",
    "INPUT_KINDS",
    "MAX_DECODE_BYTES",
    "MAX_DICOM_READS",
    "MAX_VIDEO_FRAMES",
    "MAX_VOXELS",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "Loaded",
    "LoadedImage",
    "LoadedVideo",
    "UploadLimits",
    "load_upload",
    "loaded_from_dicom",
    "sniff",
    "spacing_zyx",
    "upload_limits",
]

logger = logging.getLogger(__name__)

_HEAD = 544  # enough for a NIfTI-2 header (540) and the DICOM preamble (132)
_KIND_WORDS = {"dicom": "DICOM", "nifti": "NIfTI", "image": "PNG/JPEG", "video": "video"}
_NOT_SUPPORTED = "not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file"

#: what a decoded upload can be, in words: a view of the app says which of these its models take
INPUT_KINDS: dict[str, str] = {"image2d": "a 2D image", "volume": "a volume", "video": "a video"}

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
            "input": self.input_kind,
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

    @property
    def input_kind(self) -> str:
        """``"image2d"`` for one slice (a PNG/JPEG or a 2D NIfTI/DICOM: ``(1, y, x)``), else ``"volume"``."""
        return "image2d" if self.array.shape[0] == 1 else "volume"


@dataclass
class LoadedVideo:
    """A decoded video upload: RGB frames at a known rate.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB.
        fps: frames per second of ``frames`` (the file's rate, or the rate asked for when frames were dropped).
        source_fps: the file's own frame rate.
        name: the uploaded file's name.
        note: what the user should know (frames beyond the budget not read, files ignored), ``""`` if nothing.
        n_files: files the video was read from (1).
        folder: the fresh folder under ``workdir`` that holds the upload's files.
        kind: ``"video"`` (the file kind, as :attr:`LoadedImage.kind`).
    """

    frames: np.ndarray
    fps: float
    source_fps: float
    name: str
    note: str = ""
    n_files: int = 1
    folder: Path | None = None
    kind: str = "video"
    modality: str = ""
    dicom: None = field(default=None, repr=False)
    ground_truth: None = field(default=None, repr=False)

    @property
    def input_kind(self) -> str:
        """``"video"``."""
        return "video"

    @property
    def array(self) -> np.ndarray:
        """The frames (the same array as :attr:`frames`)."""
        return self.frames

    def info(self) -> dict[str, str]:
        """Technical metadata for display: ``kind``, ``input``, ``frames``, ``size``, ``frame rate``, ``duration``,
        ``files`` and ``note`` when there is one."""
        t, h, w = self.frames.shape[:3]
        out = {
            "kind": "video",
            "input": self.input_kind,
            "frames": str(t),
            "size": f"{h} × {w} (RGB)",
            "frame rate": f"{self.fps:.4g} fps (file: {self.source_fps:.4g} fps)",
            "duration": f"{t / self.fps:.4g} s" if self.fps > 0 else "unknown",
            "files": str(self.n_files),
        }
        if self.note:
            out["note"] = self.note
        return out


#: what :func:`load_upload` returns
Loaded = LoadedImage | LoadedVideo


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


def _sniff(path: Path, upload: UploadFolder) -> tuple[str, str]:
    """:func:`sniff`; parsing a raw dataset may raise :class:`OutOfReads` or :class:`TooBig` (the upload's limits)."""
    with path.open("rb") as f:
        head = f.read(_HEAD)
    if not head:
        return "empty", "the file is empty"
    if head[128:132] == b"DICM":
        return "dicom", ""
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return "image", ""
    if _video_container(head):
        return "video", ""
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
            if read_header(path, upload).get("SOPClassUID"):
                return "dicom", ""
        except (OutOfReads, TooBig):
            raise
        except Exception as err:  # noqa: BLE001 - anything pydicom chokes on is not DICOM
            logger.debug("raw DICOM candidate does not parse: %s", type(err).__name__)
    return "unknown", _NOT_SUPPORTED


def _video_container(head: bytes) -> str:
    """``"mp4"`` for an ISO base media file (MP4, MOV, M4V: an ``ftyp`` box first), ``"avi"`` for RIFF AVI, else ``""``."""
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return ""


_HEADER_ONLY = "a NIfTI header (.hdr) without its image; upload the single-file .nii or .nii.gz"


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
        return _sniff(path, upload)
    except (OutOfReads, TooBig) as err:
        return "unknown", over_limit(err, upload.limits)


# --------------------------------------------------------------------------------------------- DICOM headers
def _check_dicom_headers(items: Sequence[_Staged], upload: UploadFolder) -> dict[Path, str]:
    """Parse every DICOM file's header once within the upload's budgets, before the scan parses them again; raises
    a :class:`DataError` naming the file where a budget ran out (other parse errors are left to the scan).

    Returns:
        Each file's ``Modality`` (``""`` if unknown or unreadable).
    """
    modalities: dict[Path, str] = {}
    for item in items:
        try:
            modalities[item.path] = str(read_header(item.path, upload).get("Modality", "") or "")
        except (OutOfReads, TooBig) as err:
            raise DataError(item.name, over_limit(err, upload.limits)) from None
        except Exception as err:  # noqa: BLE001 - the scan reports unreadable files
            logger.debug("DICOM header check: %s", type(err).__name__)
    return modalities


# --------------------------------------------------------------------------------------------- staging
def _stage(files: Sequence[tuple[str, bytes]], upload: UploadFolder) -> list[_Staged]:
    """Write the uploads under the upload's folder, sniff them and unpack zips (one level); returns every file."""
    direct = upload.folder / "files"
    direct.mkdir()
    staged: list[_Staged] = []
    for name, data in files:
        item = _Staged(upload.fresh(direct, safe_name(name)), safe_name(name))
        item.path.write_bytes(bytes(data))
        item.kind, item.detail = _sniffed(item, upload)
        if item.kind != "zip":
            staged.append(item)
            continue
        dest = upload.fresh(upload.folder, f"zip_{item.path.name}")
        members = [_Staged(path, shown) for path, shown in extract_zip(item.path, item.name, dest, upload)]
        item.path.unlink()
        if not members:
            staged.append(_Staged(item.path, item.name, "unknown", "the zip archive holds no files"))
        for member in members:
            member.kind, member.detail = _sniffed(member, upload)
            if member.kind == "zip":
                member.kind, member.detail = "unknown", "a zip inside the zip archive (not opened)"
            staged.append(member)
    return staged


def _sniffed(item: _Staged, upload: UploadFolder) -> tuple[str, str]:
    try:
        return _sniff(item.path, upload)
    except (OutOfReads, TooBig) as err:
        raise DataError(item.name, over_limit(err, upload.limits)) from None


def _summary(files: Sequence[tuple[str, bytes]]) -> str:
    names = [safe_name(name) for name, _ in files]
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _scrubbed(err: DataError, upload: UploadFolder, roots: Sequence[Path]) -> DataError:
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
    unit = "pixels" if what in ("image", "video frame") else "voxels"
    if voxels > limits.max_voxels:
        raise DataError(name, f"the {what} has {voxels:,} {unit} ({dims}), too many to decode; "
                              f"{limit_hint('max_voxels', f'{limits.max_voxels:,} {unit}')}")  # fmt: skip
    need = voxels * (2 * itemsize + 4)
    if need > limits.max_decode_bytes:
        each = _plural(itemsize, "byte")
        shown = size_text(limits.max_decode_bytes)
        raise DataError(name, f"the {what} ({dims} = {voxels:,} {unit} of {each}) needs about {size_text(need)} of "
                              f"memory to decode; {limit_hint('max_decode_bytes', shown)}")  # fmt: skip


def _load_dicom(
    items: Sequence[_Staged], name: str, notes: list[str], upload: UploadFolder, **_: Any
) -> LoadedImage:
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


def _load_nifti(item: _Staged, name: str, notes: list[str], upload: UploadFolder, **_: Any) -> LoadedImage:
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
            f"the NIfTI file is shorter than its header says ({size_text(item.path.stat().st_size)}"
            f" of {size_text(needed)}): an incomplete copy or transfer? export it again",
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


def _load_picture(item: _Staged, name: str, notes: list[str], upload: UploadFolder, **_: Any) -> LoadedImage:
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
                                   f"{limit_hint('max_voxels', shown)}") from None  # fmt: skip
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


def _load_video(
    item: _Staged, name: str, notes: list[str], upload: UploadFolder, *, fps: float | None = None, **_: Any
) -> LoadedVideo:
    """Decode a video with OpenCV: RGB frames at ``fps`` (default the file's rate), at most the frame budget."""
    try:
        import cv2
    except ImportError:  # a core dependency; a broken install still gets a message, not a traceback
        raise DataError(item.name, "this server cannot decode video (OpenCV is missing: pip install "
                                   "opencv-python-headless)") from None  # fmt: skip
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise DataError(item.name, f"the frame rate to decode at must be positive, got {fps!r}")
    with item.path.open("rb") as f:
        container = _video_container(f.read(16)) or "mp4"
    target = item.path.with_name(item.path.name + f".{container}")
    item.path.rename(target)
    upload.shown[str(target)] = item.name
    capture = cv2.VideoCapture(str(target))
    try:
        if not capture.isOpened():
            raise DataError(item.name, "the video cannot be opened (damaged, or a codec this server cannot decode)")
        source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(source_fps) and 0 < source_fps <= 1000):
            notes.append("the video does not state its frame rate; 25 fps assumed")
            source_fps = 25.0
        rate = min(fps, source_fps) if fps is not None else source_fps
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        _check_decode(item.name, "video frame", (height, width), 3, upload.limits)
        per_frame = max(width * height * 3, 1)
        budget = min(upload.limits.max_video_frames, max(upload.limits.max_decode_bytes // (2 * per_frame), 1))
        frames, index, more = _read_frames(cv2, capture, item.name, (height, width), rate / source_fps, budget)
    finally:
        capture.release()
    if not frames:
        raise DataError(item.name, "the video holds no frame that can be decoded (damaged, or an unsupported codec)")
    if more:
        seconds = index / source_fps
        notes.append(f"only the first {len(frames):,} frames ({seconds:.1f} s) were read; "
                     f"{limit_hint('max_video_frames', f'{upload.limits.max_video_frames:,} frames')}")  # fmt: skip
    logger.info("video upload: %d frames of %d read at %.3g fps", len(frames), index, rate)
    return LoadedVideo(np.stack(frames), rate, source_fps, name, note="; ".join(notes), folder=upload.folder)


def _read_frames(
    cv2: Any, capture: Any, name: str, size: tuple[int, int], keep: float, budget: int
) -> tuple[list[np.ndarray], int, bool]:
    """Grab every frame, keep (decode) those where ``index * keep`` reaches a new whole number; stop at ``budget``.

    Returns:
        ``(frames, frames grabbed, whether a frame to keep was left unread)``.
    """
    frames: list[np.ndarray] = []
    slot, index = -1, 0
    while capture.grab():
        now = int(index * keep + 1e-9)
        index += 1
        if now == slot:
            continue
        if len(frames) >= budget:
            return frames, index - 1, True
        ok, frame = capture.retrieve()
        if not ok or frame is None:
            break
        if frame.ndim != 3 or frame.shape[:2] != size or frame.shape[2] != 3:
            raise DataError(name, f"the video's frames change size or colour layout (frame {index}: {frame.shape})")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        slot = now
    return frames, index, False


_LOADERS: dict[str, Callable[..., Loaded]] = {
    "dicom": _load_dicom, "nifti": _load_nifti, "image": _load_picture, "video": _load_video,
}  # fmt: skip


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
            f"none of the {len(ignored)} files is a DICOM, NIfTI, PNG, JPEG or video file "
            f"(e.g. {first.name}: {first.detail})",
        )
    kinds = Counter(_group(item) for item in usable)
    if len(kinds) > 1:
        listed = ", ".join(f"{_KIND_WORDS[k]} ({_plural(n, 'file')})" for k, n in kinds.items())
        raise DataError(
            upload, f"the upload mixes {listed}; upload one DICOM series, one NIfTI file, one image or one video "
            "at a time"
        )
    kind = next(iter(kinds))
    if kind != "dicom" and len(usable) > 1:
        raise DataError(upload, f"{len(usable)} {_KIND_WORDS[kind]} files were uploaded; upload one at a time")
    if ignored:
        notes.append(f"{_plural(len(ignored), 'file')} ignored ({_NOT_SUPPORTED}, e.g. {ignored[0].name})")
    return kind, usable


def load_upload(
    files: Sequence[tuple[str, bytes]],
    workdir: str | Path,
    *,
    limits: UploadLimits | None = None,
    fps: float | None = None,
) -> Loaded:
    """Decode an upload: DICOM files (or a zip of a series), one NIfTI file, one PNG/JPEG image or one video.

    Args:
        files: ``(file name, content)`` pairs; names are only used in messages.
        workdir: the session's temporary folder; the upload is written to a fresh subfolder of it.
        limits: the budgets (see the module docstring); default :func:`upload_limits` (constants and
            ``MEDKD_UPLOAD_*`` environment variables).
        fps: frame rate to decode a video at (frames dropped evenly; never above the file's); default the file's.

    Returns:
        A :class:`LoadedImage` (image or volume) or a :class:`LoadedVideo`; ``note`` tells about ignored files, a
        choice between several series or video frames beyond the budget.

    Raises:
        DataError: for an empty upload, files of no supported kind, mixed kinds, several NIfTI/image files, an
            unsafe zip, an upload beyond a limit (zip bytes or entries, voxels, decoding memory, DICOM header
            reads), a video that cannot be decoded, no image series among DICOM files, or a series/file that cannot become a regular volume
            (truncated pixel data, inconsistent spacing, ...). The message names the file (as uploaded, or inside
            the zip) or the upload, and holds no patient data and no server path.
        ConfigError: a ``MEDKD_UPLOAD_*`` variable that is not a positive whole number.

    Example:
        >>> import tempfile
        >>> load_upload([("notes.txt", b"hello")], tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: notes.txt: not a DICOM, NIfTI, PNG, JPEG or video (MP4/AVI) file
    """
    if not files:
        raise DataError("upload", "no files were uploaded")
    limits = limits or upload_limits()
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    upload = UploadFolder(Path(tempfile.mkdtemp(prefix="upload-", dir=workdir)), limits)
    name = _summary(files)
    try:
        staged = _stage(files, upload)
        notes: list[str] = []
        kind, usable = _choose(staged, name, notes)
        logger.info("upload: %d %s file(s) used, %d ignored", len(usable), kind, len(staged) - len(usable))
        return _LOADERS[kind](usable if kind == "dicom" else usable[0], name, notes, upload, fps=fps)
    except DataError as err:
        shutil.rmtree(upload.folder, ignore_errors=True)
        raise _scrubbed(err, upload, [upload.folder, workdir, Path(tempfile.gettempdir())]) from None
    except BaseException:
        shutil.rmtree(upload.folder, ignore_errors=True)
        raise
