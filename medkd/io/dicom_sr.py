# SPDX-License-Identifier: Apache-2.0
"""Write 3D detections as a DICOM Comprehensive 3D SR (TID 1500) and as JSON/CSV sidecars.

Stage 5 of the DICOM batch pipeline for detection models. A :class:`Detection` is a box in the voxel index space
of the sorted series, ``(z0, y0, x0, z1, y1, x1)`` = (slice, row, column), end-exclusive: it covers slices
``z0 .. z1 - 1``. Voxel ``i`` spans ``[i, i + 1)`` along each axis and its centre (the position DICOM gives in
``ImagePositionPatient`` for a slice's first pixel) sits at ``i + 0.5``; fractional boxes use the same convention.

The SR (:func:`write_detection_sr`) is a TID 1500 Measurement Report with one TID 1410 "Planar ROI measurements"
group per detection: a ``TrackingIdentifier`` (deterministic UID), the finding type (the detection's code, or
SNOMED CT "Finding"), an ``ImageRegion3D`` POINT at the box centre in patient coordinates (LPS mm, referencing the
series' ``FrameOfReferenceUID``), the score as DCM "Certainty of Finding" (no units), and the largest box extent in
mm as SNOMED CT "Diameter". The source series is the evidence. (highdicom's volumetric TID 1411 group takes no
``ImageRegion3D``; a box centre is a point, so the planar group is the one that fits.)

The sidecars (:func:`write_detection_sidecars`) are always written and authoritative: ``detections.json`` and
``detections.csv`` with the study/series UIDs, label, score, voxel box, LPS box corners, centre and model version.

Example:
    >>> import tempfile, pydicom
    >>> from medkd.data.synthetic_dicom import write_dicom_series
    >>> folder = tempfile.mkdtemp()
    >>> series = write_dicom_series(folder, n_slices=4, rows=8, cols=8, origin=(0, 0, 0), pixel_spacing=(1, 1),
    ...                             slice_spacing=2, shuffle_names=False)
    >>> datasets = [pydicom.dcmread(p) for p in series.paths]
    >>> box_centre_lps(datasets, (0, 0, 0, 2, 4, 4)).tolist()  # voxel centres: slice 0.5, row/col 1.5
    [1.5, 1.5, 1.0]
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
from medkd.io.dicom_seg import LO_MAX, check_source, coded, require_highdicom, save_atomic, seg_uids
from medkd.io.labels import Code
from medkd.io.phi import guard_phi

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

__all__ = [
    "Detection",
    "FINDING",
    "index_to_lps_affine",
    "box_centre_lps",
    "box_corners_lps",
    "box_diameter_mm",
    "detection_records",
    "write_detection_sr",
    "write_detection_sidecars",
    "procedure_code",
    "observation_context",
    "tracking_identifier",
    "tracking_label",
]

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float, float, float]

#: default finding type of a detection without its own code
FINDING: Code = ("SCT", "404684003", "Finding")

#: procedure reported in the SR, by source Modality (anything else: "Imaging procedure")
_PROCEDURES: dict[str, Code] = {
    "CT": ("SCT", "77477000", "Computed tomography"),
    "MR": ("SCT", "113091000", "Magnetic resonance imaging"),
    "MG": ("SCT", "71651007", "Mammography"),
    "DX": ("SCT", "363680008", "Radiographic imaging procedure"),
    "CR": ("SCT", "363680008", "Radiographic imaging procedure"),
}
_IMAGING: Code = ("SCT", "363679005", "Imaging procedure")

_CSV_FIELDS: tuple[str, ...] = (
    "study_uid", "series_uid", "frame_of_reference_uid", "model_name", "model_version", "index", "tracking_id",
    "label", "score", "code_scheme", "code_value", "code_meaning",
    "z0", "y0", "x0", "z1", "y1", "x1",
    "start_lps_x", "start_lps_y", "start_lps_z", "end_lps_x", "end_lps_y", "end_lps_z",
    "centre_lps_x", "centre_lps_y", "centre_lps_z", "diameter_mm", "centre_slice", "centre_sop_instance_uid",
)  # fmt: skip


@dataclass
class Detection:
    """One detected finding.

    Attributes:
        label: class name as the model knows it.
        score: detection confidence (written as given, no units).
        box: ``(z0, y0, x0, z1, y1, x1)`` in ``(slice, row, column)`` voxel index space of the sorted series,
            end-exclusive (``z1 > z0`` etc.).
        code: finding type ``(scheme, value, meaning)``; ``None`` means the generic SNOMED CT "Finding".
    """

    label: str
    score: float
    box: Box
    code: Code | None = None

    def __post_init__(self) -> None:
        box = tuple(float(v) for v in self.box)
        if len(box) != 6 or not all(math.isfinite(v) for v in box):
            raise ValueError(f"box must be 6 finite numbers (z0, y0, x0, z1, y1, x1), got {self.box!r}")
        if not all(box[i + 3] > box[i] for i in range(3)):
            raise ValueError(f"box must have z1 > z0, y1 > y0, x1 > x0 (end-exclusive), got {self.box!r}")
        if not math.isfinite(float(self.score)):
            raise ValueError(f"score must be a finite number, got {self.score!r}")
        self.box = box  # type: ignore[assignment]
        self.score = float(self.score)


def _vector(values: Any) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def index_to_lps_affine(datasets: Sequence[Dataset]) -> np.ndarray:
    """4x4 matrix mapping voxel-centre indices ``(slice, row, col, 1)`` of the sorted series to LPS mm.

    Uses ``ImagePositionPatient`` of the first and last slice (the slice step is their difference over
    ``n - 1``), ``ImageOrientationPatient`` and ``PixelSpacing`` (row spacing, column spacing). A single slice steps
    along the normal by ``SpacingBetweenSlices`` or ``SliceThickness`` (1 mm if neither is set).
    """
    if not datasets:
        raise ValueError("no datasets: need the sorted source slices")
    first = datasets[0]
    orientation = _vector(first.ImageOrientationPatient)
    row_cosine, col_cosine = orientation[:3], orientation[3:]  # along a row (increasing column), down a column
    row_spacing, col_spacing = _vector(first.PixelSpacing)
    origin = _vector(first.ImagePositionPatient)
    if len(datasets) > 1:
        step = (_vector(datasets[-1].ImagePositionPatient) - origin) / (len(datasets) - 1)
    else:
        thickness = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        step = np.cross(row_cosine, col_cosine) * float(thickness)
    affine = np.eye(4)
    affine[:3, :4] = np.stack([step, col_cosine * row_spacing, row_cosine * col_spacing, origin], axis=1)
    return affine


def _to_lps(datasets: Sequence[Dataset], points: np.ndarray) -> np.ndarray:
    """LPS mm of voxel-centre index points ``(N, 3)``."""
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    return (homogeneous @ index_to_lps_affine(datasets).T)[:, :3]


def box_centre_lps(datasets: Sequence[Dataset], box: Sequence[float]) -> np.ndarray:
    """Centre ``(3,)`` of an end-exclusive voxel box in patient LPS mm."""
    z0, y0, x0, z1, y1, x1 = (float(v) for v in box)
    centre = np.array([[(z0 + z1) / 2 - 0.5, (y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5]])
    return _to_lps(datasets, centre)[0]


def box_corners_lps(datasets: Sequence[Dataset], box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The box's outer corners in LPS mm: the start edge ``(z0, y0, x0)`` and the end edge ``(z1, y1, x1)``."""
    z0, y0, x0, z1, y1, x1 = (float(v) for v in box)
    start, end = _to_lps(datasets, np.array([[z0, y0, x0], [z1, y1, x1]]) - 0.5)
    return start, end


def box_diameter_mm(datasets: Sequence[Dataset], box: Sequence[float]) -> float:
    """The largest edge length of the box in mm (along slices, rows or columns)."""
    extent = np.diag(np.asarray(box[3:], dtype=np.float64) - np.asarray(box[:3], dtype=np.float64))
    edges = extent @ index_to_lps_affine(datasets)[:3, :3].T  # each row: one box edge as an LPS vector
    return float(np.linalg.norm(edges, axis=1).max())


def tracking_label(detection: Any, index: int) -> str:
    """The tracking identifier text of finding ``index``: ``"<label> #<index + 1>"`` (cut to 64)."""
    return f"{detection.label} #{index + 1}"[:LO_MAX]


_tracking_id = tracking_label


def _tracking_uid(uid_entropy: Sequence[str], index: int) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[*(str(e) for e in uid_entropy), "finding", str(index)]))


def tracking_identifier(hd: Any, detection: Any, index: int, uid_entropy: Sequence[str]) -> Any:
    """The ``TrackingIdentifier`` of finding ``index``: ``"<label> #<index + 1>"`` and a UID from ``uid_entropy``
    (the same inputs give the same UID, so reruns are idempotent). ``detection`` needs a ``label``."""
    return hd.sr.TrackingIdentifier(uid=_tracking_uid(uid_entropy, index), identifier=_tracking_id(detection, index))


def procedure_code(modality: str) -> Code:
    """The procedure an SR reports, by the source ``Modality`` (CT, MR, MG, DX/CR; else "Imaging procedure")."""
    return _PROCEDURES.get(str(modality).upper(), _IMAGING)


def observation_context(hd: Any, model_name: str, model_version: str) -> tuple[Any, Any]:
    """``(AlgorithmIdentification, ObservationContext)`` of a report made by the model as observer device."""
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    algorithm = hd.sr.AlgorithmIdentification(name=model_name[:LO_MAX], version=model_version[:LO_MAX])
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(generate_uid(entropy_srcs=["medkd", model_name, model_version, "device"])),
        name=model_name[:LO_MAX], manufacturer_name="medkd", model_name=model_name[:LO_MAX],
    )  # fmt: skip
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device)
    )  # fmt: skip
    return algorithm, context


def _finding_group(
    hd: Any, datasets: Sequence[Dataset], detection: Detection, index: int, uid_entropy: Sequence[str], algorithm: Any
) -> Any:
    from pydicom.sr.codedict import codes

    centre = box_centre_lps(datasets, detection.box)
    region = hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=centre.reshape(1, 3),
        frame_of_reference_uid=str(datasets[0].FrameOfReferenceUID),
    )
    measurements = [
        hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=detection.score, unit=codes.UCUM.NoUnits,
                          algorithm_id=algorithm),
        hd.sr.Measurement(name=codes.SCT.Diameter, value=box_diameter_mm(datasets, detection.box),
                          unit=codes.UCUM.Millimeter, algorithm_id=algorithm),
    ]  # fmt: skip
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier(hd, detection, index, uid_entropy),
        referenced_region=region,
        finding_type=coded(detection.code or FINDING),
        algorithm_id=algorithm,
        measurements=measurements,
    )


def write_detection_sr(
    datasets: Sequence[Dataset],
    detections: Sequence[Detection],
    path: str | Path,
    *,
    model_name: str,
    model_version: str,
    uid_entropy: Sequence[str],
    series_description: str | None = None,
    series_number: int = 301,
) -> Path:
    """Write detections as a Comprehensive 3D SR (TID 1500) on the source series and return the path.

    Args:
        datasets: the sorted source slices (pixel data not needed); all of them are the SR's evidence.
        detections: the findings, at least one (with none, write only the sidecars).
        path: output file; written via ``.<name>.partial`` in the same folder, then renamed.
        model_name: algorithm (and observer device) name.
        model_version: algorithm version.
        uid_entropy: sources for the deterministic series/instance/tracking UIDs, e.g.
            ``[series_uid, model, version, weights_sha256, "sr"]``.
        series_description: defaults to ``"<model_name> detections - research use only"`` (cut to 64).
        series_number: ``SeriesNumber`` of the SR series.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: no datasets, source tags missing (see :func:`medkd.io.dicom_seg.source_tag_problems`), no
            detections (highdicom's TID 1500 needs at least one measurement group), or highdicom/pydicom failed (the
            message names the problem with every patient value redacted). Invalid patient or study values are not
            an error: highdicom gets defensive copies in which they are empty
            (:func:`medkd.io.dicom_patient.defensive_copies`).
        OSError: the file cannot be written.
    """
    hd = require_highdicom()
    with guard_phi(datasets, "cannot write the DICOM SR"):
        sources = defensive_copies(datasets, what="DICOM SR")
        check_source(sources)
        if not detections:
            raise ValueError(
                "no detections: highdicom's TID 1500 report needs at least one finding; write only the sidecars"
            )
        sr = _build_sr(hd, sources, detections, model_name=model_name, model_version=model_version,
                       uid_entropy=uid_entropy, series_number=series_number)
        description = series_description if series_description is not None else (
            f"{model_name} detections - research use only"
        )
        sr.SeriesDescription = description[:LO_MAX]
        out = save_atomic(sr, path)
    logger.debug("wrote SR with %d findings: %s", len(detections), out)
    return out


def _build_sr(
    hd: Any, datasets: Sequence[Dataset], detections: Sequence[Detection], *, model_name: str, model_version: str,
    uid_entropy: Sequence[str], series_number: int,
) -> Any:
    """The highdicom Comprehensive 3D SR of ``detections`` on (defensive copies of) the source slices."""
    algorithm, context = observation_context(hd, model_name, model_version)
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=coded(procedure_code(str(datasets[0].get("Modality", "")))),
        imaging_measurements=[
            _finding_group(hd, datasets, det, i, uid_entropy, algorithm) for i, det in enumerate(detections)
        ],
    )
    series_uid, sop_uid = seg_uids(uid_entropy)
    return hd.sr.Comprehensive3DSR(
        evidence=list(datasets),
        content=report,
        series_instance_uid=series_uid,
        series_number=int(series_number),
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="medkd",
        is_complete=True,
    )


def detection_records(
    detections: Sequence[Detection], datasets: Sequence[Dataset], *, model_name: str, model_version: str
) -> list[dict[str, Any]]:
    """One flat, JSON-ready dict per detection (the CSV columns), geometry from the sorted ``datasets``."""
    first = datasets[0]
    records = []
    for index, det in enumerate(detections):
        start, end = box_corners_lps(datasets, det.box)
        centre = box_centre_lps(datasets, det.box)
        slice_index = int(np.clip(math.floor((det.box[0] + det.box[3]) / 2), 0, len(datasets) - 1))
        scheme, value, meaning = det.code or FINDING
        records.append({
            "study_uid": str(first.StudyInstanceUID), "series_uid": str(first.SeriesInstanceUID),
            "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
            "model_name": model_name, "model_version": model_version,
            "index": index, "tracking_id": _tracking_id(det, index), "label": det.label, "score": det.score,
            "code_scheme": scheme, "code_value": value, "code_meaning": meaning,
            **dict(zip(("z0", "y0", "x0", "z1", "y1", "x1"), det.box)),
            **{f"start_lps_{a}": float(v) for a, v in zip("xyz", start)},
            **{f"end_lps_{a}": float(v) for a, v in zip("xyz", end)},
            **{f"centre_lps_{a}": float(v) for a, v in zip("xyz", centre)},
            "diameter_mm": box_diameter_mm(datasets, det.box),
            "centre_slice": slice_index,
            "centre_sop_instance_uid": str(datasets[slice_index].SOPInstanceUID),
        })  # fmt: skip
    return records


def write_detection_sidecars(
    detections: Sequence[Detection],
    out_dir: str | Path,
    *,
    datasets: Sequence[Dataset],
    model_name: str,
    model_version: str,
) -> tuple[Path, Path]:
    """Write ``detections.json`` and ``detections.csv`` into ``out_dir`` (atomically) and return both paths.

    The JSON holds the series identifiers, the model and a ``detections`` list of :func:`detection_records`;
    the CSV has one row per detection with the same fields (a header only when there are none).
    """
    if not datasets:
        raise ValueError("no source datasets: the sidecars need the series geometry and UIDs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = detection_records(detections, datasets, model_name=model_name, model_version=model_version)
    first = datasets[0]
    document = {
        "study_uid": str(first.StudyInstanceUID),
        "series_uid": str(first.SeriesInstanceUID),
        "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "")),
        "model": {"name": model_name, "version": model_version},
        "box_convention": "voxel (z0, y0, x0, z1, y1, x1) = (slice, row, col) of the sorted series, end-exclusive; "
        "LPS in mm",
        "detections": records,
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(_CSV_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    json_path = write_text_atomic(out_dir / "detections.json", json.dumps(document, indent=2) + "\n")
    csv_path = write_text_atomic(out_dir / "detections.csv", buffer.getvalue())
    return json_path, csv_path
