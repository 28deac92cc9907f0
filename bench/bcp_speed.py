#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Seconds per BCP iteration at the reference's batch (12 labelled + 12 unlabelled slices, 128×128, full-width
PyMIC UNet), through the real engine (data loading, mask, mixing, teacher, pseudo-labels with connected
components, two student forwards, backward, SGD, EMA), in fp32 and bf16 autocast, where each iteration's time goes
(the engine's split: data, forward+backward, optimiser, teacher update, other), plus the 3D CPU preset and
inference throughput.

    python bench/bcp_speed.py [--iterations 40]

Writes bench/results/bcp_speed.md. For scale, the issue quotes the reference code on the same kind of 2-core
machine at 128×128 with this batch: 0.39 s per pre-training iteration and 0.89 s per self-training iteration
(0.53 s median; part of that is a data loader restarting its workers every few iterations).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _iteration_times(metrics: Path, skip: int) -> list[float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    stamps = [r["time"] for r in rows if "loss" in r]
    return list(np.diff(stamps))[skip:]


def _split(metrics: Path, skip: int) -> dict[str, float]:
    """Mean seconds per iteration of each part of the engine's time split (``time/<part>`` columns)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rows = [r for r in rows if "loss" in r][skip:]
    parts = sorted({k for r in rows for k in r if k.startswith("time/")})
    return {k.split("/", 1)[1]: float(np.mean([r[k] for r in rows])) for k in parts}


def _stats(times: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(times)), "median": float(statistics.median(times)), "p90": float(np.percentile(times, 90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--work", default="/tmp/medkd-bench/bcp_speed")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    from medkd import api
    from medkd.data.synthetic import write_synthetic_acdc, write_synthetic_la
    from medkd.metrics.seg_inference import predict_slices_2d
    from medkd.methods.bcp.predict import load_run

    work = Path(args.work)
    acdc = work / "acdc128"
    if not (acdc / "train_slices.list").exists():
        write_synthetic_acdc(acdc, n_train=20, n_val=2, n_test=2, n_slices=10, size=128, seed=0)
    la = work / "la"
    if not (la / "train.list").exists():
        write_synthetic_la(la, n_train=12, n_test=2, shape=(48, 48, 32), seed=0)
    n = args.iterations
    rows = []
    setups = [
        ("2D reference batch, 12+12, 128², full UNet, workers 0", ROOT / "apps/bcp/cpu_2d.yaml", acdc,
         ["net=bcp_unet2d", "batch_size=24", "labeled_batch_size=12", "patch=[128, 128]", "labeled=3", "num_workers=0"]),
        ("2D reference batch, 12+12, 128², full UNet, workers 2", ROOT / "apps/bcp/cpu_2d.yaml", acdc,
         ["net=bcp_unet2d", "batch_size=24", "labeled_batch_size=12", "patch=[128, 128]", "labeled=3", "num_workers=2"]),
        ("2D reference batch, 12+12, 128², full UNet, workers 0, bf16", ROOT / "apps/bcp/cpu_2d.yaml", acdc,
         ["net=bcp_unet2d", "batch_size=24", "labeled_batch_size=12", "patch=[128, 128]", "labeled=3", "num_workers=0",
          "precision=bf16"]),
        ("2D cpu_2d preset (8+8, 128², half UNet)", ROOT / "apps/bcp/cpu_2d.yaml", acdc, []),
        ("3D cpu_3d preset (2+2, 32³, small VNet)", ROOT / "apps/bcp/cpu_3d.yaml", la, ["val_from_train=2"]),
    ]
    for name, preset, data, overrides in setups:
        run = work / f"run_{len(rows)}"
        common = [f"pretrain_iterations={n}", f"selftrain_iterations={n}", f"val_interval={10 * n}", "log_interval=1",
                  "snapshot_interval=0"]
        t0 = time.perf_counter()
        api.bcp_train(preset, data, run, overrides=overrides + common, progress=False)
        wall = time.perf_counter() - t0
        row = {"setup": name, "wall_s": wall}
        for stage in ("pretrain", "selftrain"):
            row[stage] = _stats(_iteration_times(run / stage / "metrics.jsonl", skip=3))
            row[f"{stage}_split"] = _split(run / stage / "metrics.jsonl", skip=3)
        rows.append(row)
        print(name, {k: v for k, v in row.items() if k != "setup"}, flush=True)

    cfg, model = load_run(work / "run_0", "last")
    vol = np.random.default_rng(0).random((40, 128, 128), dtype=np.float32)
    predict_slices_2d(model, vol[:8], patch=(128, 128), num_classes=4, batch_size=32)
    t0 = time.perf_counter()
    predict_slices_2d(model, vol, patch=(128, 128), num_classes=4, batch_size=32)
    slices_per_s = len(vol) / (time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# BCP iteration cost on CPU", "",
        f"Commit `{commit}`, {torch.get_num_threads()} torch threads, {n} iterations per stage (first 3 excluded), "
        "seconds per iteration from the engine's per-iteration log (everything included: data, step, optimiser, EMA).", "",
        "| setup | pre-train mean | median | p90 | self-train mean | median | p90 |", "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, s = r["pretrain"], r["selftrain"]
        lines.append(f"| {r['setup']} | {p['mean']:.3f} | {p['median']:.3f} | {p['p90']:.3f} | "
                     f"{s['mean']:.3f} | {s['median']:.3f} | {s['p90']:.3f} |")
    parts = ("data", "forward_backward", "optimizer", "teacher", "other")
    lines += ["", "Where an iteration's time goes (engine time split, mean seconds per iteration):", "",
              "| setup | stage | " + " | ".join(parts) + " |", "|---|---|" + "---|" * len(parts)]
    for r in rows:
        for stage in ("pretrain", "selftrain"):
            split = r[f"{stage}_split"]
            lines.append(f"| {r['setup']} | {stage} | " + " | ".join(f"{split.get(k, 0.0):.3f}" for k in parts) + " |")
    lines += ["", "Reference code (issue's figures, same kind of 2-core machine, 12+12 at 128²): pre-train 0.39 s, "
              "self-train 0.89 s mean (0.53 s median).", "",
              f"Inference (full UNet, 128², batch 32): {slices_per_s:.0f} slices/s. Peak RSS of the benchmark process: {peak:.0f} MiB."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bcp_speed.md").write_text("\n".join(lines) + "\n")
    (out / "bcp_speed.json").write_text(json.dumps({"rows": rows, "slices_per_s": slices_per_s, "peak_rss_mib": peak}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
