#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Full BCP in fp32 and in bf16 autocast, side by side: seconds per iteration of each stage and test Dice.

The same runs as arm C of ``bench/bcp_synthetic.py`` (synthetic ACDC layout, 5% labels, half-width UNet at 64×64,
batch 8 + 8, 600 + 2000 iterations, best-on-val and last checkpoints), once with ``precision=fp32`` and once with
``precision=bf16``, for each seed. bf16 pays off on CPUs with bf16 instructions (AVX512-BF16 / AMX) and recent GPUs;
validation and inference stay in fp32. Writes bench/results/bcp_precision.{md,json}.

    python bench/bcp_precision.py                  # 3 seeds (about 25 min on 2 cores)
    python bench/bcp_precision.py --quick          # 1 seed, 40 + 60 iterations (smoke)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bcp_synthetic import CLASSES, COMMON, _mean_std, _run_arm, synthetic_data  # noqa: E402  (the same runs as arm C)

PRECISIONS = ("fp32", "bf16")


def _cell(values: list[float], digits: int = 1) -> str:
    m, s = _mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain", type=int, default=600)
    parser.add_argument("--selftrain", type=int, default=2000)
    parser.add_argument("--work", default="/tmp/medkd-bench/bcp_precision")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pretrain, args.selftrain = args.seeds[:1], 40, 60

    from medkd.engine.loop import cpu_has_bf16

    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = synthetic_data(work)
    common = list(COMMON)
    ctx = mp.get_context("spawn")
    results: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    started = time.perf_counter()
    for seed in args.seeds:
        for precision in PRECISIONS:
            queue = ctx.Queue()
            run = work / f"{'quick_' if args.quick else ''}C_{precision}_seed{seed}"
            overrides = common + [f"precision={precision}"]
            proc = ctx.Process(target=_run_arm,
                               args=("C", seed, str(data), str(run), overrides, args.pretrain, args.selftrain, queue))
            proc.start()
            res = queue.get()
            proc.join()
            results[precision].append(res)
            print(f"seed {seed} {precision}: test Dice {100 * res['best']['mean']['dice']:.1f} (best) "
                  f"{100 * res['last']['mean']['dice']:.1f} (last), {res['train_seconds']:.0f} s", flush=True)

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    lines = [
        "# Full BCP in fp32 and bf16 autocast", "",
        f"Commit `{commit}`, {mp.cpu_count()} cores, torch threads 2, CPU bf16 instructions: "
        f"{'yes' if cpu_has_bf16() else 'no'}; seeds {args.seeds}; {args.pretrain} + {args.selftrain} iterations; "
        "arm C of bench/bcp_synthetic.py (half-width UNet, 64×64, batch 8 + 8, 2 of 40 patients labelled); "
        "test Dice in %, mean ± std over seeds; seconds per iteration over each whole stage (validation included).",
        "",
        "| precision | pre-train s/it | self-train s/it | training (s) | " + " | ".join(f"Dice {c}" for c in CLASSES)
        + " | mean Dice (best) | mean Dice (last) |",
        "|---|---|---|---|" + "---|" * (len(CLASSES) + 2),
    ]
    for precision, rs in results.items():
        if not rs:
            continue
        speed = [_cell([1 / r["train"]["stages"][stage]["iterations_per_second"] for r in rs], 3)
                 for stage in ("pretrain", "selftrain")]
        dice = [_cell([100 * r["best"]["per_class"][c]["dice"] for r in rs]) for c in CLASSES]
        lines.append(f"| {precision} | {speed[0]} | {speed[1]} | {_cell([r['train_seconds'] for r in rs], 0)} | "
                     + " | ".join(dice) + f" | {_cell([100 * r['best']['mean']['dice'] for r in rs])} | "
                     f"{_cell([100 * r['last']['mean']['dice'] for r in rs])} |")
    lines += ["", f"Total wall time {time.perf_counter() - started:.0f} s."]
    suffix = "_quick" if args.quick else ""
    (out / f"bcp_precision{suffix}.md").write_text("\n".join(lines) + "\n")
    (out / f"bcp_precision{suffix}.json").write_text(json.dumps(results, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
