# SPDX-License-Identifier: Apache-2.0
"""The budgets of one upload to the app, so that a hostile upload costs seconds, not minutes or gigabytes.

Each limit is a module constant, overridden by the environment variable ``MEDKD_UPLOAD_<NAME>`` (a positive whole
number; read on every upload) and by ``load_upload(..., limits=upload_limits(max_voxels=...))``
(:func:`medkd.io.upload.load_upload`):

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
``MAX_VIDEO_FRAMES``      2,000           frames decoded from one video (after dropping frames for a lower
                                          frame rate); later frames are not read, and the upload's note says so
========================  ==============  =================================================================

Streamlit's own ``server.maxUploadSize`` (200 MB by default) bounds what reaches
:func:`~medkd.io.upload.load_upload`.

Besides :class:`UploadLimits` and :func:`upload_limits`, this module spends the DICOM budgets:
:func:`read_header` reads a DICOM header through a file that counts every ``read`` against the upload's
``reads_left`` (raising :class:`OutOfReads` when they are spent) and inflates a Deflated dataset a chunk at a time
against the unpacked-bytes budget (raising :class:`TooBig`); :func:`over_limit` words either for the user.
:func:`check_decode` refuses, from its header's shape, an image, volume or video frame too large to decode.
Zip archives are unpacked within the same budgets by :mod:`medkd.io.zip_extract`.

Example:
    >>> limits = upload_limits(max_voxels=10**6)
    >>> limits.max_voxels, limits.max_zip_members
    (1000000, 20000)
    >>> limit_hint("max_decode_bytes", size_text(limits.max_decode_bytes))
    'the upload limit is 3 GiB ($MEDKD_UPLOAD_MAX_DECODE_BYTES)'
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from medkd.errors import ConfigError, DataError

__all__ = [
    "CHUNK_BYTES",
    "ENV_PREFIX",
    "MAX_DECODE_BYTES",
    "MAX_DICOM_READS",
    "MAX_VIDEO_FRAMES",
    "MAX_VOXELS",
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "OutOfReads",
    "TooBig",
    "UploadBudget",
    "UploadLimits",
    "check_decode",
    "env_name",
    "limit_hint",
    "over_limit",
    "plural",
    "read_header",
    "size_text",
    "upload_limits",
]

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
#: most frames one video upload may decode to (also bounded by ``MAX_DECODE_BYTES``)
MAX_VIDEO_FRAMES = 2_000
#: environment variables ``MEDKD_UPLOAD_MAX_...`` override the constants above
ENV_PREFIX = "MEDKD_UPLOAD_"
#: bytes unpacked at a time (zip members, Deflated DICOM), so a budget is checked every mebibyte
CHUNK_BYTES = 1 << 20
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    """The budgets of one upload (see the module docstring); build one with :func:`upload_limits`.

    Attributes:
        max_zip_bytes: bytes unpacked (zip members extracted, Deflated DICOM inflated), counted as they come.
        max_zip_members: entries (files and folders) of one zip archive.
        max_voxels: voxels (pixels) of one NIfTI volume, image or DICOM series.
        max_decode_bytes: memory to decode one volume or image, estimated from its header.
        max_dicom_reads: pydicom reads of all DICOM headers of the upload.
        max_video_frames: frames decoded from one video.
    """

    max_zip_bytes: int = MAX_ZIP_BYTES
    max_zip_members: int = MAX_ZIP_MEMBERS
    max_voxels: int = MAX_VOXELS
    max_decode_bytes: int = MAX_DECODE_BYTES
    max_dicom_reads: int = MAX_DICOM_READS
    max_video_frames: int = MAX_VIDEO_FRAMES

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"upload limit {f.name}={value!r}: expected a positive whole number")


def env_name(name: str) -> str:
    """The environment variable that overrides the limit ``name`` (``max_voxels`` -> ``MEDKD_UPLOAD_MAX_VOXELS``)."""
    return ENV_PREFIX + name.upper()


def upload_limits(**overrides: int | None) -> UploadLimits:
    """The upload budgets: the module constants (as they are now), then ``MEDKD_UPLOAD_<NAME>`` environment
    variables, then ``overrides`` that are not ``None``.

    Args:
        overrides: ``max_zip_bytes``, ``max_zip_members``, ``max_voxels``, ``max_decode_bytes``, ``max_dicom_reads``,
            ``max_video_frames``.

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
        text = os.environ.get(env_name(f.name), "").strip()
        if text:
            try:
                values[f.name] = int(text.replace("_", ""))
            except ValueError:
                raise ConfigError(f"${env_name(f.name)}={text!r}: expected a positive whole number") from None
            if values[f.name] <= 0:
                raise ConfigError(f"${env_name(f.name)}={text!r}: expected a positive whole number")
    values.update({name: value for name, value in overrides.items() if value is not None})
    return UploadLimits(**values)


def size_text(n: float) -> str:
    """``1 GiB``, ``3.5 MiB``, ``100 bytes``."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def limit_hint(name: str, shown: str) -> str:
    """The end of a refusal: the limit ``name`` is ``shown`` and which environment variable raises it."""
    return f"the upload limit is {shown} (${env_name(name)})"


def plural(n: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def check_decode(name: str, what: str, shape: Sequence[int], itemsize: int, limits: UploadLimits) -> None:
    """Refuse, before decoding, an array of ``shape`` whose voxels or decoding memory exceed the limits: the
    decoded array, a copy of it, and the float32 volume the app keeps (``2 x itemsize + 4`` bytes per voxel).

    Raises:
        DataError: naming ``name`` (the file as the user called it), the size and the limit to raise.
    """
    voxels, dims = math.prod(shape), " × ".join(str(s) for s in shape)
    unit = "pixels" if what in ("image", "video frame") else "voxels"
    if voxels > limits.max_voxels:
        raise DataError(name, f"the {what} has {voxels:,} {unit} ({dims}), too many to decode; "
                              f"{limit_hint('max_voxels', f'{limits.max_voxels:,} {unit}')}")  # fmt: skip
    need = voxels * (2 * itemsize + 4)
    if need > limits.max_decode_bytes:
        each = plural(itemsize, "byte")
        shown = size_text(limits.max_decode_bytes)
        raise DataError(name, f"the {what} ({dims} = {voxels:,} {unit} of {each}) needs about {size_text(need)} of "
                              f"memory to decode; {limit_hint('max_decode_bytes', shown)}")  # fmt: skip


# --------------------------------------------------------------------------------------------- DICOM header budget
class UploadBudget(Protocol):
    """What one upload has left to spend (:class:`medkd.io.zip_extract.UploadFolder` is one)."""

    limits: UploadLimits
    reads_left: int  # of limits.max_dicom_reads
    unpacked: int  # bytes extracted from zips and inflated from Deflated DICOM, against limits.max_zip_bytes


class OutOfReads(Exception):
    """The upload's DICOM header reads are spent."""


class TooBig(Exception):
    """A Deflated DICOM dataset inflates beyond what is left of :attr:`UploadLimits.max_zip_bytes`."""


class _ReadsAll(Exception):
    """pydicom asked for the rest of the file: the Deflated transfer syntax, which it inflates in one go."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _CountsReads:
    """Mixin for binary files: each ``read`` spends one of the upload's ``reads_left``; ``read()`` of everything
    (how pydicom inflates a Deflated dataset) is refused with :class:`_ReadsAll`."""

    upload: UploadBudget

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise _ReadsAll(self.tell())  # type: ignore[attr-defined]
        self.upload.reads_left -= 1
        if self.upload.reads_left < 0:
            raise OutOfReads
        return super().read(size)  # type: ignore[misc]


class _CountedFile(_CountsReads, io.BufferedReader):
    def __init__(self, path: Path, upload: UploadBudget) -> None:
        super().__init__(io.FileIO(path))
        self.upload = upload


class _CountedBytes(_CountsReads, io.BytesIO):
    def __init__(self, data: bytes, upload: UploadBudget) -> None:
        super().__init__(data)
        self.upload = upload


def _inflated(path: Path, offset: int, limit: int) -> bytes:
    """The Deflated transfer syntax's dataset after ``offset``, inflated a chunk at a time (a deflate bomb stops at
    ``limit`` bytes with :class:`TooBig`, where pydicom would inflate all of it into memory)."""
    inflater, out, total = zlib.decompressobj(-zlib.MAX_WBITS), [], 0
    with path.open("rb") as f:
        f.seek(offset)
        while chunk := f.read(CHUNK_BYTES):
            while chunk:
                piece = inflater.decompress(chunk, CHUNK_BYTES)
                total += len(piece)
                if total > limit:
                    raise TooBig
                out.append(piece)
                chunk = inflater.unconsumed_tail
    return b"".join(out)


def read_header(path: Path, upload: UploadBudget) -> Any:
    """pydicom's header of ``path`` (read with ``force``, without pixel data), every read spent from the upload's
    read budget; a Deflated dataset is inflated by :func:`_inflated`, its bytes counted as unpacked, instead of by
    pydicom's unbounded ``zlib``.

    Raises:
        OutOfReads: the read budget ran out; TooBig: the unpacked-bytes budget ran out; pydicom's errors.
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


def over_limit(err: Exception, limits: UploadLimits) -> str:
    """The message of a spent budget (:class:`OutOfReads` or :class:`TooBig`)."""
    if isinstance(err, TooBig):
        shown = size_text(limits.max_zip_bytes)
        return (f"the compressed (Deflated) DICOM file unpacks to more than {shown}; "
                f"{limit_hint('max_zip_bytes', shown)}")  # fmt: skip
    shown = f"{limits.max_dicom_reads:,} reads"
    return (f"the DICOM headers are too long to read (more than {shown}: a file of millions of tiny elements?); "
            f"{limit_hint('max_dicom_reads', shown)}")  # fmt: skip
