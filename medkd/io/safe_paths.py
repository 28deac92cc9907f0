# SPDX-License-Identifier: Apache-2.0
"""Header values never lead a path out of the output folder: DICOM UID checks and containment guards.

The batch pipeline names folders after UIDs read from DICOM headers (``OUT/<StudyInstanceUID>/<SeriesInstanceUID>/``
and ``OUT/.work/<SeriesInstanceUID>/``). A header is untrusted input, so:

- :func:`uid_problem` checks a UID against the DICOM UI rules (PS3.5 9.1: digits and dots, at most 64 characters,
  no empty component; leading zeros are tolerated) before it becomes a folder name. Its message names the tag,
  never the value.
- :func:`inside` checks that a path medkd creates or renames into lies strictly inside the output folder, after
  resolving ``..`` and symbolic links; :func:`remove` deletes a folder tree, a file or a link itself only after the
  same check; :func:`clear_work` empties ``OUT/.work`` that way.
- :func:`prepare_output` creates the output folder and checks it can be written, with a :class:`DataError`
  naming it (not a traceback) when it cannot.

Example:
    >>> uid_problem("SeriesInstanceUID", "1.2.840.10008.5.1.4.1.1.2") is None
    True
    >>> uid_problem("SeriesInstanceUID", "../../etc")
    'SeriesInstanceUID is not a valid DICOM UID (digits and dots only, no empty component)'
    >>> inside("/data/out", "/data/out/1.2/3.4")
    PosixPath('/data/out/1.2/3.4')
    >>> inside("/data/out", "/data/out/1.2/..")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    medkd.errors.DataError: /data/out: refusing to touch a path that is not inside this folder
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from medkd.errors import DataError

__all__ = ["UID_MAX_LENGTH", "UID_KEYWORDS", "uid_problem", "inside", "remove", "clear_work", "prepare_output"]

logger = logging.getLogger(__name__)

#: longest UID the DICOM standard allows (PS3.5 9.1)
UID_MAX_LENGTH = 64
#: header UIDs the batch pipeline turns into folder names
UID_KEYWORDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID")
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")  # ASCII digits only: str.isdigit() would accept other scripts' digits


def uid_problem(keyword: str, value: object) -> str | None:
    """Why ``value`` cannot be used as a DICOM UID (and so as a folder name), or ``None`` when it can.

    Args:
        keyword: the tag's keyword, for the message (e.g. ``"SeriesInstanceUID"``).
        value: the header value (``None`` or empty is a problem).

    Returns:
        ``None`` for a valid UID, else a message naming ``keyword`` (never the value: it is untrusted input).
    """
    text = "" if value is None else str(value)
    if not text:
        return f"{keyword} is empty"
    if len(text) > UID_MAX_LENGTH:
        return f"{keyword} is longer than {UID_MAX_LENGTH} characters"
    if not _UID.fullmatch(text):
        return f"{keyword} is not a valid DICOM UID (digits and dots only, no empty component)"
    return None


def _refuse(root: str | os.PathLike[str]) -> DataError:
    return DataError(root, "refusing to touch a path that is not inside this folder (built from header values?)")


def inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it lies strictly inside ``root`` once both are resolved (``..`` and links followed).

    Args:
        root: the folder that must contain ``path`` (the output folder).
        path: a path about to be created, written or renamed into.

    Returns:
        ``path`` unchanged.

    Raises:
        DataError: naming ``root`` (not ``path``, which may be built from hostile values) when ``path`` resolves to
            ``root`` itself or outside it.
    """
    base, target = Path(root).resolve(), Path(path).resolve()
    if target == base or not target.is_relative_to(base):
        raise _refuse(root)
    return Path(path)


def remove(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Delete ``path`` (a folder tree, a file, or a symbolic link itself, never its target) inside ``root``.

    The check resolves ``path``'s parent but not its last component, so a link inside ``root`` pointing elsewhere
    is removed as a link. A missing ``path`` is fine.

    Raises:
        DataError: when ``path`` does not lie strictly inside ``root`` (nothing is touched).
        OSError: what the removal raises.
    """
    path = Path(path)
    base = Path(root).resolve()
    target = path.parent.resolve() / path.name
    if path.name in ("", ".", "..") or target == base or not target.is_relative_to(base):
        raise _refuse(root)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)  # does not follow links inside the tree


def clear_work(out_dir: str | os.PathLike[str], owned: Callable[[str], bool] = lambda name: True) -> None:
    """Remove what an interrupted run left in ``OUT/.work``: each entry whose name ``owned`` accepts.

    A ``.work`` that is a file or a symbolic link is removed itself (a link's target is never touched).

    Args:
        out_dir: the output folder.
        owned: which ``.work/<name>`` entries this run may clear (a shard clears only its own series').
    """
    out_dir = Path(out_dir)
    work_root = out_dir / ".work"
    if work_root.is_symlink() or (work_root.exists() and not work_root.is_dir()):
        remove(out_dir, work_root)
        return
    if not work_root.is_dir():
        return
    for child in sorted(work_root.iterdir()):
        if owned(child.name):
            logger.info("removing .work/%r, left by an interrupted run", child.name)
            remove(work_root, child)


def prepare_output(out_dir: str | os.PathLike[str], input_dir: str | os.PathLike[str] | None = None) -> Path:
    """Create the output folder and check a file can be written in it.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: naming the folder when it is an existing file, is ``input_dir`` itself (or ``input_dir`` lies in
            its ``.work``, which runs clear), or cannot be created or written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "exists and is not a folder; -o/--output names the output folder")
    if input_dir is not None:
        real_out, real_in = out_dir.resolve(), Path(input_dir).resolve()
        if real_out == real_in:
            raise DataError(out_dir, "is the input folder; choose another output folder")
        if real_in.is_relative_to(real_out / ".work"):
            raise DataError(input_dir, "lies in the output folder's .work, which every run clears")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise DataError(out_dir, f"cannot write to the output folder ({err.strerror or type(err).__name__})") from None
    return out_dir
