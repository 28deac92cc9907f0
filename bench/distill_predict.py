#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Inference speed of a classification student, routed or not: per-image latency of the predictor (warm, images
already in memory) and images/s of ``medkd distill predict`` (PNG reading and CSV writing included), for the run
folder and its MONAI bundle.

Defaults read what ``make demo`` leaves: the routed bundle ``models/demo_lesion_routed``, its run
``demo_output/runs/partition_students`` and the test split of ``demo_output/data/lesions/datalist.csv``.

    python bench/distill_predict.py            # writes bench/results/distill_predict.{md,json}
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model: Path, files: list, repeats: int) -> dict:
    import torch

    from medkd.data.classification import load_image
    from medkd.distill.predict import predict_to_csv
    from medkd.inference import load_predictor

    t0 = time.perf_counter()
    predictor = load_predictor(model, "cpu")
    load_s = time.perf_counter() - t0
    inputs = [{"image": load_image(path), **meta} for path, meta in files]
    predictor(inputs[0])  # warm-up
    times = []
    for _ in range(repeats):
        for item in inputs:
            start = time.perf_counter()
            predictor(item)
            times.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        counts = predict_to_csv(predictor, files, Path(tmp) / "pred.csv")
        batch_s = time.perf_counter() - start
    return {
        "model": str(model), "route_key": predictor.metadata.get("route_key"), "load_s": round(load_s, 3),
        "latency_ms_median": round(1000 * statistics.median(times), 3),
        "latency_ms_p95": round(1000 * sorted(times)[int(0.95 * (len(times) - 1))], 3),
        "images_per_s_predict": round(counts["ok"] / batch_s, 1), "classified": counts["ok"], "failed": counts["failed"],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "demo_output" / "runs" / "partition_students")
    parser.add_argument("--bundle", type=Path, default=ROOT / "models" / "demo_lesion_routed")
    parser.add_argument("--datalist", type=Path, default=ROOT / "demo_output" / "data" / "lesions" / "datalist.csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_predict")
    args = parser.parse_args()
    from medkd.distill.predict import datalist_files

    files = datalist_files(args.datalist, args.split)
    rows = [measure(model, files, args.repeats) for model in (args.run, args.bundle)]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {"images": len(files), "repeats": args.repeats, "peak_rss_mib": round(peak_mib, 1),
            "machine": f"{platform.processor() or platform.machine()}, CPU"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Classification inference on {len(files)} {args.split} images ({args.datalist.name}), "
             f"{args.repeats} passes for latency; peak RSS {meta['peak_rss_mib']} MiB; {meta['machine']}.", "",
             "| model | routed by | load s | latency ms (median) | p95 ms | medkd distill predict images/s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| `{Path(r['model']).name}` | {r['route_key'] or '-'} | {r['load_s']} | {r['latency_ms_median']} | "
              f"{r['latency_ms_p95']} | {r['images_per_s_predict']} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
