#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""DICOM pipeline end to end on synthetic 512×512×120 CT series: read, infer, write DICOM SEG + NIfTI.

    python bench/dicom_pipeline.py [--series 4] [--slices 120] [--size 512]

The model is the full BCP ACDC network (PyMIC UNet, 1.8 M parameters, 256×256 slice patch, 4 classes) with
random weights: inference cost is that of a real model, and its masks cover every slice, the most expensive
case for the SEG writer. Reports the per-series split (read = scan + sort + decode + rescale, infer, write =
SEG + NIfTI + JSON) and series/minute with 1 and 2 decoding workers. Writes bench/results/dicom_pipeline.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _predictor(sample: np.ndarray):
    """The BCP ACDC UNet with random weights whose head bias is centred on ``sample`` (so every class appears)."""
    from medkd.data.transforms import normalise_intensity
    from medkd.engine.predictor import Predictor, SegmentationSpec
    from medkd.io.labels import labels_from_names
    from medkd.nets import create_net

    torch.manual_seed(0)
    net = create_net("bcp_unet2d", in_channels=1, out_channels=4).eval()
    spec = SegmentationSpec("slices_2d", 4, (256, 256), "minmax", batch_size=16)
    with torch.no_grad():
        x = torch.from_numpy(normalise_intensity(sample, "minmax"))[None, None]
        logits = net(torch.nn.functional.interpolate(x, size=spec.patch, mode="nearest"))
        net.head.bias -= logits.mean(dim=(0, 2, 3))
    return Predictor(
        kind="segmentation", name="bench_bcp_unet2d", version="random", weights_sha256="0" * 64,
        labels=labels_from_names(["background", "RV", "Myo", "LV"]), run=lambda a: spec.segment(net, a),
        source=Path("."), spec=spec,
    )


def _write_inputs(folder: Path, n_series: int, slices: int, size: int) -> None:
    from medkd.data.synthetic_dicom import write_dicom_series

    for i in range(n_series):
        target = folder / f"series{i}"
        if len(list(target.glob("*.dcm"))) == slices:
            continue
        write_dicom_series(target, n_slices=slices, rows=size, cols=size, pixel_spacing=(0.7, 0.7),
                           slice_spacing=2.5, seed=i)


def _run(inputs: Path, out: Path, workers: int, predictor) -> dict:
    from medkd.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig(name="bench_ct", selection=[{"name": "ct", "conditions": {"Modality": "CT"}}])
    start = time.perf_counter()
    summary = run_pipeline(cfg, inputs, out, workers=workers, predictor=predictor, progress=False, overwrite=True)
    wall = time.perf_counter() - start
    series = [r for r in summary.rows if r.kind == "series"]
    assert all(r.status == "processed" for r in series), [(r.status, r.reason, r.message) for r in series]
    split = {"read": [], "infer": [], "write": []}
    frames = []
    for row in series:
        result = json.loads((out / row.study_uid / row.series_uid / "result.json").read_text())
        for key in split:
            split[key].append(result["seconds"][key] + (summary.scan_seconds / len(series) if key == "read" else 0))
        frames.append(sum(v["voxels"] > 0 for v in result["labels"].values()))
    return {
        "workers": workers, "series": len(series), "wall_s": round(wall, 2),
        "series_per_min": round(60 * len(series) / wall, 2),
        "median_s": {k: round(statistics.median(v), 3) for k, v in split.items()},
        "labels_present": frames, "scan_s": summary.scan_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=4)
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--work", default="/tmp/medkd-bench/dicom_pipeline")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work)
    inputs = work / "in"
    t0 = time.perf_counter()
    _write_inputs(inputs, args.series, args.slices, args.size)
    shape = f"{args.size}x{args.size}x{args.slices}"
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s: {args.series} series of {shape}")
    import pydicom

    middle = sorted((inputs / "series0").glob("*.dcm"))[args.slices // 2]
    predictor = _predictor(pydicom.dcmread(middle).pixel_array.astype(np.float32))
    predictor(np.zeros((2, 64, 64), np.float32))  # warm-up
    runs = []
    for workers in (0, 1, 2):
        result = _run(inputs, work / f"out_w{workers}", workers, predictor)
        runs.append(result)
        print(json.dumps(result))
    result = {
        "series_shape": [args.slices, args.size, args.size], "model": "bcp_unet2d (random weights), 256x256 slices",
        "torch_threads": torch.get_num_threads(), "runs": runs,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dicom_pipeline.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# DICOM pipeline, {args.series} synthetic CT series of {args.size}×{args.size}×{args.slices}",
        "",
        "Per series, median seconds; read = header scan (the tree's scan time / series) + sort + decode + rescale,",
        "write = DICOM SEG + NIfTI + JSON. With workers, decoding overlaps the main process's inference.",
        "",
        "| decoding workers | read s | infer s | write s | wall s | series/min |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        m = run["median_s"]
        lines.append(f"| {run['workers'] or '0 (in-process)'} | {m['read']:.2f} | {m['infer']:.2f} | {m['write']:.2f} "
                     f"| {run['wall_s']:.1f} | {run['series_per_min']:.2f} |")
    lines += ["", f"Model: {result['model']}; torch threads {result['torch_threads']}; "
                  f"peak RSS of the main process {result['peak_rss_mb']} MB."]
    (out / "dicom_pipeline.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
