# SPDX-License-Identifier: Apache-2.0
"""The ``medkd`` command: a subcommand per application, each a thin layer over one :mod:`medkd.api` call.

Each module here adds its subcommand with ``add_parser(subparsers)`` and sets ``handler`` (see
:data:`COMMANDS`). Heavy libraries are imported only inside handlers, so ``medkd --help`` is instant.

Exit codes: 0 done (skips allowed), 1 fatal, 2 bad input (config, data, unknown names), 3 skipped or failed
inputs under ``--strict``, 130 interrupted (training resumes with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from medkd import __version__
from medkd.cli import app, bcp, bundle, demo, pipeline

__all__ = ["main", "build_parser", "COMMANDS"]

logger = logging.getLogger("medkd")

#: subcommand modules, in help order
COMMANDS = (bcp, pipeline, bundle, app, demo)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs)."""
    parser = argparse.ArgumentParser(prog="medkd", description="Teacher-student learning for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    if not args.verbose:  # libraries' INFO chatter (highdicom lists every module it copies) only with -v
        for name in ("highdicom", "pydicom", "monai"):
            logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medkd`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    from medkd.errors import MedkdError

    try:
        return int(args.handler(args) or 0)
    except MedkdError as err:
        print(f"medkd: error: {err}", file=sys.stderr)
        return 2
    except KeyError as err:  # unknown registry name (the registries' messages start with "unknown")
        message = str(err.args[0]) if err.args else ""
        if not message.startswith("unknown "):
            raise
        print(f"medkd: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medkd: interrupted; {getattr(args, 'interrupt_hint', 'nothing half-written is kept')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
