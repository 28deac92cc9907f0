# SPDX-License-Identifier: Apache-2.0
"""``train_surgfutr``: SurgFUTR's training stage on the shared engine (the ``Method.train`` of ``surgfutr``).

One :class:`SurgFUTRTask` per run. Per iteration (spec §3, stages B and C in one loop):

1. a batch of causal windows, ``train.change_fraction`` of them straddling a label change;
2. the **teacher** (variant ``surgfutr``) sees window + future clip; Sinkhorn-Knopp over its current and future
   clip states (plus a queue) gives balanced codes ``q_cur``, ``q_fut``; its losses: future state, transition
   (``pair`` classes) + change, and the swapped state loss that trains the prototypes;
3. the **student** sees the window only; its losses: future state, transition KD, feature KD, ActDyn, change;
4. both: the SFPBench task losses (from ``train.label_free_iterations`` on).

Variant ``no_teacher`` keeps the student's task losses only; ``feature_regression`` adds a regression of the future
clip's feature (the heads sit on the regressed feature). Prototypes are unit-normalised before every step and
frozen for ``model.freeze_prototypes`` iterations.

Example:
    >>> from medkd.methods.surgfutr.config import SurgFUTRConfig
    >>> lr_at(SurgFUTRConfig(), 100) < lr_at(SurgFUTRConfig(), 200)
    True
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from medkd.config import config_to_dict
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.seeding import seed_everything
from medkd.engine.task import TrainTask
from medkd.errors import ConfigError
from medkd.inference import resolve_device
from medkd.io.atomic import write_text_atomic
from medkd.methods.surgfutr.config import SurgFUTRConfig, TeacherMode
from medkd.methods.surgfutr.data import BatchSampler, SplitData, load_split
from medkd.methods.surgfutr.losses import (
    actdyn_loss,
    feature_kd_loss,
    pair_transition_target,
    soft_cross_entropy,
    task_losses,
    transition_kd_loss,
)
from medkd.methods.surgfutr.model import Student, Teacher
from medkd.methods.surgfutr.runs import load_run_config, save_run
from medkd.methods.surgfutr.sinkhorn import EmbeddingQueue, sinkhorn_knopp

__all__ = ["SurgFUTRTask", "lr_at", "run_classes", "train_surgfutr"]

logger = logging.getLogger(__name__)


def lr_at(cfg: SurgFUTRConfig, iteration: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of ``train.lr``."""
    t = cfg.train
    if t.warmup and iteration <= t.warmup:
        return t.lr * iteration / t.warmup
    progress = (iteration - t.warmup) / max(1, t.iterations - t.warmup)
    return t.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def run_classes(cfg: SurgFUTRConfig, data: SplitData) -> dict[str, Any]:
    """What ``RUN/classes.json`` holds for a training split."""
    layout = data.layout(cfg)
    return {"phase_names": list(data.phase_names), "presence_names": list(data.presence_names),
            "presence_key": cfg.data.presence_key(), "event_names": list(data.event_names),
            "tool_names": list(data.tool_names),
            "tool_of": None if data.tool_of is None else data.tool_of.tolist(),
            "layout": layout.to_dict()}


class SurgFUTRTask(TrainTask):
    """One SurgFUTR training run (see the module docstring)."""

    def __init__(self, cfg: SurgFUTRConfig, train: SplitData, val: SplitData | None, device: torch.device) -> None:
        self.cfg, self.train, self.val, self.device = cfg, train, val, device
        self.layout = train.layout(cfg)
        self.student = Student(cfg, self.layout).to(device)
        self.teacher_net = Teacher(cfg, self.layout).to(device) if cfg.uses_teacher() else None
        self.queue = EmbeddingQueue(cfg.model.queue, cfg.model.state_dim).to(device)
        params = list(self.student.parameters())
        if self.teacher_net is not None:
            params += list(self.teacher_net.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.sampler = BatchSampler(cfg, train, seed=cfg.seed)
        self.iteration = 0

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"student": self.student}
        if self.teacher_net is not None:
            mods["teacher_net"] = self.teacher_net
        return mods

    def extra_state(self) -> dict[str, Any]:
        return {"queue": self.queue.state_dict(), "sampler": json.dumps(self.sampler.state())}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "queue" in state:
            self.queue.load_state_dict(state["queue"])
        if "sampler" in state:
            self.sampler.set_state(json.loads(state["sampler"]))

    def batches(self, start_iteration: int):  # noqa: ANN201
        for batch in self.sampler:
            yield {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def learning_rate(self, iteration: int) -> float:
        return lr_at(self.cfg, iteration)

    def _codes(self, z_now: torch.Tensor, z_future: torch.Tensor, iteration: int) -> tuple[torch.Tensor, ...]:
        """SK codes of the teacher's current and future clip states, balanced over batch (+ queue)."""
        m = self.cfg.model
        protos = self.student.prototypes
        extra = self.queue.items() if m.queue and iteration >= m.queue_start else z_now[:0]
        scores = protos(torch.cat([z_now, z_future, extra]).detach())
        q = sinkhorn_knopp(scores, epsilon=m.sinkhorn_epsilon, iterations=m.sinkhorn_iterations)
        b = z_now.shape[0]
        return q[:b], q[b:2 * b]

    def compute_loss(self, batch: dict[str, torch.Tensor], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, w = self.cfg, self.cfg.loss
        self.iteration = iteration
        protos = self.student.prototypes
        protos.normalize_()
        protos.set_frozen(iteration <= cfg.model.freeze_prototypes)
        with_tasks = iteration > cfg.train.label_free_iterations
        terms: dict[str, torch.Tensor] = {}
        out_s = self.student(batch["frames"], batch["elapsed"])
        if self.teacher_net is not None:
            frozen_teacher = (cfg.train.teacher_mode is TeacherMode.FROZEN
                              and iteration > cfg.train.teacher_iterations)
            with torch.set_grad_enabled(not frozen_teacher):
                out_t = self.teacher_net(batch["frames"], batch["future"], batch["elapsed"], protos)
            z_now, z_fut = out_t["z"][:, -2], out_t["z"][:, -1]
            q_cur, q_fut = self._codes(z_now, z_fut, iteration)
            y_tr = pair_transition_target(q_cur, q_fut)
            y_change = (q_cur.argmax(-1) != q_fut.argmax(-1)).float()
            if not frozen_teacher:
                temp = cfg.model.temperature
                terms["t_future_state"] = w.future_state * soft_cross_entropy(out_t["future_state"], q_fut)
                terms["t_transition"] = w.transition * (F.cross_entropy(out_t["transition"], y_tr)
                                                        + F.binary_cross_entropy_with_logits(out_t["change"], y_change))
                # swapped state prediction: each branch predicts the other's codes of the current clip
                s_now = out_s["scores"][:, -1]
                terms["state"] = 0.5 * (soft_cross_entropy(out_t["scores"][:, -2] / temp, sinkhorn_knopp(
                    s_now, epsilon=cfg.model.sinkhorn_epsilon, iterations=cfg.model.sinkhorn_iterations))
                    + soft_cross_entropy(s_now / temp, q_cur))
                if with_tasks:
                    terms.update({f"t_{k}": w.tasks * v for k, v in task_losses(
                        out_t, batch, self.layout, phase_now_weight=w.phase_now).items()})
            terms["future_state"] = w.future_state * soft_cross_entropy(out_s["future_state"], q_fut)
            terms["transition_kd"] = w.transition_kd * transition_kd_loss(out_s["transition"], out_t["transition"],
                                                                          w.kd_temperature)
            terms["change"] = F.binary_cross_entropy_with_logits(out_s["change"], y_change)
            terms["feature_kd"] = w.feature_kd * feature_kd_loss(out_s["o"], out_t["o"])
            if "delta_z" in out_s:
                terms["actdyn"] = w.actdyn * actdyn_loss(out_s["delta_z"], z_now, z_fut)
            self.queue.push(z_now)
        if "future_feature" in out_s:
            with torch.no_grad():
                target = self.student.clip_features(self.student.frame_features(batch["future"]))
            terms["feature_regression"] = w.feature_regression * (
                F.mse_loss(out_s["future_feature"], target) + feature_kd_loss(out_s["future_feature"], target))
        if with_tasks:
            terms.update({k: w.tasks * v for k, v in task_losses(out_s, batch, self.layout,
                                                                 phase_now_weight=w.phase_now).items()})
        if not terms:
            raise ConfigError("no loss term is active (variant no_teacher needs the task losses: "
                              "lower train.label_free_iterations)")
        loss = sum(terms.values())
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def validate(self) -> dict[str, float]:
        """``score`` = change-conditioned tool mAP − phase wMAE / h on the val split (train split without one)."""
        from medkd.methods.surgfutr.forecast import forecast_frames
        from medkd.methods.surgfutr.scoring import score_arm

        data = self.val or self.train
        forecasts = [forecast_frames(self.student, v.frames, device=self.device) for v in data.videos]
        m = score_arm(forecasts, data, self.cfg)
        h = self.cfg.tasks.transition_horizons_min[0]
        score = (m["tool_map_change"] or m["triplet_map_change"] or 0.0) - (m["phase_wmae"] or 0.0) / h
        return {"score": float(score), **{k: float(v) for k, v in m.items()
                                          if isinstance(v, (int, float)) and v is not None}}

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.cfg)


def train_surgfutr(cfg: SurgFUTRConfig, data_root: str | Path, out: str | Path, *, resume: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Train a SurgFUTR run into ``out``; returns the summary (also ``RUN/train_summary.json``).

    Raises:
        DataError: naming the file: bad videos or annotations, a split without videos.
        ConfigError: ``--resume`` with a config whose network differs from the run's.
    """
    out = Path(out)
    if resume and (out / "config.yaml").is_file():
        saved = load_run_config(out)
        if saved.model != cfg.model or saved.variant != cfg.variant:
            raise ConfigError(f"{out}: the run was trained with another model or variant; use a new --out")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    train = load_split(cfg, data_root, "train")
    try:
        val = load_split(cfg, data_root, "val")
    except Exception as err:  # noqa: BLE001  (a run without a val split validates on train)
        logger.warning("no val split (%s): validating on the training videos", err)
        val = None
    save_run(out, cfg, run_classes(cfg, train))
    logger.info("SurgFUTR %s: %d training videos (%d s), %s", cfg.variant.value, len(train.videos), train.seconds,
                f"{len(val.videos)} val videos" if val else "no val split")
    task = SurgFUTRTask(cfg, train, val, device)
    t = cfg.train
    engine = EngineConfig(max_iterations=t.iterations, val_interval=t.val_interval, log_interval=cfg.log_interval,
                          progress=progress, precision=cfg.precision, grad_clip=t.grad_clip or None)
    result = Engine(task, out / "train", engine).run(resume=resume)
    summary = {"method": "surgfutr", "variant": cfg.variant.value, "best_score": result.best_score,
               "best_iteration": result.best_iteration, "iterations": result.last_iteration,
               "seconds": result.seconds, "iterations_per_second": result.iterations_per_second,
               "seconds_per_iteration": result.time_split, "train_videos": len(train.videos),
               "train_seconds": train.seconds, "parameters": {
                   "student": int(sum(p.numel() for p in task.student.parameters())),
                   "teacher": int(sum(p.numel() for p in task.teacher_net.parameters()))
                   if task.teacher_net is not None else 0}}
    write_text_atomic(out / "train_summary.json", json.dumps(summary, indent=2))
    return summary


