# SPDX-License-Identifier: Apache-2.0
"""Turn what a user uploads to the app (or a bundled synthetic example) into an image, a volume or a video.

:func:`load_upload` takes ``(file name, bytes)`` pairs, as ``st.file_uploader`` gives them, and sniffs the content,
never the extension (DICOM files often have none, and a ``.nii.gz`` may arrive named ``gz``):

- **zip** archives are extracted safely (no absolute or ``..`` paths; folders, ``__MACOSX`` and ``.DS_Store``
  skipped; within the upload limits) and their files treated like uploaded ones; a zip inside is not opened;
- **DICOM** files (``DICM`` after the 128-byte preamble, or a raw dataset whose first bytes are a plausible
  little-endian group 0002/0008 element, as pydicom's ``rtstruct.dcm``): the image series with the most files
  becomes the volume (:mod:`medkd.io.upload_dicom`: sorted by position, rescaled to HU for CT); a series with a
  truncated slice is refused, naming the slice;
- **NIfTI** (``.nii`` or gzip-compressed, NIfTI-1 or -2, found by the header's size and magic) is read with
  :func:`medkd.io.volume_io.read_volume`;
- **PNG/JPEG** becomes a greyscale ``(1, H, W)`` float32 image;
- **video** (MP4/MOV: an ISO base media ``ftyp`` box; AVI: ``RIFF....AVI ``) is decoded with OpenCV
  (:mod:`medkd.io.video`) into :class:`LoadedVideo` frames ``(T, H, W, 3)`` uint8 RGB, at the file's frame rate
  or a chosen ``fps`` (frames dropped evenly), within the frame budget ``MAX_VIDEO_FRAMES`` (the first frames are
  kept and the note says so).

How each file's kind is told from its first bytes is in :mod:`medkd.io.upload_sniff` (:func:`sniff` is
re-exported here).

Each decoded upload says what kind of input it is (:attr:`LoadedImage.input_kind`): ``"image2d"`` (one slice),
``"volume"`` or ``"video"`` (:data:`INPUT_KINDS`); the app's views declare which they take.

Files that are none of these are ignored when the rest of the upload is usable (``LoadedImage.note`` says so);
they are never handed to pydicom. Every problem raises :class:`~medkd.errors.DataError` naming the file as the
user called it (or its name inside the zip) and saying, in clinical words, what is wrong; no message holds patient
data or a server path. Everything is written under ``workdir`` (the app's session folder).

Limits (hostile uploads cost seconds, not minutes or gigabytes): the budgets of one upload (bytes unpacked, zip
entries, voxels, decoding memory, DICOM header reads), their defaults, their ``MEDKD_UPLOAD_<NAME>`` environment
variables and the counted DICOM header reads are in :mod:`medkd.io.upload_limits`; its public names
(``MAX_*``, ``ENV_PREFIX``, :class:`UploadLimits`, :func:`upload_limits`) are re-exported here (change a default
by assigning the constant in :mod:`medkd.io.upload_limits`, which :func:`upload_limits` reads on every call). Zip
archives are unpacked, within those budgets and with their member paths checked, by :mod:`medkd.io.zip_extract`.

The bundled synthetic examples are in :mod:`medkd.data.examples`.

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
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medkd.errors import DataError
from medkd.io.upload_dicom import read_dicom_upload
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
    check_decode,
    limit_hint,
    over_limit,
    plural,
    size_text,
    upload_limits,
)
from medkd.io.upload_sniff import HEAD_BYTES, NOT_SUPPORTED, nifti_layout, sniff, sniff_file
from medkd.io.video import LoadedVideo, read_video
from medkd.io.zip_extract import UploadFolder, extract_zip, safe_name

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medkd.io.dicom_volume import DicomVolume

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

_KIND_WORDS = {"dicom": "DICOM", "nifti": "NIfTI", "image": "PNG/JPEG", "video": "video"}

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



#: what :func:`load_upload` returns
Loaded = LoadedImage | LoadedVideo


# --------------------------------------------------------------------------------------------- staging
@dataclass
class _Staged:
    path: Path
    name: str  # the user's name for it (basename, or its name inside the zip), for messages
    kind: str = ""  # dicom | nifti | nifti.gz | image | zip | empty | unknown
    detail: str = ""  # why it is unknown


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
        return sniff_file(item.path, upload)
    except (OutOfReads, TooBig) as err:
        raise DataError(item.name, over_limit(err, upload.limits)) from None


def _summary(files: Sequence[tuple[str, bytes]]) -> str:
    names = [safe_name(name) for name, _ in files]
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"


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


# --------------------------------------------------------------------------------------------- loaders
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


def _load_dicom(items: Sequence[_Staged], name: str, notes: list[str], upload: UploadFolder, **_: Any) -> LoadedImage:
    vol = read_dicom_upload({item.path: item.name for item in items}, name, notes, upload)
    return loaded_from_dicom(vol, name, "; ".join(notes), upload.folder)


def _load_video(
    item: _Staged, name: str, notes: list[str], upload: UploadFolder, *, fps: float | None = None, **_: Any
) -> LoadedVideo:
    return read_video(item.path, item.name, name, notes, upload, fps=fps)


def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing ``(z, y, x)`` of a SimpleITK image; a 2D image gets 1.0 along z."""
    spacing = [float(s) for s in reversed(image.GetSpacing())]
    return tuple(([1.0] * (3 - len(spacing)) + spacing)[-3:])  # type: ignore[return-value]


def _load_nifti(item: _Staged, name: str, notes: list[str], upload: UploadFolder, **_: Any) -> LoadedImage:
    from medkd.io.volume_io import read_volume

    compressed = item.kind == "nifti.gz"
    with gzip.open(item.path, "rb") if compressed else item.path.open("rb") as f:
        layout = nifti_layout(f.read(HEAD_BYTES))
    if layout is None:  # sniffed as NIfTI a moment ago
        raise DataError(item.name, "the NIfTI header cannot be read")
    if any(size > 1 for size in layout.shape[3:]):
        raise DataError(item.name, f"the NIfTI image has {len(layout.shape)} dimensions "
                                   f"({' × '.join(map(str, layout.shape))}); upload a 2D or 3D volume")  # fmt: skip
    check_decode(item.name, "NIfTI image", layout.shape[:3], layout.decoded_itemsize, upload.limits)
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
                check_decode(item.name, "image", (width, height), itemsize, upload.limits)
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
        listed = ", ".join(f"{_KIND_WORDS[k]} ({plural(n, 'file')})" for k, n in kinds.items())
        raise DataError(
            upload, f"the upload mixes {listed}; upload one DICOM series, one NIfTI file, one image or one video "
            "at a time"
        )
    kind = next(iter(kinds))
    if kind != "dicom" and len(usable) > 1:
        raise DataError(upload, f"{len(usable)} {_KIND_WORDS[kind]} files were uploaded; upload one at a time")
    if ignored:
        notes.append(f"{plural(len(ignored), 'file')} ignored ({NOT_SUPPORTED}, e.g. {ignored[0].name})")
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
            reads), a video that cannot be decoded, no image series among DICOM files, or a series/file that cannot
            become a regular volume (truncated pixel data, inconsistent spacing, ...). The message names the file
            (as uploaded, or inside the zip) or the upload, and holds no patient data and no server path.
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
