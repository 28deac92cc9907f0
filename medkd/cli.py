# SPDX-License-Identifier: Apache-2.0
"""The ``medkd`` command: parses arguments, sets up logging, calls :mod:`medkd.api`, maps errors to exit codes.

Exit codes: 0 success, 2 bad input (config, data, unknown names), 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from medkd import __version__

__all__ = ["main", "build_parser"]

logger = logging.getLogger("medkd")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the docs)."""
    parser = argparse.ArgumentParser(prog="medkd", description="Teacher-student learning for medical imaging.")
    parser.add_argument("--version", action="version", version=f"medkd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    bcp = sub.add_parser("bcp", help="Bidirectional Copy-Paste semi-supervised segmentation (CVPR 2023)")
    bsub = bcp.add_subparsers(dest="action", required=True)
    train = bsub.add_parser("train", help="train BCP or the supervised baseline from a preset")
    train.add_argument("--config", required=True, help="preset YAML, e.g. apps/bcp/acdc_5pct.yaml")
    train.add_argument("--data-root", required=True, help="dataset folder (ACDC or LA layout)")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoints")

    ev = bsub.add_parser("eval", help="evaluate a run with the paper's protocol")
    ev.add_argument("--run", required=True, help="run folder written by 'medkd bcp train'")
    ev.add_argument("--data-root", required=True)
    ev.add_argument("--split", default="test", help="list name: test (default), val, ...")
    ev.add_argument("--json", default=None, help="write the metrics here")
    ev.add_argument("--checkpoint", default="best", choices=("best", "last"))
    ev.add_argument("--stage", default=None, choices=("pretrain", "selftrain", "supervised"),
                    help="evaluate this stage's student instead of the run's final one")

    pr = bsub.add_parser("predict", help="segment NIfTI files or a DICOM series folder")
    pr.add_argument("--run", required=True)
    pr.add_argument("-i", "--input", required=True, help="NIfTI file, folder of NIfTI files, or DICOM series folder")
    pr.add_argument("-o", "--output", required=True, help="output .nii.gz (single input) or folder")
    pr.add_argument("--checkpoint", default="best", choices=("best", "last"))

    demo = sub.add_parser("demo", help="synthetic data -> BCP vs supervised -> metrics, prediction, overlay")
    demo.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    demo.add_argument("--quick", action="store_true", help="a much shorter run (seconds), for smoke tests")
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")


def _run(args: argparse.Namespace) -> int:
    from medkd import api

    progress = not args.quiet
    if args.command == "demo":
        api.demo(args.out, quick=args.quick, progress=progress)
        return 0
    if args.action == "train":
        api.bcp_train(args.config, args.data_root, args.out, overrides=args.set, resume=args.resume, progress=progress)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
            print(f"run written to {args.out}")
    elif args.action == "eval":
        from medkd.metrics.seg import format_table

        summary = api.bcp_eval(
            args.run, args.data_root, split=args.split, json=args.json, checkpoint=args.checkpoint, stage=args.stage,
            progress=progress,
        )
        print(format_table(summary))
        if args.json:
            print(f"metrics written to {args.json}")
    elif args.action == "predict":
        for path in api.bcp_predict(args.run, args.input, args.output, checkpoint=args.checkpoint):
            print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medkd`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    from medkd.errors import MedkdError

    try:
        return _run(args)
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
        print("medkd: interrupted; the last checkpoint is kept, continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
