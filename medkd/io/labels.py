# SPDX-License-Identifier: Apache-2.0
"""Segment labels with coded meanings: what a model's label values are, for DICOM SEG, bundles and the app.

A :class:`LabelInfo` carries the integer value in the mask, a short name, a SNOMED CT property type code and
category, and a display colour. Known anatomy names (ACDC's RV/Myo/LV, LA's left atrium) get their SNOMED codes;
unknown names get the generic "Tissue" code, so every model can still be written as a valid SEG.

Example:
    >>> [l.name for l in labels_from_names(["background", "RV", "Myo", "LV"])]
    ['RV', 'Myo', 'LV']
    >>> labels_from_names(["background", "RV"])[0].code
    ('SCT', '53085002', 'Right ventricle')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medkd.errors import ConfigError

__all__ = [
    "LABEL_COLOURS", "Code", "LabelInfo", "KNOWN_CODES", "ANATOMICAL_STRUCTURE", "TISSUE", "labels_from_names", "labels_from_dicts",
]

Code = tuple[str, str, str]  # (scheme designator, code value, code meaning)

#: display colours by label value: background, then distinct colours (RV red, Myo green, LV blue in ACDC order),
#: then more for larger label sets (values past the table wrap around, skipping background)
LABEL_COLOURS = np.array(
    [[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180], [70, 240, 240],
     [245, 130, 48], [240, 50, 230], [210, 245, 60]],
    dtype=np.uint8,
)

ANATOMICAL_STRUCTURE: Code = ("SCT", "91723000", "Anatomical Structure")
TISSUE: Code = ("SCT", "85756007", "Tissue")

#: SNOMED CT codes of the structures medkd's presets segment (lower-case name -> (property type, category))
KNOWN_CODES: dict[str, tuple[Code, Code]] = {
    "rv": (("SCT", "53085002", "Right ventricle"), ANATOMICAL_STRUCTURE),
    "right_ventricle": (("SCT", "53085002", "Right ventricle"), ANATOMICAL_STRUCTURE),
    "myo": (("SCT", "74281007", "Myocardium"), ANATOMICAL_STRUCTURE),
    "myocardium": (("SCT", "74281007", "Myocardium"), ANATOMICAL_STRUCTURE),
    "lv": (("SCT", "87878005", "Left ventricle"), ANATOMICAL_STRUCTURE),
    "left_ventricle": (("SCT", "87878005", "Left ventricle"), ANATOMICAL_STRUCTURE),
    "la": (("SCT", "82471001", "Left atrium"), ANATOMICAL_STRUCTURE),
    "left_atrium": (("SCT", "82471001", "Left atrium"), ANATOMICAL_STRUCTURE),
    "heart": (("SCT", "80891009", "Heart"), ANATOMICAL_STRUCTURE),
    "lesion": (("SCT", "52988006", "Lesion"), ("SCT", "49755003", "Morphologically Abnormal Structure")),
    "nodule": (("SCT", "27925004", "Nodule"), ("SCT", "49755003", "Morphologically Abnormal Structure")),
}

_LONG_NAMES = {"rv": "Right ventricle", "myo": "Myocardium", "lv": "Left ventricle", "la": "Left atrium"}


@dataclass(frozen=True)
class LabelInfo:
    """One foreground label of a segmentation model.

    Attributes:
        value: the integer in the label map (1, 2, ...).
        name: short name as the model knows it (``LV``), used for files and tables.
        code: SNOMED CT (or other) property type code ``(scheme, value, meaning)``.
        category: property category code.
        colour: RGB display colour.
    """

    value: int
    name: str
    code: Code = TISSUE
    category: Code = TISSUE
    colour: tuple[int, int, int] = (255, 0, 0)

    @property
    def description(self) -> str:
        """A readable description (``Left ventricle``), at most 64 characters (DICOM LO)."""
        return _LONG_NAMES.get(self.name.lower(), self.name.replace("_", " "))[:64]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored in bundle metadata ``label_classes``."""
        return {
            "value": self.value, "name": self.name,
            "code": {"scheme": self.code[0], "value": self.code[1], "meaning": self.code[2]},
            "category": {"scheme": self.category[0], "value": self.category[1], "meaning": self.category[2]},
            "colour": list(self.colour),
        }


def _colour(value: int) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in LABEL_COLOURS[1 + (value - 1) % (len(LABEL_COLOURS) - 1)])
    return r, g, b


def labels_from_names(names: Sequence[str], *, background: bool = True) -> list[LabelInfo]:
    """Labels from a class-name list whose index is the label value: the foreground ones (index 0 is background),
    or with ``background=False`` every class (a classifier's classes).

    Example:
        >>> [(label.value, label.name) for label in labels_from_names(["bg", "LV"])]
        [(1, 'LV')]
        >>> [label.value for label in labels_from_names(["benign", "malignant"], background=False)]
        [0, 1]
    """
    labels = []
    for value, name in enumerate(names):
        if value == 0 and background:
            continue
        code, category = KNOWN_CODES.get(name.lower(), (TISSUE, TISSUE))
        labels.append(LabelInfo(value, name, code, category, _colour(value + (not background))))
    return labels


def _code(entry: Any, where: str) -> Code:
    if isinstance(entry, Mapping) and {"scheme", "value", "meaning"} <= set(entry):
        return (str(entry["scheme"]), str(entry["value"]), str(entry["meaning"]))
    if isinstance(entry, (list, tuple)) and len(entry) == 3:
        return (str(entry[0]), str(entry[1]), str(entry[2]))
    raise ConfigError(f"{where}: a code needs scheme, value and meaning, got {entry!r}")


def labels_from_dicts(entries: Iterable[Mapping[str, Any]], source: str = "label_classes") -> list[LabelInfo]:
    """Labels from their :meth:`LabelInfo.to_dict` form (bundle metadata, pipeline YAML); codes optional."""
    labels = []
    for i, entry in enumerate(entries):
        where = f"{source}[{i}]"
        if "value" not in entry or "name" not in entry:
            raise ConfigError(f"{where}: each label needs 'value' and 'name', got {dict(entry)!r}")
        value, name = int(entry["value"]), str(entry["name"])
        if value < 1:
            raise ConfigError(f"{where}: label values start at 1 (0 is background), got {value}")
        code, category = KNOWN_CODES.get(name.lower(), (TISSUE, TISSUE))
        code = _code(entry["code"], where) if "code" in entry else code
        category = _code(entry["category"], where) if "category" in entry else category
        colour = tuple(int(c) for c in entry.get("colour", _colour(value)))[:3]
        labels.append(LabelInfo(value, name, code, category, colour))  # type: ignore[arg-type]
    values = [l.value for l in labels]
    if len(set(values)) != len(values):
        raise ConfigError(f"{source}: label values must be unique, got {values}")
    return labels
