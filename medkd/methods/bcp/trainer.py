# SPDX-License-Identifier: Apache-2.0
"""BCP runs on the shared engine: pre-training, self-training, or the supervised-only baseline.

Run folder layout (``--out RUN_DIR``)::

    RUN_DIR/run.json                    {"method": "bcp", "kind": "segmentation", "medkd": version}
    RUN_DIR/config.yaml                 the resolved config (what was trained)
    RUN_DIR/pretrain/{best,last}.pt     stage 1 (BCP only), one checkpoint format
    RUN_DIR/selftrain/{best,last}.pt    stage 2: the deliverable student
    RUN_DIR/supervised/{best,last}.pt   the baseline (method=supervised)
    RUN_DIR/<stage>/metrics.jsonl       losses, lr, it/s, validation scores
    RUN_DIR/train_summary.json          best scores, iterations, timings
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from medkd.config import config_to_dict
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.distributed import DistInfo, cleanup, init_distributed
from medkd.engine.ema import EMATeacher
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.seeding import seed_everything
from medkd.engine.task import TrainTask
from medkd.errors import ConfigError
from medkd.inference.devices import resolve_device
from medkd.methods.bcp.config import BCPConfig, Method
from medkd.methods.bcp.data import RunData, build_run_data, eval_cases, labeled_loader, two_stream_loader
from medkd.methods.bcp.evaluate import class_names, validation_dice
from medkd.methods.bcp.masks import box_mask
from medkd.methods.bcp.snapshots import save_mixed_snapshot
from medkd.methods.bcp.steps import StepOptions, pretrain_step, selftrain_step, supervised_step
from medkd.nets import create_net
from medkd.runs import write_run_info

__all__ = ["BCPStageTask", "train_bcp", "final_stage", "build_student", "run_device", "METHOD", "KIND"]

logger = logging.getLogger(__name__)

PRETRAIN, SELFTRAIN, SUPERVISED = "pretrain", "selftrain", "supervised"
#: what ``RUN/run.json`` says of a BCP run (the supervised baseline included)
METHOD, KIND = "bcp", "segmentation"


def run_device(cfg: BCPConfig, dist: DistInfo | None = None) -> torch.device:
    """The run's device: the distributed rank's device, else ``cfg.device`` (``auto``: CUDA if available, no MPS)."""
    if dist is not None and dist.world_size > 1:
        return dist.device
    return resolve_device(cfg.device, mps=False)


def build_student(cfg: BCPConfig, *, channels_last: bool | None = None) -> nn.Module:
    """The registered network of ``cfg`` with ``in_channels``/``out_channels`` from the config.

    The one network builder of a BCP config (training, prediction, bundle export).

    Args:
        cfg: the run's config.
        channels_last: put a 2D network in ``torch.channels_last`` memory format; default ``cfg.channels_last``
            (3D networks never are). Bundle export passes ``False``.

    Raises:
        ConfigError: the patch is not a multiple of the network's size divisor.
    """
    net = create_net(cfg.net, in_channels=cfg.in_channels, out_channels=cfg.num_classes)
    divisor = int(getattr(net, "size_divisor", 1) or 1)
    if any(p % divisor for p in cfg.patch):
        raise ConfigError(f"patch {list(cfg.patch)} must be a multiple of {divisor} for net {cfg.net!r}")
    use = _channels_last(cfg) if channels_last is None else channels_last and cfg.spatial_dims == 2
    return net.to(memory_format=torch.channels_last) if use else net


def _channels_last(cfg: BCPConfig) -> bool:
    return cfg.channels_last and cfg.spatial_dims == 2


def final_stage(cfg: BCPConfig) -> str:
    """The stage whose student is the run's deliverable (``selftrain_iterations=0``: stage 1 only, an ablation)."""
    if cfg.method == Method.SUPERVISED:
        return SUPERVISED
    return SELFTRAIN if cfg.selftrain_iterations > 0 else PRETRAIN


class BCPStageTask(TrainTask):
    """One stage of a BCP run (``pretrain``, ``selftrain``) or the ``supervised`` baseline."""

    def __init__(
        self,
        stage: str,
        cfg: BCPConfig,
        data: RunData,
        data_root: Path,
        student: nn.Module,
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        *,
        teacher: EMATeacher | None = None,
        rank: int = 0,
    ) -> None:
        self.stage, self.cfg, self.data, self.data_root = stage, cfg, data, Path(data_root)
        self.student, self.teacher, self.optimizer = student, teacher, optimizer
        self.device, self.rank = device, rank
        self.opts = StepOptions(
            dataset=cfg.dataset,
            u_weight=cfg.u_weight,
            dice_bg_unmasked=cfg.dice_bg_unmasked,
            concat_forwards=cfg.concat_forwards,
        )
        self._val_cases: list | None = None
        self.out_dir: Path | None = None  # set by train_bcp; snapshots go to out_dir/snapshots

    def batches(self, start_iteration: int) -> Iterator[Any]:
        seed = self.cfg.seed + 7919 * self.rank + start_iteration
        if self.stage == SELFTRAIN:
            return two_stream_loader(self.data, self.cfg, seed)
        return labeled_loader(self.data, self.cfg, seed)

    def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, Any]]:
        images = batch["image"].to(self.device, non_blocking=True)
        if _channels_last(self.cfg):
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch["label"].to(self.device, non_blocking=True)
        if self.stage == SUPERVISED:
            return supervised_step(self.student, images, labels, self.opts)
        mask = box_mask(images.shape[2:], self.cfg.mask_ratio, device=self.device)
        if self.stage == PRETRAIN:
            return pretrain_step(self.student, images, labels, mask, self.opts)
        n = self.cfg.labeled_batch_size
        assert self.teacher is not None
        return selftrain_step(self.student, self.teacher, images[:n], labels[:n], images[n:], mask, self.opts)

    def learning_rate(self, iteration: int) -> float | None:
        if self.stage == SELFTRAIN and self.cfg.lr_step > 0:
            return self.cfg.lr * self.cfg.lr_gamma ** (iteration // self.cfg.lr_step)
        return None

    def validate(self) -> dict[str, float]:
        if self._val_cases is None:  # read once, keep in memory: validation runs every few hundred iterations
            self._val_cases = list(eval_cases(self.cfg, self.data_root, self.data.val_split, self.data.val_ids))
        return validation_dice(self.student, self._val_cases, self.cfg, self.device)

    def config_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self.cfg), "stage": self.stage}

    def on_log(self, iteration: int, batch: Any) -> None:
        every = self.cfg.snapshot_interval
        if every <= 0 or iteration % every or self.out_dir is None:
            return
        images = batch["image"].to(self.device)
        if _channels_last(self.cfg):
            images = images.contiguous(memory_format=torch.channels_last)
        save_mixed_snapshot(
            self.out_dir / "snapshots" / f"it_{iteration:06d}.png", self.student, images, batch["label"].to(self.device),
            teacher=self.teacher, labeled=self.cfg.labeled_batch_size, opts=self.opts, mask_ratio=self.cfg.mask_ratio,
            class_names=class_names(self.cfg),
        )


def _optimizer(cfg: BCPConfig, net: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _engine_config(cfg: BCPConfig, iterations: int, progress: bool) -> EngineConfig:
    return EngineConfig(
        max_iterations=iterations, val_interval=cfg.val_interval, log_interval=cfg.log_interval, progress=progress,
        tensorboard=cfg.tensorboard, precision=cfg.precision, grad_accum_steps=cfg.grad_accum_steps,
    )


def train_bcp(
    cfg: BCPConfig, data_root: str | Path, out: str | Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train BCP (both stages) or the supervised baseline into ``out``; see the module docstring for the layout.

    Args:
        cfg: the run's config (``load_config(BCPConfig, preset, overrides)``).
        data_root: dataset folder in the ACDC or LA layout.
        out: run folder; created if missing.
        resume: continue each stage from its ``last.pt`` (a finished stage is skipped).
        progress: show progress bars.

    Returns:
        The training summary also written to ``out/train_summary.json``.
    """
    out, data_root = Path(out), Path(data_root)
    dist = init_distributed()
    summary = _train(cfg, data_root, out, dist, resume=resume, progress=progress)
    if dist.world_size > 1:  # on success only: after an error the other ranks would wait in the barrier forever
        cleanup()
    return summary


def _train(cfg: BCPConfig, data_root: Path, out: Path, dist: DistInfo, *, resume: bool, progress: bool) -> dict[str, Any]:
    seed_everything(cfg.seed + dist.rank, deterministic=cfg.deterministic)
    device = run_device(cfg, dist)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision=fp16 needs a CUDA device (this run uses {device.type}); use precision=bf16")
    data = build_run_data(cfg, data_root)
    if dist.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_run_info(out, method=METHOD, kind=KIND)
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    progress = progress and dist.rank == 0
    summary: dict[str, Any] = {"method": cfg.method.value, "dataset": cfg.dataset.value, "stages": {}}

    def run_stage(stage: str, student: nn.Module, opt: torch.optim.Optimizer, iterations: int, teacher=None):
        task = BCPStageTask(stage, cfg, data, data_root, student, opt, device, teacher=teacher, rank=dist.rank)
        task.out_dir = out / stage
        result = Engine(task, out / stage, _engine_config(cfg, iterations, progress), dist=dist).run(resume=resume)
        summary["stages"][stage] = {
            "best_score": result.best_score,
            "best_iteration": result.best_iteration,
            "iterations": result.last_iteration,
            "seconds": result.seconds,
            "iterations_per_second": result.iterations_per_second,
            "seconds_per_iteration": result.time_split,  # data, forward_backward, optimizer, teacher, other
            "validation_seconds": result.validation_seconds,
        }
        return result

    student = build_student(cfg).to(device)
    if cfg.method == Method.SUPERVISED:
        run_stage(SUPERVISED, student, _optimizer(cfg, student), cfg.pretrain_iterations + cfg.selftrain_iterations)
    else:
        optimizer = _optimizer(cfg, student)
        pre = run_stage(PRETRAIN, student, optimizer, cfg.pretrain_iterations)
        if final_stage(cfg) == PRETRAIN:
            return _finish(summary, out, dist.rank)
        best = load_checkpoint(pre.best_path if Path(pre.best_path).exists() else pre.last_path)
        student.load_state_dict(best["student"])
        optimizer = _optimizer(cfg, student)
        if cfg.resolved_restore_optimizer() and best.get("optimizer"):
            optimizer.load_state_dict(best["optimizer"])
        teacher = EMATeacher(
            copy.deepcopy(student),
            decay=cfg.ema_decay,
            mode=cfg.resolved_ema_mode(),
            train_mode=cfg.resolved_teacher_train_mode(),
        ).to(device)
        run_stage(SELFTRAIN, student, optimizer, cfg.selftrain_iterations, teacher=teacher)
    return _finish(summary, out, dist.rank)


def _finish(summary: dict[str, Any], out: Path, rank: int) -> dict[str, Any]:
    if rank == 0:
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
        logger.info("run written to %s", out)
    return summary
