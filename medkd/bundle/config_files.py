# SPDX-License-Identifier: Apache-2.0
"""A bundle's config files read as data (``json`` / ``yaml.safe_load``): nothing in them is imported or evaluated.

Every loader reads the configs through these functions before MONAI sees them, so a file that is not valid JSON
(or YAML), not an object, or an ``inference.json`` without ``network_def`` is a :class:`~medkd.errors.DataError`
naming the file and the problem (with line and column), never a traceback from deep inside MONAI.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "bad.json").write_text('{"network_def": {"name": "x",}}')
    >>> try:
    ...     read_config_file(folder / "bad.json")
    ... except DataError as err:
    ...     print(err.problem)
    not valid JSON: Expecting property name enclosed in double quotes (line 1, column 30)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medkd.bundle.layout import INFERENCE, METADATA
from medkd.errors import DataError

__all__ = ["CONFIG_SUFFIXES", "config_files", "read_config_file", "read_config_object", "read_metadata",
           "read_inference"]

#: config files MONAI reads (``ConfigParser.suffixes``)
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def config_files(path: str | Path) -> list[Path]:
    """The JSON and YAML files under ``configs/`` of a bundle folder, ``inference.json`` and ``metadata.json`` first."""
    root = Path(path) / "configs"
    if not root.is_dir():
        return []
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES)
    first = [Path(path) / INFERENCE, Path(path) / METADATA]
    return [p for p in first if p in found] + [p for p in found if p not in first]


def read_config_file(file: str | Path) -> Any:
    """The content of a JSON or YAML file, as plain data.

    Raises:
        DataError: the file cannot be read, is not UTF-8 text, or is not valid JSON (YAML for ``.yaml``/``.yml``,
            with the safe loader); the message gives the line and column of the problem.
    """
    file = Path(file)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(file, f"not UTF-8 text (byte {err.start})") from err
    except OSError as err:
        raise DataError(file, f"cannot be read: {err.strerror or type(err).__name__}") from err
    if file.suffix.lower() in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except RecursionError as err:
            raise DataError(file, "not valid YAML: nested too deeply") from err
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise DataError(file, f"not valid YAML: {getattr(err, 'problem', None) or err}{where}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(file, f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})") from err
    except RecursionError as err:
        raise DataError(file, "not valid JSON: nested too deeply") from err


def read_config_object(file: str | Path) -> dict[str, Any]:
    """:func:`read_config_file` of a file that must hold an object (a mapping).

    Raises:
        DataError: as :func:`read_config_file`, or the content is not an object.
    """
    content = read_config_file(file)
    if not isinstance(content, dict):
        kind = "JSON" if Path(file).suffix.lower() == ".json" else "YAML"
        raise DataError(file, f"must hold a {kind} object ({{...}}), not {type(content).__name__}")
    return content


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``configs/metadata.json`` of a bundle folder.

    Raises:
        DataError: the file is missing, not valid JSON or not a JSON object.
    """
    file = Path(path) / METADATA
    if not file.is_file():
        raise DataError(path, f"not a MONAI bundle ({METADATA} is missing)")
    return read_config_object(file)


def read_inference(path: str | Path) -> dict[str, Any]:
    """``configs/inference.json`` of a bundle folder, which must define ``network_def``.

    Raises:
        DataError: the file is missing, not valid JSON, not a JSON object, or has no ``network_def`` object.
    """
    file = Path(path) / INFERENCE
    if not file.is_file():
        raise DataError(path, f"not a MONAI bundle ({INFERENCE} is missing)")
    config = read_config_object(file)
    if not isinstance(config.get("network_def"), dict):
        problem = "has no 'network_def'" if "network_def" not in config else "'network_def' is not an object"
        raise DataError(file, f"{problem}: it must define the network ({{\"_target_\": \"medkd.nets.create_net\", "
                              f"\"name\": ...}})")
    return config
