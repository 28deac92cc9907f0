# SPDX-License-Identifier: Apache-2.0
"""``medkd bundle export|verify|info|list``: MONAI bundles of trained medkd models.

``verify`` reads the configs as data first and runs none of their code when it finds code outside medkd's
allowlist (a ``trust`` FAIL, exit 1) unless ``--trust-bundle`` is given; ``info`` never runs config code.
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``bundle`` and its actions."""
    bundle = sub.add_parser("bundle", help="export, verify and describe MONAI bundles")
    bsub = bundle.add_subparsers(dest="action", required=True)
    ex = bsub.add_parser("export", help="write a MONAI bundle from a medkd run")
    ex.add_argument("--run", required=True, help="run folder written by a method's 'train' (e.g. 'medkd bcp train')")
    ex.add_argument("-o", "--output", required=True, help="bundle folder to write, e.g. models/acdc_bcp")
    ex.add_argument("--checkpoint", default="best", choices=("best", "last"), help="which checkpoint (default best)")
    ex.add_argument("--stage", default=None,
                    help="export this stage's network instead of the run's final one: a stage of the run's method "
                    "(its bundle spec lists them; a wrong one is an error listing them)")
    ex.add_argument("--version", dest="bundle_version", default="0.1.0", help="bundle version (default 0.1.0)")
    ex.add_argument("--torchscript", action="store_true", help="also write models/model.ts (a failure only warns)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    ex.set_defaults(handler=_export)

    ve = bsub.add_parser("verify", help="check a bundle: files, metadata schema, network in/out, dependencies")
    ve.add_argument("bundle", help="bundle folder")
    ve.add_argument("--schema", default=None, help="metadata JSON schema (default: the one shipped with medkd)")
    ve.add_argument("--trust-bundle", action="store_true",
                    help="also run the checks that parse the configs when they hold code outside medkd's allowlist "
                    "($ expressions, _target_); only for bundles whose maker you trust")
    ve.set_defaults(handler=_verify)

    ls = bsub.add_parser("list", help="bundles listed in models/zoo.yaml and whether they are on this machine")
    ls.add_argument("--zoo", default=None, help="zoo file (default $MEDKD_MODELS/zoo.yaml, else the checkout's)")
    ls.set_defaults(handler=_list)

    info = bsub.add_parser("info", help="what a bundle is for and how to run it (reads it as data, runs nothing)")
    info.add_argument("bundle", help="bundle folder")
    info.set_defaults(handler=_info)


def _export(args: argparse.Namespace) -> int:
    from medkd import api

    path = api.bundle_export(args.run, args.output, checkpoint=args.checkpoint, stage=args.stage,
                             version=args.bundle_version, torchscript=args.torchscript, overwrite=args.overwrite)
    print(f"bundle written to {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from medkd import api

    results = api.bundle_verify(args.bundle, schema=args.schema, trust=args.trust_bundle)
    for result in results:
        print(f"{'ok  ' if result.ok else 'FAIL'} {result.name}: {result.message}")
    return 0 if all(r.ok for r in results) else 1


def _info(args: argparse.Namespace) -> int:
    from medkd import api

    print(api.bundle_info(args.bundle))
    return 0


def _list(args: argparse.Namespace) -> int:
    from medkd.bundle.zoo import load_zoo

    for entry in load_zoo(args.zoo):
        state = "present" if entry.present else "missing"
        print(f"{entry.name:<18} {state:<8} {entry.kind:<13} {entry.task}\n{'':<28}{entry.folder}")
        if not entry.present and entry.get:
            print(f"{'':<28}make it: {entry.get}")
    return 0
