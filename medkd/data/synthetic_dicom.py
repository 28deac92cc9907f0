# SPDX-License-Identifier: Apache-2.0
"""Synthetic multi-slice DICOM series (CT or MR) with every tag highdicom needs, for tests, the demo and benchmarks;
and synthetic projection images (mammography MG, DX), one image per instance (:func:`write_mammo_series`).

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

__all__ = [
    "CT_IMAGE_STORAGE", "DX_IMAGE_STORAGE", "MAMMO_VIEWS", "MG_IMAGE_STORAGE", "MR_IMAGE_STORAGE", "SyntheticMammo",
    "SyntheticSeries", "mammo_image", "phantom_volume", "write_dicom_series", "write_mammo_series",
]

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


#: Digital Mammography X-Ray Image Storage - For Presentation
MG_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.2"
#: Digital X-Ray Image Storage - For Presentation
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
#: the four screening views in order: (ImageLaterality, ViewPosition)
MAMMO_VIEWS: tuple[tuple[str, str], ...] = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))
_VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
_LATERALITY_CODES = {"R": ("24028007", "Right"), "L": ("7771000", "Left")}


@dataclass
class SyntheticMammo:
    """What :func:`write_mammo_series` wrote: one file per image (one instance = one 2D image).

    Attributes:
        paths: the files, in instance order.
        study_uid, series_uid: shared by every image.
        sop_uids: ``SOPInstanceUID`` per image.
        views: ``(ImageLaterality, ViewPosition)`` per image.
        pixels: ``(n, rows, cols)`` uint16 stored values (MONOCHROME1 images hold the inverted values).
        boxes: per image, the lesions' boxes ``(N, 4)`` float32 ``(x_min, y_min, x_max, y_max)`` in pixels
            (``x`` the column, pixel ``i`` spanning ``[i, i + 1)``).
    """

    paths: list[Path]
    study_uid: str
    series_uid: str
    sop_uids: list[str]
    views: list[tuple[str, str]]
    pixels: np.ndarray
    boxes: list[np.ndarray]


def mammo_image(rows: int, cols: int, *, laterality: str = "L", lesions: int = 1, seed: int = 0,
                noise: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic mammogram ``(rows, cols)`` uint16 (12-bit, bright = dense) and its lesion boxes ``(N, 4)``.

    The breast is a half ellipse against the chest wall (the left edge for ``L``, the right edge for ``R``, as
    displayed), with fibroglandular texture; each lesion is a bright blob whose box is returned.

    Example:
        >>> image, boxes = mammo_image(40, 30, lesions=2, seed=1)
        >>> image.shape, image.dtype.name, boxes.shape
        ((40, 30), 'uint16', (2, 4))
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    depth = x / cols if laterality.upper() == "L" else (cols - 1 - x) / cols  # 0 at the chest wall
    breast = ((y - rows / 2) / (0.45 * rows)) ** 2 + (depth / 0.8) ** 2 < 1.0
    image = np.where(breast, 1400.0 - 500.0 * depth, 80.0) + rng.normal(0.0, noise, (rows, cols))
    boxes = []
    for _ in range(lesions):
        radius = float(rng.uniform(0.05, 0.1) * min(rows, cols))
        cy = float(rng.uniform(0.3, 0.7) * rows)
        cd = float(rng.uniform(0.15, 0.5) * cols)
        cx = cd if laterality.upper() == "L" else cols - 1 - cd
        blob = ((y - cy) ** 2 + (x - cx) ** 2) < radius**2
        image = np.where(blob, image + 1200.0, image)
        ys, xs = np.nonzero(blob)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.clip(image, 0, 4095).astype(np.uint16), np.asarray(boxes, np.float32).reshape(-1, 4)


def write_mammo_series(
    folder: str | Path,
    *,
    n_images: int = 4,
    rows: int = 64,
    cols: int = 48,
    modality: str = "MG",
    photometric: str = "MONOCHROME2",
    lesions: int = 1,
    imager_pixel_spacing: Sequence[float] = (0.1, 0.1),
    seed: int = 0,
    study_uid: str | None = None,
    series_description: str = "Synthetic screening mammography",
    drop_tags: Sequence[str] = (),
) -> SyntheticMammo:
    """Write one projection series, a single-frame file per image, into ``folder`` (mammography by default).

    ``modality="MG"``: Digital Mammography X-Ray Image Storage - For Presentation, with the DX/mammography modules'
    tags (``ImageLaterality``, ``ViewPosition`` and ``ViewCodeSequence``, ``ImagerPixelSpacing``,
    ``PresentationIntentType``, ``PresentationLUTShape``, ``PositionerType``, ``BreastImplantPresent``...), the views
    cycling R CC, L CC, R MLO, L MLO. ``modality="DX"``: Digital X-Ray Image Storage - For Presentation (a chest
    radiograph's tags). Like real projection images there is no ``ImagePositionPatient``,
    ``ImageOrientationPatient`` nor ``FrameOfReferenceUID``. 12-bit unsigned pixels, Explicit VR Little Endian.

    Args:
        photometric: ``MONOCHROME2`` (bright = dense) or ``MONOCHROME1`` (values inverted, ``PresentationLUTShape``
            ``INVERSE``).
        lesions: bright blobs per image (their boxes are returned).
        drop_tags: keywords removed from every file.

    Example:
        >>> import tempfile, pydicom
        >>> mg = write_mammo_series(tempfile.mkdtemp(), n_images=2, rows=32, cols=24)
        >>> ds = pydicom.dcmread(mg.paths[1])
        >>> ds.Modality, ds.ImageLaterality, ds.ViewPosition, "ImagePositionPatient" in ds
        ('MG', 'L', 'CC', False)
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    modality, photometric = modality.upper(), photometric.upper()
    if modality not in ("MG", "DX"):
        raise ValueError(f"modality must be MG or DX, got {modality!r}")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study_uid = study_uid or _uid(f"{modality}-study", rng)
    series_uid = _uid(f"{modality}-series", rng)
    sop_class = MG_IMAGE_STORAGE if modality == "MG" else DX_IMAGE_STORAGE
    now = dt.datetime(2024, 1, 2, 3, 4, 5)
    paths, sop_uids, views, all_boxes = [], [], [], []
    stored = np.zeros((n_images, rows, cols), np.uint16)
    for i in range(n_images):
        laterality, view = MAMMO_VIEWS[i % len(MAMMO_VIEWS)] if modality == "MG" else ("", "PA")
        image, boxes = mammo_image(rows, cols, laterality=laterality or "L", lesions=lesions, seed=seed * 1000 + i)
        if photometric == "MONOCHROME1":
            image = (4095 - image).astype(np.uint16)
        stored[i] = image
        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = _uid(f"{modality}-sop{i}", rng)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PatientName, ds.PatientID = "Synthetic^Mammo", "SYN0002"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "F" if modality == "MG" else "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber = "2", "ACC0002"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "Synthetic study"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 1, series_description
        ds.Modality, ds.Manufacturer = modality, "medkd synthetic"
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.InstanceNumber, ds.AcquisitionNumber = i + 1, 1
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
        ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
        ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
        ds.AcquisitionContextSequence = []
        ds.ImagerPixelSpacing = [float(v) for v in imager_pixel_spacing]
        ds.DetectorType, ds.KVP, ds.ExposureInuAs = "DIRECT", 28 if modality == "MG" else 120, 80000
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if photometric == "MONOCHROME2" else -1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        if modality == "MG":
            ds.BodyPartExamined, ds.ImageLaterality, ds.ViewPosition = "BREAST", laterality, view
            ds.PatientOrientation = ["P", "L"] if laterality == "R" else ["A", "R"]
            ds.PositionerType, ds.BreastImplantPresent, ds.PartialView = "MAMMOGRAPHIC", "NO", "NO"
            ds.OrganExposed = "BREAST"
            ds.ViewCodeSequence = [_code_item(Dataset(), *_VIEW_CODES[view])]
            ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
            ds.AnatomicRegionSequence = [_code_item(Dataset(), "76752008", "Breast")]
            ds.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [
                _code_item(Dataset(), *_LATERALITY_CODES[laterality])
            ]
        else:
            ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", view, ["L", "F"]
            ds.ImageLaterality, ds.PositionerType = "U", ""
            ds.AnatomicRegionSequence = [_code_item(Dataset(), "51185008", "Thorax")]
            ds.ViewCodeSequence = [_code_item(Dataset(), "399214001", "postero-anterior")]
            ds.ViewCodeSequence[0].ViewModifierCodeSequence = []
        ds.set_pixel_data(np.ascontiguousarray(image), photometric_interpretation=photometric, bits_stored=12)
        for tag in drop_tags:
            if tag in ds:
                delattr(ds, tag)
        path = folder / f"{modality}{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        sop_uids.append(str(ds.SOPInstanceUID))
        views.append((laterality, view))
        all_boxes.append(boxes)
    return SyntheticMammo(paths, study_uid, series_uid, sop_uids, views, stored, all_boxes)


def _code_item(item, value: str, meaning: str, scheme: str = "SCT"):  # noqa: ANN001, ANN202 - a pydicom Dataset
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item
