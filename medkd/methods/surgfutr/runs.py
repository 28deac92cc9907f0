# SPDX-License-Identifier: Apache-2.0
"""A SurgFUTR run folder: its layout, config, classes and the student.

Layout::

    RUN/run.json          {"method": "surgfutr", "kind": "forecasting", ...}
    RUN/config.yaml       the resolved SurgFUTRConfig
    RUN/classes.json      phase, presence, event and tool names, the triplet -> tool map, the head layout
    RUN/train/            the engine folder: best.pt / last.pt (student, teacher), metrics.jsonl
    RUN/train_summary.json

Example:
    >>> checkpoint_path(Path("RUN"), "best").as_posix()
    'RUN/train/best.pt'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from medkd.config import config_from_dict, config_to_dict
from medkd.errors import DataError
from medkd.io.atomic import write_text_atomic
from medkd.methods.surgfutr.config import SurgFUTRConfig
from medkd.methods.surgfutr.modules import HeadLayout
from medkd.runs import read_run_info, write_run_info

__all__ = ["KIND", "METHOD", "RunClasses", "checkpoint_path", "load_run_config", "load_student", "read_classes",
           "save_run"]

METHOD, KIND = "surgfutr", "forecasting"


class RunClasses(dict):
    """``classes.json``: ``phase_names``, ``presence_names``, ``event_names``, ``tool_names``, ``tool_of`` and
    ``layout`` (the :class:`HeadLayout` fields)."""

    @property
    def layout(self) -> HeadLayout:
        """The student's head layout."""
        return HeadLayout.from_dict(self["layout"])


def save_run(run: Path, cfg: SurgFUTRConfig, classes: dict[str, Any]) -> None:
    """Write ``run.json``, ``config.yaml`` and ``classes.json``."""
    run.mkdir(parents=True, exist_ok=True)
    write_run_info(run, method=METHOD, kind=KIND)
    write_text_atomic(run / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    write_text_atomic(run / "classes.json", json.dumps(classes, indent=2))


def load_run_config(run: str | Path) -> SurgFUTRConfig:
    """``RUN/config.yaml`` of a SurgFUTR run.

    Raises:
        DataError: not a SurgFUTR run, or no config.
    """
    info = read_run_info(run)
    if info["method"] != METHOD:
        raise DataError(run, f"a run of method {info['method']!r}, not {METHOD!r}")
    path = Path(run) / "config.yaml"
    if not path.is_file():
        raise DataError(run, "config.yaml is missing")
    return config_from_dict(SurgFUTRConfig, yaml.safe_load(path.read_text(encoding="utf-8")) or {}, source=str(path))


def read_classes(run: str | Path) -> RunClasses:
    """``RUN/classes.json``.

    Raises:
        DataError: missing or malformed.
    """
    path = Path(run) / "classes.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        classes = RunClasses(doc)
        classes.layout  # noqa: B018  (validates)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"missing or malformed classes file ({err})") from None
    return classes


def checkpoint_path(run: str | Path, which: str = "best") -> Path:
    """``RUN/train/<which>.pt``."""
    return Path(run) / "train" / f"{which}.pt"


def load_student(run: str | Path, device: Any = "cpu", checkpoint: str = "best") -> tuple[Any, SurgFUTRConfig,
                                                                                         RunClasses, Path]:
    """The run's student in ``eval()`` mode, its config, classes and checkpoint file (``best``, else ``last``).

    Raises:
        DataError: not a SurgFUTR run, no checkpoint, or weights that do not fit.
    """
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.methods.surgfutr.model import Student

    cfg, classes = load_run_config(run), read_classes(run)
    path = checkpoint_path(run, checkpoint)
    if not path.is_file():
        path = checkpoint_path(run, "last")
    if not path.is_file():
        raise DataError(Path(run) / "train", "no checkpoint: train the run first (medkd surgfutr train)")
    state = load_checkpoint(path).get("student")
    if state is None:
        raise DataError(path, "the checkpoint has no 'student' weights")
    from dataclasses import replace

    # the checkpoint holds every weight: the SALT file model.encoder_weights names is not read (nor needed) again
    student = Student(replace(cfg, model=replace(cfg.model, encoder_weights="")), classes.layout)
    try:
        student.load_state_dict(state)
    except RuntimeError as err:
        raise DataError(path, f"the weights do not fit the run's student ({str(err).splitlines()[0]})") from None
    return student.to(device).eval(), cfg, classes, path
