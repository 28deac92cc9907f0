# SPDX-License-Identifier: Apache-2.0
"""``medkd demo``: synthetic data -> BCP vs supervised -> metrics, prediction, bundle, DICOM pipeline."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    demo = sub.add_parser("demo", help="synthetic data -> BCP vs supervised -> metrics, bundle, DICOM SEG, overlay")
    demo.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    demo.add_argument("--models", default=None,
                      help="where to export the demo bundle (default $MEDKD_MODELS, else models/)")
    demo.add_argument("--quick", action="store_true", help="a much shorter run (seconds), for smoke tests")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from medkd import api

    api.demo(args.out, quick=args.quick, progress=not args.quiet, models=args.models)
    return 0
