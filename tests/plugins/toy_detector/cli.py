# SPDX-License-Identifier: Apache-2.0
"""``medkd toy train``: the toy detector's subcommand (its ``Method.cli``)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``toy train``."""
    toy = sub.add_parser("toy", help="toy CenterNet-like detector (test plugin)")
    tsub = toy.add_subparsers(dest="action", required=True)
    train = tsub.add_parser("train", help="train on a toy detection dataset")
    train.add_argument("--config", required=True, help="YAML of a ToyDetectorConfig")
    train.add_argument("--data-root", required=True, help="folder written by toy_detector.data.write_toy_dataset")
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    train.set_defaults(handler=_train, interrupt_hint="the last checkpoint is kept, continue with --resume")


def _train(args: argparse.Namespace) -> int:
    from toy_detector.config import ToyDetectorConfig
    from toy_detector.train import train_toy

    from medkd.config import load_config

    cfg = load_config(ToyDetectorConfig, args.config, args.set)
    summary = train_toy(cfg, args.data_root, args.out, resume=args.resume, progress=not args.quiet)
    stage = summary["stages"]["train"]
    print(f"run written to {args.out} (iteration {stage['iterations']}, best F1 {stage['best_score']:.3f})")
    return 0
