#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""The distillation utilities (``medkd distill search|tool``) against their own baselines, on the data, teacher and
optimiser of ``bench/distill_table.py`` (run that first: it writes the data and trains the teacher).

- ``diswot``: the student DisWOT picks (training-free, within the default student's parameter budget and above half
  of it) + KD, against the default student + KD at the same iterations; seconds per scored candidate.
- ``n2n``: the compressed teacher N2N picks (DisWOT proxy, no candidate training) + KD, against the default student
  + KD at the same budget.
- ``annotator``: a student trained only on a teacher's severity annotations of the unlabelled archive (CCC loss),
  against the same student trained on the labelled split's true severities; metric CCC on the test split.
- ``pvd``: progressive block-wise distillation with active case weighting, against plain KD at the same iterations.
- ``curriculum``: KD with the teacher-prototype class curriculum, against plain KD (the ``kd`` row's runs).

Three seeds (``experiment.seed``, and the search's ``seed``). Writes bench/results/distill_tools.{md,json}.

    python bench/distill_tools.py              # 3 seeds (about 25 min on 2 cores)
    python bench/distill_tools.py --quick      # 1 seed, few iterations (smoke, needs distill_table.py --quick)
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill_table import dotted_get  # bench/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "apps" / "distill"

#: utility -> (its YAML, extra --set overrides, its params, (metric, baseline) read from OUT/<name>.json or a run)
ROWS: dict[str, dict[str, Any]] = {
    "diswot": {"config": "synth_lesion_diswot.yaml", "teacher": True,
               "params": {"budget_floor": 0.5, "train": True},
               "metric": "chosen.test_accuracy_best", "baseline": "default.test_accuracy_best",
               "label": "test accuracy", "baseline_name": "default student + KD"},
    "n2n": {"config": "synth_lesion_diswot.yaml", "teacher": True,
            "params": {"proxy": "diswot", "train": True, "episodes_removal": 20, "episodes_shrink": 20},
            "metric": "chosen.test_accuracy_best", "baseline": "default.test_accuracy_best",
            "label": "test accuracy", "baseline_name": "default student + KD"},
    "annotator": {"config": "synth_lesion_annotator.yaml", "teacher": False, "params": {},
                  "metric": "student.ccc", "baseline": "baseline.ccc", "label": "CCC (severity)",
                  "baseline_name": "student on the labelled split"},
    "pvd": {"config": "synth_lesion_pvd.yaml", "teacher": True, "params": {},
            "metric": "pvd.test_accuracy_best", "baseline": "kd.test_accuracy_best", "label": "test accuracy",
            "baseline_name": "KD"},
    "curriculum": {"config": "synth_lesion_curriculum.yaml", "teacher": True, "params": {},
                   "metric": "test_accuracy", "baseline": "table:kd", "label": "test accuracy",
                   "baseline_name": "KD (distill_table kd row)"},
}


def run_row(name: str, data: Path, teacher: Path, out: Path, iterations: int, seed: int,
            kd_runs: dict[int, float]) -> dict[str, Any]:
    """Run utility ``name`` once and read its metric and baseline."""
    from medkd import api

    spec = ROWS[name]
    done = out / "bench_row.json"  # a finished run is read back (resumable); delete it to rerun
    if done.is_file():
        return json.loads(done.read_text())
    overrides = [f"experiment.seed={seed}", f"optim.iterations={iterations}", "experiment.device=cpu",
                 f"eval.val_interval={max(1, iterations // 4)}"]
    if spec["teacher"]:
        overrides.append(f"teacher.checkpoint={teacher}")
    params = dict(spec["params"])
    if name in ("diswot", "n2n"):
        params["seed"] = seed
    started = time.perf_counter()
    report = api.distill_tool(name, APPS / spec["config"], data, out, overrides=overrides, params=params,
                              progress=False)
    result = read_result(name, report, seed, time.perf_counter() - started, kd_runs)
    done.write_text(json.dumps(result))
    return result


def read_result(name: str, report: dict[str, Any], seed: int, wall: float, kd_runs: dict[int, float],
                ) -> dict[str, Any]:
    """The table's numbers from utility ``name``'s report (``OUT/<name>.json``)."""
    spec = ROWS[name]
    baseline = kd_runs[seed] if spec["baseline"] == "table:kd" else float(dotted_get(report, spec["baseline"]))
    result = {"row": name, "seed": seed, "metric": float(dotted_get(report, spec["metric"])), "baseline": baseline,
              "wall_s": round(wall, 1)}
    for key in ("seconds_per_candidate", "candidates_scored", "search_seconds"):
        if key in report:
            result[key] = report[key]
    for key, getter in EXTRAS.get(name, {}).items():
        try:
            result[key] = getter(report)
        except (KeyError, TypeError, IndexError):
            pass
    return result


#: per utility, what else the table shows (read from its report)
EXTRAS: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "diswot": {"chosen_params": lambda r: r["chosen"]["params"], "default_params": lambda r: r["default"]["params"]},
    "n2n": {"chosen_params": lambda r: r["chosen"]["params"], "default_params": lambda r: r["default"]["params"]},
    "annotator": {"teacher_ccc": lambda r: r["teacher"]["ccc"]},
}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """One line per utility: metric against baseline, paired by seed."""
    rows, lines = [], ["| Utility | Metric | Baseline | Baseline value | Utility value | Δ mean ± sd | notes | "
                       "wall s/seed | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for name, spec in ROWS.items():
        own = [r for r in runs if r["row"] == name]
        if not own:
            continue
        vals, base = [r["metric"] for r in own], [r["baseline"] for r in own]
        (v_mean, v_sd), (b_mean, b_sd) = _mean_sd(vals), _mean_sd(base)
        d_mean, d_sd = _mean_sd([v - b for v, b in zip(vals, base)])
        spread = max(v_sd, b_sd)
        verdict = "better (> 1 sd)" if d_mean > spread else "worse (> 1 sd)" if d_mean < -spread else "≈"
        notes = []
        if "seconds_per_candidate" in own[0]:
            notes.append(f"{statistics.mean(r['seconds_per_candidate'] for r in own):.3f} s/candidate")
        if "chosen_params" in own[0]:
            notes.append(f"params {statistics.mean(r['chosen_params'] for r in own):,.0f} vs "
                         f"{own[0]['default_params']:,}")
        if "teacher_ccc" in own[0]:
            notes.append(f"teacher CCC {statistics.mean(r['teacher_ccc'] for r in own):.3f}")
        wall = statistics.mean(r["wall_s"] for r in own)
        entry = {"utility": name, "metric": spec["label"], "baseline": spec["baseline_name"], "baseline_mean": b_mean,
                 "baseline_sd": b_sd, "value_mean": v_mean, "value_sd": v_sd, "delta_mean": d_mean, "delta_sd": d_sd,
                 "notes": "; ".join(notes), "wall_s": wall, "verdict": verdict, "seeds": [r["seed"] for r in own]}
        rows.append(entry)
        lines.append(f"| {name} | {spec['label']} | {spec['baseline_name']} | {b_mean:.3f} ± {b_sd:.3f} | "
                     f"{v_mean:.3f} ± {v_sd:.3f} | {d_mean:+.3f} ± {d_sd:.3f} | {entry['notes']} | {wall:.0f} | "
                     f"{verdict} |")
    return rows, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/medkd_bench_distill"))
    parser.add_argument("--table", type=Path, default=ROOT / "bench" / "results" / "distill_table.json",
                        help="distill_table.py's results (its data, teacher and kd row)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--merge", action="store_true", help="keep the saved runs of rows not run now")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_tools")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.iterations = [0], 20
        args.work = args.work.with_name(args.work.name + "_quick")
        args.table = args.table.with_name(args.table.stem + "_quick.json")
        args.out = args.out.with_name(args.out.name + "_quick")
    logging.basicConfig(level=logging.WARNING)
    saved = json.loads(args.table.read_text())
    meta = saved["meta"]
    data = args.work / f"synth_lesion_2d_overlap{meta['overlap']}_paired"
    teacher = args.work / f"teacher_{meta['teacher_net']}_{meta['teacher_iterations']}"
    if not (data / "datalist.csv").is_file() or not (teacher / "summary.json").is_file():
        raise SystemExit(f"run bench/distill_table.py{' --quick' if args.quick else ''} first "
                         f"(needs {data} and {teacher})")
    kd_runs = {r["seed"]: r["best_acc"] for r in saved["runs"] if r["row"] == "kd"}
    previous = json.loads(args.out.with_suffix(".json").read_text()) if args.merge and \
        args.out.with_suffix(".json").is_file() else {"runs": []}
    runs = [r for r in previous["runs"] if r["row"] not in args.rows]
    for seed in args.seeds:
        for name in args.rows:
            res = run_row(name, data, teacher, args.work / "tools" / f"{name}_s{seed}", args.iterations, seed,
                          kd_runs)
            runs.append(res)
            print(f"seed {seed} {name:<11} {res['metric']:.3f} (baseline {res['baseline']:.3f}), {res['wall_s']} s",
                  flush=True)
    rows, md = table(runs)
    header = (f"Utilities on SynthLesion-2D (overlap {meta['overlap']}, 32x32), teacher {meta['teacher_net']} "
              f"(test accuracy {meta['teacher_test_accuracy']:.3f}), {args.iterations} iterations per training, "
              f"seeds {sorted({r['seed'] for r in runs})}; Δ paired by seed.\n\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": {**meta, "iterations": args.iterations},
                                                         "rows": rows, "runs": runs}, indent=1))
    args.out.with_suffix(".md").write_text(header + md + "\n")
    print(header + md)


if __name__ == "__main__":
    main()
