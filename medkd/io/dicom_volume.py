# SPDX-License-Identifier: Apache-2.0
"""Stage 3 of the DICOM batch pipeline: turn one series' files into a checked, sorted, rescaled volume.

Like MONAI Deploy's ``DICOMSeriesToVolumeOperator``: slices are sorted by the projection of
``ImagePositionPatient`` (IPP) on the slice normal (row cosines x column cosines of ``ImageOrientationPatient``,
IOP), pixel values are rescaled (``RescaleSlope``/``RescaleIntercept``: Hounsfield units for CT) and the
geometry becomes an LPS affine. The series must be a regular volume: one orientation (within 1e-4), one
Rows/Columns/PixelSpacing, unique positions stacked along the normal, gaps equal within 1 %. medkd never resamples
silently; a series that breaks a rule raises :class:`SeriesError` with the :class:`~medkd.io.dicom_scan.Reason`.

Axis conventions:

- ``DicomVolume.array`` is ``(slices, rows, cols)``, the order of ``datasets`` and of a DICOM SEG's frames.
- ``affine_lps`` maps a ``(col, row, slice)`` index to LPS millimetres (DICOM's patient coordinates, ITK's too).
- :meth:`DicomVolume.metatensor` is MONAI's ``(1, cols, rows, slices)`` with the RAS affine.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic_dicom import write_dicom_series
    >>> series = write_dicom_series(tempfile.mkdtemp(), n_slices=4, rows=8, cols=6)
    >>> vol = load_series_volume(series.paths)
    >>> vol.array.shape, vol.spacing
    ((4, 8, 6), (2.5, 0.8, 0.8))
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medkd.io.dicom_scan import Reason, safe_short

if TYPE_CHECKING:
    import SimpleITK as sitk
    from monai.data import MetaTensor

__all__ = [
    "SeriesError",
    "DicomVolume",
    "HIGHDICOM_PRESENT_TAGS",
    "REQUIRED_SET_TAGS",
    "ORIENTATION_TOL",
    "SPACING_RTOL",
    "load_series_volume",
    "tag_problems",
    "sort_by_position",
]

logger = logging.getLogger(__name__)

#: tags highdicom's Segmentation copies from the source images: they must exist, but may be empty
HIGHDICOM_PRESENT_TAGS: tuple[str, ...] = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "Modality",
    "PixelSpacing",
    "SliceThickness",
    "ImageOrientationPatient",
)
#: tags that must have a value (geometry, decoding, and highdicom's frame of reference)
REQUIRED_SET_TAGS: tuple[str, ...] = (
    "SOPClassUID",
    "StudyInstanceUID",  # empty UIDs make highdicom fail late (sqlite IntegrityError), empty Modality too
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
)
#: largest difference between IOP components of two slices of one volume
ORIENTATION_TOL = 1e-4
#: largest relative deviation of a slice gap from the mean gap
SPACING_RTOL = 0.01
_POSITION_ATOL = 1e-3  # mm: two slices closer than this along the normal share a position
_PERPENDICULAR_TOL = 1e-3  # 1 - cos(angle) between the stacking direction and the normal (highdicom's default)
_VALUE_COUNTS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class SeriesError(Exception):
    """A series that cannot become a volume, with the report's reason.

    Args:
        reason: the :class:`~medkd.io.dicom_scan.Reason`.
        message: details for the report (files and tags, no patient data).
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = Reason(reason)
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:  # keep (reason, message) through pickling (spawn workers)
        return (type(self), (self.reason, self.message))


@dataclass
class DicomVolume:
    """A regular volume read from one DICOM series.

    Attributes:
        array: float32 ``(slices, rows, cols)``, rescaled (HU for CT).
        datasets: the slices' datasets, with pixel data, sorted like ``array`` (frame ``i`` of a SEG is
            ``datasets[i]``).
        spacing: ``(slice gap, row spacing, column spacing)`` in mm.
        affine_lps: 4x4, maps a ``(col, row, slice)`` index to LPS mm.
        series_uid: ``SeriesInstanceUID``.
        study_uid: ``StudyInstanceUID``.
        files: the files in slice order.
    """

    array: np.ndarray
    datasets: list[Dataset]
    spacing: tuple[float, float, float]
    affine_lps: np.ndarray
    series_uid: str
    study_uid: str
    files: list[Path] = field(default_factory=list)

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 affine from a ``(col, row, slice)`` index to RAS mm (x and y of LPS negated)."""
        return _LPS_TO_RAS @ self.affine_lps

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit LPS directions of the col, row and slice axes."""
        return self.affine_lps[:3, :3] / np.asarray([self.spacing[2], self.spacing[1], self.spacing[0]])

    def metatensor(self) -> MetaTensor:
        """The volume as MONAI expects it: ``(1, cols, rows, slices)`` float32 with the RAS affine.

        Returns:
            A :class:`monai.data.MetaTensor` (``affine``, ``original_affine``, ``spatial_shape``, ``space="RAS"``,
            ``filename_or_obj`` = the series UID).
        """
        import torch
        from monai.data import MetaTensor

        data = torch.from_numpy(np.ascontiguousarray(self.array.transpose(2, 1, 0))[None])
        affine = torch.as_tensor(self.affine_ras, dtype=torch.float64)
        meta = {
            "original_affine": affine.clone(),
            "spatial_shape": np.asarray(data.shape[1:]),
            "space": "RAS",
            "filename_or_obj": self.series_uid,
        }
        return MetaTensor(data, affine=affine, meta=meta)

    def reference_image(self) -> sitk.Image:
        """An empty UInt8 :class:`SimpleITK.Image` on the volume's grid, to write masks with ``write_mask_like``.

        Size ``(cols, rows, slices)``, origin the first slice's IPP, spacing ``(col, row, slice)``, direction from
        IOP and the slice normal (ITK uses LPS, like DICOM).
        """
        import SimpleITK as sitk

        n_slices, rows, cols = self.array.shape
        image = sitk.Image(int(cols), int(rows), int(n_slices), sitk.sitkUInt8)
        image.SetOrigin(tuple(float(v) for v in self.affine_lps[:3, 3]))
        image.SetSpacing((float(self.spacing[2]), float(self.spacing[1]), float(self.spacing[0])))
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image


def _read(path: Path) -> Dataset:
    try:
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, force=True)
            if "SOPClassUID" not in ds:
                raise SeriesError(Reason.NOT_DICOM, f"{path.name}: not a DICOM file") from None
            return ds
    except OSError as err:
        raise SeriesError(Reason.UNREADABLE, f"{path.name}: {type(err).__name__}: {err.strerror or err}") from err
    except SeriesError:
        raise
    except Exception as err:  # noqa: BLE001 - corrupt header; pydicom may quote values, so they are redacted
        raise SeriesError(Reason.UNREADABLE, f"{path.name}: cannot parse header: {safe_short(err)}") from err


def tag_problems(datasets: Sequence[Dataset]) -> dict[str, int]:
    """Absent or empty required tags (highdicom's and the geometry's), each with the number of slices affected:
    ``{"PatientSex missing": 1, "ImagePositionPatient empty": 2, ...}``; empty when the series is complete."""
    problems: dict[str, int] = {}
    for ds in datasets:
        found = [f"{kw} missing" for kw in HIGHDICOM_PRESENT_TAGS if kw not in ds]
        for kw in REQUIRED_SET_TAGS:
            if kw in ds and ds.get(kw) in (None, "", []):
                found.append(f"{kw} empty")
            elif kw not in ds and kw not in HIGHDICOM_PRESENT_TAGS:
                found.append(f"{kw} missing")
        for kw, count in _VALUE_COUNTS.items():
            value = ds.get(kw)
            if value not in (None, "") and len(np.atleast_1d(value)) != count:
                found.append(f"{kw} needs {count} values")
        if "PixelData" not in ds:
            found.append("PixelData missing")
        for what in found:
            problems[what] = problems.get(what, 0) + 1
    return problems


def _check_tags(datasets: Sequence[Dataset]) -> None:
    """Raise ``MISSING_TAGS`` naming absent or empty required tags (and in how many files)."""
    problems = tag_problems(datasets)
    if problems:
        n = len(datasets)
        listed = ", ".join(f"{what} ({count}/{n} files)" for what, count in problems.items())
        raise SeriesError(Reason.MISSING_TAGS, f"required tags missing or empty: {listed}")


def _floats(datasets: Sequence[Dataset], keyword: str, *, positive: bool = False) -> np.ndarray:
    """``(n, values)`` float64 of a multi-valued geometry tag; ``MISSING_TAGS`` unless every value is a finite
    number (and ``> 0`` with ``positive``)."""
    try:
        values = np.array([[float(v) for v in ds[keyword].value] for ds in datasets], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise SeriesError(Reason.MISSING_TAGS, f"{keyword} holds a value that is not a number") from None
    if not np.all(np.isfinite(values)) or (positive and np.any(values <= 0)):
        kind = "finite positive numbers" if positive else "finite numbers"
        raise SeriesError(Reason.MISSING_TAGS, f"{keyword} must hold {kind}")
    return values


def _scalars(datasets: Sequence[Dataset], keyword: str, default: float) -> np.ndarray:
    """One finite float per slice (``default`` when absent or empty), else ``MISSING_TAGS``."""
    try:
        values = np.array([float(ds.get(keyword, default) or default) for ds in datasets], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise SeriesError(Reason.MISSING_TAGS, f"{keyword} holds a value that is not a number") from None
    if not np.all(np.isfinite(values)):
        raise SeriesError(Reason.MISSING_TAGS, f"{keyword} must be a finite number")
    return values


def _check_frames(datasets: Sequence[Dataset], paths: Sequence[Path]) -> None:
    for ds, path in zip(datasets, paths):
        frames = ds.get("NumberOfFrames")
        if frames not in (None, "") and int(frames) > 1:
            raise SeriesError(Reason.MULTIFRAME, f"{path.name}: {int(frames)} frames; multi-frame is not supported yet")
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise SeriesError(Reason.UNSUPPORTED, f"{path.name}: {ds.SamplesPerPixel} samples per pixel (colour)")


def _orientation(iops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row cosines, column cosines, normal)`` after checking all slices share one orthonormal IOP."""
    deviation = np.abs(iops - iops[0]).max()
    if deviation > ORIENTATION_TOL:
        n_distinct = len(np.unique(np.round(iops, 4), axis=0))
        raise SeriesError(
            Reason.INCONSISTENT_ORIENTATION,
            f"{n_distinct} different ImageOrientationPatient values (max difference {deviation:.3g} > "
            f"{ORIENTATION_TOL:g}); split the series by orientation",
        )
    row, col = iops[0, :3], iops[0, 3:]
    norms = np.linalg.norm(iops[0].reshape(2, 3), axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-3) or abs(float(row @ col)) > 1e-3:
        raise SeriesError(
            Reason.INCONSISTENT_ORIENTATION, "ImageOrientationPatient is not two orthogonal unit vectors"
        )
    row, col = row / norms[0], col / norms[1]
    return row, col, np.cross(row, col)


def _check_shape(datasets: Sequence[Dataset]) -> None:
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if any(r < 1 or c < 1 for r, c in shapes):
        raise SeriesError(Reason.MISSING_TAGS, "Rows and Columns must be at least 1")
    spacings = {tuple(round(float(v), 6) for v in row) for row in _floats(datasets, "PixelSpacing", positive=True)}
    if len(shapes) > 1 or len(spacings) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(shapes))
        raise SeriesError(
            Reason.INCONSISTENT_SHAPE,
            f"slices differ in size ({listed} rows x cols) or PixelSpacing ({len(spacings)} distinct values)",
        )


def sort_by_position(ipps: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, float]:
    """Order slices along the normal and check they form a regular stack.

    Args:
        ipps: ``(n, 3)`` ImagePositionPatient per slice.
        normal: unit slice normal (row cosines x column cosines).

    Returns:
        ``(order, gap)``: indices sorting the slices by increasing ``dot(IPP, normal)``, and the mean gap in mm
        (``nan`` for a single slice).

    Raises:
        SeriesError: ``DUPLICATE_POSITIONS`` when two slices share a position, ``INCONSISTENT_ORIENTATION`` when the
            stack runs obliquely to the normal (gantry tilt), ``INCONSISTENT_SPACING`` when gaps differ by more
            than 1 %.
    """
    positions = ipps @ normal
    order = np.argsort(positions, kind="stable")
    if len(order) < 2:
        return order, float("nan")
    gaps = np.diff(positions[order])
    n_dup = int(np.sum(gaps < _POSITION_ATOL))
    if n_dup:
        raise SeriesError(
            Reason.DUPLICATE_POSITIONS,
            f"{n_dup} slice(s) share a position with another one ({len(order)} slices); several echoes, phases or "
            "acquisitions in one series?",
        )
    steps = np.diff(ipps[order], axis=0)
    cosines = (steps @ normal) / np.linalg.norm(steps, axis=1)
    if np.any(cosines < 1.0 - _PERPENDICULAR_TOL):
        angle = float(np.degrees(np.arccos(np.clip(cosines.min(), -1.0, 1.0))))
        raise SeriesError(
            Reason.INCONSISTENT_ORIENTATION,
            f"slices are stacked {angle:.1f} deg off their normal (gantry tilt or sheared stack); not supported",
        )
    mean = float(gaps.mean())
    if np.abs(gaps - mean).max() > SPACING_RTOL * mean:
        raise SeriesError(
            Reason.INCONSISTENT_SPACING,
            f"slice gaps range from {gaps.min():.4g} to {gaps.max():.4g} mm (mean {mean:.4g}, tolerance "
            f"{SPACING_RTOL:.0%}); missing slices or several stacks? medkd does not resample",
        )
    return order, mean


def _decode_error(err: Exception, path: Path, ds: Dataset | None = None) -> SeriesError:
    from medkd.io.phi import phi_values, redact

    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = redact(text, phi_values([ds]))  # decoders name lengths and syntaxes, but never risk a patient value
    if isinstance(err, ValueError) and ("bytes" in text or "expected" in text):
        return SeriesError(Reason.TRUNCATED, f"{path.name}: pixel data truncated: {text}")
    if (isinstance(err, RuntimeError) and "Unable to decode" in text) or isinstance(err, NotImplementedError):
        detail = redact(" ".join(line.strip() for line in str(err).splitlines()[1:3]), phi_values([ds]))
        hint = "install pylibjpeg with pylibjpeg-libjpeg/pylibjpeg-openjpeg, or python-gdcm"
        return SeriesError(Reason.NO_DECODER, f"{path.name}: no decoder for its pixel data ({detail or text}); {hint}")
    return SeriesError(Reason.UNREADABLE, f"{path.name}: cannot decode pixel data: {type(err).__name__}: {text}")


def _pixels(datasets: Sequence[Dataset], paths: Sequence[Path]) -> np.ndarray:
    """Decode every slice into one float32 ``(n, rows, cols)`` array and rescale it in one go."""
    from pydicom.pixels import apply_rescale, pixel_array

    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    out = np.empty((len(datasets), rows, cols), dtype=np.float32)
    use_lut = any("ModalityLUTSequence" in ds for ds in datasets)
    for i, (ds, path) in enumerate(zip(datasets, paths)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "pixel data has more bytes than expected"
                frame = pixel_array(ds)  # the function, not ds.pixel_array: no cached copy kept on the dataset
        except Exception as err:  # noqa: BLE001 - mapped to a reason
            raise _decode_error(err, path, ds) from err
        if frame.shape != (rows, cols):
            raise SeriesError(Reason.UNSUPPORTED, f"{path.name}: decoded shape {frame.shape}, expected {(rows, cols)}")
        out[i] = apply_rescale(frame, ds) if use_lut else frame
    if not use_lut:
        slope = _scalars(datasets, "RescaleSlope", 1.0).astype(np.float32)
        intercept = _scalars(datasets, "RescaleIntercept", 0.0).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught just below
            if np.any(slope != 1):
                out *= slope[:, None, None]
            if np.any(intercept != 0):
                out += intercept[:, None, None]
    if not np.all(np.isfinite(out)):
        raise SeriesError(Reason.MISSING_TAGS, "RescaleSlope/RescaleIntercept (or the modality LUT) give values "
                                               "that are not finite float32 numbers")
    return out


def load_series_volume(files: Sequence[str | Path], *, min_slices: int = 1) -> DicomVolume:
    """Read one series' files into a sorted, rescaled, regular volume (stage 3 of the batch pipeline).

    The result pickles, so it can be built in a worker process.

    Args:
        files: the series' files, in any order.
        min_slices: fewer files than this raise ``TOO_FEW_SLICES`` before anything is read.

    Returns:
        The :class:`DicomVolume`.

    Raises:
        SeriesError: with ``.reason`` one of ``too_few_slices``, ``unreadable``, ``not_dicom``, ``multiframe``,
            ``unsupported``, ``missing_tags``, ``inconsistent_orientation``, ``inconsistent_shape``,
            ``duplicate_positions``, ``inconsistent_spacing``, ``truncated``, ``no_decoder``.

    Example:
        >>> load_series_volume([], min_slices=1)
        Traceback (most recent call last):
        ...
        medkd.io.dicom_volume.SeriesError: too_few_slices: 0 slice(s), fewer than min_slices=1
    """
    paths = [Path(f) for f in files]
    if len(paths) < max(1, min_slices):
        raise SeriesError(Reason.TOO_FEW_SLICES, f"{len(paths)} slice(s), fewer than min_slices={max(1, min_slices)}")
    datasets = [_read(p) for p in paths]
    _check_frames(datasets, paths)
    _check_tags(datasets)
    row, col, normal = _orientation(_floats(datasets, "ImageOrientationPatient"))
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):  # copied into the SEG: numbers or empty
        _scalars(datasets, keyword, 0.0)
    _check_shape(datasets)
    ipps = _floats(datasets, "ImagePositionPatient")
    order, gap = sort_by_position(ipps, normal)
    if np.isnan(gap):
        first = datasets[0]
        gap = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)  # numbers: checked
        gap = gap if gap > 0 else 1.0
    datasets = [datasets[i] for i in order]
    paths = [paths[i] for i in order]
    array = _pixels(datasets, paths)
    row_spacing, col_spacing = (float(v) for v in datasets[0].PixelSpacing)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * col_spacing, col * row_spacing, normal * gap
    affine[:3, 3] = ipps[order[0]]
    return DicomVolume(
        array=array,
        datasets=datasets,
        spacing=(gap, row_spacing, col_spacing),
        affine_lps=affine,
        series_uid=str(datasets[0].get("SeriesInstanceUID", "") or ""),
        study_uid=str(datasets[0].get("StudyInstanceUID", "") or ""),
        files=paths,
    )
