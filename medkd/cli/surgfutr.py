# SPDX-License-Identifier: Apache-2.0
"""``medkd surgfutr train | eval | predict | stream``: SurgFUTR surgical future-state forecasting.

SurgFUTR's ``Method.cli`` (:mod:`medkd.methods.surgfutr.method`); each handler calls one :mod:`medkd.api` function.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``surgfutr`` and its actions."""
    sf = sub.add_parser("surgfutr", help="SurgFUTR: forecast surgical phases, tools, events and remaining time")
    ssub = sf.add_subparsers(dest="action", required=True)

    tr = ssub.add_parser("train", help="train teacher and student on a Cholec80- or CholecT50-layout dataset")
    tr.add_argument("--config", required=True, help="preset YAML, e.g. apps/surgfutr/cpu_synthetic.yaml")
    tr.add_argument("--data-root", required=True, help="folder holding the dataset folder (data.dataset)")
    tr.add_argument("--out", required=True, help="run folder to write")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field (variant=surgfutr|no_teacher|feature_regression, "
                         "train.iterations=..., data.train=1-40, ...)")
    tr.add_argument("--resume", action="store_true", help="continue an interrupted run from its last.pt")
    tr.set_defaults(handler=_train, interrupt_hint="the last checkpoint is kept, continue with --resume")

    ev = ssub.add_parser("eval", help="SFPBench metrics of the run, copy-current and the prior on a split")
    ev.add_argument("--run", required=True, help="run folder written by 'medkd surgfutr train'")
    ev.add_argument("--data-root", required=True, help="folder holding the dataset folder")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default test)")
    ev.add_argument("--json", default=None, help="write the metrics here (one object per arm)")
    ev.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    ev.set_defaults(handler=_eval)

    pr = ssub.add_parser("predict", help="forecasts for every analysed second of a video, as CSV")
    pr.add_argument("--run", required=True, help="run folder (or a folder written by 'medkd surgfutr train')")
    pr.add_argument("-i", "--input", required=True, help="video file (MP4, AVI, ...) or a folder of 1-fps frames")
    pr.add_argument("-o", "--output", required=True, help="CSV file to write (one row per analysed second)")
    pr.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    pr.set_defaults(handler=_predict)

    st = ssub.add_parser("stream", help="causal live forecasts from a video file, camera index or stream URL")
    st.add_argument("--run", required=True, help="run folder written by 'medkd surgfutr train'")
    st.add_argument("-i", "--input", required=True, help="video file, camera index (0, 1, ...) or a URL OpenCV opens")
    st.add_argument("-o", "--output", default=None, help="also append each forecast to this CSV as it comes")
    st.add_argument("--max-seconds", type=int, default=None, help="stop after this many analysed seconds")
    st.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    st.set_defaults(handler=_stream, interrupt_hint="the forecasts so far are kept in the CSV")


def _train(args: argparse.Namespace) -> int:
    from medkd import api

    summary = api.surgfutr_train(args.config, args.data_root, args.out, overrides=args.set, resume=args.resume,
                                 progress=not args.quiet)
    print(f"run written to {args.out} ({summary['variant']}, {summary['iterations']} iterations, "
          f"{summary['iterations_per_second']:.2f} it/s; best val score {summary['best_score']:.3f})")
    return 0


def _fmt(value: object) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"


def _eval(args: argparse.Namespace) -> int:
    from medkd import api

    m = api.surgfutr_eval(args.run, args.data_root, split=args.split, json=args.json, device=args.device)
    h = m["horizons"]
    print(f"{m['dataset']} {m['split']}: {len(m['videos'])} videos; phase horizon {h['transition_min']:g} min, "
          f"tools at +{h['presence_s']} s")
    print(f"{'arm':14s} {'RSD MAE':>8s} {'ph wMAE':>8s} {'ph inMAE':>8s} {'ph outMAE':>9s} {'tool mAP':>8s} "
          f"{'tool mAP chg':>12s}")
    for arm in ("surgfutr", "copy_current", "prior"):
        a = m[arm]
        print(f"{arm:14s} {_fmt(a['rsd_mae']):>8s} {_fmt(a['phase_wmae']):>8s} {_fmt(a['phase_inmae']):>8s} "
              f"{_fmt(a['phase_outmae']):>9s} {_fmt(a['tool_map']):>8s} {_fmt(a['tool_map_change']):>12s}")
    for item in m["skipped"]:
        print(f"skipped {item['file']}: {item['reason']}")
    if args.json:
        print(f"metrics written to {args.json}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from medkd import api

    report = api.surgfutr_predict(args.run, args.input, args.output, device=args.device)
    print(f"{report['seconds']} analysed second(s) written to {report['output']}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    from medkd import api

    source: str | int = int(args.input) if args.input.isdigit() else args.input

    def show(second: int, row: dict) -> None:
        if not args.quiet:
            print(json.dumps(row), flush=True)

    summary = api.surgfutr_stream(args.run, source, out=args.output, device=args.device,
                                  max_seconds=args.max_seconds, on_forecast=show)
    if not summary["seconds"]:
        print("no frame analysed")
        return 0
    print(f"{summary['seconds']} s analysed, {summary['fps']:.0f} video frames/s "
          f"(p50 {summary['latency_ms']['p50']:.1f} ms, p95 {summary['latency_ms']['p95']:.1f} ms per analysed "
          f"second)")
    return 0
