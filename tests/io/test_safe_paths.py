# SPDX-License-Identifier: Apache-2.0
"""UID checks and containment guards: header values never lead a path out of the output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkd.errors import DataError
from medkd.io.safe_paths import clear_work, inside, prepare_output, remove, uid_problem


@pytest.mark.parametrize("uid", ["1", "0", "1.2.840.10008.5.1.4.1.1.2", "1.02.003", "1." + "2" * 62])
def test_valid_uids(uid):
    assert uid_problem("SeriesInstanceUID", uid) is None


@pytest.mark.parametrize(
    "uid",
    [None, "", ".", "..", "/", "/etc", "../x", "1.2/3", "1\\2", "1..2", ".1", "1.", " 1.2", "1.2 ", "1.2\n",
     "1." + "2" * 63, "\u0661.\u0662", "1.2.a", "~", "C:1"],
)
def test_invalid_uids_are_named_by_keyword_never_by_value(uid):
    message = uid_problem("StudyInstanceUID", uid)
    assert message is not None and message.startswith("StudyInstanceUID ")
    if uid and uid.strip():
        assert uid.strip() not in message.replace("StudyInstanceUID", "")


def test_inside_refuses_the_root_itself_and_anything_outside(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    assert inside(out, out / "a" / "b") == out / "a" / "b"
    (out / "link").symlink_to(tmp_path, target_is_directory=True)
    for bad in (out, out / "a" / "..", out / "..", tmp_path / "elsewhere", out / "link" / "x", Path("/etc")):
        with pytest.raises(DataError, match="not inside") as err:
            inside(out, bad)
        assert str(out) in str(err.value)


def test_remove_deletes_trees_files_and_links_but_never_outside(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    (out / "tree" / "sub").mkdir(parents=True)
    (out / "tree" / "sub" / "f").write_text("x")
    (out / "file").write_text("x")
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (out / "link").symlink_to(outside, target_is_directory=True)
    (out / "tree" / "inner_link").symlink_to(outside, target_is_directory=True)
    remove(out, out / "tree")
    remove(out, out / "file")
    remove(out, out / "link")  # the link goes, its target stays
    remove(out, out / "missing")
    assert sorted(p.name for p in out.iterdir()) == []
    assert (outside / "keep").read_text() == "keep"
    for bad in (out, out / "..", out / ".", tmp_path / "outside", out / "x" / ".." / ".."):
        with pytest.raises(DataError):
            remove(out, bad)
    assert outside.is_dir() and out.is_dir()


def test_clear_work_removes_owned_entries_only(tmp_path):
    out = tmp_path / "out"
    for name in ("1.2", "3.4"):
        (out / ".work" / name).mkdir(parents=True)
    (out / ".work" / "1.2" / "seg.dcm").write_bytes(b"half")
    clear_work(out, owned=lambda name: name == "1.2")
    assert sorted(p.name for p in (out / ".work").iterdir()) == ["3.4"]
    clear_work(out)
    assert list((out / ".work").iterdir()) == []
    (out / ".work").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("k")
    (out / ".work").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    clear_work(out)  # a planted link is removed as a link
    assert not (out / ".work").exists() and (tmp_path / "elsewhere" / "keep").is_file()
    clear_work(tmp_path / "no_such_out")  # nothing to do


def test_prepare_output(tmp_path):
    assert prepare_output(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        prepare_output(tmp_path / "file")
    with pytest.raises(DataError, match="cannot write"):
        prepare_output(tmp_path / "file" / "sub")
    with pytest.raises(DataError, match="is the input folder"):
        prepare_output(tmp_path / "a", tmp_path / "a" / "b" / "..")
    with pytest.raises(DataError, match=r"\.work"):
        prepare_output(tmp_path / "a", tmp_path / "a" / ".work" / "x")
