# SPDX-License-Identifier: Apache-2.0
"""What a run folder is: ``RUN/run.json`` names the method and kind that wrote it.

Every training run writes ``run.json`` (``{"method": "bcp", "kind": "segmentation", "medkd": "0.1.0"}``); loading
a run (evaluation, prediction, bundle export, pipelines, the app) dispatches on ``method``. Run folders from before
``run.json`` existed are BCP runs when they hold ``config.yaml``.

Example:
    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = write_run_info(run, method="bcp", kind="segmentation")
    >>> read_run_info(run)["method"]
    'bcp'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medkd.errors import DataError

__all__ = ["RUN_INFO", "LEGACY_METHOD", "write_run_info", "read_run_info", "is_run"]

RUN_INFO = "run.json"
#: the method of a run folder without ``run.json`` but with ``config.yaml`` (runs written before run.json)
LEGACY_METHOD = {"method": "bcp", "kind": "segmentation"}


def write_run_info(run: str | Path, *, method: str, kind: str, **extra: Any) -> Path:
    """Write ``RUN/run.json`` (atomically) and return its path."""
    from medkd import __version__
    from medkd.io.atomic import write_text_atomic

    path = Path(run) / RUN_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"method": method, "kind": kind, "medkd": __version__, **extra}, indent=1))
    return path


def is_run(run: str | Path) -> bool:
    """Whether ``run`` looks like a medkd run folder (``run.json``, or a legacy ``config.yaml``)."""
    run = Path(run)
    return (run / RUN_INFO).is_file() or (run / "config.yaml").is_file()


def read_run_info(run: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder; a legacy folder with only ``config.yaml`` reads as a BCP segmentation run.

    Raises:
        DataError: not a run folder, or ``run.json`` is not a JSON object with ``method`` and ``kind``.
    """
    run = Path(run)
    path = run / RUN_INFO
    if not path.is_file():
        if (run / "config.yaml").is_file():
            return dict(LEGACY_METHOD)
        raise DataError(run, f"not a medkd run folder (no {RUN_INFO} or config.yaml)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("method"), str) or not isinstance(info.get("kind"), str):
        raise DataError(path, "must be a JSON object with string 'method' and 'kind'")
    return info
