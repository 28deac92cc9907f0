# SPDX-License-Identifier: Apache-2.0
"""DICOM batch runner: a folder tree of mixed studies in; per series, the files of the model kind's writer out.

Stages (each a plain function in :mod:`medkd.io`; MONAI Deploy's operator boundaries without the SDK):

1. **scan** every file's header and group by ``SeriesInstanceUID`` (:func:`medkd.io.dicom_scan.scan_tree`);
2. **select** series with the pipeline's YAML rules (:func:`medkd.io.dicom_select.select_series`);
3. **volume**: sort slices along the normal, check geometry, decode and rescale
   (:func:`medkd.io.dicom_volume.load_series_volume`), in ``workers`` spawn processes (:mod:`.decode`);
4. **infer** in the main process with a model loaded once (``load_predictor``);
5. **write** with the writer registered for the model's kind (:data:`~medkd.pipeline.writers.OUTPUT_WRITERS`;
   segmentation: DICOM SEG + NIfTI mask, detection: DICOM SR + ``detections.json``/``.csv``; ``result.json``
   always), into ``OUT/.work/<series>/``, then ``done.json`` and one ``os.replace`` to ``OUT/<StudyUID>/<SeriesUID>/``.
   An interrupted run leaves no half-written series; a rerun skips series whose ``done.json`` fingerprint (versions,
   weights, pipeline and writer settings, SOP instances) matches.

**Per-instance jobs** (``unit: instance`` in the YAML, :mod:`medkd.pipeline.instances`): for projection images
(mammography MG, DX, CR) one SOP instance is one 2D image. The scan keeps each file's header, the rules are checked
on each image's own header, each selected image is decoded alone (float32 ``(y, x)``, modality LUT applied,
``MONOCHROME1`` inverted), the model gets that image, and its writer (one registered with ``images=True``: detection,
a 2D SR per image) writes into ``OUT/.work/<SeriesUID>/<SOPInstanceUID>/``, moved to
``OUT/<StudyUID>/<SeriesUID>/<SOPInstanceUID>/``. Each image gets its own report row (``kind: instance``) and
``done.json``, so reruns skip finished images; a series none of whose images is selected gets one ``series`` row.

Every input file and every series gets a row in ``OUT/medkd_report.{csv,json}`` (processed, unchanged, skipped
with a reason, or failed with the error); only ``KeyboardInterrupt`` or a failed report write stops the batch.

Hostile inputs (see :mod:`medkd.io.safe_paths`): header UIDs name folders only once they pass the DICOM UI rules
(else the series is ``invalid_uid``), and every path removed, created or renamed into is checked to lie inside
``OUT`` first. Symbolic links are never read through, an output folder inside the input folder is not scanned,
and ``.work`` folders a killed run left are cleared when the next run starts. Report messages and ``medkd.log``
never hold patient values (:mod:`medkd.io.phi`). Decode workers exit when the main process dies. A bundle whose
configs hold code is refused unless ``trust_bundle`` (``--trust-bundle``) is set.
``--shard k/n`` keeps the series (and files) whose UID hashes to ``k``, so ``n`` machines split a tree with no
coordination and the union of their reports lists every file once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medkd.config import config_to_dict
from medkd.errors import ConfigError, DataError
from medkd.io.atomic import write_text_atomic
from medkd.io.safe_paths import clear_work, inside, prepare_output, remove
from medkd.pipeline.config import PipelineConfig, check_device, load_pipeline, resolve_model
from medkd.pipeline.decode import Loaded, load_image_guarded, volumes
from medkd.pipeline.instances import InstanceInfo
from medkd.pipeline.report import PipelineSummary, ReportRow, write_report
from medkd.pipeline.sharding import in_shard, parse_shard
from medkd.pipeline.writers import OUTPUT_WRITERS, WriteContext, writer_blocks, writes_images

__all__ = ["run_pipeline", "writer_settings"]

logger = logging.getLogger(__name__)


def writer_settings(cfg: PipelineConfig, kind: str) -> dict[str, Any]:
    """The ``outputs`` blocks the writer of ``kind`` reads, as plain dicts (part of the rerun fingerprint)."""
    return {block: config_to_dict(getattr(cfg.outputs, block)) for block in writer_blocks(kind)}


def _uid_entropy(cfg: PipelineConfig, kind: str, series_uid: str, predictor: Any) -> list[str]:
    """Series, model identity and the writer's block settings: the sources of the deterministic DICOM UIDs."""
    settings = [value for block in writer_blocks(kind) for value in getattr(cfg.outputs, block).uid_entropy()]
    return [series_uid, predictor.name, predictor.version, predictor.weights_sha256, *settings]


def _fingerprint(cfg: PipelineConfig, predictor: Any, sop_uids: Sequence[str]) -> dict[str, Any]:
    import medkd

    return {
        "medkd": medkd.__version__,
        "model": predictor.name,
        "model_version": predictor.version,
        "weights_sha256": predictor.weights_sha256,
        "kind": predictor.kind,
        "outputs": writer_settings(cfg, predictor.kind),
        "pipeline_sha256": hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest(),
        "instances_sha256": hashlib.sha256("\n".join(sorted(sop_uids)).encode()).hexdigest(),
    }


def _one_per_study(jobs: list[tuple[Any, Any]]) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any, str]]]:
    """Keep, per study and rule, the series with the most files (ties: lowest SeriesNumber, then UID)."""

    def rank(job: tuple[Any, Any]) -> tuple:
        number = job[0].header.get("SeriesNumber")
        return (-job[0].n_files, int(number) if str(number or "").lstrip("-").isdigit() else 1 << 30, job[0].series_uid)

    kept: dict[tuple[str, str], tuple[Any, Any]] = {}
    for job in sorted(jobs, key=rank):
        kept.setdefault((job[0].study_uid, job[1].name), job)
    keep = {id(job) for job in kept.values()}
    dropped = [
        (s, r, (f"all_matched is false: series {kept[(s.study_uid, r.name)][0].series_uid} of this study was "
                f"chosen for rule {r.name}"))
        for s, r in (job for job in jobs if id(job) not in keep)
    ]
    return [job for job in jobs if id(job) in keep], dropped


def _same(done_file: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether a finished series' ``done.json`` records this fingerprint."""
    try:
        return json.loads(done_file.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


class _LogToFile:
    """Copy the ``medkd`` logger to ``OUT/medkd.log`` for the run (tracebacks of failed series go only there).

    The console keeps the caller's settings: with the CLI the file gets what ``-q``/``-v`` allow; from Python with
    logging unconfigured, the logger is raised to INFO for the run (nothing reaches the console below WARNING).
    """

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("medkd")

    def __enter__(self) -> _LogToFile:
        self.previous = self.logger.level
        if self.previous == logging.NOTSET and not logging.getLogger().handlers:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.previous)
        self.handler.close()


def _check_workers(workers: Any) -> int | None:
    """``workers`` as an int ``>= 0`` (or ``None``), else a :class:`ConfigError` naming the key."""
    if workers is None:
        return None
    try:
        count = int(workers)
        valid = not isinstance(workers, (bool, str)) and count == workers and count >= 0
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise ConfigError(f"workers (--workers) must be 0 (decode in this process) or more, got {str(workers)[:40]!r}")
    return count


def run_pipeline(
    config: PipelineConfig | str | Path,
    input_dir: str | Path,
    output_dir: str | Path,
    *,
    workers: int | None = None,
    shard: str | tuple[int, int] | None = None,
    overwrite: bool = False,
    model: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    predictor: Any = None,
    trust_bundle: bool = False,
    overrides: Sequence[str] = (),
) -> PipelineSummary:
    """Run a DICOM pipeline over ``input_dir`` into ``output_dir``; see the module docstring.

    Args:
        config: a :class:`PipelineConfig` or the path of its YAML.
        workers: processes decoding series (``0`` in-process; default ``min(4, cpus)``).
        shard: ``"k/n"``: process only this machine's share of the series.
        overwrite: redo series already done. model, device: override the YAML.
        predictor: an already loaded :class:`~medkd.inference.Predictor` (the app, tests, benchmarks).
        trust_bundle: run a bundle's config code (``$`` expressions, ``_target_`` outside medkd's allowlist); only
            for bundles you trust.
        overrides: ``key=value`` settings applied to the YAML (``outputs.seg.type=labelmap``); only with a path.

    Returns:
        The summary; the report is written even when interrupted (then ``KeyboardInterrupt`` propagates).

    Raises:
        ConfigError: a bad pipeline YAML or override, ``device``, ``workers`` or ``shard``, or a model of a kind
            no writer is registered for.
        DataError: the input folder is missing, the output folder cannot be written (or is a file, or the input
            folder), the model folder is missing, or the bundle holds code and ``trust_bundle`` is false
            (:class:`~medkd.errors.UntrustedBundleError`, raised before any series is processed).
    """
    from medkd.io.dicom_seg import quiet_phi_warnings

    pipeline_file = None if isinstance(config, PipelineConfig) else Path(config)
    if isinstance(config, PipelineConfig) and overrides:
        raise ConfigError("overrides (--set) apply to a pipeline YAML; pass its path, or change the PipelineConfig")
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline(config, overrides)
    input_dir, out_dir = Path(input_dir), Path(output_dir)
    if device is not None:
        check_device(device, "device (--device)")
    workers = _check_workers(workers)
    shard_kn = shard if isinstance(shard, tuple) else parse_shard(shard)
    if not input_dir.is_dir():
        raise DataError(input_dir, "input folder not found")
    prepare_output(out_dir, input_dir)
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    stem = "medkd_report" if shard_kn == (1, 1) else f"medkd_report.shard-{shard_kn[0]}-of-{shard_kn[1]}"
    batch = _Batch(cfg, pipeline_file, input_dir, out_dir, shard_kn, workers, overwrite, progress, trust_bundle)
    with _LogToFile(out_dir / "medkd.log"):
        logger.info("pipeline %s: %s -> %s (shard %d/%d, %d workers)", cfg.name, input_dir, out_dir, *shard_kn,
                    workers)
        try:
            clear_work(out_dir, lambda name: in_shard(name, shard_kn))  # other shards may be running
            with quiet_phi_warnings():
                batch.run(predictor, model, device)
        finally:
            csv_path, json_path = write_report(batch.finished_rows(), out_dir, stem)
            with contextlib.suppress(OSError):
                (out_dir / ".work").rmdir()  # only when empty: nothing half-written remains
        summary = PipelineSummary(batch.rows, csv_path, json_path, out_dir, round(batch.scan_seconds, 3))
        logger.info("%s", summary.line())
    return summary


def _job_key(job: Any) -> tuple[str, str]:
    """``(series UID, SOP instance UID or "")``: a job's identity (a series, or one image of it)."""
    return job.series_uid, job.sop_uid if isinstance(job, InstanceInfo) else ""


def _job_name(job: Any) -> str:
    """``series <uid>`` or ``image <sop uid>`` for log lines (UIDs only, never patient values)."""
    return f"image {job.sop_uid}" if isinstance(job, InstanceInfo) else f"series {job.series_uid}"


def _writer_for(predictor: Any) -> Callable:
    """The writer registered for the predictor's kind, or a :class:`ConfigError` naming the kinds with one."""
    try:
        return OUTPUT_WRITERS.get(predictor.kind)
    except KeyError:
        raise ConfigError(
            f"model {predictor.name!r} is a {predictor.kind!r} model; pipelines write outputs for "
            f"{', '.join(OUTPUT_WRITERS.list())} models"
        ) from None


class _Batch:
    """State of one pipeline run: rows so far, and the stages wired together."""

    def __init__(
        self, cfg: PipelineConfig, pipeline_file: Path | None, input_dir: Path, out_dir: Path,
        shard: tuple[int, int], workers: int, overwrite: bool, progress: bool, trust_bundle: bool = False,
    ) -> None:
        from medkd.io.dicom_select import parse_rules

        self.cfg, self.pipeline_file, self.input_dir, self.out_dir = cfg, pipeline_file, input_dir, out_dir
        self.shard, self.workers, self.overwrite, self.progress = shard, workers, overwrite, progress
        self.trust_bundle = trust_bundle
        self.work_root = out_dir / ".work"
        self.rules = parse_rules(cfg.selection, source=f"{pipeline_file or cfg.name}: selection")
        self.rows: list[ReportRow] = []
        self.entries: list[Any] = []
        self.sop_uids: dict[str, list[str]] = {}  # series UID -> its instances (the fingerprint's input)
        self.scan_seconds = 0.0
        self.per_instance = cfg.unit == "instance"

    def rel(self, path: str | Path) -> str:
        """Path relative to the input folder (reports never hold absolute paths from elsewhere)."""
        path = Path(path)
        return str(path.relative_to(self.input_dir)) if path.is_relative_to(self.input_dir) else str(path)

    def run(self, predictor: Any, model: str | Path | None, device: str | None) -> None:
        from medkd.io.dicom_scan import scan_tree

        start = time.perf_counter()
        series_list, self.entries = scan_tree(self.input_dir, progress=self.progress, exclude=[self.out_dir],
                                              keep_headers=self.per_instance)
        self.scan_seconds = time.perf_counter() - start
        for entry in self.entries:
            if entry.status == "ok" and entry.series_uid:
                self.sop_uids.setdefault(entry.series_uid, []).append(entry.sop_uid or "")
        for entry in self.entries:
            if in_shard(entry.series_uid or self.rel(entry.path), self.shard):
                self.rows.append(ReportRow("file", entry.status, str(entry.reason or ""), entry.message,
                                           self.rel(entry.path), series_uid=entry.series_uid or ""))
        jobs = self._select_instances(series_list) if self.per_instance else self._select(series_list)
        if not jobs:
            logger.info("no %s selected", "image" if self.per_instance else "series")
            return
        if predictor is None:
            from medkd.inference import load_predictor

            model_dir = resolve_model(model or self.cfg.model, self.pipeline_file)
            predictor = load_predictor(model_dir, device or self.cfg.device, trust=self.trust_bundle)
        writer = _writer_for(predictor)
        if self.per_instance and not writes_images(predictor.kind):
            images = [kind for kind in OUTPUT_WRITERS.list() if writes_images(kind)]
            raise ConfigError(f"unit: instance runs models on 2D images; model {predictor.name!r} is a "
                              f"{predictor.kind!r} model, whose writer needs a series (unit: series). Models that "
                              f"run per image: {', '.join(images)}")
        todo = [job for job in jobs if not self._unchanged(*job, predictor)]
        self._infer_and_write(todo, predictor, writer)

    def _select(self, series_list: list[Any]) -> list[tuple[Any, Any]]:
        """Series to process (this shard's), after the rules; the others get a ``skipped`` row.

        Runs over every series before sharding, so ``all_matched: false`` picks the same series on every shard.
        """
        from medkd.io.dicom_select import select_series

        jobs, rows = [], []
        for series in series_list:
            selection = select_series(series, self.rules, root=self.input_dir)
            if selection.rule is None:
                rows.append(self._series_row(series, "skipped", str(selection.reason), selection.message))
            else:
                jobs.append((series, selection.rule))
        if not self.cfg.all_matched:
            jobs, extra = _one_per_study(jobs)
            rows += [self._series_row(s, "skipped", "not_selected", message, r.name) for s, r, message in extra]
        self.rows += [row for row in rows if in_shard(row.series_uid, self.shard)]
        return [(s, r) for s, r in jobs if in_shard(s.series_uid, self.shard)]

    def _select_instances(self, series_list: list[Any]) -> list[tuple[Any, Any]]:
        """Images to process (``unit: instance``; this shard's series), each selected on its own header.

        An image no rule picks gets an ``instance`` row; a series none of whose images is picked, all for the same
        reason (a CT series in a mammography pipeline), gets one ``series`` row instead of a row per image.
        """
        from medkd.io.dicom_select import Selection, select_series
        from medkd.pipeline.instances import instance_problem, split_instances

        jobs = []
        for series in series_list:
            if not in_shard(series.series_uid, self.shard):
                continue
            picked, skipped = [], []
            for image in split_instances(series):
                selection = select_series(image, self.rules, root=self.input_dir)
                problem = instance_problem(image) if selection.rule is not None else None
                if problem is not None:
                    selection = Selection(None, *problem)
                if selection.rule is None:
                    skipped.append((image, selection))
                else:
                    picked.append((image, selection.rule))
            reasons = {str(selection.reason) for _, selection in skipped}
            if skipped and not picked and len(reasons) == 1:
                message = skipped[0][1].message
                message = f"all {len(skipped)} images: {message}" if len(skipped) > 1 else message
                self.rows.append(self._series_row(series, "skipped", reasons.pop(), message))
                continue
            self.rows += [self._series_row(image, "skipped", str(sel.reason), sel.message) for image, sel in skipped]
            jobs += picked
        return jobs

    def _series_row(self, series: Any, status: str, reason: str = "", message: str = "", rule: str = "") -> ReportRow:
        """The row of a series job, or of an image job (``kind: instance``) when ``series`` is an image."""
        if isinstance(series, InstanceInfo):
            return ReportRow("instance", status, reason, message, self.rel(series.files[0]), series.study_uid,
                             series.series_uid, rule, 1, sop_uid=series.sop_uid)
        return ReportRow("series", status, reason, message, self.rel(series.files[0].parent), series.study_uid,
                         series.series_uid, rule, series.n_files)

    def _fingerprint(self, series: Any, predictor: Any) -> dict[str, Any]:
        if isinstance(series, InstanceInfo):
            return _fingerprint(self.cfg, predictor, [series.sop_uid])
        return _fingerprint(self.cfg, predictor, self.sop_uids.get(series.series_uid, []))

    def _paths(self, series: Any) -> tuple[Path, Path]:
        """``(OUT/.work/<series>, OUT/<study>/<series>)`` (an image: ``OUT/.work/<series>/<sop>``,
        ``OUT/<study>/<series>/<sop>``), checked to lie inside OUT (UIDs were checked at selection; this guards
        every path built from header values anyway)."""
        work = self.work_root / series.series_uid
        final = self.out_dir / series.study_uid / series.series_uid
        if isinstance(series, InstanceInfo):
            work, final = work / series.sop_uid, final / series.sop_uid
        return inside(self.out_dir, inside(self.work_root, work)), inside(self.out_dir, final)

    def _clear_work_parent(self, work: Path) -> None:
        """After an image job, remove its series' ``.work/<series>`` folder once empty."""
        if work.parent != self.work_root:
            with contextlib.suppress(OSError):
                work.parent.rmdir()

    def _unchanged(self, series: Any, rule: Any, predictor: Any) -> bool:
        try:
            final = self._paths(series)[1]
        except DataError:
            return False  # _process reports it
        if self.overwrite or not _same(final / "done.json", self._fingerprint(series, predictor)):
            return False
        row = self._series_row(series, "unchanged", "", "already done with the same model and inputs", rule.name)
        row.outputs = sorted(str(p.relative_to(self.out_dir)) for p in final.iterdir())
        self.rows.append(row)
        return True

    def _infer_and_write(self, todo: list[tuple[Any, Any]], predictor: Any, writer: Callable) -> None:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        rules = {_job_key(series): rule for series, rule in todo}
        unit = "image" if self.per_instance else "series"
        load = load_image_guarded if self.per_instance else None
        bar = tqdm(total=len(todo), desc=self.cfg.name, unit=unit, disable=None if self.progress else True)
        with logging_redirect_tqdm():
            try:
                for series, loaded in volumes([(s, r.min_slices) for s, r in todo], self.workers, load):
                    self.rows.append(self._process(series, rules[_job_key(series)], loaded, predictor, writer))
                    bar.update(1)
            finally:
                bar.close()

    def _process(self, series: Any, rule: Any, loaded: Loaded, predictor: Any, writer: Callable) -> ReportRow:
        """Infer and write one loaded series; any error becomes the row's reason (patient values redacted)."""
        from medkd.io.phi import phi_values, redact, safe_error

        volume, reason, message, read_s = loaded
        row = self._series_row(series, "skipped", reason, message, rule.name)
        row.seconds = round(read_s, 3)
        what = _job_name(series)
        if volume is None:
            logger.info("%s skipped: %s (%s)", what, reason, message)
            return row
        start = time.perf_counter()
        try:
            output = predictor(volume.array)
            check = getattr(predictor, "check", None)  # the kind's output contract, when the predictor has one
            if check is not None:
                check(output, volume.array)
        except Exception as err:  # noqa: BLE001 - one series' failure must not stop the batch
            secrets = phi_values(volume.datasets)
            logger.error("%s: model failed\n%s", what, redact(traceback.format_exc(), secrets))
            row.status, row.reason, row.message = "failed", "model_error", safe_error(err, volume.datasets)
            return row
        infer_s = time.perf_counter() - start
        start = time.perf_counter()
        work = None
        try:
            work, final = self._paths(series)
            remove(self.work_root, work)
            work.mkdir(parents=True)
            entropy = _uid_entropy(self.cfg, predictor.kind, _job_key(series)[-1] or series.series_uid, predictor)
            files, result = writer(volume, output, WriteContext(work, self.cfg, predictor, entropy))
            write_s = time.perf_counter() - start
            image = {"sop_instance_uid": series.sop_uid} if isinstance(series, InstanceInfo) else {}
            result = {
                "series_uid": series.series_uid, "study_uid": series.study_uid, **image, "modality": series.modality,
                "series_description": series.description, "rule": rule.name, "shape": list(volume.array.shape),
                "spacing_mm": [round(float(s), 6) for s in volume.spacing], "model": predictor.describe(), **result,
                "seconds": {"read": round(read_s, 4), "infer": round(infer_s, 4), "write": round(write_s, 4)},
                "outputs": [p.name for p in files] + ["result.json"], "research_use_only": True,
            }
            write_text_atomic(work / "result.json", json.dumps(result, indent=1))
            write_text_atomic(work / "done.json", json.dumps({"fingerprint": self._fingerprint(series, predictor)}))
            inside(self.out_dir, final.parent).mkdir(parents=True, exist_ok=True)
            remove(self.out_dir, inside(self.out_dir, final))  # checked again: its parent now exists
            os.replace(work, final)
            self._clear_work_parent(work)
        except Exception as err:  # noqa: BLE001
            secrets = phi_values(volume.datasets)
            logger.error("%s: writing failed\n%s", what, redact(traceback.format_exc(), secrets))
            if work is not None:
                with contextlib.suppress(Exception):
                    remove(self.work_root, work)
                self._clear_work_parent(work)
            row.status, row.reason, row.message = "failed", "write_error", safe_error(err, volume.datasets)
            return row
        row.status, row.reason, row.message = "processed", "", ""
        row.seconds = round(read_s + infer_s + write_s, 3)
        row.outputs = sorted(str((final / name).relative_to(self.out_dir)) for name in result["outputs"])
        logger.info("%s: read %.2fs, infer %.2fs, write %.2fs", what, read_s, infer_s, write_s)
        return row

    def finished_rows(self) -> list[ReportRow]:
        """Rows with each series' files carrying their series' (or image's) outcome (``ok`` files of unfinished
        jobs stay)."""
        outcome = {r.series_uid: r for r in self.rows if r.kind == "series"}
        images = {r.path: r for r in self.rows if r.kind == "instance"}
        for row in self.rows:
            if row.kind == "file" and row.status == "ok":
                job_row = images.get(row.path) or outcome.get(row.series_uid)
                if job_row is not None:
                    row.status, row.reason, row.study_uid = job_row.status, job_row.reason, job_row.study_uid
        return self.rows
