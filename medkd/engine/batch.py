# SPDX-License-Identifier: Apache-2.0
"""DICOM batch runner: a folder tree of mixed studies in, a DICOM SEG + NIfTI mask + JSON per series out.

Stages (each a plain function in :mod:`medkd.io`; MONAI Deploy's operator boundaries without the SDK):

1. **scan** every file's header and group by ``SeriesInstanceUID`` (:func:`medkd.io.dicom_scan.scan_tree`);
2. **select** series with the pipeline's YAML rules (:func:`medkd.io.dicom_select.select_series`);
3. **volume**: sort slices along the normal, check geometry, decode and rescale
   (:func:`medkd.io.dicom_volume.load_series_volume`), in ``workers`` spawn processes;
4. **infer** in the main process with a model loaded once (:func:`medkd.engine.predictor.load_predictor`);
5. **write** with the writer registered for the model's kind (:data:`OUTPUT_WRITERS`; segmentation: DICOM SEG,
   NIfTI mask, ``result.json``), into ``OUT/.work/<series>/``, then ``done.json`` and one ``os.replace`` to
   ``OUT/<StudyUID>/<SeriesUID>/``. An interrupted run leaves no half-written series; a rerun skips series whose
   ``done.json`` fingerprint (versions, weights, pipeline, SOP instances) matches.

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
import csv
import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkd.config import config_to_dict, load_config
from medkd.errors import ConfigError, DataError
from medkd.io.atomic import write_text_atomic
from medkd.io.safe_paths import clear_work, inside, prepare_output, remove
from medkd.registry import Registry

__all__ = [
    "PipelineConfig", "ReportRow", "PipelineSummary", "OUTPUT_WRITERS", "load_pipeline", "parse_shard", "in_shard",
    "check_device", "resolve_model", "run_pipeline",
]

logger = logging.getLogger(__name__)

STATUSES = ("processed", "unchanged", "skipped", "failed", "ok")
REPORT_FIELDS = ("kind", "status", "reason", "message", "path", "study_uid", "series_uid", "rule", "n_files",
                 "seconds", "outputs")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::[0-9]+)?")
_PARENT_POLL_S = 0.5  # how often a decode worker checks that the main process is alive


def check_device(device: str, key: str = "device") -> str:
    """``device`` if it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, else a :class:`ConfigError` naming
    ``key``."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"{key} must be auto, cpu, cuda, cuda:N or mps, got {str(device)[:40]!r}")
    return device


@dataclass
class PipelineConfig:
    """A pipeline YAML (``pipelines/<name>.yaml``).

    Attributes:
        name: pipeline name (reports, SEG series description).
        model: a MONAI bundle exported by ``medkd bundle export`` or a medkd run folder; a relative path is
            looked up from the working directory, then the YAML's folder, then ``$MEDKD_MODELS`` (default
            ``models/``).
        description: what the pipeline is for.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        selection: rules ``{name, conditions: {Keyword: regex | [min, max]}, min_slices}``; first match wins;
            empty selects every image series.
        write_seg: write a DICOM SEG per series. seg_type: ``binary`` (default) or ``labelmap``.
        write_nifti: write the mask as NIfTI on the series geometry.
        all_matched: process every series that matches a rule (default); ``false`` keeps one series per study and
            rule, the one with the most slices (ties: lowest SeriesNumber, then UID), as MONAI Deploy's selector.
    """

    name: str = "pipeline"
    model: str = ""
    description: str = ""
    device: str = "auto"
    selection: list[dict[str, Any]] = field(default_factory=list)
    write_seg: bool = True
    seg_type: str = "binary"
    write_nifti: bool = True
    all_matched: bool = True

    def __post_init__(self) -> None:
        if self.seg_type not in ("binary", "labelmap"):
            raise ConfigError(f"seg_type must be 'binary' or 'labelmap', got {self.seg_type!r}")
        check_device(self.device, "device")


@dataclass
class ReportRow:
    """One line of the report: an input file (``kind == "file"``) or a series (``kind == "series"``)."""

    kind: str
    status: str
    reason: str = ""
    message: str = ""
    path: str = ""
    study_uid: str = ""
    series_uid: str = ""
    rule: str = ""
    n_files: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


@dataclass
class PipelineSummary:
    """What a run did: report rows, counts by status, and where the report is."""

    rows: list[ReportRow]
    report_csv: Path
    report_json: Path
    out_dir: Path
    scan_seconds: float = 0.0

    def counts(self, kind: str = "series") -> dict[str, int]:
        """Rows of ``kind`` per status."""
        out = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            if row.kind == kind:
                out[row.status] = out.get(row.status, 0) + 1
        return out

    def line(self) -> str:
        """One-line summary for the terminal."""
        s, f = self.counts("series"), self.counts("file")
        return (
            f"series: {s['processed']} processed, {s['unchanged']} unchanged, {s['skipped']} skipped, "
            f"{s['failed']} failed; files: {sum(f.values())} ({f['skipped']} skipped); report: {self.report_csv}"
        )


def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read a pipeline YAML; unknown keys or bad rules raise :class:`ConfigError` naming the file."""
    from medkd.io.dicom_select import parse_rules

    cfg = load_config(PipelineConfig, path, overrides)
    parse_rules(cfg.selection, source=f"{path}: selection")
    return cfg


def resolve_model(model: str | Path, pipeline_file: str | Path | None = None) -> Path:
    """Find the model folder: absolute, else the working directory, the pipeline's folder, ``$MEDKD_MODELS``."""
    model = Path(os.path.expanduser(str(model)))
    if not str(model) or str(model) == ".":
        raise ConfigError("the pipeline names no model: set 'model:' in the YAML or pass --model")
    candidates = [model] if model.is_absolute() else [Path.cwd() / model]
    if not model.is_absolute():
        if pipeline_file is not None:
            candidates.append(Path(pipeline_file).resolve().parent / model)
        root = Path(os.environ.get("MEDKD_MODELS", "models"))
        candidates += [root / model, root / model.name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(model, f"model folder not found (tried {tried}); export one with 'medkd bundle export' "
                           "or set MEDKD_MODELS / --model")


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/n"`` -> ``(k, n)`` with ``1 <= k <= n``; ``None`` -> ``(1, 1)``."""
    if not text:
        return 1, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like k/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard k/n needs 1 <= k <= n, got {text!r}")
    return k, n


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Deterministic, stateless split: the key's SHA-1 modulo ``n`` is ``k - 1``."""
    k, n = shard
    return n == 1 or int(hashlib.sha1(key.encode()).hexdigest(), 16) % n == k - 1


# --------------------------------------------------------------------------------------------- outputs by kind


@dataclass
class WriteContext:
    """What a writer gets besides the volume and the model output."""

    work_dir: Path
    config: PipelineConfig
    predictor: Any
    uid_entropy: list[str]


#: model kind -> ``writer(volume, output, ctx) -> (files written, result fields)``
OUTPUT_WRITERS: Registry = Registry("pipeline output writer")


@OUTPUT_WRITERS.register("segmentation")
def write_segmentation_outputs(volume: Any, mask: np.ndarray, ctx: WriteContext) -> tuple[list[Path], dict[str, Any]]:
    """DICOM SEG (highdicom), NIfTI mask on the series geometry, and per-label volumes in mL."""
    from medkd.io.dicom_seg import write_seg
    from medkd.io.volume_io import write_mask_like
    from medkd.viz.measure import label_volumes

    predictor, files = ctx.predictor, []
    if mask.shape != volume.array.shape:
        raise ValueError(f"model returned shape {mask.shape} for a volume of shape {volume.array.shape}")
    if ctx.config.write_seg:
        files.append(write_seg(
            volume.datasets, mask, predictor.labels, ctx.work_dir / "seg.dcm", model_name=predictor.name,
            model_version=predictor.version, uid_entropy=ctx.uid_entropy, seg_type=ctx.config.seg_type,
        ))
    if ctx.config.write_nifti:
        files.append(write_mask_like(mask, volume.reference_image(), ctx.work_dir / "mask.nii.gz"))
    rows = label_volumes(mask, predictor.labels, volume.spacing, ndigits=4)
    return files, {"labels": {r["label"]: {k: r[k] for k in ("value", "voxels", "volume_ml")} for r in rows}}


# --------------------------------------------------------------------------------------------- the run


def _fingerprint(cfg: PipelineConfig, predictor: Any, sop_uids: Sequence[str]) -> dict[str, Any]:
    import medkd

    return {
        "medkd": medkd.__version__,
        "model": predictor.name,
        "model_version": predictor.version,
        "weights_sha256": predictor.weights_sha256,
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
        (s, r, f"all_matched is false: series {kept[(s.study_uid, r.name)][0].series_uid} of this study was chosen "
               f"for rule {r.name}")
        for s, r in (job for job in jobs if id(job) not in keep)
    ]
    return [job for job in jobs if id(job) in keep], dropped


def _same(done_file: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether a finished series' ``done.json`` records this fingerprint."""
    try:
        return json.loads(done_file.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _write_report(rows: list[ReportRow], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Report as CSV and JSON (atomic); rows sorted files first, then series, by path/UID."""
    rows.sort(key=lambda r: (r.kind != "file", r.series_uid if r.kind == "series" else r.path))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["outputs"] = ";".join(record["outputs"])
        writer.writerow(record)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    write_text_atomic(csv_path, buf.getvalue())
    write_text_atomic(json_path, json.dumps([asdict(r) for r in rows], indent=1))
    return csv_path, json_path


def _phi_of_files(files: Sequence[str]) -> set[str]:
    """Patient values of the files' headers (best effort), to redact an exception message about them."""
    import pydicom

    from medkd.io.phi import PHI_KEYWORDS, phi_values

    values: set[str] = set()
    for file in files:
        with contextlib.suppress(Exception):
            values |= phi_values([pydicom.dcmread(file, stop_before_pixels=True, force=True,
                                                  specific_tags=list(PHI_KEYWORDS))])
    return values


def _load_volume_guarded(files: Sequence[str], min_slices: int) -> tuple[Any, str, str, float]:
    """Worker entry: ``(volume or None, reason, message, seconds)``; never raises (except interrupts).

    Messages carry no patient values: :class:`SeriesError` messages name tags and files only, other exceptions are
    redacted with the files' patient values and their quoted literals.
    """
    from medkd.io.dicom_scan import safe_short
    from medkd.io.dicom_seg import quiet_phi_warnings
    from medkd.io.dicom_volume import SeriesError, load_series_volume
    from medkd.io.phi import redact

    start = time.perf_counter()
    try:
        with quiet_phi_warnings():
            return load_series_volume(files, min_slices=min_slices), "", "", time.perf_counter() - start
    except SeriesError as err:
        return None, str(err.reason), err.message, time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - one bad series must not stop the batch
        message = redact(safe_short(err), _phi_of_files(files))
        return None, "unreadable", message, time.perf_counter() - start


def _exit_with_parent(parent_pid: int) -> None:
    """Decode worker initializer: a daemon thread ends the worker as soon as the main process is gone.

    A pool worker otherwise outlives a main process killed with ``kill -9`` (its task queue holds a write end of
    its own pipe, so it never sees end-of-file), keeping its memory.
    """

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="medkd-parent-watch", daemon=True).start()


def _volumes(
    jobs: list[tuple[Any, int]], workers: int
) -> Iterator[tuple[Any, tuple[Any, str, str, float]]]:
    """Load series volumes in order, in-process (``workers == 0``) or ``workers`` spawn processes, <= 2N in flight."""
    from medkd.io.dicom_scan import safe_short

    if workers <= 0:
        for series, min_slices in jobs:
            yield series, _load_volume_guarded([str(p) for p in series.files], min_slices)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                               initargs=(os.getpid(),))
    with pool:
        pending: list[tuple[Any, Future]] = []
        queue = iter(jobs)
        for series, min_slices in queue:
            pending.append((series, pool.submit(_load_volume_guarded, [str(p) for p in series.files], min_slices)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            series, future = pending.pop(0)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(_load_volume_guarded, [str(p) for p in nxt[0].files], nxt[1])))
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a crashed worker (e.g. out of memory) fails only its series
                result = (None, "unreadable", f"worker failed: {safe_short(err)}", 0.0)
            yield series, result


class _LogToFile:
    """Copy the ``medkd`` logger to ``OUT/medkd.log`` for the run (tracebacks of failed series go only there).

    The console keeps the caller's settings: with the CLI the file gets what ``-q``/``-v`` allow; from Python with
    logging unconfigured, the logger is raised to INFO for the run (nothing reaches the console below WARNING).
    """

    def __init__(self, path: Path) -> None:
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("medkd")

    def __enter__(self) -> "_LogToFile":
        self.previous = self.logger.level
        if self.previous == logging.NOTSET and not logging.getLogger().handlers:
            self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: Any) -> None:
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
) -> PipelineSummary:
    """Run a DICOM pipeline over ``input_dir`` into ``output_dir``; see the module docstring.

    Args:
        config: a :class:`PipelineConfig` or the path of its YAML.
        workers: processes decoding series (``0`` in-process; default ``min(4, cpus)``).
        shard: ``"k/n"``: process only this machine's share of the series.
        overwrite: redo series already done. model, device: override the YAML.
        predictor: an already loaded :class:`~medkd.engine.predictor.Predictor` (the app, tests, benchmarks).
        trust_bundle: run a bundle's config code (``$`` expressions, ``_target_`` outside medkd's allowlist); only
            for bundles you trust.

    Returns:
        The summary; the report is written even when interrupted (then ``KeyboardInterrupt`` propagates).

    Raises:
        ConfigError: a bad pipeline YAML, ``device``, ``workers`` or ``shard``.
        DataError: the input folder is missing, the output folder cannot be written (or is a file, or the input
            folder), the model folder is missing, or the bundle holds code and ``trust_bundle`` is false
            (:class:`~medkd.errors.UntrustedBundleError`, raised before any series is processed).
    """
    from medkd.io.dicom_seg import quiet_phi_warnings

    pipeline_file = None if isinstance(config, PipelineConfig) else Path(config)
    cfg = config if isinstance(config, PipelineConfig) else load_pipeline(config)
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
            csv_path, json_path = _write_report(batch.finished_rows(), out_dir, stem)
            with contextlib.suppress(OSError):
                (out_dir / ".work").rmdir()  # only when empty: nothing half-written remains
        summary = PipelineSummary(batch.rows, csv_path, json_path, out_dir, round(batch.scan_seconds, 3))
        logger.info("%s", summary.line())
    return summary


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

    def rel(self, path: str | Path) -> str:
        """Path relative to the input folder (reports never hold absolute paths from elsewhere)."""
        path = Path(path)
        return str(path.relative_to(self.input_dir)) if path.is_relative_to(self.input_dir) else str(path)

    def run(self, predictor: Any, model: str | Path | None, device: str | None) -> None:
        from medkd.io.dicom_scan import scan_tree

        start = time.perf_counter()
        series_list, self.entries = scan_tree(self.input_dir, progress=self.progress, exclude=[self.out_dir])
        self.scan_seconds = time.perf_counter() - start
        for entry in self.entries:
            if entry.status == "ok" and entry.series_uid:
                self.sop_uids.setdefault(entry.series_uid, []).append(entry.sop_uid or "")
        for entry in self.entries:
            if in_shard(entry.series_uid or self.rel(entry.path), self.shard):
                self.rows.append(ReportRow("file", entry.status, str(entry.reason or ""), entry.message,
                                           self.rel(entry.path), series_uid=entry.series_uid or ""))
        jobs = self._select(series_list)
        if not jobs:
            logger.info("no series selected")
            return
        if predictor is None:
            from medkd.engine.predictor import load_predictor

            model_dir = resolve_model(model or self.cfg.model, self.pipeline_file)
            predictor = load_predictor(model_dir, device or self.cfg.device, trust=self.trust_bundle)
        writer = OUTPUT_WRITERS.get(predictor.kind)
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

    def _series_row(self, series: Any, status: str, reason: str = "", message: str = "", rule: str = "") -> ReportRow:
        return ReportRow("series", status, reason, message, self.rel(series.files[0].parent), series.study_uid,
                         series.series_uid, rule, series.n_files)

    def _fingerprint(self, series: Any, predictor: Any) -> dict[str, Any]:
        return _fingerprint(self.cfg, predictor, self.sop_uids.get(series.series_uid, []))

    def _paths(self, series: Any) -> tuple[Path, Path]:
        """``(OUT/.work/<series>, OUT/<study>/<series>)``, checked to lie inside OUT (UIDs were checked at
        selection; this guards every path built from header values anyway)."""
        work = self.work_root / series.series_uid
        final = self.out_dir / series.study_uid / series.series_uid
        return inside(self.out_dir, inside(self.work_root, work)), inside(self.out_dir, final)

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

        rules = {series.series_uid: rule for series, rule in todo}
        bar = tqdm(total=len(todo), desc=self.cfg.name, unit="series", disable=None if self.progress else True)
        with logging_redirect_tqdm():
            try:
                for series, loaded in _volumes([(s, r.min_slices) for s, r in todo], self.workers):
                    self.rows.append(self._process(series, rules[series.series_uid], loaded, predictor, writer))
                    bar.update(1)
            finally:
                bar.close()

    def _process(
        self, series: Any, rule: Any, loaded: tuple[Any, str, str, float], predictor: Any, writer: Callable
    ) -> ReportRow:
        """Infer and write one loaded series; any error becomes the row's reason (patient values redacted)."""
        from medkd.io.phi import phi_values, redact, safe_error

        volume, reason, message, read_s = loaded
        row = self._series_row(series, "skipped", reason, message, rule.name)
        row.seconds = round(read_s, 3)
        if volume is None:
            logger.info("series %s skipped: %s (%s)", series.series_uid, reason, message)
            return row
        start = time.perf_counter()
        try:
            output = predictor(volume.array)
        except Exception as err:  # noqa: BLE001 - one series' failure must not stop the batch
            secrets = phi_values(volume.datasets)
            logger.error("series %s: model failed\n%s", series.series_uid, redact(traceback.format_exc(), secrets))
            row.status, row.reason, row.message = "failed", "model_error", safe_error(err, volume.datasets)
            return row
        infer_s = time.perf_counter() - start
        start = time.perf_counter()
        work = None
        try:
            work, final = self._paths(series)
            remove(self.work_root, work)
            work.mkdir(parents=True)
            entropy = [series.series_uid, predictor.name, predictor.version, predictor.weights_sha256,
                       self.cfg.seg_type]
            files, result = writer(volume, output, WriteContext(work, self.cfg, predictor, entropy))
            write_s = time.perf_counter() - start
            result = {
                "series_uid": series.series_uid, "study_uid": series.study_uid, "modality": series.modality,
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
        except Exception as err:  # noqa: BLE001
            secrets = phi_values(volume.datasets)
            logger.error("series %s: writing failed\n%s", series.series_uid, redact(traceback.format_exc(), secrets))
            if work is not None:
                with contextlib.suppress(Exception):
                    remove(self.work_root, work)
            row.status, row.reason, row.message = "failed", "write_error", safe_error(err, volume.datasets)
            return row
        row.status, row.reason, row.message = "processed", "", ""
        row.seconds = round(read_s + infer_s + write_s, 3)
        row.outputs = sorted(str((final / name).relative_to(self.out_dir)) for name in result["outputs"])
        logger.info("series %s: read %.2fs, infer %.2fs, write %.2fs", series.series_uid, read_s, infer_s, write_s)
        return row

    def finished_rows(self) -> list[ReportRow]:
        """Rows with each series' files carrying their series' outcome (``ok`` files of unfinished series stay)."""
        outcome = {r.series_uid: r for r in self.rows if r.kind == "series"}
        for row in self.rows:
            if row.kind == "file" and row.status == "ok" and row.series_uid in outcome:
                series_row = outcome[row.series_uid]
                row.status, row.reason, row.study_uid = series_row.status, series_row.reason, series_row.study_uid
        return self.rows
