# SPDX-License-Identifier: Apache-2.0
"""Keep patient data out of every message: reports, logs, the console and the app.

Exceptions and log lines of pydicom and highdicom quote the offending value (``Invalid value for VR DA:
'1945-03-17'``). Anything medkd shows a person goes through :func:`redact` (or :func:`safe_error`) with the datasets
involved: every value of their patient and study attributes (:data:`PHI_KEYWORDS`) is replaced by ``<redacted>``,
also where a message quotes it escaped (``repr``, ``ascii``, JSON, ``b'...'`` bytes), one of its multi-values or a
person-name component. So a message keeps the tag keyword and the problem but never the value.

:func:`guard_phi` wraps a call into pydicom/highdicom: their warnings are kept out of stderr (logged redacted at
DEBUG), their log records are redacted while it runs, and an exception that quotes a value is re-raised with the
values redacted and without its chain (``from None``), so a traceback does not carry the original text either.

Example:
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientBirthDate = "Doe^Jane", "1945-03-17"
    >>> redact("Invalid value for VR DA: '1945-03-17' (Doe^Jane, Jane)", phi_values([ds]))
    "Invalid value for VR DA: '<redacted>' (<redacted>, <redacted>)"
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from collections.abc import Sequence as SequenceABC
from functools import lru_cache
from typing import Any

__all__ = [
    "MIN_REDACT_LENGTH",
    "HIGHDICOM_COPIED_MODULES",
    "PHI_KEYWORDS",
    "REDACTED",
    "THIRD_PARTY_LOGGERS",
    "WHOLE_WORD_BELOW",
    "guard_phi",
    "phi_index",
    "phi_values",
    "quiet_phi_warnings",
    "redact",
    "redacting_logs",
    "safe_error",
]

logger = logging.getLogger(__name__)

REDACTED = "<redacted>"
#: values shorter than this are not searched for (a sex of ``M`` would blank every M of a message); such short values
#: are codes (sex, a one-digit study ID) rather than names or identifiers
MIN_REDACT_LENGTH = 3
#: values shorter than this are replaced only as whole words (``045Y`` is not cut out of ``1045Yx``)
WHOLE_WORD_BELOW = 6
#: loggers (and their children) whose records are redacted while :func:`guard_phi` / :func:`redacting_logs` run
THIRD_PARTY_LOGGERS: tuple[str, ...] = ("pydicom", "highdicom")
_MAX_DEPTH = 8  # sequence nesting searched for values


def _unique(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(keyword for group in groups for keyword in group))


#: root attributes of the modules highdicom 0.28 copies from a source image (``SOPClass.copy_patient_and_study_
#: information`` and, for a SEG, ``copy_specimen_information``); tests/io/test_dicom_patient.py checks this table
#: against the installed highdicom
HIGHDICOM_COPIED_MODULES: dict[str, tuple[str, ...]] = {
    "patient": (
        "ReferencedPatientSequence", "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID",
        "IssuerOfPatientIDQualifiersSequence", "SourcePatientGroupIdentificationSequence",
        "GroupOfPatientsIdentificationSequence", "PatientBirthDate", "PatientBirthTime",
        "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar", "PatientAlternativeCalendar",
        "PatientSex", "QualityControlSubject", "StrainDescription", "StrainNomenclature", "StrainStockSequence",
        "StrainAdditionalInformation", "StrainCodeSequence", "GeneticModificationsSequence", "OtherPatientNames",
        "OtherPatientIDsSequence", "ReferencedPatientPhotoSequence", "EthnicGroupCodeSequence",
        "PatientSpeciesDescription", "PatientSpeciesCodeSequence", "PatientBreedDescription",
        "PatientBreedCodeSequence", "BreedRegistrationSequence", "ResponsiblePerson", "ResponsiblePersonRole",
        "ResponsibleOrganization", "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
        "DeidentificationMethodCodeSequence",
    ),
    "clinical-trial-subject": (
        "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
        "IssuerOfClinicalTrialProtocolID", "OtherClinicalTrialProtocolIDsSequence", "ClinicalTrialSiteID",
        "ClinicalTrialSiteName", "IssuerOfClinicalTrialSiteID", "ClinicalTrialSubjectID",
        "IssuerOfClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "IssuerOfClinicalTrialSubjectReadingID",
        "ClinicalTrialProtocolEthicsCommitteeName", "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    ),
    "general-study": (
        "StudyDate", "StudyTime", "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
        "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName",
        "ConsultingPhysicianIdentificationSequence", "StudyDescription", "ProcedureCodeSequence", "PhysiciansOfRecord",
        "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
        "PhysiciansReadingStudyIdentificationSequence", "ReferencedStudySequence", "StudyInstanceUID", "StudyID",
        "RequestingService", "RequestingServiceCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    ),
    "patient-study": (
        "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "PatientAge", "PatientSize",
        "PatientSizeCodeSequence", "PatientBodyMassIndex", "MeasuredAPDimension", "MeasuredLateralDimension",
        "PatientWeight", "MedicalAlerts", "Allergies", "Occupation", "SmokingStatus", "AdditionalPatientHistory",
        "PregnancyStatus", "LastMenstrualDate", "PatientSexNeutered", "ReasonForVisit", "ReasonForVisitCodeSequence",
        "AdmissionID", "IssuerOfAdmissionIDSequence", "ServiceEpisodeID", "ServiceEpisodeDescription",
        "IssuerOfServiceEpisodeIDSequence", "PatientState",
    ),
    "clinical-trial-study": (
        "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription", "LongitudinalTemporalOffsetFromEvent",
        "LongitudinalTemporalEventType", "ClinicalTrialTimePointTypeCodeSequence", "IssuerOfClinicalTrialTimePointID",
        "ConsentForClinicalTrialUseSequence",
    ),
    "specimen": (
        "ContainerIdentifier", "IssuerOfTheContainerIdentifierSequence", "AlternateContainerIdentifierSequence",
        "ContainerTypeCodeSequence", "ContainerDescription", "ContainerComponentSequence",
        "SpecimenDescriptionSequence",
    ),
}  # fmt: skip

#: attributes whose values must never appear in a message: every attribute highdicom copies into a SEG or SR
#: (:data:`HIGHDICOM_COPIED_MODULES`: the Patient, Clinical Trial Subject, General Study, Patient Study, Clinical
#: Trial Study and Specimen modules) but the StudyInstanceUID reference, and other identifying attributes. UIDs are
#: references, checked where they become paths.
PHI_KEYWORDS: tuple[str, ...] = _unique(
    (kw for keywords in HIGHDICOM_COPIED_MODULES.values() for kw in keywords if kw != "StudyInstanceUID"),
    (  # other identifying attributes of the patient, series, equipment and acquisition
        "OtherPatientIDs", "EthnicGroup", "PatientAddress", "PatientTelephoneNumbers", "PatientBirthName",
        "PatientMotherBirthName", "PatientReligiousPreference", "MilitaryRank", "BranchOfService",
        "MedicalRecordLocator", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ContentDate",
        "ContentTime", "AcquisitionDateTime", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
        "OperatorsName", "PerformingPhysicianName", "StationName", "DeviceSerialNumber",
    ),
)  # fmt: skip


# --------------------------------------------------------------------------------------------- finding the values


@lru_cache(maxsize=1)
def _phi_tags() -> tuple[tuple[str, int], ...]:
    from pydicom.datadict import tag_for_keyword

    return tuple((kw, tag) for kw in PHI_KEYWORDS if (tag := tag_for_keyword(kw)) is not None)


_PIECES = re.compile(r"[\\^=\x00-\x1f\x7f\ufffd]+")  # multi-value, PN delimiters, controls, undecodable bytes


def _texts(value: Any, depth: int = 0) -> Iterator[str]:
    """Every text form of an element value: decoded bytes, multi-values, sequence items, name components."""
    if value is None or depth > _MAX_DEPTH:
        return
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        for encoding in ("latin-1", "utf-8"):
            yield from _texts(raw.decode(encoding, errors="replace"), depth + 1)
        return
    if hasattr(value, "get_item") and hasattr(value, "keys"):  # a Dataset (sequence item): all its values
        for tag in list(value.keys()):
            with contextlib.suppress(Exception):
                elem = value.get_item(tag)
                yield from _texts(getattr(elem, "value", None), depth + 1)
        return
    if isinstance(value, SequenceABC) and not isinstance(value, str):  # multi-values, sequences
        items = list(value)
        for item in items:
            yield from _texts(item, depth + 1)
        if len(items) > 1 and not any(hasattr(item, "get_item") for item in items):
            yield "\\".join(str(item) for item in items)  # the stored form of a multi-value
        return
    text = str(value)  # str, PersonName, DA/TM/DT, DSfloat, IS, numbers
    yield text
    yield from _PIECES.split(text)


def _converted(raw: Any, ds: Any) -> Any:
    """The value pydicom would give a raw element (what its exceptions quote), or ``None`` when it cannot."""
    from pydicom.dataelem import convert_raw_data_element

    try:
        with warnings.catch_warnings(), _muted():
            warnings.simplefilter("ignore")
            encoding = getattr(ds, "_character_set", None)  # the dataset's decoding, as ds[tag] would use
            return convert_raw_data_element(raw, encoding=encoding, ds=ds).value
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert: the raw bytes stand for it
        return None


def _element_texts(ds: Any, tag: int) -> Iterator[str]:
    """Text forms of one element, read without converting it in ``ds`` (the caller's dataset is not touched)."""
    from pydicom.dataelem import RawDataElement

    try:
        elem = ds.get_item(tag)
    except Exception:  # noqa: BLE001 - a deferred read that fails
        return
    if isinstance(elem, RawDataElement):
        yield from _texts(elem.value)
        yield from _texts(_converted(elem, ds))
    elif elem is not None:
        yield from _texts(elem.value)


def phi_index(datasets: Iterable[Any]) -> dict[str, set[str]]:
    """``{keyword: values}`` of :data:`PHI_KEYWORDS` in ``datasets`` (pydicom ``Dataset``s), each value at least
    :data:`MIN_REDACT_LENGTH` long, stripped of padding.

    Values are read as stored (``RawDataElement`` bytes decoded as Latin-1 and UTF-8) and as pydicom converts them,
    without converting anything in the datasets, so even values pydicom cannot convert are found.
    """
    index: dict[str, set[str]] = {}
    seen: dict[tuple[int, str, Any], set[str]] = {}
    for ds in datasets:
        if ds is None:
            continue
        try:  # values decode by the character set: the same bytes under another one are read again
            charset = ds.get_item(0x00080005).value if 0x00080005 in ds else None
        except Exception:  # noqa: BLE001
            charset = None
        for keyword, tag in _phi_tags():
            try:
                if tag not in ds:
                    continue
                elem = ds.get_item(tag)
                value = getattr(elem, "value", None)
                key = (tag, str(charset), value if isinstance(value, (bytes, str)) else id(elem))
            except Exception:  # noqa: BLE001, S112 - an element pydicom cannot even hand out raw has no value to hide
                continue
            if key not in seen:  # the same value on every slice of a series is read once
                found = set()
                for text in _element_texts(ds, tag):
                    text = text.strip(" \x00\t\r\n")
                    if len(text) >= MIN_REDACT_LENGTH:
                        found.add(text)
                seen[key] = found
            if seen[key]:
                index.setdefault(keyword, set()).update(seen[key])
    return index


def phi_values(datasets: Iterable[Any]) -> set[str]:
    """Every patient/study value of ``datasets`` (see :func:`phi_index`), as one set for :func:`redact`.

    Example:
        >>> from pydicom import Dataset
        >>> ds = Dataset()
        >>> ds.PatientName, ds.PatientSex = "Doe^Jane", "F"
        >>> sorted(phi_values([ds]))
        ['Doe', 'Doe^Jane', 'Jane']
    """
    return {value for values in phi_index(datasets).values() for value in values}


# --------------------------------------------------------------------------------------------- redacting


def _forms(value: str) -> set[str]:
    """How a value may appear in a message: as is, ``repr``/``ascii``/JSON-escaped, or as a ``bytes`` repr."""
    forms = {value, repr(value)[1:-1], ascii(value)[1:-1], json.dumps(value)[1:-1]}
    for encoding in ("utf-8", "latin-1"):
        with contextlib.suppress(UnicodeError):
            forms.add(repr(value.encode(encoding))[2:-1])
    return {form for form in forms if len(form) >= MIN_REDACT_LENGTH}


@lru_cache(maxsize=4096)
def _pattern(form: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(form)}(?!\w)")


def redact(text: Any, values: Iterable[str]) -> str:
    """``text`` with every occurrence of each value (and its escaped forms) replaced by :data:`REDACTED`.

    Longer values go first (``Doe^Jane`` before ``Jane``); values shorter than :data:`MIN_REDACT_LENGTH` are left
    alone and those shorter than :data:`WHOLE_WORD_BELOW` are replaced only as whole words.

    Example:
        >>> redact("PatientAge '045Y' of A045Yb", {"045Y"})
        "PatientAge '<redacted>' of A045Yb"
    """
    text = str(text)
    for value in sorted({str(v) for v in values}, key=len, reverse=True):
        if len(value) < MIN_REDACT_LENGTH:
            continue
        for form in sorted(_forms(value), key=len, reverse=True):
            if form not in text:
                continue
            if len(value) < WHOLE_WORD_BELOW:
                text = _pattern(form).sub(REDACTED, text)
            else:
                text = text.replace(form, REDACTED)
    return text


def safe_error(err: BaseException, datasets: Iterable[Any] = ()) -> str:
    """``"Type: message"`` of an exception with the datasets' patient values redacted.

    Example:
        >>> from pydicom import Dataset
        >>> ds = Dataset()
        >>> ds.PatientID = "ID-12345"
        >>> safe_error(ValueError("bad PatientID 'ID-12345'"), [ds])
        "ValueError: bad PatientID '<redacted>'"
    """
    return redact(f"{type(err).__name__}: {err}", phi_values(datasets))


# --------------------------------------------------------------------------------------------- guarding calls


@contextlib.contextmanager
def quiet_phi_warnings() -> Iterator[None]:
    """Silence pydicom's and highdicom's value warnings: they quote header values (patient names, birth dates),
    and no PHI may reach logs or stderr."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|highdicom)(\..*)?$")
        yield


# values to redact (None: drop the records) in THIRD_PARTY_LOGGERS' records, per thread / task
_REDACT: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("medkd_phi_redact", default=frozenset())


class _RedactFilter(logging.Filter):
    """Redacts (or drops) pydicom's and highdicom's log records while a guard is active; a no-op otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = _REDACT.get()
        if values is None:
            return False
        if values:
            with contextlib.suppress(Exception):
                record.msg, record.args = redact(record.getMessage(), values), ()
                if record.exc_info:
                    record.exc_text = redact(logging.Formatter().formatException(record.exc_info), values)
                    record.exc_info = None
        return True


_FILTER = _RedactFilter()


def _install_filter() -> None:
    """Put the filter on every existing pydicom/highdicom logger (a logger's filters see only its own records)."""
    names = [name for name in list(logging.Logger.manager.loggerDict)
             if any(name == root or name.startswith(root + ".") for root in THIRD_PARTY_LOGGERS)]  # fmt: skip
    for name in {*names, *THIRD_PARTY_LOGGERS}:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)


@contextlib.contextmanager
def redacting_logs(values: Iterable[str]) -> Iterator[None]:
    """While inside, pydicom's and highdicom's log records have ``values`` redacted (nested calls add values).

    The filter sits on each of their loggers that exists on entry (import highdicom first, as the writers do); it is
    a no-op outside this context and per thread (a ``contextvars`` value), so concurrent app sessions do not mix.
    """
    _install_filter()
    outer = _REDACT.get()
    token = _REDACT.set(None if outer is None else frozenset({*outer, *values}))
    try:
        yield
    finally:
        _REDACT.reset(token)


@contextlib.contextmanager
def _muted() -> Iterator[None]:
    """Drop pydicom's and highdicom's log records while inside (used while the values are being collected)."""
    _install_filter()
    token = _REDACT.set(None)
    try:
        yield
    finally:
        _REDACT.reset(token)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)


@contextlib.contextmanager
def guard_phi(datasets: Iterable[Any], what: str) -> Iterator[frozenset[str]]:
    """Run pydicom/highdicom code on ``datasets`` so that no patient value escapes in a message.

    Inside, warnings are recorded instead of shown (each logged once at DEBUG, redacted) and pydicom's and highdicom's
    log records are redacted. An exception whose text (or chained exceptions' text) quotes a value is re-raised as
    ``ValueError("<what>: <Type>: <redacted text> [redacted: values of <keywords>]")`` from ``None``; any other
    exception propagates unchanged (so ``OSError("disk full")`` stays an ``OSError``).

    Args:
        datasets: the source datasets whose values must not appear.
        what: what failed, leading the message (``"cannot write the DICOM SEG"``).

    Yields:
        The values being redacted.

    Example:
        >>> from pydicom import Dataset
        >>> ds = Dataset()
        >>> ds.PatientBirthDate = "1945-03-17"
        >>> try:
        ...     with guard_phi([ds], "cannot write"):
        ...         raise ValueError("Unable to convert '1945-03-17' to 'DA' object")
        ... except ValueError as err:
        ...     print(err)
        cannot write: ValueError: Unable to convert '<redacted>' to 'DA' object [redacted: values of PatientBirthDate]
    """
    datasets = list(datasets)
    index = phi_index(datasets)
    values = frozenset(value for found in index.values() for value in found)
    try:
        with warnings.catch_warnings(record=True) as caught, redacting_logs(values):
            warnings.simplefilter("always")
            try:
                yield values
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    logger.debug("%s: warning: %s", what, redact(message, values))
    except Exception as err:
        texts = [f"{type(e).__name__}: {e}" for e in _chain(err)]
        if all(redact(text, values) == text for text in texts):
            raise
        keywords = sorted(kw for kw, found in index.items() if any(redact(t, found) != t for t in texts))
        message = f"{what}: {redact(texts[0], values)}"
        if keywords:
            message += f" [redacted: values of {', '.join(keywords)}]"
        raise ValueError(message) from None
