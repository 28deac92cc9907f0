# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.metrics_log: JSON lines, conversion of scalars, resume trimming, optional TensorBoard."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.engine.metrics_log import MetricsLogger, read_metrics


def test_lines_are_written_and_flushed_immediately(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "metrics.jsonl"
    log = MetricsLogger(path)
    log.log(1, loss=torch.tensor(0.5), dice=np.float32(0.25), count=np.int64(3), name="a")
    first = json.loads(path.read_text())  # readable before close: nothing lost on a crash
    assert first["iteration"] == 1 and first["loss"] == 0.5 and first["dice"] == 0.25 and first["count"] == 3
    assert first["name"] == "a" and isinstance(first["time"], float)
    log.log(2, loss=0.4, step=7, iteration=99, time="x")  # reserved keys cannot clobber the record
    log.close()
    log.close()  # idempotent
    records = read_metrics(path)
    assert [r["iteration"] for r in records] == [1, 2]
    assert records[1]["step"] == 7 and isinstance(records[1]["time"], float)


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path / "m.jsonl", enabled=False) as log:
        log.log(1, loss=1.0)
        assert log.drop_after(0) == 0
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("keep, expected", [(3, [1, 2, 3]), (0, []), (9, [1, 2, 3, 4, 5])])
def test_drop_after_trims_lines_and_a_partial_last_line(tmp_path: Path, keep: int, expected: list[int]) -> None:
    path = tmp_path / "m.jsonl"
    with MetricsLogger(path) as log:
        for it in range(1, 6):
            log.log(it, loss=1.0 / it)
    with path.open("a") as handle:
        handle.write('{"iteration": 6, "lo')  # a line cut short by a crash
    with MetricsLogger(path) as log:
        log.drop_after(keep)
        log.log(keep + 1, loss=0.0)
    assert [r["iteration"] for r in read_metrics(path)] == [*expected, keep + 1]


def test_tensorboard_is_optional(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING), MetricsLogger(tmp_path / "m.jsonl", tensorboard_dir=tmp_path / "tb") as log:
        log.log(1, loss=1.0)
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert "TensorBoard logging disabled" in caplog.text
    else:
        assert any((tmp_path / "tb").iterdir())
    assert read_metrics(tmp_path / "m.jsonl")[0]["loss"] == 1.0
