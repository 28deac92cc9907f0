# SPDX-License-Identifier: Apache-2.0
"""Turn what a user uploads to the app (or a bundled synthetic example) into a volume to segment and display.

:func:`load_upload` takes ``(file name, bytes)`` pairs, as ``st.file_uploader`` gives them, and sniffs the content,
never the extension (DICOM files often have none, and a ``.nii.gz`` may arrive named ``gz``):

- **zip** archives are extracted safely (no absolute or ``..`` paths, at most :data:`MAX_ZIP_MEMBERS` files and
  :data:`MAX_ZIP_BYTES` uncompressed; folders, ``__MACOSX`` and ``.DS_Store`` skipped) and their files treated like
  uploaded ones;
- **DICOM** files (``DICM`` after the 128-byte preamble, or a ``SOPClassUID`` when read with ``force``) are scanned
  (:func:`medkd.io.dicom_scan.scan_file`) and the image series with the most files becomes the volume
  (:func:`medkd.io.dicom_volume.load_series_volume`: sorted by position, rescaled to HU for CT);
- **NIfTI** (``.nii`` or gzip-compressed, NIfTI-1 or -2, found by the header's size and magic) is read with
  :func:`medkd.io.volume_io.read_volume`;
- **PNG/JPEG** becomes a greyscale ``(1, H, W)`` float32 image.

Files that are none of these are ignored when the rest of the upload is usable (``LoadedImage.note`` says so).
Every problem raises :class:`~medkd.errors.DataError` naming the file and saying, in clinical words, what is wrong;
no message or log line holds patient data. Everything is written under ``workdir`` (the app's session folder).

The bundled synthetic examples are in :mod:`medkd.io.examples`.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import struct
import tempfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medkd.errors import DataError

if TYPE_CHECKING:
    import SimpleITK as sitk

    from medkd.io.dicom_scan import FileEntry
    from medkd.io.dicom_volume import DicomVolume, SeriesError

__all__ = [
    "MAX_ZIP_BYTES",
    "MAX_ZIP_MEMBERS",
    "MAX_VOLUME_BYTES",
    "LoadedImage",
    "sniff",
    "load_upload",
    "loaded_from_dicom",
    "spacing_zyx",
]

logger = logging.getLogger(__name__)

#: largest total uncompressed size of a zip upload
MAX_ZIP_BYTES = 2 * 1024**3
#: most files a zip upload may hold
MAX_ZIP_MEMBERS = 20_000
#: largest voxel data a NIfTI header may announce (guards against gzip bombs)
MAX_VOLUME_BYTES = 2 * 1024**3
_HEAD = 544  # enough for a NIfTI-2 header (540) and the DICOM preamble (132)
_CHUNK = 1 << 20
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})
_KIND_WORDS = {"dicom": "DICOM", "nifti": "NIfTI", "image": "PNG/JPEG"}
_NOT_SUPPORTED = "not a DICOM, NIfTI, PNG or JPEG file"


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
    name: str  # the user's name for it (basename), for messages
    kind: str = ""  # dicom | nifti | nifti.gz | image | zip | empty | unknown
    detail: str = ""  # why it is unknown


def _nifti_header(head: bytes) -> tuple[str, str] | None:
    """``(kind, detail)`` if ``head`` starts a NIfTI-1/-2 header: ``("nifti", "")`` for a single file, ``("unknown",
    why)`` for a header-only ``ni1``/``ni2`` file or one announcing more than :data:`MAX_VOLUME_BYTES`."""
    for endian in "<>":
        if len(head) >= 348 and struct.unpack(f"{endian}i", head[:4])[0] == 348 and head[344:347] in (b"n+1", b"ni1"):
            single, dims = head[345:346] == b"+", struct.unpack(f"{endian}8h", head[40:56])
            bitpix = struct.unpack(f"{endian}h", head[72:74])[0]
        elif len(head) >= 540 and struct.unpack(f"{endian}i", head[:4])[0] == 540 and head[4:7] in (b"n+2", b"ni2"):
            single, dims = head[5:6] == b"+", struct.unpack(f"{endian}8q", head[16:80])
            bitpix = struct.unpack(f"{endian}h", head[14:16])[0]
        else:
            continue
        if not single:
            return "unknown", "a NIfTI header (.hdr) without its image; upload the single-file .nii or .nii.gz"
        n_dims = min(max(int(dims[0]), 0), 7)
        n_bytes = float(np.prod([max(int(d), 1) for d in dims[1 : n_dims + 1]], dtype=np.float64)) * max(bitpix, 8) / 8
        if n_bytes > MAX_VOLUME_BYTES:
            return "unknown", f"the NIfTI image is too large ({n_bytes / 1024**3:.1f} GB of voxels)"
        return "nifti", ""
    return None


def _is_dicom(path: Path, head: bytes) -> bool:
    """DICOM Part 10 (``DICM`` at 128), or a raw dataset that pydicom parses with ``force`` into a SOPClassUID."""
    if head[128:132] == b"DICM":
        return True
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        return bool(ds.get("SOPClassUID"))
    except Exception:  # noqa: BLE001 - anything pydicom chokes on is not DICOM
        return False


def sniff(path: str | Path) -> tuple[str, str]:
    """What a file holds, from its content (never its name).

    Args:
        path: the file.

    Returns:
        ``(kind, detail)``: kind ``"dicom"``, ``"nifti"``, ``"nifti.gz"``, ``"image"`` (PNG/JPEG), ``"zip"``,
        ``"empty"`` or ``"unknown"``; detail says why an unknown file cannot be used.
    """
    path = Path(path)
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
        except (OSError, EOFError, ValueError):
            return "unknown", "a damaged gzip file"
        found = _nifti_header(inner)
        if found is None:
            return "unknown", "a gzip file that holds no NIfTI image"
        return ("nifti.gz", "") if found[0] == "nifti" else found
    found = _nifti_header(head)
    if found is not None:
        return found
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "zip", ""
    if _is_dicom(path, head):
        return "dicom", ""
    return "unknown", _NOT_SUPPORTED


# --------------------------------------------------------------------------------------------- staging
def _safe_name(name: str) -> str:
    """A file name that is safe on disk: the last path component, odd characters replaced, at most 120 chars."""
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^\w.+-]", "_", base)[:120].strip(".")
    return base or "file"


def _unique(folder: Path, name: str) -> Path:
    path, k = folder / name, 1
    while path.exists():
        k += 1
        stem, dot, ext = name.partition(".")
        path = folder / f"{stem}_{k}{dot}{ext}"
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


def _extract_zip(archive: _Staged, dest: Path) -> list[_Staged]:
    """Extract ``archive`` into ``dest`` with size and path checks; returns the extracted files."""
    out: list[_Staged] = []
    try:
        with zipfile.ZipFile(archive.path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            if len(infos) > MAX_ZIP_MEMBERS:
                raise DataError(archive.name, f"the zip archive holds {len(infos)} files; at most {MAX_ZIP_MEMBERS}")
            if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
                raise DataError(archive.name, f"the zip archive unpacks to more than {MAX_ZIP_BYTES / 1024**3:.0f} GB")
            total = 0
            for info in infos:
                parts = _member_parts(info.filename, archive.name)
                if parts is None:
                    continue
                if info.flag_bits & 0x1:
                    raise DataError(archive.name, "the zip archive is password-protected; upload it unencrypted")
                folder = dest.joinpath(*parts[:-1])
                folder.mkdir(parents=True, exist_ok=True)
                target = _unique(folder, parts[-1])
                with zf.open(info) as src, target.open("wb") as dst:
                    while chunk := src.read(_CHUNK):
                        total += len(chunk)
                        if total > MAX_ZIP_BYTES:
                            raise DataError(
                                archive.name, f"the zip archive unpacks to more than {MAX_ZIP_BYTES / 1024**3:.0f} GB"
                            )
                        dst.write(chunk)
                out.append(_Staged(target, parts[-1]))
    except DataError:
        raise
    except NotImplementedError:
        raise DataError(archive.name, "the zip archive uses a compression method that cannot be read") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as err:
        raise DataError(archive.name, f"the zip archive is damaged ({type(err).__name__})") from None
    return out


def _stage(files: Sequence[tuple[str, bytes]], folder: Path) -> list[_Staged]:
    """Write the uploads under ``folder``, sniff them and unpack zips (one level); returns every file, sniffed."""
    direct = folder / "files"
    direct.mkdir()
    staged: list[_Staged] = []
    for name, data in files:
        item = _Staged(_unique(direct, _safe_name(name)), _safe_name(name))
        item.path.write_bytes(bytes(data))
        item.kind, item.detail = sniff(item.path)
        if item.kind != "zip":
            staged.append(item)
            continue
        members = _extract_zip(item, _unique(folder, f"zip_{item.path.name}"))
        item.path.unlink()
        if not members:
            staged.append(_Staged(item.path, item.name, "unknown", "the zip archive holds no files"))
        for member in members:
            member.kind, member.detail = sniff(member.path)
            if member.kind == "zip":
                member.kind, member.detail = "unknown", "a zip inside the zip archive (not opened)"
            staged.append(member)
    return staged


def _summary(files: Sequence[tuple[str, bytes]]) -> str:
    names = [_safe_name(name) for name, _ in files]
    return names[0] if len(names) == 1 else f"{names[0]} + {len(names) - 1} more"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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


def _modalities(paths: Sequence[Path]) -> list[str]:
    import pydicom

    found: set[str] = set()
    for path in paths:
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["Modality"])
            found.add(str(ds.get("Modality", "") or "?"))
        except Exception:  # noqa: BLE001 - only for the message
            found.add("?")
    return sorted(found)


def _no_series_error(entries: Sequence[FileEntry], upload: str) -> DataError:
    """Why no file of a DICOM upload is an image slice, grouped by reason."""
    from medkd.io.dicom_scan import Reason

    by_reason: dict[Reason, list[Path]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason or Reason.UNREADABLE, []).append(entry.path)
    parts = []
    for reason, paths in by_reason.items():
        count = _plural(len(paths), "file")
        if reason == Reason.NON_IMAGE:
            mods = "/".join(_modalities(paths))
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


def _load_dicom(items: Sequence[_Staged], upload: str, notes: list[str], folder: Path | None) -> LoadedImage:
    from medkd.io.dicom_scan import group_series, scan_file
    from medkd.io.dicom_volume import SeriesError, load_series_volume

    results = [scan_file(item.path) for item in items]
    series = group_series(results)
    if not series:
        raise _no_series_error([entry for entry, _ in results], upload)
    chosen = max(series, key=lambda s: s.n_files)  # first of the largest (series are sorted by UID)
    if len(series) > 1:
        sizes = ", ".join(f"{s.modality or '?'} {_plural(s.n_files, 'file')}" for s in series)
        notes.append(f"the upload holds {len(series)} image series ({sizes}); showing the largest")
        logger.info("upload holds %d image series; using the largest (%d files)", len(series), chosen.n_files)
    n_other = len(items) - chosen.n_files
    if len(series) == 1 and n_other:
        notes.append(f"{_plural(n_other, 'DICOM file')} without image pixels ignored")
    names = {item.path: item.name for item in items}
    try:
        vol = load_series_volume(chosen.files)
    except SeriesError as err:
        raise _series_error(err, chosen.files, names, upload) from None
    except Exception as err:  # noqa: BLE001 - never show a traceback to the user
        raise DataError(upload, f"the DICOM series cannot be read ({type(err).__name__})") from None
    return loaded_from_dicom(vol, upload, "; ".join(notes), folder)


# --------------------------------------------------------------------------------------------- NIfTI and images
def spacing_zyx(image: sitk.Image) -> tuple[float, float, float]:
    """Voxel spacing ``(z, y, x)`` of a SimpleITK image; a 2D image gets 1.0 along z."""
    spacing = [float(s) for s in reversed(image.GetSpacing())]
    return tuple(([1.0] * (3 - len(spacing)) + spacing)[-3:])  # type: ignore[return-value]


def _load_nifti(item: _Staged, upload: str, notes: list[str], folder: Path | None) -> LoadedImage:
    from medkd.io.volume_io import read_volume

    suffix = ".nii.gz" if item.kind == "nifti.gz" else ".nii"
    target = item.path if item.path.name.lower().endswith(suffix) else item.path.with_name(item.path.name + suffix)
    if target != item.path:
        item.path.rename(target)
    try:
        vol = read_volume(target)
    except DataError as err:
        raise DataError(item.name, err.problem) from None
    except Exception as err:  # noqa: BLE001
        raise DataError(item.name, f"the NIfTI file cannot be read ({type(err).__name__})") from None
    return LoadedImage(
        vol.array, spacing_zyx(vol.image), "nifti", upload, "", vol.image, note="; ".join(notes), folder=folder
    )


def _load_picture(item: _Staged, upload: str, notes: list[str], folder: Path | None) -> LoadedImage:
    import SimpleITK as sitk
    from PIL import Image, ImageOps

    try:
        with Image.open(item.path) as picture:
            picture = ImageOps.exif_transpose(picture)  # phone photos carry their rotation in EXIF
            if picture.mode not in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                picture = picture.convert("L")  # ITU-R 601 luma for RGB(A), palette, CMYK, ...
            array = np.asarray(picture, dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - truncated files, decompression bombs, ...
        raise DataError(item.name, f"the image cannot be decoded ({type(err).__name__})") from None
    if array.ndim != 2 or array.size == 0:
        raise DataError(item.name, f"the image has an unexpected shape {array.shape}")
    return LoadedImage(
        array[None].copy(),
        (1.0, 1.0, 1.0),
        "image",
        upload,
        "",
        sitk.GetImageFromArray(array),
        note="; ".join(notes),
        folder=folder,
    )


_LOADERS: dict[str, Callable[..., LoadedImage]] = {"nifti": _load_nifti, "image": _load_picture}


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


def load_upload(files: Sequence[tuple[str, bytes]], workdir: str | Path) -> LoadedImage:
    """Decode an upload: one or more DICOM files (or a zip of a series), one NIfTI file, or one PNG/JPEG image.

    Args:
        files: ``(file name, content)`` pairs; names are only used in messages.
        workdir: the session's temporary folder; the upload is written to a fresh subfolder of it.

    Returns:
        The :class:`LoadedImage`; ``note`` tells about ignored files or a choice between several series.

    Raises:
        DataError: for an empty upload, files of no supported kind, mixed kinds, several NIfTI/image files, an
            unsafe or oversized zip, no image series among DICOM files, or a series/file that cannot become a
            regular volume (truncated pixel data, inconsistent spacing, ...). The message names the file or the
            upload and holds no patient data.

    Example:
        >>> import tempfile
        >>> load_upload([("notes.txt", b"hello")], tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: notes.txt: not a DICOM, NIfTI, PNG or JPEG file
    """
    if not files:
        raise DataError("upload", "no files were uploaded")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=workdir))
    upload = _summary(files)
    try:
        staged = _stage(files, folder)
        notes: list[str] = []
        kind, usable = _choose(staged, upload, notes)
        logger.info("upload: %d %s file(s) used, %d ignored", len(usable), kind, len(staged) - len(usable))
        if kind == "dicom":
            loaded = _load_dicom(usable, upload, notes, folder)
        else:
            loaded = _LOADERS[kind](usable[0], upload, notes, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return loaded
