# SPDX-License-Identifier: Apache-2.0
"""``medkd gt train | source-train | pseudo-label | expert-boxes | adapt | eval | predict``: Grounded Teacher.

Grounded Teacher's ``Method.cli`` (:mod:`medkd.methods.grounded_teacher.method`); each handler calls one
:mod:`medkd.api` function.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "STAGE_COMMANDS"]

#: stage subcommands and the stage each runs
STAGE_COMMANDS = {"source-train": "source", "pseudo-label": "pseudo_label", "expert-boxes": "expert_boxes",
                  "adapt": "adapt"}


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="preset YAML, e.g. apps/grounded_teacher/cpu_synthetic.yaml")
    parser.add_argument("--data-root", required=True, help="folder holding the source and target dataset folders")
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (method=gt|mean_teacher|source_only, mode=clean|gt_compat, "
                             "adapt.iterations=..., ...)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted stage from its last.pt")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``gt`` and its actions."""
    gt = sub.add_parser("gt", help="Grounded Teacher source-free lesion detection adaptation")
    gsub = gt.add_subparsers(dest="action", required=True)
    train = gsub.add_parser("train", help="run every stage in order (each skipped when already done)")
    _train_arguments(train)
    train.set_defaults(handler=_train, interrupt_hint="the last checkpoint is kept, continue with --resume")
    helps = {"source-train": "stage S: supervised training on the source domain",
             "pseudo-label": "stage P: the source model's pseudo-labels on the target training images",
             "expert-boxes": "stage E: the expert's boxes on the target training images",
             "adapt": "stage A: mean-teacher adaptation with the expert and class context"}
    for name, stage in STAGE_COMMANDS.items():
        p = gsub.add_parser(name, help=helps[name])
        _train_arguments(p)
        p.set_defaults(handler=_stage, stage=stage, interrupt_hint="the last checkpoint is kept, continue with --resume")

    ev = gsub.add_parser("eval", help="COCO AP, lesion FROC (R@0.3, CPM) and a FROC plot on a target split")
    ev.add_argument("--run", required=True, help="run folder written by 'medkd gt train'")
    ev.add_argument("--data-root", required=True, help="folder holding the target dataset folder")
    ev.add_argument("--split", default="val", help="annotation split of the target dataset (default val)")
    ev.add_argument("--stage", default="adapt", choices=("source", "adapt"),
                    help="adapt: the adapted EMA teacher (default); source: the source model")
    ev.add_argument("--json", default=None, help="write the metrics here")
    ev.set_defaults(handler=_eval)

    pr = gsub.add_parser("predict", help="detect lesions in an image or a folder (JSON/CSV and PNG with boxes)")
    pr.add_argument("--run", required=True, help="run folder written by 'medkd gt train'")
    pr.add_argument("-i", "--input", required=True, help="image file (PNG, JPEG, TIFF, DICOM) or folder")
    pr.add_argument("-o", "--output", required=True, help="output folder")
    pr.add_argument("--stage", default=None, choices=("source", "adapt"), help="default: the run's final model")
    pr.add_argument("--min-score", type=float, default=None, help="default: the run's decode.report_threshold")
    pr.set_defaults(handler=_predict)


def _train(args: argparse.Namespace) -> int:
    from medkd import api

    summary = api.gt_train(args.config, args.data_root, args.out, overrides=args.set, resume=args.resume,
                           progress=not args.quiet)
    print(f"run written to {args.out} (stages: {', '.join(summary['stages'])})")
    return 0


def _stage(args: argparse.Namespace) -> int:
    from medkd import api

    api.gt_stage(args.stage, args.config, args.data_root, args.out, overrides=args.set, resume=args.resume,
                 progress=not args.quiet)
    print(f"stage {args.stage} written to {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from medkd import api

    m = api.gt_eval(args.run, args.data_root, split=args.split, stage=args.stage, json=args.json)
    print(f"{m['stage']} on {m['dataset']} {m['split']} ({m['images']} images, {m['lesions']} lesions): "
          f"AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  R@0.3 {m['R@0.3']:.3f}  CPM {m['CPM']:.3f}")
    for name, values in m["per_class"].items():
        print(f"  {name}: AP50 {values['AP50']:.3f}")
    if args.json:
        print(f"metrics written to {args.json}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medkd import api

    report = api.gt_predict(args.run, args.input, args.output, stage=args.stage, min_score=args.min_score)
    print(f"{report['images']} image(s), {report['detections']} detection(s) written to {report['output']}")
    for item in report["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}")
    return 0
