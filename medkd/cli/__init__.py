# SPDX-License-Identifier: Apache-2.0
"""The ``medkd`` command: a subcommand per application, each a thin layer over one :mod:`medkd.api` call.

Every registered method (:data:`medkd.methods.METHODS`, plugins included) adds its own subcommand through its
``Method.cli`` (``medkd bcp train|eval|predict``); the tools shared by all methods follow (:data:`COMMANDS`). Each
adds its subcommand with ``add_parser(subparsers)`` and sets ``handler``. Heavy libraries are imported only inside
handlers, so ``medkd --help`` is instant.

Exit codes: 0 done (skips allowed), 1 fatal, 2 bad input (config, data, unknown names), 3 skipped or failed
inputs under ``--strict``, 130 interrupted (training resumes with ``--resume``). Bad input never shows a traceback;
an unexpected internal error prints one line and the path of a log holding its traceback
(``$MEDKD_LOG_DIR``, default ``~/.cache/medkd/logs``), exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from medkd import __version__
from medkd.cli import app, bundle, demo, pipeline
from medkd.methods import get_method, list_methods

__all__ = ["main", "build_parser", "add_method_parsers", "crash_log_dir", "COMMANDS"]

logger = logging.getLogger("medkd")

#: subcommand modules shared by every method, in help order (after the methods' own subcommands)
COMMANDS = (pipeline, bundle, app, demo)


def add_method_parsers(sub: argparse._SubParsersAction) -> list[str]:
    """Add each registered method's subcommand (``Method.cli``), sorted by name; returns the methods added.

    A method whose subcommand cannot be added (a broken plugin: its module does not import, its function raises)
    is logged and left out; the other commands still work.
    """
    added = []
    for name in list_methods():
        method = get_method(name)
        if method.cli is None:
            continue
        try:
            method.resolve("cli")(sub)
        except Exception as err:  # noqa: BLE001 - one broken method must not take the whole command down
            logger.warning("method %r left out of the command line: %s: %s", name, type(err).__name__, err)
            continue
        added.append(name)
    return added


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs)."""
    parser = argparse.ArgumentParser(prog="medkd", description="Teacher-student learning for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    add_method_parsers(sub)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    if not args.verbose:  # libraries' INFO chatter (highdicom lists every module it copies) only with -v
        for name in ("highdicom", "monai"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # pydicom's value warnings quote the value ("Invalid value for VR DA: '...'"): patient data on the console
        logging.getLogger("pydicom").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medkd`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"medkd: interrupted; {getattr(args, 'interrupt_hint', 'nothing half-written is kept')}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure ends as one line and an exit code
        message = _bad_input(err)
        if message is not None:
            print(f"medkd: error: {message}", file=sys.stderr)
            return 2
        log = _crash_log(argv)  # an unexpected internal error: the traceback goes to a log file
        where = f"; details in {log}" if log else ""
        print(f"medkd: internal error: {_first_line(err)}{where}", file=sys.stderr)
        return 1


#: OS errors about a path the user gave (exit 2); others (a full disk, ...) are internal errors
_PATH_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)


def _bad_input(err: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input (exit 2), else ``None``."""
    from medkd.errors import MedkdError

    if isinstance(err, MedkdError):
        return str(err)
    if isinstance(err, KeyError):  # unknown registry name (the registries' messages start with "unknown")
        message = str(err.args[0]) if err.args else ""
        return message if message.startswith("unknown ") else None
    if isinstance(err, _PATH_ERRORS) and err.filename:
        return f"{err.filename}: {err.strerror or type(err).__name__}"
    return None


def _first_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``, capped at ``limit`` characters."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def crash_log_dir() -> Path:
    """Where tracebacks of internal errors go: ``$MEDKD_LOG_DIR``, else ``~/.cache/medkd/logs``."""
    return Path(os.environ.get("MEDKD_LOG_DIR") or Path.home() / ".cache" / "medkd" / "logs")


def _crash_log(argv: Sequence[str] | None) -> Path | None:
    """Write the current exception's traceback (and the command) to a new file; ``None`` if it cannot be written."""
    folder = crash_log_dir()
    path = folder / f"medkd-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        command = " ".join(sys.argv[:1] + list(argv if argv is not None else sys.argv[1:]))
        path.write_text(f"medkd {__version__}\ncommand: {command}\n\n{traceback.format_exc()}", encoding="utf-8")
    except OSError:
        return None
    logger.debug("traceback written to %s", path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
