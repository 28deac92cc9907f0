# SPDX-License-Identifier: Apache-2.0
"""One checkpoint format for every method, written atomically and read with ``weights_only=True``.

A checkpoint is a dict (format version 2)::

    {"format": "medkd-checkpoint/2", "version": 2, "student": state_dict, "teacher": state_dict | None,
     "optimizer": state_dict | None, "modules": {name: state_dict}, "extra_state": dict,
     "scaler": state_dict | None, "config": dict, "iteration": int, "rng": dict, **extra}

``modules`` holds the trainable networks other than the student (projectors, context modules, prototypes);
``extra_state`` whatever else a task keeps (queues, banks, counters); ``scaler`` a mixed-precision grad scaler.
Version-1 files (``medkd-checkpoint/1``, no ``modules``/``extra_state``/``scaler``) still load: the missing
entries read as empty.

State dicts are taken from the unwrapped networks (no ``module.`` prefixes from DDP or the EMA teacher).
The file is written to a temporary file in the same folder, fsynced and moved into place with
``os.replace``, so an interrupted save never leaves a truncated checkpoint behind.

Example:
    >>> import tempfile, pathlib
    >>> from torch import nn
    >>> net = nn.Linear(2, 1)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "last.pt"
    >>> _ = save_checkpoint(path, student=net, teacher=None, optimizer=None, config={"lr": 0.01}, iteration=5)
    >>> load_checkpoint(path)["iteration"]
    5
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from enum import Enum
from os import PathLike
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from medkd.engine.ema import EMATeacher
from medkd.errors import DataError

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "READABLE_FORMATS", "save_checkpoint", "load_checkpoint", "unwrap",
    "to_plain",
]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2
CHECKPOINT_FORMAT = f"medkd-checkpoint/{CHECKPOINT_VERSION}"
#: formats :func:`load_checkpoint` reads (older ones are upgraded in memory)
READABLE_FORMATS = ("medkd-checkpoint/1", CHECKPOINT_FORMAT)
_REQUIRED = ("format", "student", "teacher", "optimizer", "config", "iteration", "rng")
_RESERVED = (*_REQUIRED, "version", "modules", "extra_state", "scaler")


def unwrap(model: nn.Module) -> nn.Module:
    """Return the network inside ``DistributedDataParallel``, ``DataParallel`` or :class:`EMATeacher` wrappers.

    Args:
        model: a network, possibly wrapped (wrappers may nest).

    Returns:
        The innermost network.

    Example:
        >>> from torch import nn
        >>> net = nn.Linear(2, 2)
        >>> unwrap(nn.DataParallel(net)) is net
        True
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel, EMATeacher)):
        model = model.module
    return model


def to_plain(obj: Any, where: str = "config") -> Any:
    """Convert ``obj`` to types that ``torch.load(weights_only=True)`` accepts.

    Enums become their values, paths strings, dataclasses dicts, NumPy scalars/arrays Python numbers/tensors;
    dicts, lists and tuples are converted recursively; str, int, float, bool, None and tensors pass through.

    Args:
        obj: the value to convert.
        where: a dotted name for error messages.

    Returns:
        The converted value.

    Raises:
        TypeError: a value of another type (naming where it sits).

    Example:
        >>> from pathlib import Path
        >>> to_plain({"root": Path("/data"), "patch": (64, 64)})
        {'root': '/data', 'patch': (64, 64)}
    """
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)) and not isinstance(obj, Enum):
        return obj
    if isinstance(obj, Enum):
        return to_plain(obj.value, where)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, torch.device | torch.dtype):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(f"{where}: cannot store a {type(obj).__name__} in a checkpoint; use plain types")


def save_checkpoint(
    path: str | PathLike[str],
    *,
    student: nn.Module,
    teacher: nn.Module | None,
    optimizer: Optimizer | None,
    config: dict[str, Any],
    iteration: int,
    rng: dict[str, Any] | None = None,
    modules: dict[str, nn.Module] | None = None,
    extra_state: dict[str, Any] | None = None,
    scaler: Any = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint in the one medkd format, atomically.

    Args:
        path: destination file (parent folders are created).
        student: the trained network (wrappers are unwrapped).
        teacher: the teacher network or :class:`EMATeacher`, or None.
        optimizer: the optimiser whose state is saved, or None.
        config: the run's configuration; converted with :func:`to_plain`.
        iteration: the last completed iteration (1-based).
        rng: generator states from :func:`medkd.engine.seeding.get_rng_state`; ``{}`` if None.
        modules: further trainable networks by name (saved as state dicts, wrappers unwrapped).
        extra_state: a task's other state (tensors and plain types), converted with :func:`to_plain`.
        scaler: a ``torch.amp.GradScaler`` (or anything with ``state_dict()``), or None.
        **extra: further entries (e.g. ``best_score``), converted with :func:`to_plain`.

    Returns:
        The path written.

    Raises:
        ValueError: an ``extra`` key collides with a reserved key.
        TypeError: ``config`` or ``extra`` holds a value that is not plain (see :func:`to_plain`).

    Example:
        >>> import tempfile, pathlib
        >>> from torch import nn
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.pt"
        >>> save_checkpoint(p, student=nn.Linear(1, 1), teacher=None, optimizer=None, config={}, iteration=0) == p
        True
    """
    clash = sorted(set(extra) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra checkpoint keys {clash} collide with reserved keys {list(_RESERVED)}")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "student": unwrap(student).state_dict(),
        "teacher": None if teacher is None else unwrap(teacher).state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "config": to_plain(dict(config)),
        "iteration": int(iteration),
        "rng": {} if rng is None else rng,
        "modules": {str(name): unwrap(module).state_dict() for name, module in (modules or {}).items()},
        "extra_state": to_plain(dict(extra_state or {}), "extra_state"),
        "scaler": None if scaler is None else scaler.state_dict(),
        **{k: to_plain(v, k) for k, v in extra.items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    logger.debug("saved checkpoint %s (iteration %d)", path, iteration)
    return path


def load_checkpoint(path: str | PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (default: everything on CPU).

    Returns:
        The checkpoint dict (see the module docstring), in the current format: a version-1 file gets
        ``version: 1``, empty ``modules`` and ``extra_state`` and no ``scaler``.

    Raises:
        DataError: the file is missing, unreadable, not a checkpoint or of an unknown format.

    Example:
        >>> load_checkpoint("/no/such/file.pt")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        medkd.errors.DataError: /no/such/file.pt: checkpoint file not found
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise DataError(path, f"not a readable checkpoint ({type(err).__name__}: {detail})") from err
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise DataError(path, "not a medkd checkpoint (no 'format' entry)")
    if ckpt["format"] not in READABLE_FORMATS:
        raise DataError(path, f"unknown checkpoint format {ckpt['format']!r}; expected one of {list(READABLE_FORMATS)}"
                              " (a checkpoint from a newer medkd?)")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise DataError(path, f"checkpoint lacks entries {missing}")
    ckpt.setdefault("version", int(str(ckpt["format"]).rsplit("/", 1)[1]))
    ckpt.setdefault("modules", {})
    ckpt.setdefault("extra_state", {})
    ckpt.setdefault("scaler", None)
    return ckpt


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
