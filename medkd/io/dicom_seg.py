# SPDX-License-Identifier: Apache-2.0
"""Write a label map as a DICOM Segmentation (SEG) on the source series, with highdicom.

Stage 5 of the DICOM batch pipeline (see ``docs`` / the deployment spec): the mask predicted on a sorted series
becomes one multi-frame SEG instance. Frame ``i`` of the mask belongs to ``datasets[i]``: highdicom does not sort,
so the caller passes the slices in the order the volume was built (sorted along the slice normal).

Segments are numbered ``1..K`` in the order of ``labels`` (label values need not be contiguous: the mask value
``labels[k].value`` becomes segment ``k + 1``). Each segment carries its SNOMED CT property type and category,
``algorithm_type=AUTOMATIC`` and an algorithm identification of family "Artificial Intelligence". Every segment is
described even when it has no voxels; an all-empty mask is written with all (empty) frames, since a SEG needs at
least one frame. UIDs come from :func:`seg_uids`, so a rerun with the same inputs writes the same file names and
UIDs. The file is written uncompressed (Explicit VR Little Endian) and atomically.

Patient data stays out of messages: highdicom gets defensive copies of the source slices
(:func:`medkd.io.dicom_patient.defensive_copies`) in which a patient or study attribute with an invalid value (a birth
date ``1945-03-17``, a sex ``Female``) is written empty, with a count per keyword in the log; and any error from
pydicom or highdicom is re-raised with the source's patient values redacted (:func:`medkd.io.phi.guard_phi`).

:func:`validate_with_dciodvfy` runs David Clunie's ``dciodvfy`` (Debian package ``dicom3tools``) when it is
installed and returns its error lines.

Example:
    >>> import tempfile, numpy as np, pydicom
    >>> from medkd.data.synthetic_dicom import write_dicom_series
    >>> from medkd.io.labels import labels_from_names
    >>> folder = tempfile.mkdtemp()
    >>> series = write_dicom_series(folder, n_slices=3, rows=8, cols=8)
    >>> datasets = [pydicom.dcmread(p) for p in series.paths]
    >>> path = write_seg(datasets, series.mask, labels_from_names(["background", "LV"]), f"{folder}/seg.dcm",
    ...                  model_name="demo", model_version="1", uid_entropy=[series.series_uid, "demo", "1", "seg"])
    >>> pydicom.dcmread(path).Modality
    'SEG'
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medkd import __version__
from medkd.io.atomic import atomic_path
from medkd.io.dicom_patient import defensive_copies
from medkd.io.labels import Code, LabelInfo
from medkd.io.phi import guard_phi, quiet_phi_warnings

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset

__all__ = [
    "SegType",
    "LO_MAX",
    "require_highdicom",
    "source_tag_problems",
    "check_source",
    "seg_uids",
    "coded",
    "segment_descriptions",
    "write_seg",
    "save_atomic",
    "dciodvfy_messages",
    "validate_with_dciodvfy",
    "quiet_phi_warnings",
]

logger = logging.getLogger(__name__)

LO_MAX = 64  # DICOM Long String (LO) limit
_MISSING_HIGHDICOM = 'highdicom is needed to write DICOM SEG/SR: pip install "medkd[dicom]"'


class SegType(StrEnum):
    """SEG encodings: ``binary`` (one bit-packed frame per slice and segment; every viewer reads it) or
    ``labelmap`` (one integer frame per slice, Label Map Segmentation Storage; few viewers read it yet)."""

    BINARY = "binary"
    LABELMAP = "labelmap"


def _seg_type(value: SegType | str) -> SegType:
    try:
        return SegType(str(value).lower())
    except ValueError:
        raise ValueError(f"unknown seg_type {value!r}; choose one of {', '.join(t.value for t in SegType)}") from None


def require_highdicom() -> Any:
    """The ``highdicom`` module, or an ``ImportError`` that names the ``dicom`` extra."""
    try:
        import highdicom
    except ImportError as err:  # pragma: no cover - the dev environment has it
        raise ImportError(_MISSING_HIGHDICOM) from err
    return highdicom


def source_tag_problems(datasets: Sequence[Dataset]) -> list[str]:
    """What the source slices lack for a SEG or SR, as ``"<Tag> missing"``/``"<Tag> empty"`` (no duplicates):
    the volume stage's check (:func:`medkd.io.dicom_volume.tag_problems`), so both stages agree.

    An empty ``SliceThickness`` is fine: :func:`write_seg` then writes the slice spacing in its place.

    Example:
        >>> from pydicom import Dataset
        >>> "SOPInstanceUID missing" in source_tag_problems([Dataset()])
        True
    """
    from medkd.io.dicom_volume import tag_problems

    return list(tag_problems(datasets))


def check_source(datasets: Sequence[Dataset]) -> None:
    """Raise ``ValueError`` naming what :func:`source_tag_problems` finds (and when there are no slices)."""
    if not datasets:
        raise ValueError("no source datasets: a SEG or SR must reference at least one source image")
    problems = source_tag_problems(datasets)
    if problems:
        raise ValueError(f"source series cannot be referenced: {', '.join(problems)}")


def seg_uids(entropy: Sequence[str]) -> tuple[str, str]:
    """Deterministic ``(SeriesInstanceUID, SOPInstanceUID)`` from the entropy sources.

    The same entropy (series UID, model name, version, weights hash, kind) always gives the same UIDs, so reruns
    are idempotent; any difference gives different UIDs.

    Example:
        >>> seg_uids(["1.2.3", "m", "1", "seg"]) == seg_uids(["1.2.3", "m", "1", "seg"])
        True
    """
    from pydicom.uid import generate_uid

    base = [str(e) for e in entropy]
    return str(generate_uid(entropy_srcs=[*base, "series"])), str(generate_uid(entropy_srcs=[*base, "instance"]))


def coded(code: Code) -> Any:
    """A :class:`pydicom.sr.coding.Code` from medkd's ``(scheme, value, meaning)`` tuple (meaning cut to 64)."""
    from pydicom.sr.coding import Code as DicomCode

    scheme, value, meaning = code
    return DicomCode(value=str(value), scheme_designator=str(scheme), meaning=str(meaning)[:LO_MAX])


def _check_labels(labels: Sequence[LabelInfo]) -> None:
    if not labels:
        raise ValueError("a SEG needs at least one label (segment)")
    values = [int(label.value) for label in labels]
    if len(set(values)) != len(values) or min(values) < 1:
        raise ValueError(f"label values must be unique integers >= 1 (0 is background), got {values}")


def segment_descriptions(labels: Sequence[LabelInfo], *, model_name: str, model_version: str) -> list[Any]:
    """One :class:`highdicom.seg.SegmentDescription` per label; segment numbers ``1..K`` in label order."""
    hd = require_highdicom()
    from pydicom.sr.codedict import codes

    _check_labels(labels)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:LO_MAX], version=model_version[:LO_MAX], family=codes.cid7162.ArtificialIntelligence
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label.name[:LO_MAX],
            segmented_property_category=coded(label.category),
            segmented_property_type=coded(label.code),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(float(c) for c in label.colour[:3])),
        )
        for number, label in enumerate(labels, start=1)
    ]


def _segment_numbers(mask: np.ndarray, labels: Sequence[LabelInfo]) -> np.ndarray:
    """The mask with label values replaced by segment numbers ``1..K``; unknown values raise ``ValueError``."""
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer label values, got dtype {mask.dtype}")
    # bincount is O(n) for the usual uint8/uint16 label maps; signed masks may hold negatives, so sort instead
    present = np.flatnonzero(np.bincount(mask.ravel())) if mask.dtype.kind == "u" else np.unique(mask)
    known = {0, *(int(label.value) for label in labels)}
    unknown = sorted(int(v) for v in present if int(v) not in known)
    if unknown:
        raise ValueError(f"mask values {unknown} are not among the labels {sorted(known - {0})} (0 is background)")
    lut = np.zeros(max(known) + 1, dtype=np.uint8 if len(labels) < 256 else np.uint16)
    for number, label in enumerate(labels, start=1):
        lut[int(label.value)] = number
    return lut[mask]  # every value is a valid, non-negative index now


def _check_shape(datasets: Sequence[Dataset], mask: np.ndarray) -> None:
    expected = (len(datasets), int(datasets[0].Rows), int(datasets[0].Columns))
    if mask.shape != expected:
        raise ValueError(f"mask shape {mask.shape} does not match the series (slices, Rows, Columns) = {expected}")


def _fill_slice_thickness(seg: Dataset, datasets: Sequence[Dataset]) -> None:
    """Give the SEG's shared Pixel Measures a ``SliceThickness`` (Type 1C there) when the source's is empty.

    highdicom copies the source's pixel measures as they are (and overrides ones passed in when the pixel spacing
    matches), so an empty source value would leave the SEG invalid. The slice spacing (distance between the first
    two positions; ``SpacingBetweenSlices`` or 1 mm for a single slice) stands in for it.
    """
    first = datasets[0]
    if first.get("SliceThickness") not in (None, ""):
        return
    if len(datasets) > 1:
        step = np.subtract([float(v) for v in datasets[1].ImagePositionPatient],
                           [float(v) for v in first.ImagePositionPatient])  # fmt: skip
        thickness = float(np.linalg.norm(step))
    else:
        thickness = float(first.get("SpacingBetweenSlices") or 1.0)
    seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness = round(thickness, 6)
    logger.debug("source SliceThickness is empty: wrote the slice spacing %.6g mm instead", thickness)


def save_atomic(dataset: Dataset, path: str | Path) -> Path:
    """Save a DICOM dataset as a DICOM file (preamble + file meta) via ``.<name>.partial`` and :func:`os.replace`.

    On any error the partial file is removed and nothing is left at ``path`` (an older file there stays untouched).
    """
    from pydicom import dcmwrite

    with atomic_path(path) as tmp:
        dcmwrite(tmp, dataset, enforce_file_format=True)
    return Path(path)


def write_seg(
    datasets: Sequence[Dataset],
    mask: np.ndarray,
    labels: Sequence[LabelInfo],
    path: str | Path,
    *,
    model_name: str,
    model_version: str,
    uid_entropy: Sequence[str],
    series_description: str | None = None,
    seg_type: SegType | str = SegType.BINARY,
    series_number: int = 300,
    device_serial_number: str | None = None,
) -> Path:
    """Write ``mask`` as a DICOM SEG referencing ``datasets`` and return the path written.

    Args:
        datasets: the source slices, sorted along the slice normal, as used to build the volume; frame ``i`` of
            ``mask`` belongs to ``datasets[i]``. They need the tags highdicom copies (patient/study module,
            ``FrameOfReferenceUID``, ``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``...).
        mask: label map ``(slices, rows, cols)`` of label values (0 = background), e.g. uint8.
        labels: the foreground labels; ``labels[k]`` becomes segment ``k + 1``. Labels absent from the mask are
            still described.
        path: output file; written via ``.<name>.partial`` in the same folder, then renamed.
        model_name: algorithm name (also ``ManufacturerModelName``), cut to 64 characters.
        model_version: algorithm version, also in ``SoftwareVersions`` next to medkd's version.
        uid_entropy: sources for :func:`seg_uids`, e.g. ``[series_uid, model, version, weights_sha256, "seg"]``.
        series_description: defaults to ``"<model_name> segmentation - research use only"`` (cut to 64).
        seg_type: ``binary`` (default) or ``labelmap`` (highdicom >= 0.24; few viewers read it).
        series_number: ``SeriesNumber`` of the SEG series.
        device_serial_number: ``DeviceSerialNumber``; defaults to ``model_version``.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: mask shape is not ``(len(datasets), Rows, Columns)``, the mask holds values that are not label
            values (named in the message), labels are empty or repeat a value, or ``seg_type`` is unknown; or
            highdicom/pydicom failed (the message names the problem with every patient value redacted). Invalid
            patient or study values are not an error: they are written empty (see the module docstring).
        OSError: the file cannot be written.
    """
    hd = require_highdicom()
    kind = _seg_type(seg_type)
    mask = np.asarray(mask)
    with guard_phi(datasets, "cannot write the DICOM SEG"):
        sources = defensive_copies(datasets, what="DICOM SEG")
        check_source(sources)
        _check_shape(sources, mask)
        descriptions = segment_descriptions(labels, model_name=model_name, model_version=model_version)
        pixels = _segment_numbers(mask, labels)
        series_uid, sop_uid = seg_uids(uid_entropy)
        description = series_description if series_description is not None else (
            f"{model_name} segmentation - research use only"
        )
        seg = _build_seg(hd, sources, pixels, kind, descriptions, series_uid, sop_uid, series_number, model_name,
                         model_version, device_serial_number, description)
        _fill_slice_thickness(seg, sources)
        out = save_atomic(seg, path)
    logger.debug("wrote %s SEG with %d segments, %d frames: %s", kind.value, len(labels), seg.NumberOfFrames, out)
    return out


def _build_seg(
    hd: Any, datasets: Sequence[Any], pixels: np.ndarray, kind: SegType, descriptions: list, series_uid: str,
    sop_uid: str, series_number: int, model_name: str, model_version: str, device_serial_number: str | None,
    description: str,
) -> Any:
    return hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues[kind.name],
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=int(series_number),
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="medkd",
        manufacturer_model_name=model_name[:LO_MAX],
        # a list, not the tuple highdicom's hint names: pydicom 3 warns when a tuple is assigned to an LO element
        software_versions=[f"medkd {__version__}"[:LO_MAX], model_version[:LO_MAX] or "unknown"],
        device_serial_number=(device_serial_number or model_version or "unknown")[:LO_MAX],
        series_description=description[:LO_MAX],
        content_description=f"{model_name} {model_version}"[:LO_MAX],
        # with no foreground at all highdicom would warn and keep every frame anyway: say so explicitly
        omit_empty_frames=bool(pixels.any()),
        transfer_syntax_uid="1.2.840.10008.1.2.1",  # Explicit VR Little Endian: uncompressed
    )


def dciodvfy_messages(path: str | Path, timeout: float = 120.0) -> list[str] | None:
    """All message lines ``dciodvfy`` prints for a file, or ``None`` when ``dciodvfy`` is not installed."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    done = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    return [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]


def validate_with_dciodvfy(path: str | Path) -> list[str] | None:
    """``dciodvfy``'s ``Error`` lines for a file (empty when valid), or ``None`` when it is not installed.

    ``dciodvfy`` comes with the Debian/Ubuntu package ``dicom3tools``. Warnings are not returned; use
    :func:`dciodvfy_messages` for everything.
    """
    messages = dciodvfy_messages(path)
    return None if messages is None else [line for line in messages if line.startswith("Error")]
