#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""The showcase of issue 12: a full-width BCP U-Net teaches the half-width U-Net with BPKD on the ACDC layout
(synthetic cardiac MR slices, medkd.data.synthetic.write_synthetic_acdc), against the same student trained without
a teacher (CE + Dice) and against the teacher itself: test Dice (mean over RV, Myo, LV; BCP's protocol) and
inference speed (median latency of one 64x64 slice, batch 1, CPU).

Preset apps/distill/cpu_acdc_bpkd.yaml (the CPU version of apps/distill/acdc_bpkd_half_from_full.yaml); the teacher
is trained once (CE + Dice) and reused; 3 seeds for both student arms. Writes bench/results/distill_showcase.{md,json}.

    python bench/distill_showcase.py            # about 12 min on 2 cores
    python bench/distill_showcase.py --quick    # 1 seed, 20 iterations (smoke)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "apps" / "distill" / "cpu_acdc_bpkd.yaml"
SCRATCH_TERMS = "distill.terms=[{name: ce, plugin: ce}, {name: dice, plugin: dice}]"


def _run(data: Path, out: Path, sets: list[str]) -> dict[str, Any]:
    from medkd import api

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    return api.distill_run(PRESET, data, out, overrides=sets, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--teacher-iterations", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("/tmp/medkd_bench_showcase"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_showcase")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from medkd.data.synthetic import write_synthetic_acdc

    if args.quick:
        args.seeds, args.iterations, args.teacher_iterations = [0], 20, 20
        args.work, args.out = args.work.with_name(args.work.name + "_quick"), args.out.with_name(args.out.name + "_quick")
    data = args.work / "acdc"
    if not (data / "train_slices.list").is_file():
        write_synthetic_acdc(data, n_train=40, n_val=6, n_test=10, n_slices=10, size=64)
    common = [f"optim.iterations={args.iterations}", f"teacher.iterations={args.teacher_iterations}"]
    t0 = time.perf_counter()
    first = _run(data, args.work / "bpkd_s0", [*common, "experiment.seed=0"])
    teacher_run = args.work / "bpkd_s0" / "teacher"
    teacher = first["teacher"]
    print(f"teacher {teacher['net']}: test Dice {teacher['test']['mean']['dice']:.3f} ({time.perf_counter() - t0:.0f} s)")
    results: dict[str, list[dict[str, Any]]] = {"bpkd": [], "scratch": []}
    for seed in args.seeds:
        for arm in ("bpkd", "scratch"):
            sets = [*common, f"experiment.seed={seed}", f"teacher.checkpoint={teacher_run}", "teacher.net=''"]
            if arm == "scratch":
                sets = [*common, f"experiment.seed={seed}", "teacher.net=''", SCRATCH_TERMS]
            summary = first if (arm, seed) == ("bpkd", 0) else _run(data, args.work / f"{arm}_s{seed}", sets)
            student = summary["student"]
            entry = {"seed": seed, "dice": student["best"]["test"]["mean"]["dice"],
                     "dice_last": student["last"]["test"]["mean"]["dice"], "hd95": student["best"]["test"]["mean"]["hd95"],
                     "latency_ms": student["latency_ms"], "params": student["params"],
                     "s_per_epoch": student["seconds_per_epoch"], "it_per_s": student["iterations_per_second"]}
            results[arm].append(entry)
            print(f"seed {seed} {arm:<8} test Dice {entry['dice']:.3f} (last {entry['dice_last']:.3f}) "
                  f"{entry['it_per_s']:.2f} it/s")

    def ms(arm: str, key: str) -> str:
        values = [r[key] for r in results[arm]]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    s_lat = statistics.median(r["latency_ms"] for r in results["bpkd"])
    lines = [
        "| model | params | test Dice (mean ± sd) | HD95 (px) | latency (ms, 1 slice) |",
        "|---|---|---|---|---|",
        f"| teacher `bcp_unet2d` (trained first) | {teacher['params']:,} | {teacher['test']['mean']['dice']:.3f} | "
        f"{teacher['test']['mean']['hd95']:.2f} | {teacher['latency_ms']:.2f} |",
        f"| student `bcp_unet2d_half` + BPKD | {results['bpkd'][0]['params']:,} | {ms('bpkd', 'dice')} | "
        f"{ms('bpkd', 'hd95')} | {s_lat:.2f} |",
        f"| student `bcp_unet2d_half`, no teacher | {results['scratch'][0]['params']:,} | {ms('scratch', 'dice')} | "
        f"{ms('scratch', 'hd95')} | {statistics.median(r['latency_ms'] for r in results['scratch']):.2f} |",
    ]
    deltas = [b["dice"] - s["dice"] for b, s in zip(results["bpkd"], results["scratch"])]
    summary_line = (f"BPKD - no teacher, paired by seed: {statistics.mean(deltas):+.3f} Dice "
                    f"(per seed {', '.join(f'{d:+.3f}' for d in deltas)}); student speed-up "
                    f"{teacher['latency_ms'] / s_lat:.2f}x")
    md = "\n".join(lines) + "\n\n" + summary_line
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"iterations": args.iterations, "teacher_iterations": args.teacher_iterations, "seeds": args.seeds,
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "teacher": {k: teacher[k] for k in
                                                         ("net", "params", "latency_ms")},
                                                         "teacher_test_dice": teacher["test"]["mean"]["dice"],
                                                         "arms": results}, indent=1))
    args.out.with_suffix(".md").write_text(
        f"Synthetic ACDC layout (40 training patients, 4 labelled), {args.iterations} student iterations, "
        f"teacher {args.teacher_iterations}, seeds {args.seeds}; {meta['machine']}.\n\n{md}\n")


if __name__ == "__main__":
    main()
