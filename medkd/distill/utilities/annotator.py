# SPDX-License-Identifier: Apache-2.0
"""Teacher-as-annotator: a student learns a continuous target only from a teacher's outputs on unlabelled images.

Wav2Small (Wagner et al., "Wav2Small: Distilling Wav2Vec2 to 72K parameters for low-resource speech emotion
recognition", arXiv 2408.13920) trains a large teacher on labelled speech, lets it annotate an unlabelled archive,
and trains tiny students on those annotations alone with the loss ``1 - CCC`` (teacher valence CCC 0.676 on
MSP-Podcast). medkd applies it to continuous image targets (ejection fraction, lesion severity):

1. **teacher**: a 1-output regressor, ``teacher.checkpoint`` when that is one (a run written by this utility), else
   ``teacher.net`` trained on the teacher split's targets (``1 - CCC``, or MSE), saved as the run ``OUT/teacher``;
2. **annotation**: the teacher's value for every image of the unlabelled split, written to ``OUT/annotations.csv``
   (``image,case,<target>``);
3. **student**: ``student.net`` with one output, trained only on those annotations with the experiment's
   ``distill.terms`` (the preset's is ``ccc``: ``1 - CCC`` against the annotation), saved as ``OUT/student``;
4. **baseline**: the same student, seed and iterations trained on the labelled train split's true targets
   (``OUT/baseline``);
5. CCC (and mean absolute error) against the true targets of the test split for all three.

The images and targets come from a CSV table under the data root (``table``, default SynthLesion-2D's
``metadata.csv``) with the columns ``image`` (relative to the data root), ``split``, the target column and optionally
``case``; unlabelled rows may leave the target empty. medkd's runner trains classification and segmentation only,
so the regression training is a short loop here (:func:`fit_regressor`): random batches drawn from preloaded
tensors, the experiment's optimiser and learning-rate schedule, progress logged every ``eval.log_interval`` steps.

Example:
    >>> import torch
    >>> x = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    >>> float(ccc(x, x)), float(ccc(x - 0.5, 0.5 - x)), float(ccc(x, x + 1.0)) < 1.0
    (1.0, -1.0, True)
    >>> float(ccc_loss(x[:, None], x[:, None]))
    0.0
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from medkd.distill.losses.ccc import ccc
from medkd.distill.registry import register_utility
from medkd.distill.tools import ToolContext, Utility
from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medkd.distill.config import DistillConfig, OptimConfig

__all__ = [
    "Annotator", "TargetSplit", "ccc", "ccc_loss", "fit_regressor", "output_layer", "predict_regressor",
    "read_target_split",
]

logger = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor, int], tuple[Tensor, dict[str, float]]]


class TeacherLoss(StrEnum):
    """The loss of a teacher trained here: ``mse`` or ``ccc`` (``1 - CCC``)."""

    MSE = "mse"
    CCC = "ccc"


def ccc_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``mean_k (1 - CCC(pred[:, k], target[:, k]))`` for ``(N, K)`` (or ``(N,)``) tensors.

    Example:
        >>> import torch
        >>> float(ccc_loss(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])))
        2.0
    """
    return (1.0 - ccc(pred.float(), target.float())).mean()


@dataclass(frozen=True)
class TargetSplit:
    """One split of a target table: images ``(N, C, *size)``, targets ``(N,)`` (NaN where the table has none),
    case ids and the ``image`` entries as written in the table."""

    split: str
    images: Tensor
    targets: Tensor
    cases: list[str]
    paths: list[str]


def read_target_split(root: str | Path, table: str | Path, target: str, split: str, *, image_size: tuple[int, ...],
                      in_channels: int = 1, allow_missing: bool = False) -> TargetSplit:
    """The images (resized to ``image_size``) and continuous targets of the rows of ``split`` in a CSV table.

    Args:
        root: the data root; ``table`` and the ``image`` entries are relative to it (unless absolute).
        table: the CSV (columns ``image``, ``split``, ``target``, optionally ``case``).
        target: the target column. split: the ``split`` value to read.
        image_size / in_channels: as ``data.image_size`` / ``data.in_channels``.
        allow_missing: accept empty or non-numeric targets (as NaN): unlabelled rows.

    Raises:
        DataError: a missing table or column, no row of ``split``, a missing image, or (without
            ``allow_missing``) a row without a numeric target.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=2, n_train=3, n_val=1, n_test=1,
        ...                              n_unlabelled=2, size=32)
        >>> part = read_target_split(root, "metadata.csv", "severity", "unlabelled", image_size=(16, 16))
        >>> part.images.shape, bool(((part.targets >= 0) & (part.targets <= 1)).all())
        (torch.Size([2, 1, 16, 16]), True)
    """
    from medkd.data.classification import ClassificationDataset, ClassificationItem, ClassificationSplit

    root = Path(root)
    path = root / table
    if not path.is_file():
        raise DataError(path, f"target table not found (the annotator's 'table', relative to the data root {root})")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("image", "split", target) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(path, f"lacks the column(s) {missing} (header: {reader.fieldnames})")
        rows = [row for row in reader if row["split"] == split]
    if not rows:
        raise DataError(path, f"no rows of split {split!r}")
    values = []
    for line, row in enumerate(rows):
        try:
            values.append(float(row[target]))
        except ValueError:
            if not allow_missing:
                raise DataError(path, f"split {split!r}, case {row.get('case') or row['image']}: {target!r} is "
                                      f"{row[target]!r}, not a number (row {line + 1} of the split)") from None
            values.append(math.nan)
    items = [ClassificationItem(row.get("case") or Path(row["image"]).stem, root / row["image"], 0) for row in rows]
    dataset = ClassificationDataset(ClassificationSplit(items, (target,), split, path, in_channels),
                                    size=tuple(image_size))
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).float()
    return TargetSplit(split, images, torch.tensor(values, dtype=torch.float32), [it.case for it in items],
                       [row["image"] for row in rows])


def output_layer(net: nn.Module) -> nn.Linear:
    """The network's 1-output final ``nn.Linear`` (kd_cnn's ``head``, a MONAI ResNet's ``fc``): the last such module.

    Raises:
        ConfigError: the network has no ``nn.Linear`` with one output.
    """
    layers = [m for m in net.modules() if isinstance(m, nn.Linear) and m.out_features == 1]
    if not layers:
        raise ConfigError(f"{type(net).__name__} has no 1-output nn.Linear layer: the annotator's regressors end in "
                          "one (kd_cnn, kd_cnn_wide, monai_resnet*)")
    return layers[-1]


def fit_regressor(net: nn.Module, images: Tensor, targets: Tensor, loss_fn: LossFn, *, optim: OptimConfig,
                  iterations: int, batch_size: int, device: torch.device, seed: int = 0, log_interval: int = 50,
                  what: str = "regressor") -> dict[str, float]:
    """Train ``net`` (outputs ``(B, 1)``, ending in a 1-output ``nn.Linear``) on ``images`` ``(N, C, *size)`` and
    ``targets`` ``(N,)`` in place.

    The targets are standardised (``z = (y - mean) / std`` of ``targets``) and the output layer starts at zero (the
    mean), which keeps a wide network stable at classification learning rates and gives ``1 - CCC`` a usable
    gradient; after training ``std`` and ``mean`` are folded into the output layer, so ``net`` predicts ``y``
    itself. Each step draws ``batch_size`` distinct cases (seeded), sets the learning rate of ``optim.schedule``
    and takes one optimiser step (``optim``'s optimiser, momentum, weight decay and gradient clip).

    Args:
        loss_fn: ``(pred (B, 1), target (B, 1), iteration) -> (loss, logs)``, on standardised targets.
        iterations: optimiser steps (> 0). what: named in the progress log.

    Returns:
        ``{"seconds", "train_loss", "target_mean", "target_std"}`` (``train_loss``: the mean loss of the last
        ``log_interval`` steps).

    Raises:
        ValueError: no iterations or no data. ConfigError: no 1-output ``nn.Linear`` (:func:`output_layer`).

    Example:
        >>> from medkd.distill.config import OptimConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> x = torch.randn(32, 1, 2, 2)
        >>> y = 3.0 + x.flatten(1).sum(1)
        >>> mse = lambda p, t, it: (((p - t) ** 2).mean(), {})
        >>> out = fit_regressor(net, x, y, mse, optim=OptimConfig(lr=0.05, iterations=200), iterations=200,
        ...                     batch_size=8, device=torch.device("cpu"))
        >>> out["train_loss"] < 0.05, float((net(x)[:, 0].detach() - y).abs().max()) < 0.5
        (True, True)
    """
    from medkd.distill.task import build_optimizer, schedule_lr

    if iterations < 1 or len(targets) == 0:
        raise ValueError(f"fit_regressor needs iterations >= 1 and data, got {iterations} and {len(targets)} cases")
    head = output_layer(net)
    if head.bias is None:
        raise ConfigError(f"{what}: the output layer has no bias to hold the target mean")
    mean = float(targets.mean())
    std = float(targets.std()) if len(targets) > 1 else 1.0
    std = std if std > 1e-8 else 1.0
    z = (targets - mean) / std
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    optim = replace(optim, iterations=iterations)
    net.to(device).train()
    optimizer = build_optimizer(optim, [net])
    params = [p for group in optimizer.param_groups for p in group["params"]]
    g = torch.Generator().manual_seed(seed)
    n, bs = len(targets), min(batch_size, len(targets))
    recent: list[float] = []
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        idx = torch.randperm(n, generator=g)[:bs]
        for group in optimizer.param_groups:
            group["lr"] = schedule_lr(optim, it)
        pred = net(images[idx].to(device)).float()
        loss, _ = loss_fn(pred, z[idx].to(device)[:, None], it)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, optim.grad_clip)
        optimizer.step()
        recent = (recent + [float(loss.detach())])[-max(1, log_interval):]
        if it % max(1, log_interval) == 0 or it == iterations:
            logger.info("%s: iteration %d/%d, loss %.4f, lr %.4g", what, it, iterations, sum(recent) / len(recent),
                        schedule_lr(optim, it))
    with torch.no_grad():  # predict y, not z
        head.weight.mul_(std)
        head.bias.mul_(std).add_(mean)
    return {"seconds": round(time.perf_counter() - start, 3), "train_loss": round(sum(recent) / len(recent), 6),
            "target_mean": round(mean, 6), "target_std": round(std, 6)}


def predict_regressor(net: nn.Module, images: Tensor, device: torch.device, batch: int = 256) -> Tensor:
    """The first output of ``net`` per image, ``(N,)`` (eval mode, no grad; the mode is restored)."""
    was = net.training
    net.eval()
    with torch.inference_mode():
        out = torch.cat([net(images[i:i + batch].to(device)).float().cpu()[:, 0] for i in range(0, len(images), batch)])
    net.train(was)
    return out


def _scores(pred: Tensor, truth: Tensor) -> dict[str, float]:
    return {"ccc": round(float(ccc(pred, truth)), 5), "mae": round(float((pred - truth).abs().mean()), 5)}


def _regressor_info(cfg: DistillConfig, net: str, params: dict[str, Any], target: str) -> Any:
    from medkd.distill.students import ClassifierInfo

    return ClassifierInfo(net=net, net_params=dict(params), in_channels=cfg.data.in_channels, num_classes=1,
                          class_names=(target,), image_size=tuple(cfg.data.image_size))


def _save_regressor(out: Path, info: Any, net: nn.Module, iterations: int, role: str) -> None:
    """A 1-output run folder (``student.json``, ``student/last.pt``) that ``teacher.checkpoint`` can name."""
    from medkd.distill.students import write_student_run
    from medkd.engine.checkpoint import save_checkpoint

    write_student_run(out, task="classification", info=info, role=role, target=info.class_names[0])
    save_checkpoint(out / "student" / "last.pt", student=net, teacher=None, optimizer=None, config={},
                    iteration=iterations)


@register_utility("annotator")
class Annotator(Utility):
    """Teacher-as-annotator (Wav2Small): a regression student trained only on a teacher's annotations, vs a baseline.

    ``medkd distill tool annotator --config apps/distill/synth_lesion_annotator.yaml --data-root DIR --out OUT``
    writes ``OUT/annotations.csv``, the runs ``OUT/teacher``, ``OUT/student`` and ``OUT/baseline`` and
    ``OUT/annotator.json``: test CCC and MAE of teacher, annotator-trained student and baseline (``student.ccc``,
    ``baseline.ccc``, ``teacher.ccc``), and the annotations' CCC against the truth where the table has it.

    Args:
        target: the continuous target column of ``table`` (SynthLesion-2D: ``severity``).
        table: the CSV under the data root with ``image``, ``split`` and the target (default ``metadata.csv``).
        unlabelled_split: the ``split`` value of the images to annotate.
        teacher_split: the split the teacher trains on (default ``teacher.train_split``, else ``teacher_train``).
        iterations: student and baseline steps (0: ``optim.iterations``).
        teacher_iterations: teacher steps (0: ``teacher.iterations``, else ``optim.iterations``).
        teacher_loss: ``ccc`` (``1 - CCC``, Wav2Small's; default) or ``mse``.

    Raises:
        ValueError: a negative number of iterations or an unknown ``teacher_loss`` (allowed: mse, ccc).
    """

    command = "tool"

    def __init__(self, target: str = "severity", table: str = "metadata.csv", unlabelled_split: str = "unlabelled",
                 teacher_split: str = "", iterations: int = 0, teacher_iterations: int = 0,
                 teacher_loss: str = "ccc") -> None:
        from medkd.registry import resolve_option

        if int(iterations) < 0 or int(teacher_iterations) < 0:
            raise ValueError(f"iterations and teacher_iterations must be >= 0, got {iterations}, {teacher_iterations}")
        self.target, self.table, self.unlabelled_split = str(target), str(table), str(unlabelled_split)
        self.teacher_split = str(teacher_split)
        self.iterations, self.teacher_iterations = int(iterations), int(teacher_iterations)
        self.teacher_loss = resolve_option(TeacherLoss, teacher_loss, "teacher_loss", "Losses")

    def _split(self, ctx: ToolContext, split: str, allow_missing: bool = False) -> TargetSplit:
        data = ctx.cfg.data
        return read_target_split(ctx.data_root, self.table, self.target, split, image_size=tuple(data.image_size),
                                 in_channels=data.in_channels, allow_missing=allow_missing)

    def _fit(self, ctx: ToolContext, net: nn.Module, part: TargetSplit, targets: Tensor, loss_fn: LossFn,
             iterations: int, what: str) -> dict[str, float]:
        cfg = ctx.cfg
        return fit_regressor(net, part.images, targets, loss_fn, optim=cfg.optim, iterations=iterations,
                             batch_size=cfg.data.batch_size, device=ctx.device, seed=cfg.experiment.seed,
                             log_interval=cfg.eval.log_interval, what=what)

    def _teacher(self, ctx: ToolContext) -> tuple[nn.Module, dict[str, Any]]:
        """The checkpoint's 1-output teacher, or ``teacher.net`` trained here into ``OUT/teacher``."""
        from medkd.engine.seeding import seed_everything

        cfg = ctx.cfg
        if cfg.teacher.checkpoint:
            loaded = ctx.load_teacher()
            if loaded.num_classes == 1:
                return loaded.network, {"source": str(loaded.source), "net": loaded.net}
            if not cfg.teacher.net:
                raise ConfigError(f"teacher.checkpoint {loaded.source} predicts {loaded.num_classes} classes: the "
                                  "annotator needs a 1-output regressor (a run written by this tool) or teacher.net "
                                  "to train one")
            logger.warning("teacher.checkpoint %s is not a 1-output regressor: training teacher.net %s instead",
                           loaded.source, cfg.teacher.net)
        if not cfg.teacher.net:
            raise ConfigError("the annotator needs teacher.net (a regressor trained here) or teacher.checkpoint "
                              "(a 1-output run)")
        split = self.teacher_split or cfg.teacher.train_split or "teacher_train"
        part = self._split(ctx, split)
        iterations = self.teacher_iterations or cfg.teacher.iterations or cfg.optim.iterations
        seed_everything(cfg.experiment.seed)
        info = _regressor_info(cfg, cfg.teacher.net, cfg.teacher.net_params, self.target)
        net = info.build()
        if self.teacher_loss == TeacherLoss.MSE:
            def loss_fn(p: Tensor, t: Tensor, it: int) -> tuple[Tensor, dict[str, float]]:
                return nn.functional.mse_loss(p, t), {}
        else:
            def loss_fn(p: Tensor, t: Tensor, it: int) -> tuple[Tensor, dict[str, float]]:
                return ccc_loss(p, t), {}
        fit = self._fit(ctx, net, part, part.targets, loss_fn, iterations, "teacher")
        _save_regressor(ctx.out / "teacher", info, net, iterations, role="teacher")
        return net, {"source": str(ctx.out / "teacher"), "net": cfg.teacher.net, "split": split,
                     "n_train": len(part.targets), "iterations": iterations, "objective": self.teacher_loss.value,
                     **fit}

    def run(self, ctx: ToolContext) -> dict[str, Any]:
        from medkd.distill.terms import WeightedTerms
        from medkd.engine.seeding import seed_everything

        cfg = ctx.cfg
        if cfg.task != "classification":
            raise ConfigError(f"the annotator works on image-level targets (data.layout folders or csv), not "
                              f"{cfg.data.layout.value}")
        terms = WeightedTerms(cfg.distill.terms)
        terms.check({"logits"}, {"logits"}, set())  # the target is the only "teacher output"; no labels, no taps
        terms.to(ctx.device)
        iterations = self.iterations or cfg.optim.iterations
        teacher, teacher_info = self._teacher(ctx)
        test = self._split(ctx, cfg.data.test_split)
        unlabelled = self._split(ctx, self.unlabelled_split, allow_missing=True)
        notes = predict_regressor(teacher, unlabelled.images, ctx.device)
        with (ctx.out / "annotations.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "case", self.target])
            writer.writerows(zip(unlabelled.paths, unlabelled.cases, (f"{v:.6f}" for v in notes.tolist())))
        known = ~unlabelled.targets.isnan()
        annotations: dict[str, Any] = {"n": len(notes), "file": str(ctx.out / "annotations.csv")}
        if bool(known.any()):  # synthetic archives know the truth: how good the annotations are
            annotations.update(_scores(notes[known], unlabelled.targets[known]))
        logger.info("annotator: the teacher annotated %d %s images", len(notes), self.unlabelled_split)

        per_epoch = cfg.optim.iterations_per_epoch or max(1, len(notes) // cfg.data.batch_size)  # for ramps

        def student_loss(p: Tensor, t: Tensor, it: int) -> tuple[Tensor, dict[str, float]]:
            return terms({"logits": p}, {"logits": t}, {}, {"epoch": (it - 1) / per_epoch, "step": it})

        results: dict[str, Any] = {"target": self.target, "iterations": iterations,
                                   "terms": [t.name for t in cfg.distill.terms]}
        train = self._split(ctx, cfg.data.train_split)
        for role, part, targets in (("student", unlabelled, notes), ("baseline", train, train.targets)):
            seed_everything(cfg.experiment.seed)  # the same initial weights for both
            info = _regressor_info(cfg, cfg.student.net, cfg.student.net_params, self.target)
            net = info.build()
            fit = self._fit(ctx, net, part, targets, student_loss, iterations, role)
            _save_regressor(ctx.out / role, info, net, iterations, role="student")
            results[role] = {"net": cfg.student.net, "n_train": len(targets), "trained_on": part.split,
                             **_scores(predict_regressor(net, test.images, ctx.device), test.targets), **fit}
        results["teacher"] = {**teacher_info, **_scores(predict_regressor(teacher, test.images, ctx.device),
                                                        test.targets)}
        results["annotations"] = annotations
        results["gain_ccc"] = round(results["student"]["ccc"] - results["baseline"]["ccc"], 5)
        results["test_n"] = len(test.targets)
        logger.info("annotator: test CCC teacher %.3f, annotator-trained student %.3f, baseline %.3f",
                    results["teacher"]["ccc"], results["student"]["ccc"], results["baseline"]["ccc"])
        return results
