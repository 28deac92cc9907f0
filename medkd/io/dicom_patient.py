# SPDX-License-Identifier: Apache-2.0
"""Defensive copies of the patient and study attributes that a DICOM SEG or SR copies from its source images.

highdicom copies the root attributes of the Patient, Clinical Trial Subject, General Study, Patient Study and
Clinical Trial Study modules (and, for a SEG, the Specimen module) from the first source image, and converts a few
on the way (``DA(PatientBirthDate)``, ``PatientSexValues(PatientSex)``, ``TM(StudyTime)``): one invalid value makes
it fail with that value in the exception, or lands in the written file. :func:`defensive_copies` hands it shallow
copies of the source datasets instead, in which every such attribute whose value pydicom's own validation rejects
(wrong format, too long, wrong characters, wrong VR or value multiplicity, not decodable, not an enumerated value)
is written empty. These are type 2 (or optional) attributes, so empty is valid DICOM. The caller's datasets are not
touched, ``StudyInstanceUID`` and every other UID and the pixel data stay as they are (they are shared, not copied),
and the log gets one line per keyword and problem with the number of images affected, never the value.

Example:
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.PatientSex, ds.PatientBirthDate = "Doe^Jane", "Female", "1945-03-17"
    >>> copy, problems = defensive_copy(ds)
    >>> problems
    {'PatientBirthDate': 'is not a valid DA date', 'PatientSex': 'is not one of F, M, O'}
    >>> (copy.PatientName, copy.PatientSex, copy.PatientBirthDate), ds.PatientSex
    (('Doe^Jane', '', ''), 'Female')
"""

from __future__ import annotations

import copy as _copy
import logging
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from medkd.io.phi import HIGHDICOM_COPIED_MODULES, quiet_phi_warnings, redacting_logs

if TYPE_CHECKING:  # pragma: no cover
    from pydicom import Dataset
    from pydicom.dataelem import DataElement

__all__ = [
    "COPIED_KEYWORDS",
    "COPIED_MODULES",
    "ENUMERATED_VALUES",
    "KEPT_KEYWORDS",
    "defensive_copies",
    "defensive_copy",
    "element_problem",
]

logger = logging.getLogger(__name__)

#: root attributes of the modules highdicom copies from a source image (defined with the PHI keywords, which
#: cover them): tests/io/test_dicom_patient.py checks this table against the installed highdicom
COPIED_MODULES: dict[str, tuple[str, ...]] = HIGHDICOM_COPIED_MODULES
COPIED_KEYWORDS: tuple[str, ...] = tuple(kw for keywords in COPIED_MODULES.values() for kw in keywords)
#: references that are never blanked (the pipeline refuses series whose UIDs are invalid before any writer runs)
KEPT_KEYWORDS: frozenset[str] = frozenset({"StudyInstanceUID"})
#: enumerated values (PS3.3) of copied attributes; anything else is invalid (empty is always allowed)
ENUMERATED_VALUES: dict[str, frozenset[Any]] = {
    "PatientSex": frozenset({"M", "F", "O"}),  # highdicom's PatientSexValues
    "PatientSexNeutered": frozenset({"ALTERED", "UNALTERED"}),
    "PatientIdentityRemoved": frozenset({"YES", "NO"}),
    "QualityControlSubject": frozenset({"YES", "NO"}),
    "SmokingStatus": frozenset({"YES", "NO", "UNKNOWN"}),
    "TypeOfPatientID": frozenset({"TEXT", "RFID", "BARCODE"}),
    "PregnancyStatus": frozenset({1, 2, 3, 4}),
}

_MAX_DEPTH = 8  # sequence nesting checked; anything deeper is invalid
#: control characters a value may hold, by VR (PS3.5 6.1.3): ESC for character set switching, and in the long text
#: VRs TAB, LF, FF and CR; any other C0 control or DEL is invalid
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UI", "LT", "ST", "UT", "UC", "UR"}
_ALLOWED_CONTROLS = {vr: frozenset("\x1b") for vr in ("LO", "PN", "SH", "UC")} | {
    vr: frozenset("\x1b\t\n\f\r") for vr in ("LT", "ST", "UT")
}
_DATE_TIME_VRS = ("DA", "DT", "TM")
_CHARSET_VRS = {"SH", "LO", "ST", "LT", "UC", "UT", "PN"}  # VRs whose bytes decode with SpecificCharacterSet


@lru_cache(maxsize=512)
def _dictionary(tag: int) -> tuple[frozenset[str], str]:
    """``(allowed VRs, VM)`` of a tag from pydicom's dictionary; ``(empty, "")`` for private or unknown tags."""
    from pydicom.datadict import dictionary_VM, dictionary_VR

    try:
        return frozenset(v.strip() for v in dictionary_VR(tag).split(" or ")), dictionary_VM(tag)
    except KeyError:
        return frozenset(), ""


def _vm_allows(vm: str, count: int) -> bool:
    """Whether ``count`` values fit a dictionary VM such as ``1``, ``1-3``, ``1-n`` or ``2-2n``."""
    try:
        if "-" not in vm:
            return count == int(vm)
        low, high = vm.split("-")
        if high == "n":
            return count >= int(low)
        if high.endswith("n"):
            return count >= int(low) and count % int(high[:-1]) == 0
        return int(low) <= count <= int(high)
    except ValueError:
        return True  # a VM pydicom's dictionary writes differently: no opinion


def _items(value: Any) -> list[Any]:
    from pydicom.multival import MultiValue

    items = list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
    return [item for item in items if item is not None and item != ""]


def _value_problem(vr: str, item: Any) -> str | None:
    """What is wrong with one value of a (non-sequence) element, by pydicom's validators plus what they lack."""
    from pydicom import config
    from pydicom.valuerep import DA, DT, TM, validate_value

    if vr in _TEXT_VRS:
        if isinstance(item, (bytes, bytearray)):
            return "cannot be decoded"
        item = str(item)  # PersonName, DA, DSfloat, IS: their text as stored
        if "\ufffd" in item:
            return "cannot be decoded in the character set"
        allowed = _ALLOWED_CONTROLS.get(vr, frozenset())
        if any((ch < " " or ch == "\x7f") and ch not in allowed for ch in item):
            return "holds control characters"
        if vr == "PN" and any(len(group.split("^")) > 5 for group in item.split("=")):
            return "has more than 5 name components"
    try:
        validate_value(vr, item, config.RAISE)
    except ValueError as err:  # pydicom's message quotes the value: classify it, never pass it on
        if "number of PN components" in str(err):
            return "has more than 3 name groups"
        if "exceeds" in str(err):
            return f"is longer than {vr} allows"
        if "cannot be assigned" in str(err):
            return f"has a type {vr} cannot hold"
        return f"is not a valid {vr} value" if vr not in _DATE_TIME_VRS else f"is not a valid {vr} {_WHAT[vr]}"
    if vr in _DATE_TIME_VRS:
        try:
            {"DA": DA, "DT": DT, "TM": TM}[vr](item, validation_mode=config.IGNORE)  # what highdicom calls
        except (ValueError, TypeError, OverflowError):
            return f"is not a valid {vr} {_WHAT[vr]}"
    return None


_WHAT = {"DA": "date", "DT": "date-time", "TM": "time"}


def _shallow_copy(ds: Dataset) -> Dataset:
    """A copy of ``ds`` that shares its elements (pixel data included) but not its element dictionary."""
    clone = _copy.copy(ds)
    clone._dict = dict(ds._dict)  # copy.copy of a pydicom Dataset shares the element dict: give the copy its own
    return clone


def _undecodable(ds: Dataset, tag: int, encodings: Sequence[str] | None) -> bool:
    """Whether a stored text value does not decode in the series' character set. pydicom would decode it anyway,
    with replacement characters or, in sequence items, as Latin-1, and highdicom would write that."""
    from pydicom.dataelem import RawDataElement

    raw = ds.get_item(tag)
    if not encodings or not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
        return False
    vr = raw.VR or min(_dictionary(tag)[0] or {"UN"})
    if vr not in _CHARSET_VRS or b"\x1b" in raw.value:  # code extensions: decoded fragment by fragment
        return False
    try:
        raw.value.decode(encodings[0])
    except UnicodeError:
        return True
    except LookupError:  # an unknown character set: pydicom falls back to its default, so does highdicom
        return False
    return False


def _problem_in(ds: Dataset, tag: int, depth: int, encodings: Sequence[str] | None) -> str | None:
    """What is wrong with element ``tag`` of ``ds`` (a copy: pydicom converts raw elements in place)."""
    try:
        if _undecodable(ds, tag, encodings):
            return "cannot be decoded in the character set"
        elem = ds[tag]
    except Exception:  # noqa: BLE001 - pydicom cannot convert the stored bytes
        return "cannot be decoded"
    return element_problem(elem, _depth=depth, _encodings=encodings)


def element_problem(elem: DataElement, *, _depth: int = 0, _encodings: Sequence[str] | None = None) -> str | None:
    """What is wrong with a data element's value, never quoting the value; ``None`` when it is valid or empty.

    Checks the VR against pydicom's dictionary, the value multiplicity, each value with pydicom's validators
    (length, characters, format; dates and times also by converting them as highdicom does), control characters
    and undecodable bytes, :data:`ENUMERATED_VALUES`, and sequence items recursively (a sequence with one invalid
    element in an item is invalid as a whole).

    Example:
        >>> from pydicom.dataelem import DataElement
        >>> element_problem(DataElement(0x00100030, "DA", "19450317")) is None
        True
        >>> element_problem(DataElement(0x00100030, "DA", "19450231"))
        'is not a valid DA date'
        >>> element_problem(DataElement(0x00100020, "LO", "ID-" + "9" * 70))
        'is longer than LO allows'
    """
    from pydicom.datadict import keyword_for_tag

    allowed_vrs, vm = _dictionary(int(elem.tag))
    if allowed_vrs and elem.VR not in allowed_vrs:
        return f"has VR {elem.VR}, not {' or '.join(sorted(allowed_vrs))}"
    if elem.VR == "SQ":
        if _depth >= _MAX_DEPTH:
            return "is nested too deeply"
        for item in elem.value or []:
            for tag in list(item.keys()):
                problem = _problem_in(item, tag, _depth + 1, _encodings)
                if problem:
                    return f"holds an invalid {keyword_for_tag(tag) or 'element'}"
        return None
    items = _items(elem.value)
    if not items:
        return None
    if vm and not _vm_allows(vm, len(items)):
        return f"has {len(items)} values where VM {vm} allows"
    allowed = ENUMERATED_VALUES.get(keyword_for_tag(elem.tag))
    if allowed and any((str(item).strip() if isinstance(item, str) else item) not in allowed for item in items):
        return f"is not one of {', '.join(sorted(str(v) for v in allowed))}"
    for item in items:
        problem = _value_problem(elem.VR, item)
        if problem:
            return problem
    return None


def _is_sequence(ds: Dataset, tag: int) -> bool:
    return getattr(ds.get_item(tag), "VR", None) == "SQ" or _dictionary(tag)[0] == {"SQ"}


def _own_sequence(ds: Dataset, tag: int, depth: int = 0) -> None:
    """Give ``ds`` (a copy) its own copy of sequence ``tag`` and its items, nested sequences too, so checking (which
    converts raw elements in place) leaves the caller's items as they were."""
    from pydicom.dataelem import DataElement
    from pydicom.sequence import Sequence as DicomSequence

    try:
        elem = ds[tag]
        if elem.VR != "SQ" or depth >= _MAX_DEPTH:
            return
        items = [_shallow_copy(item) for item in elem.value or []]
        for item in items:
            for inner in list(item.keys()):
                if _is_sequence(item, inner):
                    _own_sequence(item, inner, depth + 1)
        ds[tag] = DataElement(tag, "SQ", DicomSequence(items))
    except Exception:  # noqa: BLE001 - unreadable: element_problem reports it and the copy is blanked
        return


def _encodings(ds: Dataset) -> list[str] | None:
    """Python codecs of the dataset's ``SpecificCharacterSet`` (pydicom's mapping), or ``None`` if unknown."""
    from pydicom.charset import convert_encodings

    try:
        return list(convert_encodings(ds.get("SpecificCharacterSet") or "ISO_IR 6"))
    except Exception:  # noqa: BLE001 - an invalid character set: leave decoding to pydicom
        return None


def _cache_key(ds: Dataset, tag: int, encodings: Sequence[str] | None) -> tuple | None:
    """A key for a stored value (VR, bytes, character set) whose check can be reused on the next slice."""
    from pydicom.dataelem import RawDataElement

    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and elem.VR != "SQ":
        return (tag, elem.VR, elem.value, tuple(encodings or ()))
    return None


def defensive_copy(
    ds: Dataset, keywords: Sequence[str] = COPIED_KEYWORDS, *, _checked: dict[tuple, str | None] | None = None
) -> tuple[Dataset, dict[str, str]]:
    """A shallow copy of ``ds`` with each invalid attribute of ``keywords`` empty, and ``{keyword: problem}``.

    The copy shares the other elements (pixel data, UIDs, geometry) with ``ds``; ``ds`` is not changed, not even
    pydicom's conversion of its raw elements. :data:`KEPT_KEYWORDS` are never blanked.
    """
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement, empty_value_for_VR

    checked = {} if _checked is None else _checked  # stored value -> problem: a series repeats its patient values
    clone = _shallow_copy(ds)
    encodings = _encodings(clone)
    problems: dict[str, str] = {}
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in clone or keyword in KEPT_KEYWORDS:
            continue
        key = _cache_key(clone, tag, encodings)
        if key is not None and key in checked:
            problem = checked[key]
        else:
            if _is_sequence(clone, tag):
                _own_sequence(clone, tag)
            problem = _problem_in(clone, tag, 0, encodings)
            if key is not None:
                checked[key] = problem
        if problem:
            problems[keyword] = problem
            vr = min(_dictionary(tag)[0] or {"UN"})
            clone[tag] = DataElement(tag, vr, empty_value_for_VR(vr))
    return clone, problems


def defensive_copies(datasets: Sequence[Dataset], *, what: str = "DICOM writer") -> list[Dataset]:
    """:func:`defensive_copy` of every source dataset; one log line per keyword and problem with its count.

    Args:
        datasets: the source images (not changed).
        what: names the writer in the log line (``"DICOM SEG"``).

    Returns:
        The copies, in order.
    """
    from medkd.io.phi import phi_values

    counts: Counter[tuple[str, str]] = Counter()
    checked: dict[tuple, str | None] = {}
    copies = []
    with quiet_phi_warnings(), warnings.catch_warnings(), redacting_logs(phi_values(datasets)):
        warnings.simplefilter("ignore")
        for ds in datasets:
            clone, problems = defensive_copy(ds, _checked=checked)
            copies.append(clone)
            counts.update(problems.items())
    for (keyword, problem), count in sorted(counts.items()):
        logger.warning("%s: source %s %s in %d of %d images: written empty", what, keyword, problem, count,
                       len(datasets))  # fmt: skip
    return copies
