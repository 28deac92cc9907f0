# SPDX-License-Identifier: Apache-2.0
"""``medkd pipeline run``: DICOM series in; per series the model kind's files out (segmentation: DICOM SEG + NIfTI;
detection: DICOM SR + JSON/CSV; always ``result.json``), with a report."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``pipeline`` and its actions."""
    pipe = sub.add_parser("pipeline", help="DICOM batch pipelines (series in, DICOM SEG / SR out)")
    psub = pipe.add_subparsers(dest="action", required=True)
    run = psub.add_parser("run", help="run a pipeline YAML over a folder tree of DICOM studies")
    run.add_argument("pipeline", help="pipeline YAML, e.g. pipelines/demo_ct.yaml")
    run.add_argument("-i", "--input", required=True, help="folder tree of DICOM files (any layout, mixed studies)")
    run.add_argument("-o", "--output", required=True, help="output folder (<StudyUID>/<SeriesUID>/ per series)")
    run.add_argument("-j", "--workers", type=int, default=None,
                     help="processes decoding series (default min(4, CPUs); 0 = in this process)")
    run.add_argument("--shard", default=None, metavar="K/N",
                     help="process only shard K of N (deterministic by series UID; for Slurm arrays, k8s jobs)")
    run.add_argument("--model", default=None, help="bundle or run folder (overrides the YAML's model)")
    run.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or mps (overrides the YAML)")
    run.add_argument("--overwrite", action="store_true", help="redo series already done")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a pipeline YAML field; dotted keys reach the outputs blocks "
                          "(e.g. outputs.seg.type=labelmap, outputs.nifti.enabled=false)")
    run.add_argument("--trust-bundle", action="store_true",
                     help="run code in the model bundle's configs ($ expressions, _target_ outside medkd's "
                          "allowlist); only for bundles you trust")
    run.add_argument("--strict", action="store_true", help="exit 3 if any series or file was skipped or failed")
    run.set_defaults(handler=_run, interrupt_hint="finished series and the report are kept; rerun to continue")


def _run(args: argparse.Namespace) -> int:
    from medkd import api

    summary = api.pipeline_run(
        args.pipeline, args.input, args.output, workers=args.workers, shard=args.shard, model=args.model,
        device=args.device, overwrite=args.overwrite, progress=not args.quiet, trust_bundle=args.trust_bundle,
        overrides=args.overrides,
    )
    print(summary.line())
    if args.strict and any(r.status in ("skipped", "failed") for r in summary.rows):
        return 3
    return 0
