# SPDX-License-Identifier: Apache-2.0
"""Stage 2 of the DICOM batch pipeline: pick the series a model should see, with rules from the pipeline YAML.

Modelled on MONAI Deploy's ``DICOMSeriesSelectorOperator``: a rule has a ``name``, ``conditions`` (a DICOM keyword
mapped to a regular expression, searched in the value as a string, or to a ``[min, max]`` numeric range) and
``min_slices``. The first rule whose conditions all hold selects the series; a series no rule matches is
``not_selected``, with a message naming the condition of each rule that failed. Before any rule, a series whose
UIDs cannot name a folder is ``invalid_uid`` and one with a file cut short is ``truncated``
(:func:`series_problem`), so such a series never reaches the volume stage nor an output path.

.. code-block:: yaml

    selection:
      - {name: ct, conditions: {Modality: "(?i)CT", SliceThickness: [0.5, 5.0]}, min_slices: 3}
      - {name: t1, conditions: {Modality: MR, SeriesDescription: "(?i)t1"}}

Example:
    >>> from pathlib import Path
    >>> from pydicom.dataset import Dataset
    >>> from medkd.io.dicom_scan import SeriesInfo
    >>> header = Dataset(); header.Modality = "CT"; header.SliceThickness = "2.5"
    >>> series = SeriesInfo("1.2.3", "1.2", "CT", "", files=[Path("a.dcm")], header=header)
    >>> rules = parse_rules([{"name": "ct", "conditions": {"Modality": "CT", "SliceThickness": [0.5, 5]}}])
    >>> select_series(series, rules).rule.name
    'ct'
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict, tag_for_keyword
from pydicom.multival import MultiValue

from medkd.errors import ConfigError
from medkd.io.dicom_scan import Reason, SeriesInfo
from medkd.io.safe_paths import UID_KEYWORDS, uid_problem

__all__ = [
    "SelectionRule", "Selection", "RULE_KEYS", "parse_rules", "series_problem", "select_series", "check_condition",
]

#: keys a rule may have in the pipeline YAML
RULE_KEYS: tuple[str, ...] = ("name", "conditions", "min_slices")

Condition = str | list[float]

# values of these are never echoed in messages (patient data); other tags' values (Modality, SeriesDescription) are
_PHI_VRS = frozenset({"PN", "DA", "DT", "TM"})
_PHI_KEYWORDS = frozenset(
    {
        "AccessionNumber",
        "StudyID",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "RequestAttributesSequence",
        "AdmissionID",
        "IssuerOfPatientID",
        "OtherPatientIDs",
    }
)
_MAX_VALUE = 64
_MAX_LISTED = 5  # truncated files named in a message


@dataclass
class SelectionRule:
    """One selection rule.

    Attributes:
        name: label written to the report (``rule`` column).
        conditions: DICOM keyword -> regex (``re.search`` on the value as a string; multi-valued tags are joined
            with ``\\``) or ``[min, max]`` (every value of the tag must be a number in the closed range; a bound
            may be ``None`` for open-ended). A missing tag never matches.
        min_slices: a matching series with fewer files is ``too_few_slices``.
    """

    name: str
    conditions: dict[str, Condition] = field(default_factory=dict)
    min_slices: int = 1


@dataclass
class Selection:
    """The outcome of :func:`select_series`: the winning rule, or ``None`` with the reason and a message."""

    rule: SelectionRule | None
    reason: Reason | None = None
    message: str = ""


def _close(word: str, options: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, options, n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _parse_range(value: Sequence[Any], where: str) -> list[float]:
    if len(value) != 2 or any(isinstance(v, bool) or not (v is None or isinstance(v, numbers.Real)) for v in value):
        raise ConfigError(f"{where}: a range must be [min, max] with numbers (or null for open-ended), got {value!r}")
    low = -math.inf if value[0] is None else float(value[0])
    high = math.inf if value[1] is None else float(value[1])
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ConfigError(f"{where}: range [min, max] needs min <= max, got {value!r}")
    return [low, high]


def _parse_condition(keyword: Any, value: Any, where: str) -> Condition:
    if not isinstance(keyword, str) or tag_for_keyword(keyword) is None:
        hint = _close(str(keyword), list(keyword_dict))
        raise ConfigError(f"{where}: unknown DICOM keyword {keyword!r}{hint}; use keywords such as Modality")
    here = f"{where}.{keyword}"
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as err:
            raise ConfigError(f"{here}: invalid regular expression {value!r}: {err}") from err
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return [float(value), float(value)]
    if isinstance(value, Sequence):
        return _parse_range(value, here)
    raise ConfigError(f"{here}: expected a regular expression (string) or a [min, max] range, got {value!r}")


def parse_rules(raw: Sequence[Mapping[str, Any]], source: str = "selection") -> list[SelectionRule]:
    """Check and convert selection rules read from YAML.

    Args:
        raw: a list of mappings with keys ``name`` (default ``rule<i>``), ``conditions`` (default ``{}``, which
            matches every series) and ``min_slices`` (default 1). A single number is taken as the range
            ``[v, v]``.
        source: where the rules came from, for messages (e.g. ``"pipelines/ct.yaml: selection"``).

    Returns:
        The rules, in order.

    Raises:
        ConfigError: naming ``source[i]`` for an unknown key (listing the valid ones), an unknown DICOM keyword,
            an invalid regular expression, a malformed range or a bad ``min_slices``.

    Example:
        >>> parse_rules([{"name": "ct", "conditions": {"Modality": "CT"}, "min_slice": 3}])
        Traceback (most recent call last):
        ...
        medkd.errors.ConfigError: selection[0]: unknown key 'min_slice'; valid keys: name, conditions, min_slices
    """
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
        raise ConfigError(f"{source}: expected a list of rules, got {type(raw).__name__}")
    rules = []
    for i, item in enumerate(raw):
        where = f"{source}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(RULE_KEYS)}, got {item!r}")
        unknown = [k for k in item if k not in RULE_KEYS]
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(RULE_KEYS)}")
        name = item.get("name", f"rule{i}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: expected a non-empty string, got {name!r}")
        conditions = item.get("conditions") or {}
        if not isinstance(conditions, Mapping):
            raise ConfigError(f"{where}.conditions: expected a mapping keyword -> regex or [min, max]")
        min_slices = item.get("min_slices", 1)
        if isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1:
            raise ConfigError(f"{where}.min_slices: expected an integer >= 1, got {min_slices!r}")
        parsed = {k: _parse_condition(k, v, f"{where}.conditions") for k, v in conditions.items()}
        rules.append(SelectionRule(name=name, conditions=parsed, min_slices=min_slices))
    return rules


def _shown(keyword: str, value: Any) -> str:
    """The value for a message, unless it may identify the patient."""
    tag = tag_for_keyword(keyword)
    try:
        vr = dictionary_VR(tag) if tag is not None else ""
    except KeyError:
        vr = ""
    if tag is None or (tag >> 16) == 0x0010 or vr in _PHI_VRS or keyword in _PHI_KEYWORDS:
        return "<value hidden>"
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def check_condition(header: Any, keyword: str, condition: Condition) -> str | None:
    """Why ``header`` fails one condition, or ``None`` if it holds.

    Args:
        header: a :class:`pydicom.Dataset` (any object with ``get(keyword)``).
        keyword: DICOM keyword.
        condition: regex string or ``[min, max]``.

    Returns:
        ``None`` when it holds, else a short explanation without patient data.
    """
    value = header.get(keyword) if keyword in header else None
    if value is None:
        return f"{keyword} missing or empty"
    items = _values(value)
    if isinstance(condition, str):
        text = "\\".join(str(v) for v in items)
        return None if re.search(condition, text) else f"{keyword}={_shown(keyword, text)} !~ {condition!r}"
    low, high = condition
    try:
        numbers_ = [float(v) for v in items]
    except (TypeError, ValueError):
        return f"{keyword}={_shown(keyword, value)} is not a number"
    if not numbers_ or any(not (low <= v <= high) for v in numbers_):
        shown = _shown(keyword, numbers_[0] if len(numbers_) == 1 else numbers_)
        return f"{keyword}={shown} not in [{low:g}, {high:g}]"
    return None


def series_problem(series: SeriesInfo, root: str | Path | None = None) -> tuple[Reason, str] | None:
    """Why a series must be skipped whatever the rules say, or ``None``.

    Args:
        series: from :func:`medkd.io.dicom_scan.scan_tree`.
        root: the scanned folder; files are named relative to it (else by file name).

    Returns:
        ``(INVALID_UID, message naming the tag)`` when ``StudyInstanceUID`` or ``SeriesInstanceUID`` is not a valid
        DICOM UID (they name output folders; the value is never echoed), ``(TRUNCATED, message naming the files)``
        when files of the series have no pixel data (:attr:`~medkd.io.dicom_scan.SeriesInfo.truncated`), else
        ``None``.
    """
    uids = {"StudyInstanceUID": series.study_uid, "SeriesInstanceUID": series.series_uid}
    problems = [why for kw in UID_KEYWORDS if (why := uid_problem(kw, uids[kw]))]
    if problems:
        return Reason.INVALID_UID, "; ".join(problems) + ": not usable as a folder name, series not written"
    if series.truncated:

        def name(path: Path) -> str:
            if root is not None and Path(path).is_relative_to(root):
                return Path(path).relative_to(root).as_posix()
            return Path(path).name

        listed = ", ".join(name(p) for p in series.truncated[:_MAX_LISTED])
        more = f" and {len(series.truncated) - _MAX_LISTED} more" if len(series.truncated) > _MAX_LISTED else ""
        return Reason.TRUNCATED, (
            f"{len(series.truncated)} file(s) of the series have a header but no pixel data (cut short?): "
            f"{listed}{more}; re-export the series"
        )
    return None


def select_series(
    series: SeriesInfo, rules: Sequence[SelectionRule], *, root: str | Path | None = None
) -> Selection:
    """Apply the rules to one series: the first rule whose conditions all hold wins.

    Args:
        series: from :func:`medkd.io.dicom_scan.scan_tree`; conditions are checked on ``series.header``.
        rules: from :func:`parse_rules`; an empty list selects every series (with a rule named ``all``).
        root: the scanned folder, to name files in messages relative to it.

    Returns:
        ``Selection(rule)`` for a match; ``Selection(None, INVALID_UID | TRUNCATED, ...)`` for a series
        :func:`series_problem` rejects (before any rule); ``Selection(None, TOO_FEW_SLICES, ...)`` when the first
        matching rule wants more slices than the series has (later rules are not tried);
        ``Selection(None, NOT_SELECTED, ...)`` naming, per rule, the first condition that failed.
    """
    problem = series_problem(series, root)
    if problem is not None:
        return Selection(None, *problem)
    if not rules:
        return Selection(SelectionRule(name="all"))
    failures = []
    for rule in rules:
        failed = next(
            (why for kw, cond in rule.conditions.items() if (why := check_condition(series.header, kw, cond))), None
        )
        if failed is not None:
            failures.append(f"{rule.name}: {failed}")
            continue
        if series.n_files < rule.min_slices:
            message = f"rule {rule.name!r} matched but the series has {series.n_files} file(s)"
            return Selection(None, Reason.TOO_FEW_SLICES, f"{message} < min_slices={rule.min_slices}")
        return Selection(rule)
    return Selection(None, Reason.NOT_SELECTED, "no rule matched (" + "; ".join(failures) + ")")
