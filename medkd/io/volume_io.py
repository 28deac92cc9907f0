# SPDX-License-Identifier: Apache-2.0
"""Read volumes (NIfTI, MHA/NRRD, DICOM series folders) and write masks on the same geometry.

Arrays are in SimpleITK's ``(z, y, x)`` order; the :class:`SimpleITK.Image` read alongside carries origin,
spacing and direction, so a predicted mask can be written back on the input's grid. Used by
``medkd bcp predict`` and by :class:`medkd.data.NiftiSegDataset`.

Example:
    >>> import tempfile, pathlib, numpy as np, SimpleITK as sitk
    >>> ref = sitk.GetImageFromArray(np.zeros((2, 3, 4), np.float32)); ref.SetSpacing((0.5, 0.5, 2.0))
    >>> out = write_mask_like(np.ones((2, 3, 4), np.uint8), ref, pathlib.Path(tempfile.mkdtemp()) / "m.nii.gz")
    >>> vol = read_volume(out)
    >>> vol.array.shape, vol.image.GetSpacing()
    ((2, 3, 4), (0.5, 0.5, 2.0))
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medkd.errors import DataError
from medkd.io.atomic import atomic_path

__all__ = ["VOLUME_SUFFIXES", "Volume", "read_volume", "list_inputs", "write_mask_like", "output_name", "strip_suffix"]

logger = logging.getLogger(__name__)

#: file endings read as single volume files (longest first, so ``.nii.gz`` wins over ``.gz``)
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")
_OTHER_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima")


@dataclass
class Volume:
    """A volume read from disk.

    Attributes:
        array: float32 ``(z, y, x)``; a 2D file gives ``(1, y, x)``.
        image: the :class:`SimpleITK.Image` it came from (geometry reference for writing masks).
        source: the file or DICOM folder read.
    """

    array: np.ndarray
    image: sitk.Image
    source: Path


def strip_suffix(name: str) -> str:
    """The file name without a known volume ending (``case1.nii.gz`` -> ``case1``).

    Example:
        >>> strip_suffix("case1.nii.gz"), strip_suffix("scan.mha"), strip_suffix("series1")
        ('case1', 'scan', 'series1')
    """
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES + _OTHER_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _looks_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: ``DICM`` after the 128-byte preamble (or a ``.dcm``-like ending)."""
    if path.name.lower().endswith(_OTHER_SUFFIXES):
        return True
    try:
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _dicom_series(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(series_uid, files)`` for each DICOM series directly in ``folder``, most files first."""
    if not any(child.is_file() and _looks_dicom(child) for child in folder.iterdir()):
        return []
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    found = [(uid, tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))) for uid in series_ids]
    return sorted(found, key=lambda item: -len(item[1]))


def _to_volume(image: sitk.Image, source: Path) -> Volume:
    if image.GetNumberOfComponentsPerPixel() != 1:
        components = image.GetNumberOfComponentsPerPixel()
        raise DataError(source, f"expected a scalar image, got {components} components per voxel")
    if image.GetDimension() not in (2, 3):
        raise DataError(source, f"expected a 2D or 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if array.size == 0:
        raise DataError(source, "image has no voxels")
    if array.ndim == 2:
        array = array[None]
    return Volume(array=array, image=image, source=source)


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read one volume: a NIfTI/MHA/NRRD file, any SimpleITK-readable file, or a folder of one DICOM series.

    A folder with several series yields the one with the most files (logged).

    Args:
        path: a file, or a folder holding DICOM files.

    Returns:
        The :class:`Volume`: float32 array ``(z, y, x)`` plus the SimpleITK image.

    Raises:
        DataError: naming ``path`` if it does not exist, is empty, holds no DICOM series, or cannot be
            decoded (with SimpleITK's reason), or is not a scalar 2D/3D image.

    Example:
        >>> read_volume("/no/such/file.nii.gz")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: /no/such/file.nii.gz: file or folder not found
    """
    path = Path(path)
    if path.is_dir():
        series = _dicom_series(path)
        if not series:
            raise DataError(path, "folder holds no readable DICOM series")
        uid, files = series[0]
        if len(series) > 1:
            logger.info(
                "%s holds %d DICOM series; reading %s (%d files), the largest", path, len(series), uid, len(files)
            )
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise DataError(path, f"cannot read DICOM series {uid}: {_first_line(exc)}") from exc
        return _to_volume(image, path)
    if not path.is_file():
        raise DataError(path, "file or folder not found")
    if path.stat().st_size == 0:
        raise DataError(path, "file is empty")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read image: {_first_line(exc)}") from exc
    return _to_volume(image, path)


def _first_line(exc: Exception) -> str:
    """SimpleITK messages span many lines with C++ locations; keep the informative one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("sitk::ERROR", "/")) and "line" not in line[:12]]
    return (useful or lines or [type(exc).__name__])[-1]


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def list_inputs(path: str | os.PathLike[str]) -> list[Path]:
    """The inputs a path stands for, for batch prediction.

    A file gives ``[file]``; a folder holding DICOM files gives ``[folder]``; otherwise a folder gives its
    volume files (``.nii``, ``.nii.gz``, ``.mha``, ``.mhd``, ``.nrrd``; sorted) followed by its subfolders
    that hold a DICOM series (sorted).

    Args:
        path: a file or folder.

    Returns:
        The inputs, each readable by :func:`read_volume`.

    Raises:
        DataError: if ``path`` does not exist or nothing readable is found in it.

    Example:
        >>> list_inputs("/no/such/dir")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: /no/such/dir: file or folder not found
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "file or folder not found")
    if _dicom_series(path):
        return [path]
    children = sorted(path.iterdir())
    files = [child for child in children if _is_volume_file(child)]
    folders = [child for child in children if child.is_dir() and _dicom_series(child)]
    if not files and not folders:
        raise DataError(path, "no NIfTI/MHA/NRRD files and no DICOM series found")
    return files + folders


def write_mask_like(mask: np.ndarray, reference: sitk.Image, out_path: str | os.PathLike[str]) -> Path:
    """Write an integer mask as uint8 NIfTI on the reference image's grid, atomically.

    The file is written under a temporary name in the destination folder and moved into place with
    ``os.replace``, so a crash never leaves a half-written mask behind.

    Args:
        mask: integer array ``(z, y, x)`` matching the reference's size (``(1, y, x)`` for a 2D reference);
            values must fit in uint8.
        reference: image whose origin, spacing and direction are copied.
        out_path: destination, normally ending in ``.nii.gz``.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if the mask's shape differs from the reference's, or its values do not fit in uint8.

    Example:
        >>> import tempfile, pathlib
        >>> ref = sitk.Image(4, 3, 2, sitk.sitkFloat32)
        >>> write_mask_like(np.zeros((2, 3, 4), np.int64), ref, pathlib.Path(tempfile.mkdtemp()) / "a.nii.gz").name
        'a.nii.gz'
    """
    out_path = Path(out_path)
    mask = np.asarray(mask)
    expected = tuple(reversed(reference.GetSize()))
    if reference.GetDimension() == 2 and mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} does not match the reference's (z, y, x) shape {expected}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must lie in [0, 255], got [{mask.min()}, {mask.max()}]")
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    suffix = ".nii.gz" if out_path.name.lower().endswith(".nii.gz") else out_path.suffix
    with atomic_path(out_path, suffix=suffix) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return out_path


def output_name(input_path: str | os.PathLike[str]) -> str:
    """The mask file name for an input: ``case1.nii.gz`` -> ``case1_seg.nii.gz``, folder ``series1`` ->
    ``series1_seg.nii.gz``.

    Example:
        >>> output_name("in/case1.nii.gz"), output_name("dicom/series1"), output_name("scan.mha")
        ('case1_seg.nii.gz', 'series1_seg.nii.gz', 'scan_seg.nii.gz')
    """
    name = Path(input_path).name
    return f"{strip_suffix(name)}_seg.nii.gz"
