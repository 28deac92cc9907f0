# SPDX-License-Identifier: Apache-2.0
"""Training metrics as JSON lines (always) and TensorBoard scalars (when ``tensorboard`` is installed).

Each :meth:`MetricsLogger.log` call appends one flushed line ``{"iteration": i, "time": t, **scalars}``,
so an interrupted run loses nothing already logged. Only rank 0 logs; other ranks pass ``enabled=False``.

Example:
    >>> import tempfile, pathlib, json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with MetricsLogger(path) as log:
    ...     log.log(10, loss=0.5, lr=0.01)
    >>> json.loads(path.read_text())["loss"]
    0.5
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import time
from os import PathLike
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["MetricsLogger", "read_metrics"]

logger = logging.getLogger(__name__)


def _scalar(value: Any) -> Any:
    """Tensors and NumPy numbers → Python numbers; other JSON-serialisable values pass through."""
    if isinstance(value, torch.Tensor):
        return value.detach().item()
    if isinstance(value, numbers.Number) and not isinstance(value, (int, float)):
        return value.item() if hasattr(value, "item") else float(value)  # NumPy scalars
    return value


class MetricsLogger:
    """Append scalars to a JSON-lines file and, optionally, to TensorBoard.

    Args:
        path: the ``.jsonl`` file (parent folders are created); appended to if it exists.
        tensorboard_dir: also write TensorBoard events here; skipped with a warning when
            ``torch.utils.tensorboard`` cannot be imported (``pip install "medkd[tensorboard]"``).
        enabled: False makes every method a no-op (ranks other than 0).

    Example:
        >>> MetricsLogger(Path("unused.jsonl"), enabled=False).log(1, loss=1.0)
    """

    def __init__(
        self, path: str | PathLike[str], *, tensorboard_dir: str | PathLike[str] | None = None, enabled: bool = True
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._writer: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                logger.warning("TensorBoard logging disabled (%s); install medkd[tensorboard] to enable it", err)
            else:
                self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, step: int, /, **scalars: Any) -> None:
        """Append one line ``{"iteration": step, "time": unix seconds, **scalars}`` and flush it.

        Args:
            step: the iteration the values belong to.
            **scalars: numbers (Python, NumPy or 0-d tensors) or short strings; keys ``iteration`` and
                ``time`` are reserved and dropped.
        """
        if not self.enabled or self._file is None:
            return
        values = {k: _scalar(v) for k, v in scalars.items() if k not in ("iteration", "time")}
        record = {"iteration": int(step), "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(key, value, int(step))

    def drop_after(self, iteration: int) -> int:
        """Remove lines logged after ``iteration`` (before resuming from it) and any partial last line.

        Args:
            iteration: the last iteration to keep.

        Returns:
            The number of lines removed.
        """
        if not self.enabled or not self.path.exists():
            return 0
        if self._file is not None:
            self._file.close()
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                keep = int(json.loads(line)["iteration"]) <= iteration
            except (ValueError, KeyError, TypeError):
                keep = False  # a line cut short by a crash
            if keep:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        self._file = self.path.open("a", encoding="utf-8")
        return dropped

    def close(self) -> None:
        """Close the file and the TensorBoard writer (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | PathLike[str]) -> list[dict[str, Any]]:
    """Read a metrics ``.jsonl`` file into a list of dicts (skipping a partial last line).

    Example:
        >>> read_metrics(Path("missing.jsonl"))
        []
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipping a malformed line", path)
    return records
