# SPDX-License-Identifier: Apache-2.0
"""``medkd demo``: BCP end to end on synthetic data, on a CPU, in a few minutes.

1. writes a synthetic dataset in the real ACDC layout (h5 slices, volumes, list files);
2. trains BCP and the supervised-only baseline with ``apps/bcp/cpu_2d.yaml`` (5% labels by patient);
3. evaluates both on the test list (Dice, Jaccard, HD95, ASD);
4. segments a NIfTI volume with the BCP run and draws an overlay PNG of ground truth, BCP and baseline;
5. exports both runs as MONAI bundles (``models/demo_acdc_bcp``, ``models/demo_acdc_supervised``, listed in
   ``models/zoo.yaml``; ``medkd app`` shows them side by side);
6. writes the test case as a DICOM MR series next to a CT series, and runs the DICOM pipeline
   ``pipelines/acdc_cine_mr.yaml`` with the bundle: DICOM SEG, NIfTI mask and volumes for the MR series only;
7. Grounded Teacher: writes synthetic source and target mammography-like domains (COCO layout, a simulated expert
   CSV), adapts a RetinaNet lesion detector with ``apps/grounded_teacher/cpu_synthetic.yaml`` (shortened),
   evaluates the source model and the adapted one on the target (AP50, R@0.3), exports the bundle
   ``models/demo_mammo_gt`` and runs ``pipelines/mammo_lesions.yaml`` on synthetic MG images: a DICOM SR per image;
8. SurgFUTR: writes 12 synthetic laparoscopic videos in the Cholec80 layout, trains teacher and student with
   ``apps/surgfutr/cpu_synthetic.yaml`` (shortened), evaluates them against copy-current and the prior on the test
   videos, forecasts a test video offline (CSV) and live (streamed, causal), exports ``models/demo_lap_surgfutr``;
9. distillation: the BCP run of step 2 teaches a fresh half-width U-Net with BPKD (``apps/distill/cpu_acdc_bpkd.yaml``,
   shortened), evaluated on the test list and exported as ``models/demo_acdc_distilled``; then partition students
   (MSD, ``apps/distill/synth_lesion_partition_students.yaml``, shortened) on small SynthLesion-2D data: one student
   per ``modality`` (easier images than the benchmark's: less class overlap, no distractors, 5 % label noise),
   exported as one routed bundle ``models/demo_lesion_routed`` that classifies the test images, each by its own
   modality's student (``medkd distill predict``'s CSV);
10. prints where everything is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run_demo", "preset_path", "repo_file", "DEMO_BUNDLE", "DEMO_BASELINE_BUNDLE", "DEMO_GT_BUNDLE",
           "DEMO_SURGFUTR_BUNDLE", "DEMO_DISTILL_BUNDLE", "DEMO_ROUTED_BUNDLE"]

#: names of the bundles the demo exports (``models/zoo.yaml`` lists them; the app compares them side by side)
DEMO_BUNDLE = "demo_acdc_bcp"
DEMO_BASELINE_BUNDLE = "demo_acdc_supervised"
DEMO_GT_BUNDLE = "demo_mammo_gt"
DEMO_SURGFUTR_BUNDLE = "demo_lap_surgfutr"
DEMO_DISTILL_BUNDLE = "demo_acdc_distilled"
DEMO_ROUTED_BUNDLE = "demo_lesion_routed"

logger = logging.getLogger(__name__)

#: the Grounded Teacher step's shortening of ``apps/grounded_teacher/cpu_synthetic.yaml`` (and, with ``quick``, more)
GT_OVERRIDES = ["source_train.iterations=300", "source_train.val_interval=150", "adapt.iterations=160",
                "adapt.warmup=20", "log_interval=20"]
GT_QUICK_OVERRIDES = ["image_size=64", "source_train.iterations=8", "source_train.val_interval=4",
                      "adapt.iterations=8", "adapt.warmup=2", "adapt.batch_size=2", "adapt.unlabeled_batch_size=2",
                      "decode.score_threshold=0.001", "pseudo_label.score_threshold=0.001",
                      "adapt.teacher_threshold=0.001", "log_interval=2"]  # a model 8 iterations old scores ~0.01

#: the SurgFUTR step's shortening of ``apps/surgfutr/cpu_synthetic.yaml`` (and, with ``quick``, more)
SURGFUTR_OVERRIDES = ["train.iterations=200", "train.val_interval=100", "log_interval=50"]
SURGFUTR_QUICK_OVERRIDES = ["train.iterations=4", "train.val_interval=4", "train.batch_size=4", "model.width=8",
                            "model.feature_dim=32", "model.state_dim=16", "model.window=4", "data.train=1-2",
                            "data.val=3", "data.test=4", "log_interval=2"]

#: the distillation step's shortening of ``apps/distill/cpu_acdc_bpkd.yaml`` (and, with ``quick``, more)
DISTILL_OVERRIDES = ["optim.iterations=150", "eval.val_interval=75", "data.labeled=2", "data.image_size=[128, 128]",
                     "teacher.net=''"]
DISTILL_QUICK_OVERRIDES = ["optim.iterations=4", "eval.val_interval=2", "data.batch_size=4", "data.labeled=1",
                           "data.image_size=[64, 64]"]

#: the partition-students step's shortening of ``apps/distill/synth_lesion_partition_students.yaml`` (and quick's)
ROUTED_OVERRIDES = ["teacher.iterations=300", "optim.iterations=150", "eval.val_interval=60", "eval.log_interval=30"]
ROUTED_QUICK_OVERRIDES = ["teacher.iterations=4", "optim.iterations=4", "eval.val_interval=2", "eval.log_interval=2",
                          "data.batch_size=8", "data.image_size=[16, 16]", "teacher.net_params={width: 8}"]

QUICK_OVERRIDES = [
    "pretrain_iterations=4", "selftrain_iterations=4", "val_interval=4", "patch=[64, 64]", "batch_size=4",
    "labeled_batch_size=2",
]


def repo_file(relative: str) -> Path:
    """A file shipped in the medkd source checkout (``apps/...``, ``pipelines/...``)."""
    path = Path(__file__).resolve().parents[1] / relative
    if not path.is_file():
        from medkd.errors import ConfigError

        raise ConfigError(f"{path}: not found (run the demo from a medkd source checkout)")
    return path


def preset_path(name: str) -> Path:
    """Path of a preset shipped in the repository's ``apps/`` folder, e.g. ``bcp/cpu_2d.yaml``."""
    return repo_file(f"apps/{name}")


def _write_dicom_inputs(image: np.ndarray, folder: Path) -> Path:
    """The test case as a cine-MR DICOM series, plus a CT series the pipeline's rules leave out."""
    from medkd.data.synthetic_dicom import write_dicom_series

    write_dicom_series(folder / "patient1" / "cine_sax", pixels=np.round(image * 1000), modality="MR",
                       series_description="Synthetic cine SAX", pixel_spacing=(1.5, 1.5), slice_spacing=10.0)
    write_dicom_series(folder / "patient1" / "ct_chest", n_slices=6, rows=32, cols=32, seed=1,
                       series_description="Synthetic chest CT")
    return folder


def _write_nifti_case(data_root: Path, out_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    from medkd.data.acdc import ACDCVolumeDataset

    item = ACDCVolumeDataset(data_root, "test")[0]
    image, label = np.asarray(item["image"]), np.asarray(item["label"])
    img = sitk.GetImageFromArray((image * 1000).astype(np.float32))  # (z, y, x); scanner-like intensities
    img.SetSpacing((1.5, 1.5, 10.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{item['case']}.nii.gz"
    sitk.WriteImage(img, str(path))
    return path, image, label


def _grounded_teacher(out: Path, models_dir: Path, *, quick: bool, progress: bool) -> dict[str, Any]:
    """Step 7: Grounded Teacher end to end on synthetic data (see the module docstring)."""
    from medkd.bundle import export_bundle
    from medkd.config import load_config
    from medkd.data.synthetic.lesions import write_lesion_domains
    from medkd.data.synthetic_dicom import write_mammo_series
    from medkd.methods.grounded_teacher.config import GTConfig
    from medkd.methods.grounded_teacher.evaluate import evaluate_run
    from medkd.methods.grounded_teacher.trainer import train_gt
    from medkd.pipeline import run_pipeline

    data = out / "data" / "lesions"
    sizes = dict(n_source_train=24, n_source_val=8, n_target_train=24, n_target_val=8, size=64) if quick else \
        dict(n_source_train=240, n_source_val=60, n_target_train=240, n_target_val=100)
    write_lesion_domains(data, seed=0, **sizes)
    run = out / "runs" / "grounded_teacher"
    cfg = load_config(GTConfig, preset_path("grounded_teacher/cpu_synthetic.yaml"),
                      GT_OVERRIDES + (GT_QUICK_OVERRIDES if quick else []))
    train_gt(cfg, data, run, resume=True, progress=progress)
    metrics = {stage: evaluate_run(run, data, split="val", stage=stage, json_path=run / f"metrics_{stage}.json")
               for stage in ("source", "adapt")}
    bundle = export_bundle(run, models_dir / DEMO_GT_BUNDLE, overwrite=True)
    mg = write_mammo_series(out / "mammo_in" / "series1", n_images=4, rows=160, cols=128, seed=0)
    pipeline = run_pipeline(repo_file("pipelines/mammo_lesions.yaml"), mg.paths[0].parent, out / "mammo_out",
                            model=bundle, workers=0, progress=progress)
    srs = sorted(str(p) for p in (out / "mammo_out").rglob("sr.dcm"))
    return {
        "run": str(run), "bundle": str(bundle), "pipeline_output": str(out / "mammo_out"),
        "pipeline_report": str(pipeline.report_csv), "sr_count": len(srs), "froc_plot": metrics["adapt"].get("froc_plot"),
        "target_ap50": {"source": metrics["source"]["AP50"], "adapted": metrics["adapt"]["AP50"]},
        "target_r03": {"source": metrics["source"]["R@0.3"], "adapted": metrics["adapt"]["R@0.3"]},
    }


def _surgfutr(out: Path, models_dir: Path, *, quick: bool, progress: bool) -> dict[str, Any]:
    """Step 8: SurgFUTR on synthetic laparoscopic videos: train, evaluate against the baselines, forecast a test
    video offline (CSV) and live (stream), export the bundle."""
    from medkd.bundle import export_bundle
    from medkd.config import load_config
    from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, write_synthetic_cholec80
    from medkd.methods.surgfutr.config import SurgFUTRConfig
    from medkd.methods.surgfutr.evaluate import evaluate_run
    from medkd.methods.surgfutr.predict import predict_video
    from medkd.methods.surgfutr.stream import stream_forecasts
    from medkd.methods.surgfutr.trainer import train_surgfutr

    data = out / "data" / "surgical"
    gen = SyntheticSurgicalConfig(n_videos=4, duration=(40, 50)) if quick else SyntheticSurgicalConfig()
    root = write_synthetic_cholec80(data / "cholec80", gen, seed=0)
    run = out / "runs" / "surgfutr"
    cfg = load_config(SurgFUTRConfig, preset_path("surgfutr/cpu_synthetic.yaml"),
                      SURGFUTR_OVERRIDES + (SURGFUTR_QUICK_OVERRIDES if quick else [])
                      + [f"data.cache_dir={out / 'cache' / 'surgical_frames'}"])
    train_surgfutr(cfg, data, run, resume=(run / "train" / "last.pt").is_file(), progress=progress)
    metrics = evaluate_run(run, data, split="test", json_path=run / "metrics_test.json")
    video = sorted((root / "videos").glob("*.mp4"))[-1]
    predicted = predict_video(run, video, out / "surgfutr" / f"{video.stem}_forecasts.csv")
    streamed = stream_forecasts(run, video, out=out / "surgfutr" / f"{video.stem}_stream.csv")
    bundle = export_bundle(run, models_dir / DEMO_SURGFUTR_BUNDLE, overwrite=True)
    arms = {arm: {k: metrics[arm][k] for k in ("rsd_mae", "phase_wmae", "tool_map_change")}
            for arm in ("surgfutr", "copy_current", "prior")}
    return {"run": str(run), "bundle": str(bundle), "metrics": arms, "forecasts_csv": str(predicted["output"]),
            "stream_fps": streamed["fps"], "video": str(video)}


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _distill(out: Path, data_root: Path, teacher_run: Path, models_dir: Path, *, quick: bool,
             progress: bool) -> dict[str, Any]:
    """Step 9: distil the BCP run into a fresh half-width U-Net with BPKD; evaluate; export the bundle."""
    from medkd.bundle import export_bundle
    from medkd.config import load_config
    from medkd.distill.config import DistillConfig
    from medkd.distill.runner import run_experiment

    run = out / "runs" / "distilled"
    sets = [*DISTILL_OVERRIDES, f"teacher.checkpoint={teacher_run}", *(DISTILL_QUICK_OVERRIDES if quick else [])]
    summary = run_experiment(load_config(DistillConfig, preset_path("distill/cpu_acdc_bpkd.yaml"), sets), data_root,
                             run, resume=(run / "student" / "last.pt").is_file(), progress=progress)
    bundle = export_bundle(run, models_dir / DEMO_DISTILL_BUNDLE, overwrite=True)
    student, teacher = summary["student"], summary["teacher"]
    return {"run": str(run), "bundle": str(bundle), "student_dice": student["best"]["test"]["mean"]["dice"],
            "teacher_dice": teacher["test"]["mean"]["dice"], "student_latency_ms": student["latency_ms"],
            "teacher_latency_ms": teacher["latency_ms"], "student_params": student["params"],
            "teacher_params": teacher["params"]}


def _routed(out: Path, models_dir: Path, *, quick: bool, progress: bool) -> dict[str, Any]:
    """Step 9b: partition students by modality on SynthLesion-2D; one routed bundle; the test images classified."""
    from medkd.bundle import export_bundle
    from medkd.config import load_config
    from medkd.data.synthetic.lesion_classes import (
        LesionClassConfig, write_classification_datalist, write_synth_lesion_2d,
    )
    from medkd.distill.config import DistillConfig
    from medkd.distill.predict import datalist_files, predict_to_csv
    from medkd.distill.runner import run_experiment
    from medkd.inference import load_predictor

    sizes = (dict(n_teacher_train=20, n_train=24, n_val=12, n_test=12) if quick
             else dict(n_teacher_train=1000, n_train=400, n_val=60, n_test=120))
    root = out / "data" / "lesions"
    if not (root / "datalist.csv").is_file():
        easy = LesionClassConfig(overlap=0.2, distractors=0.0, noise_scale=0.5)  # learnable in a demo's iterations
        write_classification_datalist(write_synth_lesion_2d(root, n_unlabelled=0, size=32, label_noise=0.05,
                                                            config=easy, **sizes))
    run = out / "runs" / "partition_students"
    sets = [*ROUTED_OVERRIDES, *(ROUTED_QUICK_OVERRIDES if quick else [])]
    cfg = load_config(DistillConfig, preset_path("distill/synth_lesion_partition_students.yaml"), sets)
    summary = run_experiment(cfg, root, run, resume=(run / "student" / "last.pt").is_file(), progress=progress)
    bundle = export_bundle(run, models_dir / DEMO_ROUTED_BUNDLE, overwrite=True)
    csv_path = out / "predictions" / "lesion_routed_test.csv"
    counts = predict_to_csv(load_predictor(bundle, "cpu"), datalist_files(root / "datalist.csv", "test"), csv_path,
                            progress=progress)
    strategy = summary["strategy"]
    return {"run": str(run), "bundle": str(bundle), "predictions": str(csv_path), "classified": counts["ok"],
            "key": strategy["key"], "values": strategy["values"],
            "routed_accuracy": strategy["routed"]["test"]["accuracy"],
            "global_accuracy": strategy["global"]["test"]["accuracy"]}


def run_demo(
    out: str | Path = "demo_output", *, quick: bool = False, progress: bool = True, models: str | Path | None = None
) -> dict[str, Any]:
    """Run the demo into ``out``; returns (and writes to ``out/demo_summary.json``) the figures and paths.

    Args:
        models: where the bundle goes (default ``$MEDKD_MODELS``, else ``models/``).
    """
    import os

    import SimpleITK as sitk

    from medkd.bundle import export_bundle
    from medkd.config import load_config
    from medkd.data.synthetic import write_synthetic_acdc
    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.eval_run import evaluate_run
    from medkd.methods.bcp.predict import predict_paths
    from medkd.methods.bcp.trainer import train_bcp
    from medkd.metrics.seg import format_table
    from medkd.pipeline import run_pipeline
    from medkd.viz.overlay import save_overlay_png

    out = Path(out)
    started = time.perf_counter()
    data_root = out / "data" / "acdc"
    sizes = dict(n_train=8, n_val=2, n_test=2) if quick else dict(n_train=40, n_val=6, n_test=10)
    logger.info("1/9 writing synthetic ACDC-layout data to %s", data_root)
    write_synthetic_acdc(data_root, **sizes, seed=0)

    preset = preset_path("bcp/cpu_2d.yaml")
    extra = QUICK_OVERRIDES + ["labeled=1"] if quick else []
    runs = {"bcp": out / "runs" / "bcp", "supervised": out / "runs" / "supervised"}
    metrics: dict[str, Any] = {}
    for name, run in runs.items():
        logger.info("2/9 training %s (%s)", name, preset)
        overrides = extra + (["method=supervised"] if name == "supervised" else [])
        train_bcp(load_config(BCPConfig, preset, overrides), data_root, run, resume=True, progress=progress)
        logger.info("3/9 evaluating %s on the test list", name)
        metrics[name] = evaluate_run(run, data_root, split="test", json=run / "metrics_test.json", progress=progress)
        print(f"\n{name}:\n{format_table(metrics[name])}")

    logger.info("4/9 segmenting a NIfTI volume and drawing the overlay")
    nifti, image, label = _write_nifti_case(data_root, out / "inputs")
    predictions = {name: predict_paths(run, nifti, out / "predictions" / name)[0] for name, run in runs.items()}
    masks = {name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for name, p in predictions.items()}
    z = int(np.argmax((label > 0).sum(axis=(1, 2))))
    from medkd.methods.bcp.evaluate import class_names
    from medkd.methods.bcp.predict import load_run_config

    cfg = load_run_config(runs["bcp"])
    overlay = save_overlay_png(
        image[z],
        {"ground truth": label[z], "BCP": masks["bcp"][z], "supervised only": masks["supervised"][z]},
        out / "overlay.png",
        class_names=class_names(cfg),
        title=f"{nifti.name}, slice {z}",
    )
    logger.info("5/9 exporting the BCP run and the baseline as MONAI bundles")
    models_dir = Path(models or os.environ.get("MEDKD_MODELS", "models"))
    bundle = export_bundle(runs["bcp"], models_dir / DEMO_BUNDLE, overwrite=True)
    export_bundle(runs["supervised"], models_dir / DEMO_BASELINE_BUNDLE, overwrite=True)
    logger.info("6/9 running the DICOM pipeline on a synthetic cine-MR series")
    dicom_in = _write_dicom_inputs(image, out / "dicom_in")
    pipeline = run_pipeline(repo_file("pipelines/acdc_cine_mr.yaml"), dicom_in, out / "dicom_out", model=bundle,
                            workers=0, progress=progress)
    segs = sorted(str(out / "dicom_out" / o) for r in pipeline.rows if r.kind == "series" for o in r.outputs
                  if o.endswith("seg.dcm"))
    logger.info("7/9 Grounded Teacher: adapting a lesion detector to a shifted target domain")
    gt = _grounded_teacher(out, models_dir, quick=quick, progress=progress)
    logger.info("8/9 SurgFUTR: forecasting phases, tools and remaining time from laparoscopic video")
    sf = _surgfutr(out, models_dir, quick=quick, progress=progress)
    logger.info("9/9 distillation: the BCP run teaches a fresh student with BPKD")
    kd = _distill(out, data_root, runs["bcp"], models_dir, quick=quick, progress=progress)
    logger.info("9/9 distillation: one student per modality, routed by it, in one bundle")
    routed = _routed(out, models_dir, quick=quick, progress=progress)
    summary = {
        "distill": kd,
        "partition_students": routed,
        "grounded_teacher": gt,
        "surgfutr": sf,
        "data": str(data_root),
        "bundle": str(bundle),
        "dicom_seg": segs,
        "pipeline_report": str(pipeline.report_csv),
        "runs": {k: str(v) for k, v in runs.items()},
        "test_dice": {k: m["mean"]["dice"] for k, m in metrics.items()},
        "test_metrics": {k: m["mean"] for k, m in metrics.items()},
        "predictions": {k: str(v) for k, v in predictions.items()},
        "overlay": str(overlay),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    gain = 100 * (summary["test_dice"]["bcp"] - summary["test_dice"]["supervised"])
    print(
        f"\nmedkd demo finished in {summary['seconds']:.0f} s\n"
        f"  test mean Dice: BCP {100 * summary['test_dice']['bcp']:.1f}%, "
        f"supervised only {100 * summary['test_dice']['supervised']:.1f}% ({gain:+.1f} points)\n"
        f"  synthetic data : {data_root}\n"
        f"  runs           : {runs['bcp']}  {runs['supervised']}\n"
        f"  metrics        : {runs['bcp'] / 'metrics_test.json'}\n"
        f"  prediction     : {predictions['bcp']}\n"
        f"  overlay        : {overlay}\n"
        f"  MONAI bundle   : {bundle}  (medkd bundle info {bundle})\n"
        f"  viewer         : medkd app  (then open http://localhost:8501)\n"
        f"  DICOM SEG      : {segs[0] if segs else 'none written, see the report'}\n"
        f"  Grounded Teacher: target AP50 {gt['target_ap50']['adapted']:.3f} adapted vs "
        f"{gt['target_ap50']['source']:.3f} source model (R@0.3 {gt['target_r03']['adapted']:.2f} vs "
        f"{gt['target_r03']['source']:.2f}); bundle {gt['bundle']}; {gt['sr_count']} DICOM SR(s) under "
        f"{gt['pipeline_output']}\n"
        f"  SurgFUTR       : phase-transition wMAE {_num(sf['metrics']['surgfutr']['phase_wmae'])} min vs "
        f"{_num(sf['metrics']['copy_current']['phase_wmae'])} copy-current; tool mAP on changes "
        f"{_num(sf['metrics']['surgfutr']['tool_map_change'])} vs {_num(sf['metrics']['copy_current']['tool_map_change'])}; "
        f"RSD MAE {_num(sf['metrics']['surgfutr']['rsd_mae'])} min vs {_num(sf['metrics']['prior']['rsd_mae'])} prior; "
        f"streamed at {sf['stream_fps']:.0f} frames/s; forecasts {sf['forecasts_csv']}; bundle {sf['bundle']}\n"
        f"  Distillation   : BPKD student test Dice {100 * kd['student_dice']:.1f}% from the BCP teacher's "
        f"{100 * kd['teacher_dice']:.1f}% ({kd['student_params']:,} parameters, {kd['student_latency_ms']:.1f} ms a "
        f"slice); bundle {kd['bundle']}\n"
        f"  Routed students: test accuracy {routed['routed_accuracy']:.3f} with a student per {routed['key']} "
        f"({', '.join(routed['values'])}) vs {routed['global_accuracy']:.3f} one student (5 classes, chance 0.2, "
        f"a few hundred iterations); routed bundle "
        f"{routed['bundle']}; {routed['classified']} test images classified by their own {routed['key']}'s "
        f"student: {routed['predictions']}\n"
        f"  pipeline report: {pipeline.report_csv}\n"
        f"  summary        : {out / 'demo_summary.json'}"
    )
    return summary
