#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Every loss plugin of medkd.distill against the same student trained from scratch (spec
shared/specs/distillation_plugins.md section 5), on SynthLesion-2D: 64x64 single-channel lesion images, 5 classes
with overlapping appearance (medkd.data.synthetic.lesion_classes), in the class-folder layout.

Images are resized to 32x32 for training (CPU time); the generator writes them at 64x64.

Protocol: one teacher (``kd_cnn_wide`` at width 32 by default, or ``--teacher-net monai_resnet18``) trained once on the clean
``teacher_train`` split and cached as a medkd run; the student ``kd_cnn`` (~0.3 M parameters) trained on the
small ``train`` split whose labels are 20 % noisy, with the same optimiser, schedule and iterations for every row;
3 seeds; scratch = the same student with CE only. Metric: test accuracy of the best-on-validation checkpoint
(the last checkpoint's is in the JSON). Extra params: the plugin's auxiliary modules (branches, projectors).
Acceptance: KD and DKD beat scratch by more than one standard deviation; a plugin more than 2 sd below scratch is
flagged.

Writes bench/results/distill_table.{md,json,csv}.

    python bench/distill_table.py                 # 3 seeds, all plugins (about 15 min on 2 cores)
    python bench/distill_table.py --quick         # 1 seed, few iterations, every plugin (smoke, ~1 min)
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: row -> (terms, student taps, teacher taps); every row trains the same kd_cnn with the same optimiser
PLUGIN_ROWS: dict[str, tuple[list[dict[str, Any]], list[str], list[str]]] = {
    "scratch": ([{"name": "ce", "plugin": "ce"}], [], []),
    "kd": ([{"name": "ce", "plugin": "ce", "weight": 0.1},
            {"name": "kd", "plugin": "kd", "weight": 0.9, "params": {"temperature": 4.0}}], [], []),
    "dkd": ([{"name": "ce", "plugin": "ce"},
             {"name": "dkd", "plugin": "dkd", "params": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                                         "warmup": "WARMUP"}}], [], []),
    "pld": ([{"name": "pld", "plugin": "pld", "params": {"temperature": 4.0}}], [], []),
    "ofa": ([{"name": "ce", "plugin": "ce"}, {"name": "ofa", "plugin": "ofa", "params": {"eps": 1.0}}],
            ["stages.1", "stages.2"], []),
    "tgeo": ([{"name": "tgeo", "plugin": "tgeo", "params": {"temperature": 4.0}}], [], []),
    "margin_mse": ([{"name": "ce", "plugin": "ce"}, {"name": "margin_mse", "plugin": "margin_mse", "weight": 0.1}],
                   [], []),
    "ff_g2m": ([{"name": "ff_g2m", "plugin": "ff_g2m"}], [], []),
    "prokd": ([{"name": "ce", "plugin": "ce"}, {"name": "prokd", "plugin": "prokd"}], ["pool"], ["pool"]),
    "leaf": ([{"name": "ce", "plugin": "ce"}, {"name": "leaf", "plugin": "leaf", "weight": 0.1}], ["pool"], ["pool"]),
}


def _base(data: Path, iterations: int, seed: int) -> dict[str, Any]:
    return {
        "experiment": {"name": "distill_table", "seed": seed, "device": "cpu"},
        "data": {"layout": "folders", "image_size": [32, 32], "batch_size": 64, "augment": False},
        "student": {"net": "kd_cnn"},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                  "iterations": iterations},
        "eval": {"val_interval": max(1, iterations // 4), "log_interval": max(1, iterations // 10), "test": True,
                 "teacher": False},
    }


def _config(raw: dict[str, Any]) -> Any:
    from medkd.config import config_from_dict
    from medkd.distill.config import DistillConfig

    return config_from_dict(DistillConfig, raw, source="bench/distill_table.py")


def train_teacher(data: Path, out: Path, net: str, iterations: int) -> dict[str, Any]:
    from medkd.distill.runner import run_experiment

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    raw = _base(data, iterations, 0)
    raw["data"]["train_split"] = "teacher_train"
    raw["student"] = {"net": net, "net_params": {"width": 32} if net == "kd_cnn_wide" else {}}
    raw["distill"] = {"terms": [{"name": "ce", "plugin": "ce"}]}
    return run_experiment(_config(raw), data, out, progress=False)


def run_row(row: str, data: Path, teacher: Path, out: Path, iterations: int, seed: int) -> dict[str, Any]:
    from medkd.distill.runner import run_experiment

    terms, s_taps, t_taps = PLUGIN_ROWS[row]
    epochs = iterations * 64 / 1000
    terms = json.loads(json.dumps(terms).replace('"WARMUP"', str(max(1.0, round(epochs / 4, 2)))))
    raw = _base(data, iterations, seed)
    raw["student"]["taps"] = s_taps
    raw["distill"] = {"terms": terms}
    if row != "scratch":
        raw["teacher"] = {"checkpoint": str(teacher), "taps": t_taps, "cache": True,
                          "cache_dir": str(teacher.parent / "teacher_cache")}
    started = time.perf_counter()
    summary = run_experiment(_config(raw), data, out, progress=False)
    student = summary["student"]
    return {
        "row": row, "seed": seed,
        "best_acc": student["best"]["test"]["accuracy"], "last_acc": student["last"]["test"]["accuracy"],
        "best_val": student["best"]["val"]["accuracy"],
        "extra_params": student["extra_params"], "params": student["params"],
        "s_per_epoch": student["seconds_per_epoch"], "wall_s": round(time.perf_counter() - started, 1),
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: list[dict[str, Any]], teacher_acc: float) -> tuple[list[dict[str, Any]], str]:
    seeds = sorted({r["seed"] for r in results})
    by = {(r["row"], r["seed"]): r for r in results}
    scratch = [by[("scratch", s)]["best_acc"] for s in seeds]
    s_mean, s_sd = _mean_sd(scratch)
    rows, lines = [], [
        "| Plugin | Metric | Teacher | Scratch | Distilled | Δ mean ± sd | Extra params | s/epoch | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in PLUGIN_ROWS:
        if row == "scratch" or (row, seeds[0]) not in by:
            continue
        accs = [by[(row, s)]["best_acc"] for s in seeds]
        deltas = [by[(row, s)]["best_acc"] - by[("scratch", s)]["best_acc"] for s in seeds]
        d_mean, d_sd = _mean_sd(deltas)
        a_mean, a_sd = _mean_sd(accs)
        spread = max(s_sd, a_sd)
        verdict = "better (> 1 sd)" if d_mean > spread else "flag: > 2 sd below" if d_mean < -2 * spread else "≈"
        entry = {"plugin": row, "metric": "accuracy", "teacher": teacher_acc, "scratch_mean": s_mean,
                 "scratch_sd": s_sd, "distilled_mean": a_mean, "distilled_sd": a_sd, "delta_mean": d_mean,
                 "delta_sd": d_sd, "extra_params": by[(row, seeds[0])]["extra_params"],
                 "s_per_epoch": min(by[(row, s)]["s_per_epoch"] for s in seeds), "verdict": verdict,
                 "last_acc_mean": statistics.mean(by[(row, s)]["last_acc"] for s in seeds)}
        rows.append(entry)
        lines.append(f"| {row} | accuracy | {teacher_acc:.3f} | {s_mean:.3f} ± {s_sd:.3f} | {a_mean:.3f} ± {a_sd:.3f}"
                     f" | {d_mean:+.3f} ± {d_sd:.3f} | {entry['extra_params']:,} | {entry['s_per_epoch']:.2f} | "
                     f"{verdict} |")
    return rows, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--teacher-iterations", type=int, default=1500)
    parser.add_argument("--overlap", type=float, default=0.5, help="class overlap of the generator (1: default)")
    parser.add_argument("--teacher-net", default="kd_cnn_wide")
    parser.add_argument("--rows", nargs="+", default=list(PLUGIN_ROWS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/medkd_bench_distill"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 iterations, small data (smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_table")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the JSON's runs")
    args = parser.parse_args()
    if args.table_only:
        saved = json.loads(args.out.with_suffix(".json").read_text())
        rows, md = table(saved["runs"], saved["meta"]["teacher_test_accuracy"])
        _write(args, saved["meta"], rows, saved["runs"], md)
        print(md)
        return
    logging.basicConfig(level=logging.WARNING)
    import torch

    from medkd.data.synthetic.lesion_classes import LesionClassConfig, write_synth_lesion_2d

    sizes = dict(n_teacher_train=8000, n_train=1000, n_val=1000, n_test=2000, n_unlabelled=0)
    if args.quick:
        args.seeds, args.iterations, args.teacher_iterations = [0], 20, 40
        sizes = dict(n_teacher_train=400, n_train=200, n_val=100, n_test=200, n_unlabelled=0)
        args.work = args.work.with_name(args.work.name + "_quick")
        args.out = args.out.with_name(args.out.name + "_quick")
    data = args.work / f"synth_lesion_2d_overlap{args.overlap}"
    if not (data / "metadata.csv").is_file():
        t0 = time.perf_counter()
        write_synth_lesion_2d(data, seed=0, config=LesionClassConfig(overlap=args.overlap), **sizes)
        print(f"data written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    teacher_dir = args.work / f"teacher_{args.teacher_net}_{args.teacher_iterations}"
    teacher = train_teacher(data, teacher_dir, args.teacher_net, args.teacher_iterations)
    teacher_acc = teacher["student"]["best"]["test"]["accuracy"]
    print(f"teacher {args.teacher_net}: test accuracy {teacher_acc:.3f} ({time.perf_counter() - t0:.0f} s)")
    results = []
    for seed in args.seeds:
        for row in ["scratch", *[r for r in args.rows if r != "scratch"]]:
            res = run_row(row, data, teacher_dir, args.work / f"{row}_s{seed}", args.iterations, seed)
            results.append(res)
            print(f"seed {seed} {row:<11} test acc {res['best_acc']:.3f} (last {res['last_acc']:.3f}) "
                  f"{res['s_per_epoch']:.2f} s/epoch, {res['wall_s']} s")
    rows, md = table(results, teacher_acc)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"teacher_net": args.teacher_net, "teacher_params": teacher["student"]["params"],
            "teacher_test_accuracy": teacher_acc, "student_net": "kd_cnn", "iterations": args.iterations,
            "teacher_iterations": args.teacher_iterations, "seeds": args.seeds, "data": sizes,
            "overlap": args.overlap,
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}
    _write(args, meta, rows, results, md)


def _write(args: argparse.Namespace, meta: dict[str, Any], rows: list[dict[str, Any]], results: list[dict[str, Any]],
           md: str) -> None:
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "runs": results}, indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = (f"SynthLesion-2D (overlap {meta['overlap']}, trained at 32x32), teacher {meta['teacher_net']} "
              f"({meta['teacher_params']:,} params, test accuracy {meta['teacher_test_accuracy']:.3f}), student "
              f"kd_cnn, {meta['iterations']} iterations, seeds {meta['seeds']}; s/epoch is the fastest of the seeds "
              "(another process shared the CPU during parts of seeds 1-2).\n\n")
    args.out.with_suffix(".md").write_text(header + md + "\n")


if __name__ == "__main__":
    main()
