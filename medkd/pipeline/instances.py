# SPDX-License-Identifier: Apache-2.0
"""Per-instance jobs (``unit: instance``): one SOP instance is one 2D image (mammography MG, DX, CR).

Projection images are not volumes: a mammography series holds several views (R CC, L CC, R MLO, L MLO), each its own
image without ``ImagePositionPatient`` nor a frame of reference. With ``unit: instance`` the runner makes every
selected instance a job of its own:

- :func:`split_instances` turns a scanned series into one :class:`InstanceInfo` per file, each with its own header,
  so selection rules see each image's ``ViewPosition``/``ImageLaterality``;
- :func:`load_instance_image` decodes one file into a :class:`DicomImage`: float32 ``(y, x)``, modality LUT applied
  (``RescaleSlope``/``RescaleIntercept`` or the LUT), ``MONOCHROME1`` inverted (``max + min - value``, as
  :func:`medkd.data.coco.read_image` does for training images) so that dense tissue is bright;
- the detection writer writes a 2D SR and sidecars per image (:mod:`medkd.io.dicom_sr2d`) into
  ``OUT/<StudyUID>/<SeriesUID>/<SOPInstanceUID>/``.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic_dicom import write_mammo_series
    >>> from medkd.io.dicom_scan import scan_tree
    >>> mg = write_mammo_series(tempfile.mkdtemp(), n_images=2, rows=16, cols=12)
    >>> [series], _ = scan_tree(mg.paths[0].parent, keep_headers=True)
    >>> [(i.header.ViewPosition, i.sop_uid == uid) for i, uid in zip(split_instances(series), mg.sop_uids)]
    [('CC', True), ('CC', True)]
    >>> image = load_instance_image(mg.paths[0])
    >>> image.array.shape, image.array.dtype.name, "PixelData" in image.dataset
    ((16, 12), 'float32', False)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from medkd.io.dicom_scan import Reason, SeriesInfo
from medkd.io.dicom_volume import SeriesError

__all__ = ["DicomImage", "InstanceInfo", "instance_problem", "load_instance_image", "split_instances"]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass
class InstanceInfo(SeriesInfo):
    """One image of a scanned series: a :class:`~medkd.io.dicom_scan.SeriesInfo` of one file, plus its UID.

    Attributes:
        sop_uid: ``SOPInstanceUID`` of the image (it names the output folder).
    """

    sop_uid: str = ""


def split_instances(series: SeriesInfo) -> list[InstanceInfo]:
    """One :class:`InstanceInfo` per file of ``series``, each with its own header when the scan kept it
    (``scan_tree(..., keep_headers=True)``), else the series' first header."""
    out = []
    for path in series.files:
        header = series.headers.get(path, series.header)
        out.append(InstanceInfo(
            series_uid=series.series_uid, study_uid=series.study_uid, modality=series.modality,
            description=series.description, files=[path], header=header,
            sop_uid=str(header.get("SOPInstanceUID", "") or ""),
        ))  # fmt: skip
    return out


def instance_problem(instance: InstanceInfo) -> tuple[Reason, str] | None:
    """``(INVALID_UID, message)`` when the image's ``SOPInstanceUID`` cannot name a folder, else ``None``."""
    from medkd.io.safe_paths import uid_problem

    why = uid_problem("SOPInstanceUID", instance.sop_uid)
    if why is None:
        return None
    return Reason.INVALID_UID, f"{why}: not usable as a folder name, image not written"


@dataclass
class DicomImage:
    """One decoded 2D image (an instance job's input).

    Attributes:
        array: float32 ``(rows, cols)``: modality LUT applied, ``MONOCHROME1`` inverted.
        dataset: the header without pixel data (the SR's evidence and source image).
        spacing: ``(row, column)`` spacing in mm (``PixelSpacing``, else ``ImagerPixelSpacing``), ``()`` if unknown.
        path: the file.
        photometric: the stored ``PhotometricInterpretation``.
    """

    array: np.ndarray
    dataset: Dataset
    spacing: tuple[float, ...] = ()
    path: Path = field(default_factory=Path)
    photometric: str = "MONOCHROME2"

    @property
    def datasets(self) -> list[Dataset]:
        """``[dataset]``: what the runner redacts messages with (as for a volume's slices)."""
        return [self.dataset]

    @property
    def sop_uid(self) -> str:
        """``SOPInstanceUID``."""
        return str(self.dataset.get("SOPInstanceUID", "") or "")


def _check_image(ds: Dataset, name: str) -> None:
    frames = ds.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        raise SeriesError(Reason.MULTIFRAME, f"{name}: {int(frames)} frames; one instance must be one 2D image")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise SeriesError(Reason.UNSUPPORTED, f"{name}: {ds.SamplesPerPixel} samples per pixel (colour)")
    if not any(kw in ds for kw in _PIXEL_KEYWORDS):
        raise SeriesError(Reason.NON_IMAGE, f"{name}: no pixel data")
    missing = [kw for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                             "Rows", "Columns") if ds.get(kw) in (None, "")]  # fmt: skip
    if missing:
        raise SeriesError(Reason.MISSING_TAGS, f"{name}: required tags missing or empty: {', '.join(missing)}")
    if int(ds.Rows) < 1 or int(ds.Columns) < 1:
        raise SeriesError(Reason.MISSING_TAGS, f"{name}: Rows and Columns must be at least 1")


def load_instance_image(path: str | Path) -> DicomImage:
    """Decode one single-frame grayscale image file (stage 3 of an instance job).

    Returns:
        The :class:`DicomImage` (it pickles: it can be built in a worker process; its header holds no pixel data).

    Raises:
        SeriesError: with ``.reason`` ``unreadable``, ``not_dicom``, ``multiframe``, ``unsupported`` (colour),
            ``non_image``, ``missing_tags``, ``truncated`` or ``no_decoder``; messages name the file, never patient
            values.
    """
    from pydicom.pixels import apply_rescale, pixel_array

    from medkd.io.dicom_volume import _decode_error, _read
    from medkd.io.dicom_sr2d import pixel_spacing_mm

    path = Path(path)
    ds = _read(path)
    _check_image(ds, path.name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "pixel data has more bytes than expected"
            frame = pixel_array(ds)
            image = np.asarray(apply_rescale(frame, ds), dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - mapped to a reason
        raise _decode_error(err, path, ds) from err
    if image.shape != (int(ds.Rows), int(ds.Columns)):
        raise SeriesError(Reason.UNSUPPORTED, f"{path.name}: decoded shape {image.shape}, expected one 2D frame")
    if not np.all(np.isfinite(image)):
        raise SeriesError(Reason.MISSING_TAGS, f"{path.name}: the modality LUT gives values that are not finite")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper()
    if photometric == "MONOCHROME1":  # low values are bright: invert, as training images are read
        image = np.float32(image.max()) + np.float32(image.min()) - image
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    spacing = pixel_spacing_mm(ds)
    return DicomImage(array=np.ascontiguousarray(image, dtype=np.float32), dataset=ds,
                      spacing=() if spacing is None else spacing, path=path, photometric=photometric)
