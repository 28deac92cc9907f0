# SPDX-License-Identifier: Apache-2.0
"""Stage A of Grounded Teacher: mean-teacher adaptation with source pseudo-labels, an expert and class context.

One iteration (spec section 2.2, clean mode)::

    L_sup = det(S; x_Lq + SA(x_Lk), Y_src; w = SAL(C_src))          # SA, SAL = identity without RCM
    if t > B:
        P_t = teacher detections on x_Uk above tau;  P_e = expert boxes moved into x_Uq's geometry, above tau_e
        L_u = det_cls(S; SA(x_Uq), P_t; w = SAL(C_tgt));  L_e = det_cls(S; x_Uq, P_e)   # separate target copies
        loss = L_sup + lambda_u L_u + lambda_e L_e;  update C_src, C_tgt
    SGD step; t == B: teacher <- student;  t > B: teacher <- EMA(teacher, student)

``L`` are the target images with source pseudo-labels (stage P), ``U`` all target training images; ``k`` is the
weak view (resize, flip), ``q`` the strong one (same geometry, photometric noise). ``gt_compat`` reproduces the
reference's defects: the expert's labels overwrite the teacher's (both losses use the expert boxes: the teacher's
pseudo-labels go unused and the expert loss counts twice) and the expert boxes stay in original pixels (neither
resized nor flipped). ``method: mean_teacher`` is the same loop without expert and RCM.

Example:
    >>> import torch
    >>> t = [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1, dtype=torch.long)}]
    >>> copied = copy_targets(t)
    >>> copied[0]["boxes"] is t[0]["boxes"]
    False
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medkd.config import config_to_dict
from medkd.data.box_views import ViewGeometry, strong_photometric
from medkd.engine.ema import EMATeacher
from medkd.engine.loop import Engine, EngineConfig
from medkd.engine.task import TrainTask
from medkd.methods.grounded_teacher.config import GTConfig, Mode
from medkd.methods.grounded_teacher.data import Batch, ViewStore
from medkd.methods.grounded_teacher.source_stage import detect_store, warmup_lr
from medkd.metrics.detection import coco_ap
from medkd.nets import create_net

__all__ = ["AdaptTask", "copy_targets", "expert_targets", "run_adapt_stage"]

logger = logging.getLogger(__name__)


def copy_targets(targets: Sequence[Mapping[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """Deep copies of per-image target dicts (the reference's in-place ``add_label`` aliased them)."""
    return [{k: v.clone() for k, v in t.items()} for t in targets]


def expert_targets(expert: Sequence[Mapping[str, np.ndarray]], geometries: Sequence[ViewGeometry], threshold: float,
                   *, transform: bool = True) -> list[dict[str, torch.Tensor]]:
    """Expert boxes (original pixels) as targets of the views with ``geometries``, above ``threshold``;
    ``transform=False`` (``gt_compat``) leaves them in original pixels, as the reference does."""
    out = []
    for boxes, geometry in zip(expert, geometries):
        keep = (np.asarray(boxes["scores"]) > threshold) & (np.asarray(boxes["labels"]) >= 0)
        b = np.asarray(boxes["boxes"], np.float32).reshape(-1, 4)[keep]
        if transform and len(b):
            b = np.asarray(geometry.apply(b), np.float32).reshape(-1, 4)
        out.append({"boxes": torch.from_numpy(np.ascontiguousarray(b)),
                    "labels": torch.from_numpy(np.asarray(boxes["labels"], np.int64)[keep])})
    return out


def _stack(images: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """``(B, 1, h, w)`` when every view has the same size, else None."""
    shapes = {tuple(i.shape) for i in images}
    return torch.stack(list(images)) if len(shapes) == 1 else None


def _per_image(fn: Any, images: Sequence[torch.Tensor], *args: Any) -> list[torch.Tensor]:
    """Apply a batch transform ``fn((B, 1, h, w), *args)`` to a list of views (stacked when sizes agree)."""
    stacked = _stack(images)
    if stacked is not None:
        return list(fn(stacked, *args))
    return [fn(image[None], *args)[0] for image in images]


class AdaptTask(TrainTask):
    """Stage A (see the module docstring). The EMA teacher is the final model; ``validate`` scores it on the
    target val split (reported, flagged ``oracle_selection`` if used to select)."""

    def __init__(self, cfg: GTConfig, labelled: ViewStore, labelled_pool: np.ndarray, unlabelled: ViewStore,
                 val: ViewStore | None, source_state: Mapping[str, Any], teacher_threshold: Sequence[float],
                 expert: Sequence[Mapping[str, np.ndarray]] | None, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.labelled, self.pool, self.unlabelled, self.val = labelled, labelled_pool, unlabelled, val
        self.k = len(labelled.dataset.class_names)
        self.burn_in = cfg.burn_in()
        self.teacher_threshold, self.expert = [float(v) for v in teacher_threshold], expert
        self._limits = torch.tensor(self.teacher_threshold, device=device)
        self.student = create_net(cfg.net.name, **cfg.net_kwargs(self.k)).to(device)
        self.student.load_state_dict(source_state)
        self.teacher = EMATeacher(self.student, decay=cfg.adapt.ema_decay, mode="state_dict", train_mode=False)
        a = cfg.adapt
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=a.lr, momentum=a.momentum,
                                         weight_decay=a.weight_decay)
        self.context = None
        if cfg.uses_rcm(self.k):
            from medkd.methods.grounded_teacher.rcm import RelationalContext

            # the reference's 1000 / 400 iterations belong to a 40k-iteration schedule: scaled to this run's length
            scale = min(1.0, cfg.adapt.iterations / 40000)
            self.context = RelationalContext(self.k, self.burn_in, blend_iters=max(1, round(1000 * scale)),
                                             target_sal_delay=round(400 * scale))
        elif cfg.method.value == "gt" and cfg.adapt.rcm:
            logger.info("relational context module off: %d class(es), where SA and SAL are identities", self.k)

    # -- engine hooks -------------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"context": self.context.state_dict()} if self.context is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.context is not None and "context" in state:
            self.context.load_state_dict(state["context"])

    def batches(self, start_iteration: int) -> Iterator[tuple[Batch, Batch]]:
        a, seed = self.cfg.adapt, self.cfg.seed
        labelled = self.labelled.batches(a.batch_size, seed, start_iteration, pool=self.pool, stream=1)
        unlabelled = self.unlabelled.batches(a.unlabeled_batch_size, seed, start_iteration, stream=2)
        return zip(labelled, unlabelled)

    def learning_rate(self, iteration: int) -> float:
        a = self.cfg.adapt
        return warmup_lr(a.lr, a.warmup, iteration)

    def after_step(self, iteration: int) -> None:
        if iteration == self.burn_in:
            self.teacher.module.load_state_dict(self.student.state_dict())  # hard copy at B
        elif iteration > self.burn_in:
            self.teacher.update(self.student)

    def compute_loss(self, batch: tuple[Batch, Batch], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        try:
            return self._compute_loss(batch, iteration)
        except ValueError as error:  # MONAI's heads refuse NaN/Inf outputs: the previous step's update diverged
            if "NaN or Inf" not in str(error):
                raise
            raise FloatingPointError(f"iteration {iteration}: the detector's outputs are NaN or infinite (the weights "
                                     f"diverged at the previous step; mode {self.cfg.mode.value}); last.pt is "
                                     "unchanged") from error

    def _compute_loss(self, batch: tuple[Batch, Batch], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        lb, ub = batch
        gen = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + iteration)
        logs: dict[str, float] = {}
        x_lk = [image.to(self.device) for image in lb.images]
        x_lq = _per_image(lambda x, g: strong_photometric(x, g), x_lk, gen)
        sup_targets = copy_targets(lb.targets)
        x_sa, sa_targets = x_lk, copy_targets(lb.targets)
        weights = None
        if self.context is not None:
            x_sa, sa_targets = self._augment(x_lk, sa_targets, iteration, gen, target=False)
            weights = self.context.anchor_weights(iteration, target=False)
        losses = self.student(list(x_lq) + list(x_sa), sup_targets + sa_targets, anchor_weights=weights)
        if self.context is not None:
            self.context.update(self.student.last_pairs, iteration, target=False)
            self._save_crops(x_lk, lb.targets, target=False)
        loss = sum(losses.values())
        logs.update({f"sup_{k}": float(v.detach()) for k, v in losses.items()})
        if iteration > self.burn_in:
            loss = loss + self._unsupervised(ub, iteration, gen, logs)
        return loss, logs

    def _unsupervised(self, ub: Batch, iteration: int, gen: torch.Generator, logs: dict[str, float]) -> torch.Tensor:
        cfg, a = self.cfg, self.cfg.adapt
        x_uk = [image.to(self.device) for image in ub.images]
        x_uq = _per_image(lambda x, g: strong_photometric(x, g), x_uk, gen)
        with torch.no_grad():
            found = self.teacher.module(list(x_uk))
        keeps = [f["scores"] > self._limits[f["labels"]] for f in found]
        teacher_t = [{"boxes": f["boxes"][keep].detach().cpu().float(), "labels": f["labels"][keep].detach().cpu().long()}
                     for f, keep in zip(found, keeps)]
        logs["teacher_boxes"] = float(sum(len(t["labels"]) for t in teacher_t)) / max(len(teacher_t), 1)
        expert_t = None
        if self.expert is not None:
            per = [self.expert[int(i)] for i in ub.indices]
            expert_t = expert_targets(per, ub.geometries, cfg.expert_threshold,
                                      transform=cfg.mode is not Mode.GT_COMPAT)
            logs["expert_boxes"] = float(sum(len(t["labels"]) for t in expert_t)) / max(len(expert_t), 1)
        if cfg.mode is Mode.GT_COMPAT and expert_t is not None:
            teacher_t = expert_t  # label aliasing: the expert's labels overwrite the teacher's (same list)
            expert_targets_used = expert_t
        else:
            teacher_t = copy_targets(teacher_t)
            expert_targets_used = copy_targets(expert_t) if expert_t is not None else None
        if a.fuse and cfg.mode is Mode.CLEAN and expert_targets_used is not None:
            teacher_t, expert_targets_used = _fuse(teacher_t, expert_targets_used), None
        x_in, u_targets, weights = x_uq, teacher_t, None
        if self.context is not None:
            self._save_crops(x_uk, teacher_t, target=True)
            x_in, u_targets = self._augment(x_uq, u_targets, iteration, gen, target=True)
            weights = self.context.anchor_weights(iteration, target=True)
        l_u = self.student(list(x_in), u_targets, regress=False, anchor_weights=weights)["classification"]
        if self.context is not None:
            self.context.update(self.student.last_pairs, iteration, target=True)
        total = a.lambda_u * l_u
        logs["loss_u"] = float(l_u.detach())
        if expert_targets_used is not None:
            l_e = self.student(list(x_uq), expert_targets_used, regress=False)["classification"]
            total = total + a.lambda_e * l_e
            logs["loss_e"] = float(l_e.detach())
        return total

    def _augment(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], iteration: int,
                 gen: torch.Generator, *, target: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Semantic augmentation of a list of views (batched when their sizes agree)."""
        assert self.context is not None
        stacked = _stack(images)
        if stacked is not None:
            out, new = self.context.augment(stacked, targets, iteration, gen, target=target)
            return list(out), list(new)
        pairs = [self.context.augment(image[None], [tg], iteration, gen, target=target)
                 for image, tg in zip(images, targets)]
        return [p[0][0] for p in pairs], [p[1][0] for p in pairs]

    def _save_crops(self, images: list[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]], *,
                    target: bool) -> None:
        assert self.context is not None
        stacked = _stack(images)
        if stacked is not None:
            self.context.save_crops(stacked, targets, target=target)
        else:
            for image, tg in zip(images, targets):
                self.context.save_crops(image[None], [tg], target=target)

    def validate(self) -> dict[str, float]:
        """``score``: AP50 of the EMA teacher (the model) on the target val split; 0 without a val split."""
        if self.val is None:
            return {"score": 0.0}
        found = detect_store(self.teacher.module, self.val)
        truths = [{"boxes": r.boxes, "labels": r.labels} for r in self.val.dataset.records]
        ap = coco_ap(found, truths, list(self.val.dataset.class_names))
        return {"score": float(ap["AP50"]), "AP50": float(ap["AP50"]), "AP": float(ap["AP"])}

    def config_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self.cfg), "stage": "adapt"}


def _fuse(teacher: list[dict[str, torch.Tensor]], expert: list[dict[str, torch.Tensor]]
          ) -> list[dict[str, torch.Tensor]]:
    """Teacher and expert boxes of each image in one target set, overlapping boxes (IoU > 0.5, same class)
    merged by NMS with the teacher's first (``adapt.fuse``)."""
    from torchvision.ops import batched_nms

    out = []
    for t, e in zip(teacher, expert):
        boxes = torch.cat([t["boxes"], e["boxes"]])
        labels = torch.cat([t["labels"], e["labels"]])
        priority = torch.cat([torch.full((len(t["labels"]),), 2.0), torch.ones(len(e["labels"]))])
        keep = batched_nms(boxes, priority, labels, 0.5) if len(boxes) else torch.zeros(0, dtype=torch.long)
        out.append({"boxes": boxes[keep], "labels": labels[keep]})
    return out


def run_adapt_stage(task: AdaptTask, out: Path, *, resume: bool, progress: bool) -> dict[str, Any]:
    """Train stage A into ``out`` (``RUN/adapt``); returns the stage summary."""
    cfg = task.cfg
    engine = EngineConfig(max_iterations=cfg.adapt.iterations, val_interval=cfg.adapt.val_interval,
                          log_interval=cfg.log_interval, progress=progress, precision=cfg.precision)
    result = Engine(task, out, engine).run(resume=resume)
    return {"iterations": result.last_iteration, "burn_in": task.burn_in, "seconds": result.seconds,
            "seconds_per_iteration": result.time_split, "last_target_val_AP50": result.best_score
            if cfg.adapt.val_interval == 0 else None, "oracle_selection": False,
            "teacher_threshold": task.teacher_threshold, "rcm": task.context is not None}
