# SPDX-License-Identifier: Apache-2.0
"""``medkd distill run``: train a student from a teacher as one YAML experiment says, into a normal run folder.

Steps: read the data (:mod:`medkd.distill.data`); load the teacher (a run or bundle,
:mod:`medkd.distill.teachers`) or train it first into ``RUN/teacher`` (CE, plus Dice for segmentation; not for a
strategy that builds its own, :attr:`~medkd.distill.strategy.Strategy.owns_teacher`); check that teacher and student
agree (task, classes, output dimensions) and that every term finds the outputs, taps and batch
keys it requires; train the student on the shared engine (:class:`~medkd.distill.task.DistillTask`) into
``RUN/student``; evaluate its best and last checkpoints; write ``RUN/summary.json``.

Run folder::

    RUN/run.json            method distill, kind, student format and stage (a normal medkd run)
    RUN/experiment.yaml     the resolved experiment and the plugins' modules and versions
    RUN/config.yaml         segmentation: the student's BCP-format config (eval, bundles, pipelines, app)
    RUN/student.json        classification: network, classes, input size
    RUN/student/            best.pt, last.pt, metrics.jsonl (engine checkpoints)
    RUN/teacher/            a teacher trained first (itself a run folder)
    RUN/summary.json        best- and last-checkpoint metrics, parameters, extra parameters, speed

Example:
    >>> summary = run_experiment(cfg, "data/acdc", "runs/bpkd_half")  # doctest: +SKIP
    >>> summary["best"]["test"]["mean"]["dice"]  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from medkd.config import config_to_dict
from medkd.distill.cache import TeacherCache, teacher_fingerprint
from medkd.distill.config import DistillConfig
from medkd.distill.data import ClassificationData, SegmentationData, build_data, example_batch
from medkd.distill.registry import PLUGINS
from medkd.distill.strategy import Strategy, StrategyContext, create_strategy
from medkd.distill.networks import build_network, supervised_terms
from medkd.distill.students import ClassifierInfo, write_student_run
from medkd.distill.task import DistillTask
from medkd.distill.teachers import LoadedTeacher, load_teacher
from medkd.distill.terms import TermSpec, WeightedTerms
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.seeding import seed_everything
from medkd.errors import ConfigError, DataError
from medkd.inference import resolve_device
from medkd.io.atomic import write_text_atomic
from medkd.nets import count_parameters

__all__ = ["run_experiment", "supervised_terms", "build_network", "train_network"]

logger = logging.getLogger(__name__)


def _plugin_versions(terms: tuple[TermSpec, ...], strategy: str = "") -> dict[str, dict[str, str]]:
    import importlib.metadata

    out = {}
    for key in [t.plugin for t in terms] + ([strategy] if strategy else []):
        meta = PLUGINS.meta(key)
        try:
            version = importlib.metadata.version(meta["distribution"])
        except Exception:  # noqa: BLE001 - an uninstalled source tree has no version
            version = "unknown"
        out[key] = {"module": meta["module"], "distribution": meta["distribution"], "version": version}
    return out


def _check_teacher(teacher: LoadedTeacher, cfg: DistillConfig, data: Any) -> None:
    if teacher.task != cfg.task:
        raise DataError(teacher.source, f"the teacher is a {teacher.task} model ({teacher.net}); this experiment "
                                        f"trains a {cfg.task} student")
    if teacher.num_classes and teacher.num_classes != data.num_classes:
        raise DataError(teacher.source, f"the teacher predicts {teacher.num_classes} classes, the student "
                                        f"{data.num_classes} ({', '.join(data.class_names)})")


def _check_outputs(task: DistillTask) -> None:
    """Teacher and student logits must have the same layout (dense dims may differ in size only)."""
    if task.frozen is None:
        return
    batch = example_batch(task.data)
    images = batch["image"][:1].to(task.device)
    with torch.no_grad():
        was = task.student.training
        task.student.eval()
        s = task.student(images)
        task.student.train(was)
        t = task.frozen(images)
    task.student_tap.pop()
    task.teacher_tap.pop()
    if s.ndim != t.ndim or s.shape[1] != t.shape[1]:
        raise DataError(getattr(task.frozen.module, "medkd_source", "the teacher"),
                        f"teacher output {tuple(t.shape)} does not match the student's {tuple(s.shape)} on the "
                        "same input")


def _latency_ms(net: nn.Module, example: torch.Tensor, repeats: int = 10) -> float:
    """Median milliseconds of one forward of a batch of 1 (eval, no grad) after a warm-up."""
    net.eval()
    times = []
    with torch.inference_mode():
        net(example)
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(example)
            times.append(time.perf_counter() - t0)
    return 1000.0 * sorted(times)[len(times) // 2]


def train_network(cfg: DistillConfig, data: Any, *, net: str, net_params: dict[str, Any],
                  terms: tuple[TermSpec, ...], teacher: nn.Module | None, out: Path, iterations: int, resume: bool,
                  progress: bool, device: torch.device, role: str, student: nn.Module | None = None,
                  hooks: Strategy | None = None) -> dict[str, Any]:
    """Train one network into ``out`` (a run folder, stage ``student``) and summarise it.

    ``student``: an already built network of architecture ``net`` to start from (default a fresh one);
    ``hooks``: a strategy whose loop hooks run inside the training.
    """
    seed_everything(cfg.experiment.seed)
    fresh, info = build_network(cfg, data, net, net_params)
    student = fresh if student is None else student
    weighted = WeightedTerms(terms)
    s_taps = cfg.student.taps if role == "student" else ()
    t_taps = cfg.teacher.taps if teacher is not None else ()
    weighted.check({"logits", *(f"feat:{t}" for t in s_taps)},
                   {"logits", *(f"feat:{t}" for t in t_taps)} if teacher is not None else set(), data.batch_keys)
    cache = None
    if teacher is not None and cfg.teacher.cache and isinstance(data, ClassificationData) and hooks is None:
        cache = TeacherCache(Path(cfg.teacher.cache_dir) if cfg.teacher.cache_dir else out / "teacher_cache",
                             teacher_fingerprint(teacher))
    optim = replace(cfg.optim, iterations=iterations)
    task = DistillTask(student=student, teacher=teacher, terms=weighted,
                       data=data, optim=optim, device=device, seed=cfg.experiment.seed, student_taps=s_taps,
                       teacher_taps=t_taps, cache=cache, iterations_per_epoch=cfg.optim.iterations_per_epoch,
                       hooks=hooks)
    try:
        _check_outputs(task)
        seg = replace(data.seg, net=net, pretrain_iterations=iterations) if isinstance(data, SegmentationData) else None
        write_student_run(out, task=cfg.task, info=info, seg=seg, role=role)
        engine_cfg = EngineConfig(max_iterations=iterations, val_interval=min(cfg.eval.val_interval, iterations),
                                  log_interval=min(cfg.eval.log_interval, iterations), progress=progress,
                                  grad_clip=cfg.optim.grad_clip, precision=cfg.optim.precision)
        result = Engine(task, out / "student", engine_cfg).run(resume=resume)
    finally:
        task.close()
    summary = _summarise(cfg, data, task, result, out, device)
    summary["role"] = role
    summary["net"] = net
    if cache is not None:
        summary["teacher_cache"] = {"hits": cache.hits, "misses": cache.misses}
    return summary


def _summarise(cfg: DistillConfig, data: Any, task: DistillTask, result: Any, out: Path,
               device: torch.device) -> dict[str, Any]:
    iterations = result.last_iteration
    epochs = iterations / task.iterations_per_epoch
    summary: dict[str, Any] = {
        "params": count_parameters(task.student),
        "extra_params": task.terms.extra_params + sum(
            p.numel() for m in task._strategy_list() for p in m.parameters()),
        "iterations": iterations,
        "iterations_per_epoch": task.iterations_per_epoch,
        "seconds": round(result.seconds, 3),
        "iterations_per_second": round(result.iterations_per_second, 3),
        "seconds_per_epoch": round(result.seconds / epochs, 4) if result.seconds and epochs else None,
        "seconds_per_iteration": result.time_split,
        "best_iteration": result.best_iteration,
    }
    net = copy.deepcopy(task.student)
    for which in ("best", "last"):
        path = out / "student" / f"{which}.pt"
        if not path.is_file():
            continue
        net.load_state_dict(load_checkpoint(path)["student"])
        net.eval()
        with torch.inference_mode():
            entry = {"val": data.validate(net, device)}
            if cfg.eval.test:
                entry["test"] = data.evaluate(net, cfg.data.test_split, device)
        summary[which] = entry
    example = example_batch(data)["image"][:1].to(device)
    summary["latency_ms"] = round(_latency_ms(net, example), 3)
    return summary


def run_experiment(cfg: DistillConfig, data_root: str | Path, out: str | Path, *, resume: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Run a distillation experiment (see the module docstring).

    Args:
        cfg: the experiment (``load_config(DistillConfig, yaml, overrides)``).
        data_root: the dataset folder. out: the run folder (created).
        resume: continue the teacher and student trainings from their ``last.pt``.
        progress: progress bars.

    Returns:
        The summary written to ``RUN/summary.json``.

    Raises:
        ConfigError: unknown plugins/parameters/keys, a term whose requirements are not met, a tap naming a
            missing module. DataError: bad data, a teacher that is not a medkd run or bundle, or whose classes or
            outputs do not match the student's.
    """
    out, data_root = Path(out), Path(data_root)
    device = resolve_device(cfg.experiment.device, mps=False)
    WeightedTerms(cfg.distill.terms)  # unknown plugins or parameters fail before any data is read
    strategy = None
    if cfg.distill.strategy:
        strategy = create_strategy(cfg.distill.strategy, **cfg.distill.strategy_params)
        if cfg.task not in strategy.tasks:
            raise ConfigError(f"strategy {cfg.distill.strategy!r} supports {', '.join(sorted(strategy.tasks))} "
                              f"experiments, this one is {cfg.task}")
        if strategy.requires_teacher and not (cfg.teacher.checkpoint or cfg.teacher.net):
            raise ConfigError(f"strategy {cfg.distill.strategy!r} needs a teacher: set teacher.checkpoint or "
                              "teacher.net")
    data = build_data(cfg, data_root)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {**config_to_dict(cfg), "plugins": _plugin_versions(cfg.distill.terms, cfg.distill.strategy)}
    write_text_atomic(out / "experiment.yaml", yaml.safe_dump(resolved, sort_keys=False))
    teacher: LoadedTeacher | None = None
    summary: dict[str, Any] = {"experiment": cfg.experiment.name, "task": cfg.task, "seed": cfg.experiment.seed,
                               "terms": [t.name for t in cfg.distill.terms]}
    owns_teacher = strategy is not None and strategy.owns_teacher
    if cfg.teacher.checkpoint:
        teacher = load_teacher(cfg.teacher.checkpoint, device)
    elif cfg.teacher.net and owns_teacher:
        logger.info("strategy %s builds its own teacher: teacher.net %s is not trained first",
                    cfg.distill.strategy, cfg.teacher.net)
    elif cfg.teacher.net:
        teacher_run = out / "teacher"
        logger.info("training the teacher %s first into %s", cfg.teacher.net, teacher_run)
        teacher_data = data
        if cfg.teacher.train_split and cfg.teacher.train_split != cfg.data.train_split:
            teacher_data = build_data(replace(cfg, data=replace(cfg.data, train_split=cfg.teacher.train_split)),
                                      data_root)
        summary["teacher_training"] = train_network(
            cfg, teacher_data, net=cfg.teacher.net, net_params=cfg.teacher.net_params, terms=supervised_terms(cfg.task),
            teacher=None, out=teacher_run, iterations=cfg.teacher.iterations or cfg.optim.iterations,
            resume=resume, progress=progress, device=device, role="teacher")
        teacher = load_teacher(teacher_run, device)
    if teacher is not None:
        _check_teacher(teacher, cfg, data)
        summary["teacher"] = {"source": str(teacher.source), "net": teacher.net,
                              "params": count_parameters(teacher.network)}
    if teacher is not None and not owns_teacher:  # the strategy feeds its own teacher (Strategy.owns_teacher)
        example = example_batch(data)["image"][:1].to(device)
        summary["teacher"]["latency_ms"] = round(_latency_ms(teacher.network, example), 3)
        if cfg.eval.test and cfg.eval.teacher:
            with torch.inference_mode():
                summary["teacher"]["test"] = data.evaluate(teacher.network, cfg.data.test_split, device)
    if strategy is None:
        summary["student"] = train_network(
            cfg, data, net=cfg.student.net, net_params=cfg.student.net_params, terms=cfg.distill.terms,
            teacher=teacher.network if teacher is not None else None, out=out, iterations=cfg.optim.iterations,
            resume=resume, progress=progress, device=device, role="student")
    else:
        ctx = StrategyContext(cfg=cfg, data=data, data_root=data_root, out=out, device=device, teacher=teacher,
                              trainer=train_network, resume=resume, progress=progress)
        summary["student"] = strategy.run(ctx)
        summary["strategy"] = {"name": cfg.distill.strategy, "params": cfg.distill.strategy_params,
                               **strategy.summary()}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    logger.info("distilled student written to %s", out)
    return summary

