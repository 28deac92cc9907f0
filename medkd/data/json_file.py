# SPDX-License-Identifier: Apache-2.0
"""Reading a JSON annotation file whose top level is an object, with errors that name the file.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.json"
    >>> _ = path.write_text('{"video": 1}')
    >>> read_json_object(path)
    {'video': 1}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medkd.errors import DataError

__all__ = ["read_json_object"]


def read_json_object(path: Path) -> dict[str, Any]:
    """The parsed JSON object in ``path``.

    Raises:
        DataError: the file cannot be read or decoded, is not valid JSON, or its top level is not an object.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read: {type(err).__name__}: {err}") from None
    if not isinstance(doc, dict):
        raise DataError(path, f"top level must be a JSON object, got {type(doc).__name__}")
    return doc
