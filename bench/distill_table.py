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

Strategy rows (``STRATEGY_ROWS``: borup_sd, snapshot_teachers, partition_students, mst_distill, m2mkd, coconut,
salt) run on the same data written with its paired second modality and a CSV datalist, each against its own
baseline (scratch, KD, fine-tuning, or the random-init probe), paired by seed.

Writes bench/results/distill_table.{md,json,csv} (``--out`` to change; ``--merge`` keeps the saved runs of rows not
run now).

    python bench/distill_table.py --rows scratch kd borup_sd snapshot_teachers partition_students mst_distill \
        m2mkd coconut salt --out bench/results/distill_strategies   # the strategy table (about 40 min)

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


_CE = [{"name": "ce", "plugin": "ce"}]
_KD = [{"name": "ce", "plugin": "ce", "weight": 0.1},
       {"name": "kd", "plugin": "kd", "weight": 0.9, "params": {"temperature": 4.0}}]
_CSV = {"layout": "csv", "datalist": "datalist.csv"}
_COCONUT = {"num_stages": 3, "buffer": 200, "supcon_weight": 1.0, "temperature": 0.1, "kd_weight": 1.0,
            "kd_temperature": 2.0, "stage_iterations": "THIRD"}

#: strategy row -> how it differs from the loss rows' experiment: ``distill`` (its terms and strategy), optional
#: ``data``/``student``/``optim`` overrides, ``teacher`` (the cached teacher run as ``teacher.checkpoint``),
#: ``metric`` (a dotted path into RUN/summary.json) and its baseline: ``baseline`` (another row's metric, same seed)
#: or ``baseline_metric`` (a second path of the same run). Rows starting with "_" are baselines only.
STRATEGY_ROWS: dict[str, dict[str, Any]] = {
    "borup_sd": {"distill": {"terms": _CE, "strategy": "borup_sd",
                             "strategy_params": {"alpha": 0.6, "generations": 2}},
                 "metric": "student.best.test.accuracy", "baseline": "scratch"},
    "snapshot_teachers": {"distill": {"terms": _CE, "strategy": "snapshot_teachers",
                                      "strategy_params": {"k": 3, "weight": 1.0, "temperature": 1.0}},
                          "optim": {"iterations_per_epoch": 25},
                          "metric": "student.best.test.accuracy", "baseline": "scratch"},
    "partition_students": {"distill": {"terms": _KD, "strategy": "partition_students",
                                       "strategy_params": {"key": "modality", "fallback": True}},
                           "data": _CSV, "teacher": True,
                           "metric": "strategy.routed.test.accuracy", "baseline": "kd"},
    "mst_distill": {"distill": {"terms": _CE, "strategy": "mst_distill",
                                "strategy_params": {"k": 1, "temperature": 4.0, "cotrain_iterations": "ITERATIONS",
                                                    "mask_iterations": "HALF", "teacher_net": "kd_cnn_wide",
                                                    "teacher_params": {"width": 32}}},
                    "data": {**_CSV, "paired_column": "paired"},
                    "metric": "student.best.test.accuracy", "baseline": "scratch"},
    "m2mkd": {"distill": {"terms": _KD, "strategy": "m2mkd",
                          "strategy_params": {"alpha": 0.5, "temperature": 1.0, "module_iterations": "QUARTER"}},
              "teacher": True, "metric": "student.best.test.accuracy", "baseline": "kd"},
    "coconut": {"distill": {"terms": _CE, "strategy": "coconut", "strategy_params": _COCONUT},
                "data": _CSV, "metric": "strategy.average_accuracy", "baseline": "_coconut_finetune",
                "extra": {"forgetting": "strategy.average_forgetting"}},
    "_coconut_finetune": {"distill": {"terms": _CE, "strategy": "coconut",
                                      "strategy_params": {**_COCONUT, "buffer": 0, "supcon_weight": 0.0,
                                                          "kd_weight": 0.0}},
                          "data": _CSV, "metric": "strategy.average_accuracy",
                          "extra": {"forgetting": "strategy.average_forgetting"}},
    "salt": {"distill": {"terms": _CE, "strategy": "salt",
                         "strategy_params": {"teacher_iterations": "SALT", "student_iterations": "SALT",
                                             "predictor_depth": 2, "predictor_width": 64, "predictor_heads": 4,
                                             "decoder_depth": 1, "lr": 0.001, "weight_decay": 0.05,
                                             "random_baseline": True}},
             "student": {"net": "salt_vit", "net_params": {"dim": 64, "depth": 4, "heads": 4, "patch": 4}},
             "metric": "strategy.probe_accuracy", "baseline_metric": "strategy.random_probe_accuracy"},
}
#: what a strategy row's baseline is called in the table
BASELINE_NAMES = {"scratch": "scratch", "kd": "KD", "_coconut_finetune": "fine-tune (no buffer/SupCon/KD)",
                  None: "random-init probe"}


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


def dotted_get(summary: dict[str, Any], dotted: str) -> Any:
    """``summary["a"]["b"]`` for ``"a.b"`` (the metric paths of the bench rows; ``bench/distill_tools.py`` too)."""
    value: Any = summary
    for key in dotted.split("."):
        value = value[key]
    return value


def run_strategy_row(row: str, data: Path, teacher: Path, out: Path, iterations: int, seed: int,
                     salt_iterations: int) -> dict[str, Any]:
    """Train strategy row ``row`` (its ``iterations`` per training, as the loss rows) and read its metrics."""
    from medkd.distill.runner import run_experiment

    spec = STRATEGY_ROWS[row]
    sizes = {'"ITERATIONS"': iterations, '"HALF"': iterations // 2, '"THIRD"': iterations // 3,
             '"QUARTER"': iterations // 4, '"SALT"': salt_iterations}
    text = json.dumps(spec["distill"])
    for marker, value in sizes.items():
        text = text.replace(marker, str(value))
    raw = _base(data, iterations, seed)
    raw["distill"] = json.loads(text)
    for section in ("data", "student", "optim"):
        raw[section].update(spec.get(section, {}))
    if row == "salt":
        raw["optim"].update({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "iterations": salt_iterations})
    if spec.get("teacher"):
        raw["teacher"] = {"checkpoint": str(teacher), "cache": raw["data"].get("layout") != "csv",
                          "cache_dir": str(teacher.parent / "teacher_cache")}
    started = time.perf_counter()
    summary = run_experiment(_config(raw), data, out, progress=False)
    result = {"row": row, "seed": seed, "metric": float(dotted_get(summary, spec["metric"])),
              "wall_s": round(time.perf_counter() - started, 1), "params": summary["student"]["params"],
              "extra_params": summary["student"]["extra_params"]}
    if "baseline_metric" in spec:
        result["baseline"] = float(dotted_get(summary, spec["baseline_metric"]))
    for name, dotted in spec.get("extra", {}).items():
        result[name] = float(dotted_get(summary, dotted))
    return result


def strategy_table(loss_runs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """One line per strategy: its metric against its baseline (same seeds), the paired difference, wall time."""
    loss = {(r["row"], r["seed"]): r["best_acc"] for r in loss_runs}
    own = {(r["row"], r["seed"]): r for r in runs}
    rows, lines = [], [
        "| Strategy | Metric | Baseline | Baseline value | Strategy value | Δ mean ± sd | Extra params | wall s/seed |"
        " verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, spec in STRATEGY_ROWS.items():
        seeds = sorted(s for (r, s) in own if r == name)
        if name.startswith("_") or not seeds:
            continue
        ref = spec.get("baseline")
        base = [own[(name, s)]["baseline"] if ref is None else
                own[(ref, s)]["metric"] if ref in STRATEGY_ROWS else loss[(ref, s)] for s in seeds]
        vals = [own[(name, s)]["metric"] for s in seeds]
        deltas = [v - b for v, b in zip(vals, base)]
        (b_mean, b_sd), (v_mean, v_sd), (d_mean, d_sd) = _mean_sd(base), _mean_sd(vals), _mean_sd(deltas)
        spread = max(b_sd, v_sd)
        verdict = "better (> 1 sd)" if d_mean > spread else "worse (> 1 sd)" if d_mean < -spread else "≈"
        metric = spec["metric"].rsplit(".", 1)[-1]
        wall = statistics.mean(own[(name, s)]["wall_s"] for s in seeds)
        entry = {"strategy": name, "metric": metric, "baseline": BASELINE_NAMES[ref], "baseline_mean": b_mean,
                 "baseline_sd": b_sd, "value_mean": v_mean, "value_sd": v_sd, "delta_mean": d_mean, "delta_sd": d_sd,
                 "extra_params": own[(name, seeds[0])]["extra_params"], "wall_s": wall, "verdict": verdict,
                 "seeds": seeds}
        for extra in spec.get("extra", {}):
            entry[extra] = statistics.mean(own[(name, s)][extra] for s in seeds)
            if ref in STRATEGY_ROWS:
                entry[f"baseline_{extra}"] = statistics.mean(own[(ref, s)][extra] for s in seeds)
        rows.append(entry)
        note = "".join(f"; {k} {entry[k]:.3f} vs {entry.get('baseline_' + k, float('nan')):.3f}"
                       for k in spec.get("extra", {}))
        lines.append(f"| {name} | {metric}{note} | {entry['baseline']} | {b_mean:.3f} ± {b_sd:.3f} | "
                     f"{v_mean:.3f} ± {v_sd:.3f} | {d_mean:+.3f} ± {d_sd:.3f} | {entry['extra_params']:,} | "
                     f"{wall:.0f} | {verdict} |")
    return rows, "\n".join(lines)


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


def _write_data(args: argparse.Namespace, sizes: dict[str, int]) -> Path:
    """SynthLesion-2D with the paired second modality and a CSV datalist (the strategy rows read both); the images
    of every split are those the loss rows were trained on (each split draws from its own seeded generator)."""
    from medkd.data.synthetic.lesion_classes import (LesionClassConfig, write_classification_datalist,
                                                     write_synth_lesion_2d)

    data = args.work / f"synth_lesion_2d_overlap{args.overlap}_paired"
    if not (data / "datalist.csv").is_file():
        t0 = time.perf_counter()
        write_synth_lesion_2d(data, seed=0, config=LesionClassConfig(overlap=args.overlap), paired=True, **sizes)
        write_classification_datalist(data)
        print(f"data written in {time.perf_counter() - t0:.1f} s")
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--teacher-iterations", type=int, default=1500)
    parser.add_argument("--salt-iterations", type=int, default=300,
                        help="SALT's teacher, student and probe iterations each")
    parser.add_argument("--overlap", type=float, default=0.5, help="class overlap of the generator (1: default)")
    parser.add_argument("--teacher-net", default="kd_cnn_wide")
    public = [*PLUGIN_ROWS, *(r for r in STRATEGY_ROWS if not r.startswith("_"))]
    parser.add_argument("--rows", nargs="+", default=public, choices=public)
    parser.add_argument("--merge", action="store_true",
                        help="keep the saved runs of rows not run now (e.g. --rows borup_sd --merge)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medkd_bench_distill"))
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 iterations, small data (smoke)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_table")
    parser.add_argument("--table-only", action="store_true", help="rewrite the tables from the JSON's runs")
    args = parser.parse_args()
    saved_path = args.out.with_suffix(".json")
    if args.table_only:
        saved = json.loads(saved_path.read_text())
        _finish(args, saved["meta"], saved["runs"], saved.get("strategy_runs", []))
        return
    logging.basicConfig(level=logging.WARNING)
    import torch

    sizes = dict(n_teacher_train=8000, n_train=1000, n_val=1000, n_test=2000, n_unlabelled=4000)
    if args.quick:
        args.seeds, args.iterations, args.teacher_iterations, args.salt_iterations = [0], 20, 40, 12
        sizes = dict(n_teacher_train=400, n_train=200, n_val=100, n_test=200, n_unlabelled=100)
        args.work = args.work.with_name(args.work.name + "_quick")
        args.out = args.out.with_name(args.out.name + "_quick")
        saved_path = args.out.with_suffix(".json")
    data = _write_data(args, sizes)
    t0 = time.perf_counter()
    teacher_dir = args.work / f"teacher_{args.teacher_net}_{args.teacher_iterations}"
    teacher = train_teacher(data, teacher_dir, args.teacher_net, args.teacher_iterations)
    teacher_acc = teacher["student"]["best"]["test"]["accuracy"]
    print(f"teacher {args.teacher_net}: test accuracy {teacher_acc:.3f} ({time.perf_counter() - t0:.0f} s)")
    loss_rows = [r for r in args.rows if r in PLUGIN_ROWS]
    strategy_rows = [r for r in args.rows if r in STRATEGY_ROWS]
    if "coconut" in strategy_rows:
        strategy_rows.append("_coconut_finetune")
    saved = json.loads(saved_path.read_text()) if args.merge and saved_path.is_file() else {}
    results = [r for r in saved.get("runs", []) if r["row"] not in loss_rows]
    strategy_results = [r for r in saved.get("strategy_runs", []) if r["row"] not in strategy_rows]
    for seed in args.seeds:
        for row in sorted(loss_rows, key=lambda r: r != "scratch"):
            res = run_row(row, data, teacher_dir, args.work / f"{row}_s{seed}", args.iterations, seed)
            results.append(res)
            print(f"seed {seed} {row:<11} test acc {res['best_acc']:.3f} (last {res['last_acc']:.3f}) "
                  f"{res['s_per_epoch']:.2f} s/epoch, {res['wall_s']} s", flush=True)
        for row in strategy_rows:
            res = run_strategy_row(row, data, teacher_dir, args.work / f"{row.lstrip('_')}_s{seed}",
                                   args.iterations, seed, args.salt_iterations)
            strategy_results.append(res)
            print(f"seed {seed} {row:<18} {STRATEGY_ROWS[row]['metric']} {res['metric']:.3f}"
                  + (f" (baseline {res['baseline']:.3f})" if "baseline" in res else "") + f", {res['wall_s']} s",
                  flush=True)
    meta = {**saved.get("meta", {}),
            "teacher_net": args.teacher_net, "teacher_params": teacher["student"]["params"],
            "teacher_test_accuracy": teacher_acc, "student_net": "kd_cnn", "iterations": args.iterations,
            "teacher_iterations": args.teacher_iterations, "salt_iterations": args.salt_iterations,
            "seeds": args.seeds, "data": sizes, "overlap": args.overlap,
            "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _finish(args, meta, results, strategy_results)


def _finish(args: argparse.Namespace, meta: dict[str, Any], results: list[dict[str, Any]],
            strategy_results: list[dict[str, Any]]) -> None:
    rows, md = table(results, meta["teacher_test_accuracy"])
    s_rows, s_md = strategy_table(results, strategy_results) if strategy_results else ([], "")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "runs": results, "strategy_rows": s_rows, "strategy_runs": strategy_results},
        indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = (f"SynthLesion-2D (overlap {meta['overlap']}, trained at 32x32), teacher {meta['teacher_net']} "
              f"({meta['teacher_params']:,} params, test accuracy {meta['teacher_test_accuracy']:.3f}), student "
              f"kd_cnn, {meta['iterations']} iterations, seeds {meta['seeds']}; s/epoch is the fastest of the seeds.\n\n")
    text = header + "## Loss plugins\n\n" + md + "\n"
    if s_md:
        text += ("\n## Strategy plugins\n\n"
                 f"Each training of a strategy runs {meta['iterations']} iterations (borup_sd: per generation; "
                 "partition_students: per student; mst_distill: co-training, then half as many for the masks, then "
                 "the student; m2mkd: a quarter per stage pair, then end to end; coconut: a third per stage), SALT "
                 f"{meta.get('salt_iterations')} per stage on a salt_vit student; Δ is paired by seed.\n\n"
                 + s_md + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
