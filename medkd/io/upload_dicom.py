# SPDX-License-Identifier: Apache-2.0
"""The DICOM files of an upload become one volume: headers read within the budgets, the largest image series
chosen, its size checked before decoding, and every problem worded for a clinician.

:func:`read_dicom_upload` parses each file's header once within the upload's DICOM read budget
(:func:`medkd.io.upload_limits.read_header`), scans and groups the files (:func:`medkd.io.dicom_scan.scan_file`,
:func:`~medkd.io.dicom_scan.group_series`), keeps the image series with the most files, refuses a series with a
truncated slice (naming the slice) or one beyond the voxel and decoding-memory limits, and loads it with
:func:`medkd.io.dicom_volume.load_series_volume` (sorted by position, rescaled to HU for CT). Errors are
:class:`~medkd.errors.DataError` naming the file at fault (as the user called it) or the upload, with no patient
data. :func:`medkd.io.upload.load_upload` calls it for an upload sniffed as DICOM.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from medkd.data.synthetic_dicom import write_dicom_series
    >>> from medkd.io.upload_limits import upload_limits
    >>> from medkd.io.zip_extract import UploadFolder
    >>> folder = Path(tempfile.mkdtemp())
    >>> series = write_dicom_series(folder / "ct", n_slices=4, rows=16, cols=16)
    >>> notes = []
    >>> vol = read_dicom_upload({p: p.name for p in series.paths}, "ct", notes, UploadFolder(folder, upload_limits()))
    >>> vol.array.shape, notes
    ((4, 16, 16), [])
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkd.errors import DataError
from medkd.io.upload_limits import OutOfReads, TooBig, check_decode, over_limit, plural, read_header
from medkd.io.zip_extract import UploadFolder

if TYPE_CHECKING:
    from medkd.io.dicom_scan import FileEntry
    from medkd.io.dicom_volume import DicomVolume, SeriesError

__all__ = ["SERIES_PROBLEMS", "read_dicom_upload"]

logger = logging.getLogger(__name__)


#: how each series problem reads to a clinician; ``{detail}`` is the technical detail (files and tags only)
SERIES_PROBLEMS: dict[str, str] = {
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


def _series_error(err: SeriesError, files: Sequence[Path], names: Mapping[Path, str], upload: str) -> DataError:
    """A :class:`DataError` for a failed series: named after the file at fault, or the upload for series rules."""
    where, detail = upload, err.message
    for path in files:
        prefix = f"{path.name}: "
        if detail.startswith(prefix):
            where, detail = names.get(path, path.name), detail[len(prefix) :]
            break
    template = SERIES_PROBLEMS.get(str(err.reason), "{detail}")
    return DataError(where, template.format(detail=detail.rstrip(". ")))


def _no_series_error(entries: Sequence[FileEntry], upload: str, modalities: dict[Path, str]) -> DataError:
    """Why no file of a DICOM upload is an image slice, grouped by reason (``modalities``: each file's)."""
    from medkd.io.dicom_scan import Reason

    by_reason: dict[Reason, list[Path]] = {}
    for entry in entries:
        by_reason.setdefault(entry.reason or Reason.UNREADABLE, []).append(entry.path)
    parts = []
    for reason, paths in by_reason.items():
        count = plural(len(paths), "file")
        if reason == Reason.NON_IMAGE:
            mods = "/".join(sorted({modalities.get(path) or "?" for path in paths}))
            parts.append(
                f"{count} {'is' if len(paths) == 1 else 'are'} {mods} (non-image: reports, "
                "segmentations, RT or presentation objects)"
            )
        else:
            parts.append(f"{count} skipped, {reason.hint}")
    return DataError(upload, "no image series in the upload: " + "; ".join(parts))


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _check_dicom_headers(files: Mapping[Path, str], upload: UploadFolder) -> dict[Path, str]:
    """Parse every DICOM file's header once within the upload's budgets, before the scan parses them again; raises
    a :class:`DataError` naming the file where a budget ran out (other parse errors are left to the scan).

    Returns:
        Each file's ``Modality`` (``""`` if unknown or unreadable).
    """
    modalities: dict[Path, str] = {}
    for path, shown in files.items():
        try:
            modalities[path] = str(read_header(path, upload).get("Modality", "") or "")
        except (OutOfReads, TooBig) as err:
            raise DataError(shown, over_limit(err, upload.limits)) from None
        except Exception as err:  # noqa: BLE001 - the scan reports unreadable files
            logger.debug("DICOM header check: %s", type(err).__name__)
    return modalities


def read_dicom_upload(files: Mapping[Path, str], name: str, notes: list[str], upload: UploadFolder) -> DicomVolume:
    """The largest image series among an upload's DICOM files, loaded as a volume.

    Args:
        files: each DICOM file -> its name as the user called it (basename, or its name inside the zip).
        name: the upload's display name, for problems of the whole upload or series.
        notes: what the user should know so far; several series or files without pixels are appended.
        upload: the upload's folder and budgets.

    Returns:
        The chosen series (:class:`medkd.io.dicom_volume.DicomVolume`).

    Raises:
        DataError: a budget spent reading headers, no image series, a truncated slice, a series beyond the limits
            or one that cannot become a regular volume (:data:`SERIES_PROBLEMS`), naming the file or the upload.
    """
    from medkd.io.dicom_scan import group_series, scan_file
    from medkd.io.dicom_volume import SeriesError, load_series_volume

    modalities = _check_dicom_headers(files, upload)
    results = [scan_file(path) for path in files]
    series = group_series(results)
    if not series:
        raise _no_series_error([entry for entry, _ in results], name, modalities)
    chosen = max(series, key=lambda s: s.n_files)  # first of the largest (series are sorted by UID)
    if len(series) > 1:
        sizes = ", ".join(f"{s.modality or '?'} {plural(s.n_files, 'file')}" for s in series)
        notes.append(f"the upload holds {len(series)} image series ({sizes}); showing the largest")
        logger.info("upload holds %d image series; using the largest (%d files)", len(series), chosen.n_files)
    truncated = list(getattr(chosen, "truncated", []))
    if truncated:  # a slice without its pixels: never a volume with a slice fewer
        raise DataError(files.get(truncated[0], truncated[0].name), SERIES_PROBLEMS["truncated"])
    n_other = len(files) - chosen.n_files
    if len(series) == 1 and n_other:
        notes.append(f"{plural(n_other, 'DICOM file')} without image pixels ignored")
    headers = {entry.path: ds for entry, ds in results if ds is not None}
    slices = [headers[path] for path in chosen.files if path in headers]
    shapes = {
        (_int(ds.get("Rows"), 1), _int(ds.get("Columns"), 1) * _int(ds.get("SamplesPerPixel"), 1)) for ds in slices
    }
    itemsize = max([(_int(ds.get("BitsAllocated"), 16) + 7) // 8 for ds in slices] or [2])
    if len(shapes) == 1:  # slices x rows x columns (x samples); else the total
        check_decode(name, "DICOM series", (len(slices), *shapes.pop()), itemsize, upload.limits)
    elif shapes:
        total = sum(_int(ds.get("Rows"), 1) * _int(ds.get("Columns"), 1) * _int(ds.get("SamplesPerPixel"), 1)
                    for ds in slices)  # fmt: skip
        check_decode(name, "DICOM series", (total,), itemsize, upload.limits)
    try:
        vol = load_series_volume(chosen.files)
    except SeriesError as err:
        raise _series_error(err, chosen.files, files, name) from None
    except Exception as err:  # noqa: BLE001 - never show a traceback to the user
        raise DataError(name, f"the DICOM series cannot be read ({type(err).__name__})") from None
    return vol

