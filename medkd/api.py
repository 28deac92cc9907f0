# SPDX-License-Identifier: Apache-2.0
"""medkd's Python API: one function per ``medkd`` subcommand, with the same argument names.

Example:
    >>> from medkd import api  # doctest: +SKIP
    >>> api.bcp_train("apps/bcp/cpu_2d.yaml", "data/acdc", "runs/bcp", overrides=["seed=2"])  # doctest: +SKIP
    >>> api.bcp_eval("runs/bcp", "data/acdc", split="test", json="runs/bcp/test.json")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "bcp_train", "bcp_eval", "bcp_predict", "gt_train", "gt_stage", "gt_eval", "gt_predict",
    "surgfutr_train", "surgfutr_eval", "surgfutr_predict", "surgfutr_stream", "distill_run", "distill_list",
    "distill_list_modules", "distill_eval", "distill_predict", "distill_tool", "pipeline_run", "bundle_export", "bundle_verify", "bundle_info", "app",
    "demo",
]


def bcp_train(
    config: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train BCP (or ``method=supervised``) from a preset plus ``key=value`` overrides; see :func:`train_bcp`."""
    from medkd.config import load_config
    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.trainer import train_bcp

    cfg = load_config(BCPConfig, config, overrides)
    return train_bcp(cfg, data_root, out, resume=resume, progress=progress)


def bcp_eval(
    run: str | Path,
    data_root: str | Path,
    *,
    split: str = "test",
    json: str | Path | None = None,
    checkpoint: str = "best",
    stage: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's final student (or ``stage``'s) on a split with the paper's protocol.

    Writes ``json`` (if given) and ``RUN/metrics_per_case_<split>.csv``; returns
    ``{"mean": {...}, "per_class": {...}, "cases": [...], "empty_predictions": n, ...}``.
    """
    from medkd.methods.bcp.eval_run import evaluate_run

    return evaluate_run(
        run, data_root, split=split, json=json, checkpoint=checkpoint, stage=stage, progress=progress
    )


def bcp_predict(run: str | Path, input: str | Path, output: str | Path, *, checkpoint: str = "best") -> list[Path]:
    """Segment a NIfTI file, a folder of them or a DICOM series folder; masks keep the input geometry."""
    from medkd.methods.bcp.predict import predict_paths

    return predict_paths(run, input, output, checkpoint=checkpoint)


def gt_train(
    config: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every Grounded Teacher stage of a preset plus ``key=value`` overrides (each skipped when done); see
    :func:`medkd.methods.grounded_teacher.trainer.train_gt`."""
    from medkd.config import load_config
    from medkd.methods.grounded_teacher.config import GTConfig
    from medkd.methods.grounded_teacher.trainer import train_gt

    return train_gt(load_config(GTConfig, config, overrides), data_root, out, resume=resume, progress=progress)


def gt_stage(
    stage: str,
    config: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one Grounded Teacher stage (``source``, ``pseudo_label``, ``expert_boxes``, ``adapt``); the stages
    before it must be done."""
    from medkd.config import load_config
    from medkd.methods.grounded_teacher.config import GTConfig
    from medkd.methods.grounded_teacher.trainer import run_stage

    return run_stage(stage, load_config(GTConfig, config, overrides), data_root, out, resume=resume,
                     progress=progress)


def gt_eval(
    run: str | Path, data_root: str | Path, *, split: str = "val", stage: str = "adapt",
    json: str | Path | None = None,
) -> dict[str, Any]:
    """COCO AP, lesion FROC and image-level FROC of a GT run's model on a target split (writes ``json``)."""
    from medkd.methods.grounded_teacher.evaluate import evaluate_run

    return evaluate_run(run, data_root, split=split, stage=stage, json_path=json)


def gt_predict(
    run: str | Path, input: str | Path, output: str | Path, *, stage: str | None = None,
    min_score: float | None = None,
) -> dict[str, Any]:
    """Detect lesions in an image or folder with a GT run: JSON per image, ``detections.csv``, PNGs with boxes."""
    from medkd.methods.grounded_teacher.predict import predict_paths

    return predict_paths(run, input, output, stage=stage, min_score=min_score)


def surgfutr_train(
    config: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train SurgFUTR from a preset plus ``key=value`` overrides; see
    :func:`medkd.methods.surgfutr.trainer.train_surgfutr`."""
    from medkd.config import load_config
    from medkd.methods.surgfutr.config import SurgFUTRConfig
    from medkd.methods.surgfutr.trainer import train_surgfutr

    return train_surgfutr(load_config(SurgFUTRConfig, config, overrides), data_root, out, resume=resume,
                          progress=progress)


def surgfutr_eval(
    run: str | Path, data_root: str | Path, *, split: str = "test", json: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """SFPBench metrics of a SurgFUTR run and the copy-current and prior baselines on a split (writes ``json``)."""
    from medkd.methods.surgfutr.evaluate import evaluate_run

    return evaluate_run(run, data_root, split=split, json_path=json, device=device)


def surgfutr_predict(run: str | Path, video: str | Path, out_csv: str | Path, *, device: str = "cpu") -> dict[str, Any]:
    """Forecast every analysed second of a video file (or a folder of 1-fps frames) into a CSV."""
    from medkd.methods.surgfutr.predict import predict_video

    return predict_video(run, video, out_csv, device=device)


def surgfutr_stream(
    run: str | Path, source: str | Path | int, *, out: str | Path | None = None, device: str = "cpu",
    max_seconds: int | None = None, on_forecast: Any = None,
) -> dict[str, Any]:
    """Causal, frame-by-frame forecasts of a video file, camera index or stream URL (CSV rows as they come)."""
    from medkd.methods.surgfutr.stream import stream_forecasts

    return stream_forecasts(run, source, out=out, device=device, max_seconds=max_seconds, on_forecast=on_forecast)


def distill_run(
    config: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a student from a teacher as the experiment YAML says; see :func:`medkd.distill.runner.run_experiment`."""
    from medkd.config import load_config
    from medkd.distill.config import DistillConfig
    from medkd.distill.runner import run_experiment

    return run_experiment(load_config(DistillConfig, config, overrides), data_root, out, resume=resume,
                          progress=progress)


def distill_list(pattern: str = "*", *, kind: str | None = None) -> list[Any]:
    """Every distillation plugin (key, kind, module, distribution, summary); see :func:`medkd.distill.list_plugins`."""
    from medkd.distill import list_plugins

    return list_plugins(pattern, kind=kind)


def distill_list_modules(
    net: str, *, in_channels: int = 1, num_classes: int = 2, size: Sequence[int] | None = None,
) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """Module names, types and output shapes of a registered network, to choose feature taps from."""
    import torch

    from medkd.distill.hooks import list_modules
    from medkd.nets import create_net, net_task

    task = str(net_task(net))
    if task == "classification":
        model = create_net(net, in_channels=in_channels, num_classes=num_classes)
    elif task == "segmentation":
        model = create_net(net, in_channels=in_channels, out_channels=num_classes)
    else:
        raise ValueError(f"list-modules supports classification and segmentation nets; {net!r} is a {task} net")
    if size is None:
        size = (64, 64, 32) if "3" in net or "vnet" in net else (64, 64)
    return list_modules(model, torch.zeros(1, in_channels, *size))


def distill_eval(
    run: str | Path, data_root: str | Path, *, split: str = "test", json: str | Path | None = None,
    checkpoint: str = "best", progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a distilled student on a split (writes ``json``); see :func:`medkd.distill.evaluate.evaluate_run`."""
    from medkd.distill.evaluate import evaluate_run

    return evaluate_run(run, data_root, split=split, json=json, checkpoint=checkpoint, progress=progress)


def distill_predict(
    model: str | Path, images: Sequence[str | Path] = (), *, out: str | Path, datalist: str | Path | None = None,
    split: str | None = None, meta: Sequence[str] | dict[str, str] = (), device: str = "auto", trust: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Classify image files with a classification run or bundle (routed ones by their key) into the CSV ``out``.

    Args:
        model: a distill classification run (a ``partition_students`` run routes) or its bundle.
        images: image files (PNG/JPEG/NIfTI); ``meta`` applies to each.
        datalist: a CSV with an ``image`` column (relative to the CSV) and metadata columns (the routing key).
        split: only the datalist rows of this ``split``.
        meta: ``KEY=VALUE`` strings or a dict: metadata of every file (a datalist's own columns win).

    Returns:
        ``{"ok": n, "failed": n}``; failed files are rows with their error (see
        :func:`medkd.distill.predict.predict_to_csv`).

    Raises:
        MedkdError: no input, or a model that is not a classification model. DataError: an unreadable datalist.
    """
    from medkd.distill.predict import datalist_files, predict_to_csv
    from medkd.errors import ConfigError, MedkdError
    from medkd.inference import load_predictor

    if isinstance(meta, dict):
        common = {str(k): str(v) for k, v in meta.items()}
    else:
        pairs = [item.partition("=") for item in meta]
        bad = [item for item, (k, eq, _) in zip(meta, pairs) if not k or not eq]
        if bad:
            raise ConfigError(f"--meta takes KEY=VALUE, got {bad[0]!r}")
        common = {k: v for k, _, v in pairs}
    files = [(Path(p), dict(common)) for p in images]
    if datalist is not None:
        files += [(p, {**common, **m}) for p, m in datalist_files(datalist, split)]
    if not files:
        raise MedkdError("nothing to classify: give image files or --datalist")
    predictor = load_predictor(model, device, trust=trust)
    if predictor.kind != "classification":
        raise MedkdError(f"{model} is a {predictor.kind} model; medkd distill predict takes classification models "
                         "(segmentation: medkd pipeline run or medkd bcp predict)")
    return predict_to_csv(predictor, files, out, progress=progress)


def distill_tool(
    name: str, config: str | Path, data_root: str | Path, out: str | Path, *, overrides: Sequence[str] = (),
    params: Sequence[str] | dict[str, Any] = (), command: str | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Run a distillation utility (``medkd distill search|tool NAME``); see :func:`medkd.distill.tools.run_utility`.

    ``params``: a dict, or ``KEY=VALUE`` strings (values parsed as YAML).
    """
    from medkd.config import load_config
    from medkd.distill.config import DistillConfig
    from medkd.distill.tools import parse_params, run_utility

    parsed = dict(params) if isinstance(params, dict) else parse_params(list(params))
    return run_utility(name, load_config(DistillConfig, config, overrides), data_root, out, params=parsed,
                       command=command, progress=progress)


def pipeline_run(
    pipeline: str | Path,
    input: str | Path,
    output: str | Path,
    *,
    workers: int | None = None,
    shard: str | None = None,
    model: str | Path | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    trust_bundle: bool = False,
    overrides: Sequence[str] = (),
) -> Any:
    """Run a DICOM pipeline YAML over a folder tree; returns the :class:`~medkd.pipeline.PipelineSummary`.

    ``overrides`` are ``key=value`` settings on the YAML; dotted keys reach the ``outputs`` blocks
    (``outputs.seg.type=labelmap``). ``trust_bundle=True`` runs code in the model bundle's configs (``$``
    expressions, ``_target_`` outside medkd's allowlist); only for bundles you trust. Without it such a bundle raises
    :class:`~medkd.errors.UntrustedBundleError` before any series is processed.
    """
    from medkd.pipeline import run_pipeline

    return run_pipeline(pipeline, input, output, workers=workers, shard=shard, model=model, device=device,
                        overwrite=overwrite, progress=progress, trust_bundle=trust_bundle, overrides=overrides)


def bundle_export(
    run: str | Path,
    output: str | Path,
    *,
    checkpoint: str = "best",
    stage: str | None = None,
    version: str = "0.1.0",
    torchscript: bool = False,
    overwrite: bool = False,
) -> Path:
    """Export a run's network (a BCP run's student) as a MONAI bundle folder, through its method's bundle spec;
    ``stage`` must be one of the method's stages. See :func:`medkd.bundle.export_bundle`."""
    from medkd.bundle import export_bundle

    return export_bundle(run, output, checkpoint=checkpoint, stage=stage, version=version, torchscript=torchscript,
                         overwrite=overwrite)


def bundle_verify(bundle: str | Path, *, schema: str | Path | None = None, trust: bool = False) -> list[Any]:
    """Check a bundle (files, trust, metadata schema, network in/out, dependencies); one result per check.

    Config code outside medkd's allowlist is reported (``trust`` FAIL) and not run, unless ``trust``.
    """
    from medkd.bundle import verify_bundle

    return verify_bundle(bundle, schema=schema, trust=trust)


def bundle_info(bundle: str | Path) -> str:
    """What a bundle is for and how to run it, as text; the bundle is read as data, none of its code runs."""
    from medkd.bundle import bundle_info as info

    return info(bundle)


def app(
    *,
    port: int = 8501,
    address: str = "localhost",
    models: str | Path | None = None,
    headless: bool = False,
    trust_bundle: bool = False,
) -> int:
    """Serve the Streamlit app until interrupted; returns Streamlit's exit code.

    The server runs headless (no browser tab, and no first-run e-mail prompt, which would wait forever for an
    answer) with ``headless=True`` or whenever stdin or stdout is not a terminal: under ``nohup``, a service manager,
    a container or a CI job.

    ``trust_bundle=True`` lets the app run code in bundle configs (``$`` expressions, ``_target_`` outside medkd's
    allowlist) by setting ``MEDKD_TRUST_BUNDLES=1`` for the server; without it the variable is removed, so only
    the flag trusts, and such a bundle shows a message in the app instead of loading.
    """
    import importlib.util
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ)
    if models is not None:
        env["MEDKD_MODELS"] = str(Path(models).resolve())
    env.pop("MEDKD_TRUST_BUNDLES", None)  # medkd.app.session.TRUST_ENV, read by the app
    if trust_bundle:
        env["MEDKD_TRUST_BUNDLES"] = "1"
    def isatty(stream: Any) -> bool:  # False for None, closed or redirected streams
        try:
            return bool(stream is not None and stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    headless = headless or not (isatty(sys.stdin) and isatty(sys.stdout))
    command = [
        sys.executable, "-m", "streamlit", "run", importlib.util.find_spec("medkd.app.main").origin,
        "--server.port", str(port),
        "--server.address", address, "--server.headless", str(headless).lower(),
        "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",  # no developer menu/Deploy
    ]
    print(f"medkd app on http://{address}:{port}  (research use only; Ctrl-C stops it)", flush=True)
    if trust_bundle:
        print("trusting bundle code (--trust-bundle): configs of the bundles the app loads may run code", flush=True)
    server = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())  # a stopped medkd stops the server
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def demo(
    out: str | Path = "demo_output", *, quick: bool = False, progress: bool = True, models: str | Path | None = None
) -> dict[str, Any]:
    """Synthetic data -> BCP vs supervised -> evaluation, overlay, MONAI bundle, DICOM SEG; see :mod:`medkd.demo`."""
    from medkd.demo import run_demo

    return run_demo(out, quick=quick, progress=progress, models=models)
