# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.checkpoint: the one format, atomic writes, weights_only reads, clear errors."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import pytest
import torch
from torch import nn

from medkd.engine import checkpoint as ckpt_mod
from medkd.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, to_plain, unwrap
from medkd.engine.ema import EMATeacher
from medkd.engine.seeding import get_rng_state
from medkd.errors import DataError


class Mode(StrEnum):
    CLEAN = "clean"


def _trained() -> tuple[nn.Module, EMATeacher, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    teacher = EMATeacher(net, decay=0.9)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(8, 3)).pow(2).mean().backward()
    opt.step()
    teacher.update(net)
    return net, teacher, opt


def test_round_trip_holds_the_one_format(tmp_path: Path) -> None:
    net, teacher, opt = _trained()
    config = {"root": Path("/data"), "mode": Mode.CLEAN, "patch": (64, 64), "nested": {"lr": 0.01}}
    path = save_checkpoint(
        tmp_path / "sub" / "last.pt",
        student=nn.DataParallel(net),
        teacher=teacher,
        optimizer=opt,
        config=config,
        iteration=7,
        rng=get_rng_state(),
        best_score=0.5,
    )
    raw = torch.load(path, weights_only=True)  # plain types only
    assert set(raw) == {"format", "version", "student", "teacher", "optimizer", "modules", "extra_state", "scaler",
                        "config", "iteration", "rng", "best_score"}
    assert raw["version"] == 2 and raw["modules"] == {} and raw["extra_state"] == {} and raw["scaler"] is None
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["iteration"] == 7 and ckpt["best_score"] == 0.5
    assert ckpt["config"] == {"root": "/data", "mode": "clean", "patch": (64, 64), "nested": {"lr": 0.01}}
    assert set(ckpt["student"]) == set(net.state_dict())  # DataParallel and EMATeacher prefixes removed
    assert set(ckpt["teacher"]) == set(net.state_dict())
    fresh, fresh_teacher, fresh_opt = _trained()
    with torch.no_grad():
        fresh[0].weight.zero_()
    fresh.load_state_dict(ckpt["student"])
    fresh_teacher.load_state_dict(ckpt["teacher"])
    fresh_opt.load_state_dict(ckpt["optimizer"])
    assert torch.equal(fresh[0].weight, net[0].weight)
    assert torch.equal(fresh_opt.state[fresh[0].weight]["momentum_buffer"], opt.state[net[0].weight]["momentum_buffer"])


def test_optional_parts_are_none(tmp_path: Path) -> None:
    net = nn.Linear(1, 1)
    path = save_checkpoint(tmp_path / "a.pt", student=net, teacher=None, optimizer=None, config={}, iteration=0)
    ckpt = load_checkpoint(path)
    assert ckpt["teacher"] is None and ckpt["optimizer"] is None and ckpt["rng"] == {}


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, student=nn.Linear(1, 1), teacher=None, optimizer=None, config={}, iteration=3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, student=nn.Linear(1, 1), teacher=None, optimizer=None, config={}, iteration=4)
    monkeypatch.undo()
    assert load_checkpoint(path)["iteration"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _write_bytes(path: Path) -> None:
    path.write_bytes(b"\x00not a checkpoint")


def _write_truncated(path: Path) -> None:
    save_checkpoint(path, student=nn.Linear(4, 4), teacher=None, optimizer=None, config={}, iteration=1)
    path.write_bytes(path.read_bytes()[:100])


def _write_other_format(path: Path) -> None:
    torch.save({"format": "medkd-checkpoint/0", "student": {}}, path)


def _write_plain_state_dict(path: Path) -> None:
    torch.save(nn.Linear(1, 1).state_dict(), path)


def _write_pickled_object(path: Path) -> None:
    torch.save({"format": CHECKPOINT_FORMAT, "model": nn.Linear(1, 1)}, path)  # not loadable with weights_only


@pytest.mark.parametrize(
    "writer, match",
    [
        (None, "not found"),
        (_write_bytes, "not a readable checkpoint"),
        (_write_truncated, "not a readable checkpoint"),
        (_write_other_format, "unknown checkpoint format 'medkd-checkpoint/0'"),
        (_write_plain_state_dict, "not a medkd checkpoint"),
        (_write_pickled_object, "not a readable checkpoint"),
    ],
)
def test_bad_files_raise_data_error_naming_the_file(tmp_path: Path, writer, match: str) -> None:
    path = tmp_path / "bad.pt"
    if writer is not None:
        writer(path)
    with pytest.raises(DataError, match=match) as info:
        load_checkpoint(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"config": {"fn": print}}, TypeError, r"config\.fn"),
        ({"config": {}, "iteration_extra": object()}, TypeError, "iteration_extra"),
        ({"config": {}, "student_extra": 1, "format": "x"}, ValueError, "reserved"),
    ],
)
def test_bad_contents_are_refused(tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        save_checkpoint(tmp_path / "x.pt", student=nn.Linear(1, 1), teacher=None, optimizer=None, iteration=0, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "wrap",
    [lambda m: m, nn.DataParallel, lambda m: EMATeacher(m), lambda m: EMATeacher(nn.DataParallel(m))],
)
def test_unwrap(wrap) -> None:
    net = nn.Linear(2, 2)
    inner = unwrap(wrap(net))
    assert isinstance(inner, nn.Linear) and set(inner.state_dict()) == {"weight", "bias"}


def test_to_plain_converts_numpy_and_dataclasses() -> None:
    import dataclasses

    import numpy as np

    @dataclasses.dataclass
    class Cfg:
        size: np.int64 = np.int64(3)
        shape: tuple = (np.float32(0.5), torch.float32)

    assert to_plain(Cfg()) == {"size": 3, "shape": (0.5, "torch.float32")}


def test_version_1_checkpoints_still_load(tmp_path: Path) -> None:
    net = nn.Linear(2, 1)
    path = tmp_path / "v1.pt"
    v1 = {"format": "medkd-checkpoint/1", "student": net.state_dict(), "teacher": None, "optimizer": None,
          "config": {"lr": 0.1}, "iteration": 3, "rng": {}, "best_score": 0.25}
    torch.save(v1, path)
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == 1 and ckpt["modules"] == {} and ckpt["extra_state"] == {} and ckpt["scaler"] is None
    assert ckpt["iteration"] == 3 and ckpt["best_score"] == 0.25 and set(ckpt["student"]) == {"weight", "bias"}


def test_newer_format_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "v9.pt"
    torch.save({"format": "medkd-checkpoint/9", "student": {}}, path)
    with pytest.raises(DataError, match="newer medkd"):
        load_checkpoint(path)


def test_modules_and_extra_state_round_trip(tmp_path: Path) -> None:
    student, projector = nn.Linear(2, 2), nn.Linear(2, 3)
    queue = torch.arange(6.0).reshape(2, 3)
    path = save_checkpoint(tmp_path / "a.pt", student=student, teacher=None, optimizer=None, config={}, iteration=1,
                           modules={"projector": nn.DataParallel(projector)}, extra_state={"queue": queue, "ptr": 2})
    ckpt = load_checkpoint(path)
    assert set(ckpt["modules"]) == {"projector"} and set(ckpt["modules"]["projector"]) == {"weight", "bias"}
    assert torch.equal(ckpt["extra_state"]["queue"], queue) and ckpt["extra_state"]["ptr"] == 2
