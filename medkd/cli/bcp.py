# SPDX-License-Identifier: Apache-2.0
"""``medkd bcp train|eval|predict``: Bidirectional Copy-Paste semi-supervised segmentation.

BCP's ``Method.cli`` (:mod:`medkd.methods.bcp.method`): :func:`add_parser` adds the subcommand; each handler calls
one :mod:`medkd.api` function.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bcp`` and its actions."""
    bcp = sub.add_parser("bcp", help="Bidirectional Copy-Paste semi-supervised segmentation (CVPR 2023)")
    bsub = bcp.add_subparsers(dest="action", required=True)
    train = bsub.add_parser("train", help="train BCP or the supervised baseline from a preset")
    train.add_argument("--config", required=True, help="preset YAML, e.g. apps/bcp/acdc_5pct.yaml")
    train.add_argument("--data-root", required=True, help="dataset folder (ACDC or LA layout)")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoints")
    train.set_defaults(handler=_train, interrupt_hint="the last checkpoint is kept, continue with --resume")

    ev = bsub.add_parser("eval", help="evaluate a run with the paper's protocol")
    ev.add_argument("--run", required=True, help="run folder written by 'medkd bcp train'")
    ev.add_argument("--data-root", required=True, help="dataset folder the run was trained on")
    ev.add_argument("--split", default="test", help="list name: test (default), val, ...")
    ev.add_argument("--json", default=None, help="write the metrics here")
    ev.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default best)")
    ev.add_argument("--stage", default=None, choices=("pretrain", "selftrain", "supervised"),
                    help="evaluate this stage's student instead of the run's final one")
    ev.set_defaults(handler=_eval)

    pr = bsub.add_parser("predict", help="segment NIfTI files or a DICOM series folder")
    pr.add_argument("--run", required=True, help="run folder written by 'medkd bcp train'")
    pr.add_argument("-i", "--input", required=True, help="NIfTI file, folder of NIfTI files, or DICOM series folder")
    pr.add_argument("-o", "--output", required=True, help="output .nii.gz (single input) or folder")
    pr.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default best)")
    pr.set_defaults(handler=_predict)


def _train(args: argparse.Namespace) -> int:
    from medkd import api

    api.bcp_train(args.config, args.data_root, args.out, overrides=args.set, resume=args.resume,
                  progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run
        print(f"run written to {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from medkd import api
    from medkd.metrics.seg import format_table

    summary = api.bcp_eval(args.run, args.data_root, split=args.split, json=args.json, checkpoint=args.checkpoint,
                           stage=args.stage, progress=not args.quiet)
    print(format_table(summary))
    if args.json:
        print(f"metrics written to {args.json}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medkd import api

    for path in api.bcp_predict(args.run, args.input, args.output, checkpoint=args.checkpoint):
        print(path)
    return 0
