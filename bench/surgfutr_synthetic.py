#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR on synthetic laparoscopic videos in both real layouts (spec shared/specs/surgfutr.md sections 6, 7).

Per seed: the generator's 12 videos (train 1-8, val 9-10, test 11-12) written as Cholec80 (MP4 at 25 fps + txt)
and CholecT50 (1-fps PNG + json); per layout, three trained arms from ``apps/surgfutr/cpu_synthetic.yaml``
  surgfutr             teacher (window + future clip) -> student with ActDyn, Sinkhorn-Knopp states
  no_teacher           the same student trained on the tasks alone
  feature_regression   the paper's foil: regress the future clip's feature, heads on the regressed feature
and the two training-free baselines ``medkd surgfutr eval`` reports: copy_current and prior. Metrics on the test
videos (times in minutes at the first horizon, presence at the first Δ): RSD MAE, phase-transition wMAE / inMAE /
outMAE, tool mAP dense and change-conditioned, triplet mAP (CholecT50), event mAP / AUROC.
Writes bench/results/surgfutr_synthetic.{md,json}.

    python bench/surgfutr_synthetic.py                       # 3 seeds x 2 layouts (about 40 min on 2 cores)
    python bench/surgfutr_synthetic.py --quick               # 1 seed, cholec80, 60 iterations (smoke)
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "apps" / "surgfutr" / "cpu_synthetic.yaml"
TRAINED = ("surgfutr", "no_teacher", "feature_regression")
ARMS = (*TRAINED, "copy_current", "prior")
METRICS = ("rsd_mae", "phase_wmae", "phase_inmae", "phase_outmae", "tool_map", "tool_map_change", "triplet_map",
           "triplet_map_change", "event_map", "event_auroc")
LOWER_BETTER = {"rsd_mae", "phase_wmae", "phase_inmae", "phase_outmae"}
LAYOUT_SETS = {"cholec80": [],
               "cholect50": ["data.layout=cholect50", "data.dataset=cholect50",
                             "data.events=[clipping=clipper, cutting=scissors]"]}


def run_arm(data: Path, out: Path, layout: str, variant: str, seed: int, iterations: int | None) -> dict[str, Any]:
    """Train one arm and evaluate it (and the baselines) on the test split."""
    from medkd import api

    sets = [*LAYOUT_SETS[layout], f"variant={variant}", f"seed={seed}", f"data.cache_dir={data / 'cache'}"]
    if iterations:
        sets.append(f"train.iterations={iterations}")
        sets.append(f"train.val_interval={max(1, iterations // 3)}")
    run = out / f"{layout}_{variant}_seed{seed}"
    if run.exists():
        shutil.rmtree(run)
    t0 = time.perf_counter()
    summary = api.surgfutr_train(PRESET, data, run, overrides=sets, progress=False)
    wall = time.perf_counter() - t0
    report = api.surgfutr_eval(run, data, split="test", json=run / "eval_test.json")
    return {"train": summary, "train_wall_s": wall, "eval": report}


def _mean_std(values: list[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summarise(results: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """``{layout: {arm: {metric: (mean, std, n)}}}`` and the pass checks."""
    table: dict[str, Any] = {}
    for layout, arms in results.items():
        rows: dict[str, dict[str, list[float | None]]] = {a: {m: [] for m in METRICS} for a in ARMS}
        for variant, seeds in arms.items():
            for r in seeds.values():
                ev = r["eval"]
                for m in METRICS:
                    rows[variant][m].append(ev["surgfutr"].get(m))
                    if variant == "surgfutr":  # the baselines do not depend on the trained arm
                        rows["copy_current"][m].append(ev["copy_current"].get(m))
                        rows["prior"][m].append(ev["prior"].get(m))
        table[layout] = {a: {m: _mean_std(v) for m, v in rows[a].items()} for a in ARMS}
    checks = {}
    for layout, t in table.items():
        s, c, p = t["surgfutr"], t["copy_current"], t["prior"]
        tool = "tool_map_change"
        checks[layout] = {
            "phase_wmae < copy_current": s["phase_wmae"][0] < c["phase_wmae"][0],
            f"{tool} > copy_current": s[tool][0] > c[tool][0],
            "rsd_mae < prior": s["rsd_mae"][0] < p["rsd_mae"][0],
        }
    return {"table": table, "checks": checks}


def _cell(ms: tuple[float, float, int]) -> str:
    mean, std, n = ms
    if n == 0 or not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# SurgFUTR on synthetic laparoscopic video", "",
             f"{meta['seeds']} seed(s), preset `apps/surgfutr/cpu_synthetic.yaml` ({meta['iterations']} iterations), "
             "test videos 11-12 of each seed's 12; mean ± std over seeds. Times in minutes (phase horizon "
             f"{meta['horizon_min']:g} min), tools at +{meta['delta_s']} s; chg = change-conditioned. "
             "Lower is better for MAE columns, higher for mAP/AUROC. copy-current has no RSD prediction.", ""]
    for layout, t in summary["table"].items():
        cols = [m for m in METRICS if any(t[a][m][2] for a in ARMS)]
        lines += [f"## {layout} layout", "", "| arm | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for arm in ARMS:
            name = f"**{arm}**" if arm == "surgfutr" else arm
            lines.append(f"| {name} | " + " | ".join(_cell(t[arm][m]) for m in cols) + " |")
        lines += ["", "Checks: " + ", ".join(f"{k}: {'yes' if v else 'no'}"
                                              for k, v in summary["checks"][layout].items()), ""]
    lines += [f"Machine: {meta['machine']}; total wall time {meta['wall_min']:.1f} min; training "
              f"{meta['it_per_s']} iterations/s (surgfutr arm, mean).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--layouts", nargs="+", default=list(LAYOUT_SETS), choices=list(LAYOUT_SETS))
    ap.add_argument("--arms", nargs="+", default=list(TRAINED), choices=list(TRAINED))
    ap.add_argument("--iterations", type=int, default=None, help="default: the preset's")
    ap.add_argument("--work", default=None, help="folder for data and runs (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="1 seed, cholec80, 60 iterations")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "surgfutr_synthetic"))
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.layouts, args.iterations = 1, ["cholec80"], 60
        args.out += "_quick"
    logging.basicConfig(level=logging.WARNING)
    from medkd.config import load_config
    from medkd.data.synthetic.surgical_video import write_synthetic_surgical
    from medkd.methods.surgfutr.config import SurgFUTRConfig

    cfg = load_config(SurgFUTRConfig, PRESET)
    work = Path(args.work or tempfile.mkdtemp(prefix="surgfutr_bench_"))
    start = time.perf_counter()
    results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {l: {a: {} for a in args.arms} for l in args.layouts}
    for seed in range(args.seeds):
        data = work / f"data_seed{seed}"
        if not data.exists():
            write_synthetic_surgical(data, seed=seed)
        for layout in args.layouts:
            for arm in args.arms:
                r = run_arm(data, work / "runs", layout, arm, seed, args.iterations)
                results[layout][arm][seed] = r
                ev = r["eval"]["surgfutr"]
                print(f"seed {seed} {layout} {arm}: wMAE {ev['phase_wmae']} tool mAP chg {ev['tool_map_change']} "
                      f"RSD {ev['rsd_mae']} ({r['train_wall_s']:.0f} s)", flush=True)
    summary = summarise(results)
    its = [r["train"]["iterations_per_second"] for layout in results.values() for s in layout.get("surgfutr", {})
           .values() for r in [s]]
    meta = {"seeds": args.seeds, "iterations": args.iterations or cfg.train.iterations,
            "horizon_min": cfg.tasks.transition_horizons_min[0], "delta_s": cfg.tasks.presence_deltas_s[0],
            "machine": f"{platform.processor() or platform.machine()}, torch threads "
                       f"{__import__('torch').get_num_threads()}",
            "wall_min": (time.perf_counter() - start) / 60, "it_per_s": round(float(np.mean(its)), 2) if its else None}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(markdown(summary, meta), encoding="utf-8")
    slim = {l: {a: {str(s): {"eval": {k: r["eval"][k] for k in ("surgfutr", "copy_current", "prior")},
                             "train": r["train"], "train_wall_s": r["train_wall_s"]}
                        for s, r in seeds.items()} for a, seeds in arms.items()} for l, arms in results.items()}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": slim}, indent=1,
                                                   default=float), encoding="utf-8")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
