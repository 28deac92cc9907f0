# SPDX-License-Identifier: Apache-2.0
"""``medkd distill run|list|list-modules|eval|predict|search|tool``: knowledge distillation from one YAML experiment.

The ``distill`` method's ``Method.cli`` (:mod:`medkd.methods.distilled`); each handler calls one :mod:`medkd.api`
function.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``distill`` and its actions."""
    distill = sub.add_parser("distill", help="knowledge distillation plugins: train a student from a teacher")
    dsub = distill.add_subparsers(dest="action", required=True)
    run = dsub.add_parser("run", help="train a student from a teacher as an experiment YAML says")
    run.add_argument("--config", required=True, help="experiment YAML, e.g. apps/distill/acdc_bpkd_half_from_full.yaml")
    run.add_argument("--data-root", required=True, help="dataset folder (classification folders/CSV, ACDC, LA, NIfTI)")
    run.add_argument("--out", required=True, help="run folder to write")
    run.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                     help="override a key, e.g. optim.iterations=200 or teacher.checkpoint=runs/t")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoints")
    run.set_defaults(handler=_run, interrupt_hint="the last checkpoint is kept, continue with --resume")

    ls = dsub.add_parser("list", help="list the distillation plugins (key, kind, distribution)")
    ls.add_argument("--kind", default=None, choices=("loss", "strategy", "utility"), help="only this kind")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_list)

    mods = dsub.add_parser("list-modules", help="module names and output shapes of a network (for feature taps)")
    mods.add_argument("--net", required=True, help="registered network name (medkd.nets.list_nets())")
    mods.add_argument("--in-channels", type=int, default=1)
    mods.add_argument("--num-classes", type=int, default=2)
    mods.add_argument("--size", type=int, nargs="+", default=None, help="example input size, e.g. 64 64")
    mods.set_defaults(handler=_list_modules)

    ev = dsub.add_parser("eval", help="evaluate a distilled student on a split")
    ev.add_argument("run", help="run folder written by 'medkd distill run'")
    ev.add_argument("--data-root", required=True, help="dataset folder the run was trained on")
    ev.add_argument("--split", default="test", help="split name (default test)")
    ev.add_argument("--json", default=None, help="write the metrics here")
    ev.add_argument("--checkpoint", default="best", choices=("best", "last"))
    ev.set_defaults(handler=_eval)

    pr = dsub.add_parser("predict", help="classify image files with a classification run or bundle (routed by key)")
    pr.add_argument("model", help="classification run folder (a partition_students run routes) or its bundle")
    pr.add_argument("images", nargs="*", help="image files (PNG/JPEG/NIfTI)")
    pr.add_argument("--datalist", default=None, help="CSV with an 'image' column and metadata columns (the key)")
    pr.add_argument("--split", default=None, help="only the datalist rows of this split")
    pr.add_argument("--meta", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                    help="metadata of every image, e.g. modality=MR (the routing key of a routed model)")
    pr.add_argument("--out", required=True, help="predictions CSV to write (a row per image, failures included)")
    pr.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    pr.add_argument("--trust-bundle", action="store_true", help="load a bundle whose configs hold code outside "
                                                                 "medkd's allowlist (only bundles you trust)")
    pr.set_defaults(handler=_predict)

    for command, text in (("search", "search a student architecture (diswot, n2n) before training"),
                          ("tool", "run a teacher tool (capacity_gap, annotator, pvd, curriculum)")):
        tool = dsub.add_parser(command, help=text)
        tool.add_argument("name", help=f"utility key ('medkd distill list --kind utility')")
        tool.add_argument("--config", required=True, help="experiment YAML (data, teacher, student sections)")
        tool.add_argument("--data-root", required=True, help="dataset folder")
        tool.add_argument("--out", required=True, help="output folder (results in OUT/<name>.json)")
        tool.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                          help="override an experiment key, e.g. teacher.checkpoint=runs/t")
        tool.add_argument("--param", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                          help="a parameter of the utility (YAML value), e.g. budget_params=300000")
        tool.set_defaults(handler=_tool, command=command)


def _run(args: argparse.Namespace) -> int:
    from medkd import api

    summary = api.distill_run(args.config, args.data_root, args.out, overrides=args.set, resume=args.resume,
                              progress=not args.quiet)
    student = summary["student"]
    best = student.get("best", {}).get("val", {})
    print(f"student {student['net']}: {student['params']:,} parameters (+{student['extra_params']:,} auxiliary, "
          f"not exported), best val score {best.get('score', float('nan')):.4f}")
    print(f"run written to {args.out}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from medkd import api

    rows = api.distill_list(kind=args.kind)
    if args.json:
        print(json.dumps([{"key": r.key, "kind": r.kind.value, "module": r.module, "distribution": r.distribution,
                           "summary": r.summary} for r in rows], indent=1))
        return 0
    width = max((len(r.key) for r in rows), default=3)
    print(f"{'key':<{width}}  {'kind':<8}  {'distribution':<12}  summary   (search/tool: utilities, "
          "'medkd distill search|tool KEY')")
    for r in rows:
        print(f"{r.key:<{width}}  {_kind(r):<8}  {r.distribution:<12}  {r.summary}")
    return 0


def _kind(row: object) -> str:
    """``utility`` rows name their command: ``search`` or ``tool``."""
    from medkd.distill import get_plugin

    kind = row.kind.value  # type: ignore[attr-defined]
    if kind == "utility":
        command = getattr(get_plugin(row.key), "command", "")  # type: ignore[attr-defined]
        return command or "function"
    return kind


def _list_modules(args: argparse.Namespace) -> int:
    from medkd import api

    rows = api.distill_list_modules(args.net, in_channels=args.in_channels, num_classes=args.num_classes,
                                    size=args.size)
    width = max((len(r[0]) for r in rows), default=4)
    print(f"{'name':<{width}}  {'type':<20}  output shape")
    for name, kind, shape in rows:
        print(f"{name:<{width}}  {kind:<20}  {'-' if shape is None else tuple(shape)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from medkd import api

    summary = api.distill_eval(args.run, args.data_root, split=args.split, json=args.json,
                               checkpoint=args.checkpoint, progress=not args.quiet)
    if "mean" in summary:
        from medkd.metrics.seg import format_table

        print(format_table(summary))
    else:
        print(f"accuracy {summary['accuracy']:.4f}  balanced accuracy {summary['balanced_accuracy']:.4f}  "
              f"macro F1 {summary['macro_f1']:.4f}  (n={summary['n']}, split {args.split})")
    if args.json:
        print(f"metrics written to {args.json}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medkd import api

    counts = api.distill_predict(args.model, args.images, out=args.out, datalist=args.datalist, split=args.split,
                                 meta=args.meta, device=args.device, trust=args.trust_bundle,
                                 progress=not args.quiet)
    print(f"{counts['ok']} image(s) classified, {counts['failed']} failed (see the error column); predictions "
          f"written to {args.out}")
    return 1 if counts["failed"] and not counts["ok"] else 0


def _tool(args: argparse.Namespace) -> int:
    from medkd import api

    result = api.distill_tool(args.name, args.config, args.data_root, args.out, overrides=args.set,
                              params=args.param, command=args.command, progress=not args.quiet)
    shown = {k: v for k, v in result.items() if not isinstance(v, (list, dict)) or len(json.dumps(v)) < 200}
    for key, value in shown.items():
        print(f"{key}: {value}")
    print(f"results written to {args.out}/{args.name}.json")
    return 0
