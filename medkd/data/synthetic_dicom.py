# SPDX-License-Identifier: Apache-2.0
"""Synthetic multi-slice DICOM series (CT or MR) with every tag highdicom needs, for tests, the demo and benchmarks.

Each slice is a standard single-frame file (CT/MR Image Storage, Explicit VR Little Endian, 16-bit MONOCHROME2,
rescale -1024/1 for CT) with patient/study/series/frame-of-reference identifiers, ``ImagePositionPatient``
``[x0, y0, z0 + i * dz]`` and axial ``ImageOrientationPatient``. The pixel content is a bright ellipsoid (a
"structure" a tiny model can learn) in a darker body disc, plus noise.

Options break the series the ways real archives do: drop a tag, jitter a slice position, truncate pixel data,
duplicate a position, or write one slice with a different shape.

Example:
    >>> import tempfile
    >>> series = write_dicom_series(tempfile.mkdtemp(), n_slices=4, rows=16, cols=16)
    >>> len(series.paths), series.pixels.shape
    (4, (4, 16, 16))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CT_IMAGE_STORAGE", "MR_IMAGE_STORAGE", "SyntheticSeries", "phantom_volume", "write_dicom_series"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass
class SyntheticSeries:
    """What :func:`write_dicom_series` wrote: files in slice order, UIDs, the stored values and the true mask."""

    paths: list[Path]
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    pixels: np.ndarray  # (slices, rows, cols) stored values (before rescale)
    mask: np.ndarray  # (slices, rows, cols) uint8: 1 inside the bright ellipsoid


def phantom_volume(
    n_slices: int, rows: int, cols: int, *, seed: int = 0, noise: float = 20.0
) -> tuple[np.ndarray, np.ndarray]:
    """Hounsfield-like volume ``(slices, rows, cols)`` int16 and its ellipsoid mask (uint8)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, n_slices), np.linspace(-1, 1, rows), np.linspace(-1, 1, cols), indexing="ij"
    )
    cz, cy, cx = rng.uniform(-0.15, 0.15, 3)
    body = (y**2 + x**2) < 0.85**2
    mask = (((z - cz) / 0.7) ** 2 + ((y - cy) / 0.35) ** 2 + ((x - cx) / 0.3) ** 2) < 1.0
    hu = np.where(body, 40.0, -1000.0) + np.where(mask, 260.0, 0.0) + rng.normal(0, noise, z.shape)
    return np.clip(hu, -1024, 3071).astype(np.int16), mask.astype(np.uint8)


def _uid(prefix: str, rng: np.random.Generator) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[prefix, str(rng.integers(1 << 62))])


def write_dicom_series(
    folder: str | Path,
    *,
    n_slices: int = 8,
    rows: int = 32,
    cols: int = 32,
    pixel_spacing: Sequence[float] = (0.8, 0.8),
    slice_spacing: float = 2.5,
    origin: Sequence[float] = (-12.0, -14.0, 30.0),
    modality: str = "CT",
    series_description: str = "Synthetic CT",
    seed: int = 0,
    study_uid: str | None = None,
    drop_tags: Sequence[str] = (),
    jitter_slice: int | None = None,
    duplicate_slice: int | None = None,
    odd_shape_slice: int | None = None,
    truncate_slice: int | None = None,
    shuffle_names: bool = True,
    pixels: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> SyntheticSeries:
    """Write one series, a file per slice, into ``folder``; see the module docstring for the options.

    Args:
        jitter_slice: move this slice 40% of a gap along z (``inconsistent_spacing``).
        duplicate_slice: give this slice the previous slice's position (``duplicate_positions``).
        odd_shape_slice: write this slice with 2 fewer columns (``inconsistent_shape``).
        truncate_slice: cut this file's pixel data in half (``truncated``).
        shuffle_names: name files in a scrambled order, so readers must sort by position, not by name.
        pixels: your own stored values ``(slices, rows, cols)`` (0..4095) instead of the phantom (sets the shape);
            ``mask`` is then returned as given (or all zero).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or _uid("study", rng)
    series_uid, for_uid = _uid("series", rng), _uid("for", rng)
    ct = modality.upper() == "CT"
    if pixels is not None:
        stored = np.clip(np.asarray(pixels), 0, 4095).astype(np.uint16)
        n_slices, rows, cols = stored.shape
        mask = np.zeros(stored.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8)
    else:
        pixels_hu, mask = phantom_volume(n_slices, rows, cols, seed=seed)
        stored = (pixels_hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    sop_class = CT_IMAGE_STORAGE if ct else MR_IMAGE_STORAGE
    now = dt.datetime(2024, 1, 2, 3, 4, 5)
    order = rng.permutation(n_slices) if shuffle_names else np.arange(n_slices)
    paths: list[Path] = []
    for i in range(n_slices):
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = _uid(f"sop{i}", rng)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if modality.upper() == "CT" else "OTHER"]
        ds.PatientName, ds.PatientID = "Synthetic^Phantom", "SYN0001"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber = "1", "ACC0001"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "Synthetic study"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 1, series_description
        ds.Modality, ds.Manufacturer = modality.upper(), "medkd synthetic"
        ds.PatientPosition, ds.BodyPartExamined = "HFS", "CHEST"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
        ds.InstanceNumber, ds.AcquisitionNumber = i + 1, 1
        z = origin[2] + i * slice_spacing
        if jitter_slice == i:
            z += 0.4 * slice_spacing
        if duplicate_slice == i and i > 0:
            z -= slice_spacing
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceLocation = float(z)
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        ds.SliceThickness = float(slice_spacing)
        if ct:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
            ds.KVP, ds.WindowCenter, ds.WindowWidth = 120, 40, 400
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 4.0, 2.0, 1, 1.5
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        frame = stored[i][:, :-2] if odd_shape_slice == i else stored[i]
        ds.set_pixel_data(np.ascontiguousarray(frame), photometric_interpretation="MONOCHROME2", bits_stored=12)
        if truncate_slice == i:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        for tag in drop_tags:
            if tag in ds:
                delattr(ds, tag)
        path = folder / f"IM{int(order[i]):04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return SyntheticSeries(paths, study_uid, series_uid, for_uid, stored, mask)
