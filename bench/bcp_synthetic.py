#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""BCP vs supervised-only on synthetic ACDC-layout data at 5% labels (spec shared/specs/bcp.md §9).

Arms, with the same labelled subset (2 of 40 patients), network, augmentation and total iterations:
  A  supervised only (Dice+CE on labelled slices, no mixing)
  B  BCP stage 1 only (copy-paste pre-training for all iterations; ablation)
  C  full BCP (pre-training then bidirectional copy-paste self-training)
Each arm runs in its own process (for its peak memory) for every seed; the test set is evaluated with the best-on-val
and the last checkpoint. Writes bench/results/bcp_synthetic.{md,json,png}.

    python bench/bcp_synthetic.py                 # 3 seeds, 600 + 2000 iterations (about 40 min on 2 cores)
    python bench/bcp_synthetic.py --quick         # 1 seed, 40 + 60 iterations (smoke)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import subprocess
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "apps" / "bcp" / "cpu_2d.yaml"
METRICS = ("dice", "jaccard", "hd95", "asd")
CLASSES = ("RV", "Myo", "LV")
#: overrides of the cpu_2d preset shared by every arm (and by bench/bcp_precision.py)
COMMON = ("patch=[64, 64]", "batch_size=16", "labeled_batch_size=8", "labeled=2", "val_interval=200",
          "net=bcp_unet2d_half", "num_workers=0")


def synthetic_data(work: Path) -> Path:
    """The benchmark's synthetic ACDC-layout dataset under ``work/data`` (written once)."""
    from medkd.data.synthetic import write_synthetic_acdc

    data = work / "data"
    if not (data / "train_slices.list").exists():
        write_synthetic_acdc(data, n_train=40, n_val=6, n_test=10, n_slices=10, size=64, seed=0)
    return data


def _arm_overrides(arm: str, pre: int, self_: int) -> list[str]:
    if arm == "A":
        return ["method=supervised", f"pretrain_iterations={pre}", f"selftrain_iterations={self_}"]
    if arm == "B":
        return [f"pretrain_iterations={pre + self_}", "selftrain_iterations=0"]
    return [f"pretrain_iterations={pre}", f"selftrain_iterations={self_}"]


def _run_arm(arm: str, seed: int, data: str, run: str, common: list[str], pre: int, self_: int, queue) -> None:
    import torch

    from medkd import api
    from medkd.methods.bcp.data import eval_cases
    from medkd.methods.bcp.evaluate import predict_case
    from medkd.methods.bcp.predict import load_run

    torch.set_num_threads(2)
    overrides = common + _arm_overrides(arm, pre, self_) + [f"seed={seed}"]
    t0 = time.perf_counter()
    train = api.bcp_train(PRESET, data, run, overrides=overrides, resume=True, progress=False)
    train_s = time.perf_counter() - t0
    result = {"arm": arm, "seed": seed, "train": train, "train_seconds": train_s}
    for which in ("best", "last"):
        result[which] = api.bcp_eval(run, data, split="test", checkpoint=which, progress=False)
        result[which].pop("cases")
    cfg, model = load_run(run, "best")
    cases = list(eval_cases(cfg, Path(data), "test"))
    n_slices = sum(c[1].shape[0] for c in cases)
    with torch.inference_mode():
        predict_case(model, cases[0][1], cfg, "cpu")  # warm-up
        t0 = time.perf_counter()
        for _, image, _ in cases:
            predict_case(model, image, cfg, "cpu")
    result["slices_per_second"] = n_slices / (time.perf_counter() - t0)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(np.nanmean(arr)), float(np.nanstd(arr, ddof=1)) if len(arr) > 1 else 0.0


def _table(results: list[dict], which: str) -> list[str]:
    lines = [
        f"| arm | {' | '.join(f'Dice {c}' for c in CLASSES)} | mean Dice | Jaccard | HD95 (px) | ASD (px) |",
        "|---|" + "---|" * (len(CLASSES) + 4),
    ]
    names = {"A": "A supervised only", "B": "B BCP stage 1 only", "C": "C full BCP"}
    for arm in ("A", "B", "C"):
        rs = [r for r in results if r["arm"] == arm]
        if not rs:
            continue
        cells = []
        for c in CLASSES:
            m, s = _mean_std([100 * r[which]["per_class"][c]["dice"] for r in rs])
            cells.append(f"{m:.1f} ± {s:.1f}")
        for key, scale in (("dice", 100), ("jaccard", 100), ("hd95", 1), ("asd", 1)):
            m, s = _mean_std([scale * r[which]["mean"][key] for r in rs])
            cells.append(f"{m:.{1 if scale == 100 else 2}f} ± {s:.{1 if scale == 100 else 2}f}")
        lines.append(f"| {names[arm]} | " + " | ".join(cells) + " |")
    return lines


def _gain(results: list[dict], a: str, b: str, which: str = "best") -> tuple[float, float, float]:
    da = [100 * r[which]["mean"]["dice"] for r in results if r["arm"] == a]
    db = [100 * r[which]["mean"]["dice"] for r in results if r["arm"] == b]
    pooled = float(np.sqrt((np.var(da, ddof=1) + np.var(db, ddof=1)) / 2)) if min(len(da), len(db)) > 1 else 0.0
    return float(np.mean(db) - np.mean(da)), pooled, float(np.mean(db))


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = list(CLASSES) + ["mean"]
    width = 0.27
    for k, (arm, name) in enumerate((("A", "supervised only"), ("B", "BCP stage 1"), ("C", "full BCP"))):
        rs = [r for r in results if r["arm"] == arm]
        if not rs:
            continue
        vals = [[100 * r["best"]["per_class"][c]["dice"] for r in rs] for c in CLASSES]
        vals.append([100 * r["best"]["mean"]["dice"] for r in rs])
        means = [np.mean(v) for v in vals]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals]
        ax.bar(np.arange(len(labels)) + (k - 1) * width, means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylabel("test Dice (%)")
    ax.set_title("Synthetic ACDC layout, 5% labels (2 of 40 patients), mean ± std over seeds")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain", type=int, default=600)
    parser.add_argument("--selftrain", type=int, default=2000)
    parser.add_argument("--arms", nargs="+", default=["A", "B", "C"])
    parser.add_argument("--work", default="/tmp/medkd-bench/bcp_synthetic")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pretrain, args.selftrain = args.seeds[:1], 40, 60

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = synthetic_data(work)
    common = list(COMMON)
    ctx = mp.get_context("spawn")
    results = []
    started = time.perf_counter()
    for seed in args.seeds:
        for arm in args.arms:
            queue = ctx.Queue()
            run = work / f"{'quick_' if args.quick else ''}{arm}_seed{seed}"
            proc = ctx.Process(target=_run_arm, args=(arm, seed, str(data), str(run), common, args.pretrain, args.selftrain, queue))
            proc.start()
            res = queue.get()
            proc.join()
            results.append(res)
            print(f"seed {seed} arm {arm}: test Dice {100 * res['best']['mean']['dice']:.1f} (best) "
                  f"{100 * res['last']['mean']['dice']:.1f} (last), {res['train_seconds']:.0f} s", flush=True)

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# BCP vs supervised-only on synthetic data (5% labels)",
        "",
        f"Commit `{commit}`, {platform.processor() or platform.machine()}, {mp.cpu_count()} cores, torch threads 2; "
        f"seeds {args.seeds}; {args.pretrain} + {args.selftrain} iterations (arms A and B train for the sum); "
        "half-width UNet, 64×64, batch 8 labelled + 8 unlabelled; synthetic ACDC layout with 40 training patients "
        "(2 labelled), 6 validation and 10 test volumes; metrics on the test list in pixels, mean ± std over seeds.",
        "",
        "## Best-on-validation checkpoint",
        "",
        *_table(results, "best"),
        "",
        "## Last checkpoint",
        "",
        *_table(results, "last"),
        "",
    ]
    if {"A", "C"} <= set(args.arms):
        for which in ("best", "last"):
            g, pooled, _ = _gain(results, "A", "C", which)
            lines.append(f"- Gain C − A ({which}): **{g:+.1f}** Dice points (pooled std {pooled:.1f}): "
                         f"{'PASS' if g > 0 and g > pooled else 'FAIL'} (gain > 0 and > pooled std)")
    if {"B", "C"} <= set(args.arms):
        g, pooled, _ = _gain(results, "B", "C")
        lines.append(f"- Gain C − B (best): {g:+.1f} Dice points (pooled std {pooled:.1f})")
    lines += ["", "## Speed and memory (2 cores)", "",
              "| arm | stage | iterations/s | s/iteration | training (s) | inference slices/s | peak RSS (MiB) |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for stage, st in r["train"]["stages"].items():
            ips = st["iterations_per_second"]
            lines.append(f"| {r['arm']} (seed {r['seed']}) | {stage} | {ips:.2f} | {1 / ips:.3f} | {st['seconds']:.0f} | "
                         f"{r['slices_per_second']:.0f} | {r['peak_rss_mib']:.0f} |")
    lines += ["", f"Total wall time {time.perf_counter() - started:.0f} s."]
    suffix = "_quick" if args.quick else ""
    (out / f"bcp_synthetic{suffix}.md").write_text("\n".join(lines) + "\n")
    (out / f"bcp_synthetic{suffix}.json").write_text(json.dumps(results, indent=2))
    _plot(results, out / f"bcp_synthetic{suffix}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
