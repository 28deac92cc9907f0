# SPDX-License-Identifier: Apache-2.0
"""Write 2D detections on one projection image (MG, DX, CR) as a DICOM SR (TID 1500) and as JSON/CSV sidecars.

The per-instance counterpart of :mod:`medkd.io.dicom_sr`: one source image (one SOP instance), boxes in its pixel
space. A :class:`Detection2D` box is ``(x0, y0, x1, y1)`` in pixels, ``x`` the column and ``y`` the row, pixel ``i``
spanning ``[i, i + 1)``: the same convention as DICOM's image coordinates (``SCOORD``), where the top-left corner of
the top-left pixel is ``(0, 0)`` and the bottom-right corner of the image is ``(Columns, Rows)``, so boxes are
written as they are.

The SR (:func:`write_detection_sr_2d`) is a Comprehensive 3D SR holding a TID 1500 Measurement Report with one
TID 1410 "Planar ROI measurements" group per detection: a ``TrackingIdentifier`` (deterministic UID), the finding
type (the detection's code, or SNOMED CT "Finding"), an ``ImageRegion`` (2D ``SCOORD``, a closed ``POLYLINE``
rectangle in pixel coordinates) referencing the source image (``SourceImageForRegion``), and the score as DCM
"Certainty of Finding" (no units). The source image is the evidence. Nothing patient-geometric is needed:
mammograms have neither ``ImagePositionPatient`` nor a ``FrameOfReferenceUID``.

The sidecars (:func:`write_detection_sidecars_2d`) are always written and authoritative: ``detections.json`` and
``detections.csv`` with the study/series/instance UIDs, label, score, pixel box and, when the image has a
``PixelSpacing`` (or ``ImagerPixelSpacing``), the box size in mm.

Example:
    >>> import tempfile, pydicom
    >>> from pathlib import Path
    >>> from medkd.data.synthetic_dicom import write_mammo_series
    >>> folder = Path(tempfile.mkdtemp())
    >>> ds = pydicom.dcmread(write_mammo_series(folder, n_images=1, rows=32, cols=24).paths[0])
    >>> found = [Detection2D("mass", 0.9, (2, 3, 10, 12))]
    >>> sr = pydicom.dcmread(write_detection_sr_2d(ds, found, folder / "sr.dcm", model_name="demo",
    ...                                            model_version="1"))
    >>> sr.Modality, sr.StudyInstanceUID == ds.StudyInstanceUID
    ('SR', True)
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medkd.io.atomic import write_text_atomic
from medkd.io.dicom_patient import defensive_copies
from medkd.io.dicom_seg import LO_MAX, coded, require_highdicom, save_atomic, seg_uids
from medkd.io.dicom_sr import FINDING, observation_context, procedure_code, tracking_identifier, tracking_label
from medkd.io.labels import Code
from medkd.io.phi import guard_phi

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

__all__ = [
    "Box2D",
    "Detection2D",
    "EMPTY_IF_ABSENT",
    "REQUIRED_2D_TAGS",
    "default_uid_entropy",
    "source_problems_2d",
    "pixel_spacing_mm",
    "detection_records_2d",
    "write_detection_sr_2d",
    "write_detection_sidecars_2d",
]

logger = logging.getLogger(__name__)

Box2D = tuple[float, float, float, float]

#: tags the source image must have, with a value, for a 2D SR (no geometry tags: projection images have none)
REQUIRED_2D_TAGS: tuple[str, ...] = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "Rows", "Columns",
)

#: Type 2 patient/study attributes highdicom copies from the source into the SR: written empty when absent
EMPTY_IF_ABSENT: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName",
)

_CSV_FIELDS: tuple[str, ...] = (
    "study_uid", "series_uid", "sop_instance_uid", "model_name", "model_version", "index", "tracking_id",
    "label", "score", "code_scheme", "code_value", "code_meaning", "x0", "y0", "x1", "y1", "width_px", "height_px",
    "width_mm", "height_mm",
)  # fmt: skip


@dataclass
class Detection2D:
    """One finding on a 2D image.

    Attributes:
        label: class name as the model knows it.
        score: detection confidence (written as given, no units).
        box: ``(x0, y0, x1, y1)`` pixels, ``x`` the column, end-exclusive (``x1 > x0``, ``y1 > y0``).
        code: finding type ``(scheme, value, meaning)``; ``None`` means the generic SNOMED CT "Finding".
    """

    label: str
    score: float
    box: Box2D
    code: Code | None = None

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {self.box!r}")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"box must have x1 > x0 and y1 > y0 (end-exclusive), got {self.box!r}")
        if not math.isfinite(float(self.score)):
            raise ValueError(f"score must be a finite number, got {self.score!r}")
        self.box = box  # type: ignore[assignment]
        self.score = float(self.score)


def source_problems_2d(dataset: Dataset) -> list[str]:
    """What the source image lacks for a 2D SR, as ``"<Tag> missing"``/``"<Tag> empty"``; empty when complete.

    Example:
        >>> from pydicom import Dataset
        >>> source_problems_2d(Dataset())[:2]
        ['SOPClassUID missing', 'SOPInstanceUID missing']
    """
    problems = []
    for keyword in REQUIRED_2D_TAGS:
        if keyword not in dataset:
            problems.append(f"{keyword} missing")
        elif dataset.get(keyword) in (None, "", []):
            problems.append(f"{keyword} empty")
    frames = dataset.get("NumberOfFrames")
    if frames not in (None, "") and int(frames) > 1:
        problems.append(f"NumberOfFrames is {int(frames)} (one instance must be one 2D image)")
    return problems


def pixel_spacing_mm(dataset: Dataset) -> tuple[float, float] | None:
    """``(row, column)`` spacing in mm: ``PixelSpacing``, else ``ImagerPixelSpacing`` (at the detector, as for
    mammograms), else ``None`` (also for values that are not two positive numbers)."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = dataset.get(keyword)
        if value in (None, ""):
            continue
        try:
            spacing = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
        if len(spacing) == 2 and all(math.isfinite(v) and v > 0 for v in spacing):
            return spacing  # type: ignore[return-value]
        return None
    return None


def _fill_absent(source: Dataset) -> None:
    """Give the (copied) source the Type 2 attributes it lacks, empty: the SR's patient and study modules need them
    present, and archives of projection images often drop some (``PatientBirthDate``, ``StudyID``...)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import DataElement, empty_value_for_VR

    absent = [keyword for keyword in EMPTY_IF_ABSENT if keyword not in source]
    for keyword in absent:
        tag = tag_for_keyword(keyword)
        vr = dictionary_VR(tag)
        source[tag] = DataElement(tag, vr, empty_value_for_VR(vr))
    if absent:
        logger.info("DICOM SR: source lacks %s: written empty", ", ".join(absent))


def _check_inside(dataset: Dataset, detections: Sequence[Detection2D]) -> None:
    rows, cols = int(dataset.Rows), int(dataset.Columns)
    for index, det in enumerate(detections):
        x0, y0, x1, y1 = det.box
        if x0 < 0 or y0 < 0 or x1 > cols or y1 > rows:
            raise ValueError(f"detection {index} box {det.box} is outside the image (Columns {cols}, Rows {rows})")


def _rectangle(box: Box2D) -> np.ndarray:
    """A closed polyline ``(5, 2)`` of ``(column, row)`` points around the box (first point repeated last)."""
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float64)


def _finding_group(hd: Any, source: Dataset, detection: Detection2D, index: int, uid_entropy: Sequence[str],
                   algorithm: Any) -> Any:
    from pydicom.sr.codedict import codes

    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=_rectangle(detection.box),
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    score = hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=detection.score, unit=codes.UCUM.NoUnits,
                              algorithm_id=algorithm)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(hd, detection, index, uid_entropy),
        referenced_region=region,
        finding_type=coded(detection.code or FINDING),
        algorithm_id=algorithm,
        measurements=[score],
    )


def default_uid_entropy(dataset: Dataset, model_name: str, model_version: str) -> list[str]:
    """The UID sources when none are given: the image's ``SOPInstanceUID``, the model and ``"sr2d"``."""
    return [str(dataset.get("SOPInstanceUID", "")), model_name, model_version, "sr2d"]


def write_detection_sr_2d(
    dataset: Dataset,
    detections: Sequence[Detection2D],
    path: str | Path,
    *,
    model_name: str,
    model_version: str,
    uid_entropy: Sequence[str] | None = None,
    series_description: str | None = None,
    series_number: int = 302,
) -> Path:
    """Write 2D detections on one image as a Comprehensive 3D SR (TID 1500) and return the path.

    Args:
        dataset: the source image (pixel data not needed); it is the SR's evidence and every region's source.
        detections: the findings, at least one (with none, write only the sidecars).
        path: output file; written via ``.<name>.partial`` in the same folder, then renamed.
        model_name: algorithm (and observer device) name.
        model_version: algorithm version.
        uid_entropy: sources of the deterministic series/instance/tracking UIDs, e.g.
            ``[sop_instance_uid, model, version, weights_sha256, "sr"]``; default :func:`default_uid_entropy`.
        series_description: defaults to ``"<model_name> detections - research use only"`` (cut to 64).
        series_number: ``SeriesNumber`` of the SR series.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: source tags missing (:func:`source_problems_2d`; absent :data:`EMPTY_IF_ABSENT` attributes are
            written empty instead), a multi-frame source, no detections
            (highdicom's TID 1500 needs at least one measurement group), a box outside the image, or highdicom/pydicom
            failed (the message names the problem with every patient value redacted). Invalid patient or study values
            are not an error: highdicom gets a defensive copy in which they are empty.
        OSError: the file cannot be written.
    """
    hd = require_highdicom()
    with guard_phi([dataset], "cannot write the DICOM SR"):
        [source] = defensive_copies([dataset], what="DICOM SR")
        problems = source_problems_2d(source)
        if problems:
            raise ValueError(f"source image cannot be referenced: {', '.join(problems)}")
        if not detections:
            raise ValueError(
                "no detections: highdicom's TID 1500 report needs at least one finding; write only the sidecars"
            )
        _check_inside(source, detections)
        _fill_absent(source)
        entropy = list(uid_entropy) if uid_entropy is not None else default_uid_entropy(source, model_name,
                                                                                         model_version)
        algorithm, context = observation_context(hd, model_name, model_version)
        report = hd.sr.MeasurementReport(
            observation_context=context,
            procedure_reported=coded(procedure_code(str(source.get("Modality", "")))),
            imaging_measurements=[
                _finding_group(hd, source, det, i, entropy, algorithm) for i, det in enumerate(detections)
            ],
        )
        series_uid, sop_uid = seg_uids(entropy)
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source], content=report, series_instance_uid=series_uid, series_number=int(series_number),
            sop_instance_uid=sop_uid, instance_number=1, manufacturer="medkd", is_complete=True,
        )  # fmt: skip
        description = series_description if series_description is not None else (
            f"{model_name} detections - research use only"
        )
        sr.SeriesDescription = description[:LO_MAX]
        out = save_atomic(sr, path)
    logger.debug("wrote 2D SR with %d findings: %s", len(detections), out)
    return out


def detection_records_2d(
    detections: Sequence[Detection2D], dataset: Dataset, *, model_name: str, model_version: str
) -> list[dict[str, Any]]:
    """One flat, JSON-ready dict per detection (the CSV columns); sizes in mm are ``None`` without a spacing."""
    spacing = pixel_spacing_mm(dataset)
    records = []
    for index, det in enumerate(detections):
        x0, y0, x1, y1 = det.box
        scheme, value, meaning = det.code or FINDING
        records.append({
            "study_uid": str(dataset.get("StudyInstanceUID", "")),
            "series_uid": str(dataset.get("SeriesInstanceUID", "")),
            "sop_instance_uid": str(dataset.get("SOPInstanceUID", "")),
            "model_name": model_name, "model_version": model_version,
            "index": index, "tracking_id": tracking_label(det, index), "label": det.label, "score": det.score,
            "code_scheme": scheme, "code_value": value, "code_meaning": meaning,
            "x0": x0, "y0": y0, "x1": x1, "y1": y1, "width_px": x1 - x0, "height_px": y1 - y0,
            "width_mm": None if spacing is None else (x1 - x0) * spacing[1],
            "height_mm": None if spacing is None else (y1 - y0) * spacing[0],
        })  # fmt: skip
    return records


def write_detection_sidecars_2d(
    detections: Sequence[Detection2D],
    out_dir: str | Path,
    *,
    dataset: Dataset,
    model_name: str,
    model_version: str,
) -> tuple[Path, Path]:
    """Write ``detections.json`` and ``detections.csv`` into ``out_dir`` (atomically) and return both paths.

    The JSON holds the image's identifiers and size, the model and a ``detections`` list of
    :func:`detection_records_2d`; the CSV has one row per detection with the same fields (a header only when there
    are none).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = detection_records_2d(detections, dataset, model_name=model_name, model_version=model_version)
    spacing = pixel_spacing_mm(dataset)
    document = {
        "study_uid": str(dataset.get("StudyInstanceUID", "")),
        "series_uid": str(dataset.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(dataset.get("SOPInstanceUID", "")),
        "modality": str(dataset.get("Modality", "")),
        "rows": int(dataset.get("Rows", 0) or 0), "columns": int(dataset.get("Columns", 0) or 0),
        "pixel_spacing_mm": None if spacing is None else list(spacing),
        "model": {"name": model_name, "version": model_version},
        "box_convention": "pixel (x0, y0, x1, y1), x = column, y = row, end-exclusive (pixel i spans [i, i + 1))",
        "detections": records,
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    json_path = write_text_atomic(out_dir / "detections.json", json.dumps(document, indent=2) + "\n")
    csv_path = write_text_atomic(out_dir / "detections.csv", buffer.getvalue())
    return json_path, csv_path
