# SPDX-License-Identifier: Apache-2.0
"""Unpack an uploaded zip archive safely, within the upload's budgets (:mod:`medkd.io.upload_limits`).

:func:`extract_zip` refuses, with a :class:`~medkd.errors.DataError` naming the archive as the user called it:

- an archive whose end record announces more entries than ``max_zip_members``, or a file list too long for that
  many, before :mod:`zipfile` parses the list (it builds an object per entry: millions cost seconds and gigabytes);
- an archive whose declared sizes exceed ``max_zip_bytes``, and, since declared sizes are not trusted, one whose
  members exceed it while they are written (counted a mebibyte at a time, shared by all archives of the upload);
- absolute, drive-letter or ``..`` member paths (nothing is written outside the destination), encrypted members,
  unknown compression methods and damaged archives.

Folders, ``__MACOSX``, ``._*`` resource forks, ``.DS_Store``, ``Thumbs.db`` and ``desktop.ini`` are skipped; each
path component becomes a :func:`safe_name`. :class:`UploadFolder` holds one upload's staging state: its folder, what
is left of its budgets, and the paths given out, so that :meth:`UploadFolder.fresh` de-duplicates names
(``IM.dcm``, ``IM_2.dcm``, ...) in constant time however many members share a name.

Example:
    >>> import io, tempfile, zipfile
    >>> from pathlib import Path
    >>> from medkd.io.upload_limits import upload_limits
    >>> folder = Path(tempfile.mkdtemp())
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w") as zf:
    ...     for member in ("study/IM1.dcm", "study/im1.DCM", "__MACOSX/study/._IM1.dcm"):
    ...         zf.writestr(member, b"data")
    >>> _ = (folder / "scan.zip").write_bytes(buffer.getvalue())
    >>> upload = UploadFolder(folder, upload_limits())
    >>> members = extract_zip(folder / "scan.zip", "scan.zip", folder / "unzipped", upload)
    >>> [(path.relative_to(folder).as_posix(), name) for path, name in members], upload.unpacked
    ([('unzipped/study/IM1.dcm', 'IM1.dcm'), ('unzipped/study/im1_2.DCM', 'im1.DCM')], 8)
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from medkd.errors import DataError
from medkd.io.upload_limits import CHUNK_BYTES, UploadLimits, limit_hint, size_text

__all__ = ["UploadFolder", "check_zip_directory", "extract_zip", "member_parts", "safe_name"]

_EOCD_SEARCH = 22 + 65535  # the zip end record and the longest comment
_DIR_BYTES_PER_MEMBER = 1024  # a zip file list longer than this per allowed entry is refused before it is parsed
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def safe_name(name: str) -> str:
    """A file name that is safe on disk: the last path component, odd characters replaced, at most 120 chars.

    Example:
        >>> safe_name("../../etc/pass wd"), safe_name("..")
        ('pass_wd', 'file')
    """
    base = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"[^\w.+-]", "_", base)[:120].strip(".")
    return base or "file"


@dataclass
class UploadFolder:
    """One upload being staged: its folder, budgets, the names given out and what each path is called.

    It is the :class:`medkd.io.upload_limits.UploadBudget` that :func:`medkd.io.upload_limits.read_header` spends.
    """

    folder: Path
    limits: UploadLimits
    reads_left: int = field(init=False)  # of limits.max_dicom_reads
    unpacked: int = 0  # bytes extracted from zips and inflated from Deflated DICOM, against limits.max_zip_bytes
    taken: set[str] = field(default_factory=set)  # casefolded paths given out
    counters: dict[str, int] = field(default_factory=dict)  # last suffix used per wanted path
    shown: dict[str, str] = field(default_factory=dict)  # path on disk -> the user's name for it

    def __post_init__(self) -> None:
        self.reads_left = self.limits.max_dicom_reads

    def fresh(self, folder: Path, name: str) -> Path:
        """A path in ``folder`` for ``name`` not given out before (``a.dcm``, ``a_2.dcm``, ...), in constant time
        per call however many files share the name (every folder is new, so only names given out here exist)."""
        wanted = folder / name
        path, key = wanted, str(wanted).casefold()
        if key in self.taken:
            stem, dot, ext = name.partition(".")
            k = self.counters.get(key, 1)
            while str(path).casefold() in self.taken:
                k += 1
                path = folder / f"{stem}_{k}{dot}{ext}"
            self.counters[key] = k
        self.taken.add(str(path).casefold())
        self.shown[str(path)] = name
        return path


def member_parts(member: str, archive: str) -> list[str] | None:
    """Sanitised path components of a zip member; ``None`` to skip it.

    Raises:
        DataError: an absolute, drive-letter or ``..`` path (naming ``archive``).
    """
    name = member.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
        raise DataError(archive, f"the zip archive holds an unsafe path ({member!r}); it was not opened")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1].lower() in _JUNK_NAMES:
        return None
    return [safe_name(p) for p in parts]


def _too_many(archive: str, count: int, limits: UploadLimits) -> DataError:
    return DataError(archive, f"the zip archive holds {count:,} files and folders; "
                              f"{limit_hint('max_zip_members', f'{limits.max_zip_members:,}')}")  # fmt: skip


def check_zip_directory(path: Path, archive: str, limits: UploadLimits) -> None:
    """Refuse a zip whose end record announces more entries than allowed, or a file list too long for that many,
    before :mod:`zipfile` parses it (it builds an object per entry: millions cost seconds and gigabytes).

    Raises:
        DataError: naming ``archive`` (the user's name for ``path``).
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - _EOCD_SEARCH))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # zipfile says what is wrong
    count, listed = struct.unpack_from("<HL", tail, at + 10)
    z64 = at - 20 - 56  # the zip64 end record, before its locator
    if (count == 0xFFFF or listed == 0xFFFFFFFF) and z64 >= 0 and tail[z64 : z64 + 4] == b"PK\x06\x06":
        count, listed = struct.unpack_from("<QQ", tail, z64 + 32)
    if count > limits.max_zip_members:
        raise _too_many(archive, count, limits)
    if listed > limits.max_zip_members * _DIR_BYTES_PER_MEMBER + _EOCD_SEARCH:
        raise DataError(archive, f"the zip archive's file list ({size_text(listed)}) is too long for "
                                 f"{limits.max_zip_members:,} files and folders; "
                                 f"{limit_hint('max_zip_members', f'{limits.max_zip_members:,}')}")  # fmt: skip


def extract_zip(path: Path, archive: str, dest: Path, upload: UploadFolder) -> list[tuple[Path, str]]:
    """Extract the zip at ``path`` into ``dest`` with path checks, counting the bytes as they are written
    (``upload.unpacked``, shared by the upload's archives).

    Args:
        path: the archive on disk.
        archive: the user's name for it, for messages.
        dest: the folder to extract into (created as needed).
        upload: the upload's staging state: its limits, unpacked bytes and the names given out.

    Returns:
        ``(path on disk, member's file name)`` of each extracted file, in archive order.

    Raises:
        DataError: naming ``archive``, for the refusals listed in the module docstring.
    """
    limits = upload.limits
    out: list[tuple[Path, str]] = []
    too_big = DataError(archive, f"the zip archive unpacks to more than {size_text(limits.max_zip_bytes)}; "
                                 f"{limit_hint('max_zip_bytes', size_text(limits.max_zip_bytes))}")  # fmt: skip
    check_zip_directory(path, archive, limits)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > limits.max_zip_members:
                raise _too_many(archive, len(infos), limits)
            files = [info for info in infos if not info.is_dir()]
            if upload.unpacked + sum(info.file_size for info in files) > limits.max_zip_bytes:
                raise too_big  # declared sizes refuse an honest bomb at once; they are not trusted otherwise
            for info in files:
                parts = member_parts(info.filename, archive)
                if parts is None:
                    continue
                if info.flag_bits & 0x1:
                    raise DataError(archive, "the zip archive is password-protected; upload it unencrypted")
                folder = dest.joinpath(*parts[:-1])
                folder.mkdir(parents=True, exist_ok=True)
                target = upload.fresh(folder, parts[-1])
                with zf.open(info) as src, target.open("xb") as dst:
                    while chunk := src.read(CHUNK_BYTES):
                        upload.unpacked += len(chunk)
                        if upload.unpacked > limits.max_zip_bytes:
                            raise too_big
                        dst.write(chunk)
                out.append((target, parts[-1]))
    except DataError:
        raise
    except NotImplementedError:
        raise DataError(archive, "the zip archive uses a compression method that cannot be read") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as err:
        raise DataError(archive, f"the zip archive is damaged ({type(err).__name__})") from None
    return out
