# SPDX-License-Identifier: Apache-2.0
"""SALT: a frozen pixel-MAE teacher's token latents regressed by a masked student encoder, then a linear probe.

Li et al., "Rethinking JEPA: Compute-Efficient Video SSL with Frozen Teachers" (SALT, static-teacher asymmetric
latent training, arXiv 2509.24317): instead of V-JEPA's EMA teacher, a teacher is first trained by masked pixel
reconstruction and then frozen; the student learns to predict the frozen teacher's latents at masked positions.
Spec ``distillation_plugins.md`` §3.18 [abstract; 3p code]. Stages of :class:`SALT`:

1. **teacher** (``teacher_iterations``): a :class:`~medkd.nets.token_vit.TokenEncoder` sees the visible tokens of
   V-JEPA multi-block masks (:class:`~medkd.nets.token_vit.MultiBlockMasking`); a light
   :class:`~medkd.nets.token_vit.MaskedPredictor` decoder predicts the pixels of the masked patches (per-patch
   normalised as MAE's ``norm_pix_loss`` [recon]); MSE on masked patches only (:func:`pixel_loss`); no EMA. Then
   the teacher is frozen.
2. **student** (``student_iterations``): the student encoder sees the visible tokens, a predictor (depth
   ``predictor_depth``, width ``predictor_width``) regresses the frozen teacher's output tokens (of the whole,
   unmasked image) at the masked positions with L1 (:func:`latent_l1_loss`). Each mask group (V-JEPA: 8 blocks
   at scale 0.15, 2 at 0.7) is a separate prediction; the loss is their mean.
3. **linear probe**: the student encoder inside ``salt_vit`` (:func:`~medkd.nets.token_vit.salt_vit`) is frozen and
   only its ``head`` trains on the labelled training split with the experiment's terms (CE) and optimiser, as a
   normal run in ``RUN`` (``student.json`` rebuilds it). With ``random_baseline`` the same probe (same head
   initialisation, data order and optimiser) also trains on the student encoder's random initialisation, into
   ``RUN/random_probe``: the table's no-pretraining baseline. (Without it, get the baseline from a second run with
   ``teacher_iterations: 0, student_iterations: 0``.)

Stages 1-2 use the training split's images plus ``<data root>/<unlabelled>/*.png`` (SynthLesion-2D writes 4k) and
the images of any ``pretrain_splits`` (e.g. ``teacher_train``), labels unused, with AdamW (``lr``,
``weight_decay``), linear warm-up over the first 5 % then cosine decay [recon]. The trained encoders are saved in
``RUN/salt/`` (``teacher.pt``, ``student.pt``); ``--resume`` skips a stage whose file exists (a stage cut off
midway starts again). Paper defaults: predictor depth 12, width 384 (the parameters' defaults); the CPU preset
``apps/distill/synth_lesion_salt.yaml`` uses a 2-block, 64-wide predictor.

Example:
    >>> import torch
    >>> targets = torch.zeros(1, 4, 2)
    >>> float(latent_l1_loss(torch.ones(1, 2, 2), targets, torch.tensor([[1, 3]])))
    1.0
    >>> strategy = SALT(teacher_iterations=10, student_iterations=10, predictor_depth=2, predictor_width=64,
    ...                 predictor_heads=4)
    >>> summary = strategy.run(ctx)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from medkd.distill.registry import register_strategy
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.errors import ConfigError, DataError

if TYPE_CHECKING:
    from medkd.nets.token_vit import MultiBlockMasking, TokenEncoder

__all__ = ["SALT", "PretrainSchedule", "latent_l1_loss", "pixel_loss", "pretraining_images", "train_latent_student",
           "train_pixel_teacher"]

logger = logging.getLogger(__name__)

#: salt_vit keywords the strategy sets itself (the rest are the encoder's ``net_params``)
_SET_BY_DATA = ("in_channels", "num_classes", "spatial_dims")


def _gather(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def pixel_loss(pred: torch.Tensor, patches: torch.Tensor, masked: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """MAE reconstruction loss on masked patches only: mean squared error of ``pred`` ``(B, N_masked, P)`` against
    the pixels ``patches`` ``(B, N, P)`` at ``masked`` ``(B, N_masked)``.

    Args:
        norm_pix: standardise each target patch (mean 0, variance 1; MAE's ``norm_pix_loss``).

    Example:
        >>> patches = torch.arange(8.0).view(1, 4, 2)
        >>> float(pixel_loss(torch.zeros(1, 1, 2), patches, torch.tensor([[1]]), norm_pix=False))
        6.5
    """
    target = _gather(patches, masked)
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True, unbiased=False)
        target = (target - mean) / (var + 1e-6).sqrt()
    return F.mse_loss(pred, target)


def latent_l1_loss(pred: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """SALT's student loss: mean absolute error of ``pred`` ``(B, N_masked, D)`` against the teacher's tokens
    ``targets`` ``(B, N, D)`` at ``masked`` ``(B, N_masked)`` (the visible positions' targets play no part)."""
    return F.l1_loss(pred, _gather(targets, masked))


@dataclass(frozen=True, kw_only=True)
class PretrainSchedule:
    """One pretraining stage: ``iterations`` AdamW steps on random batches of ``batch_size`` images, ``lr`` with a
    linear warm-up over ``warmup`` (a fraction of the iterations) then cosine decay; masks drawn from ``seed`` and
    the iteration; ``device``."""

    iterations: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05
    seed: int = 0
    masking: MultiBlockMasking = field(default_factory=lambda: _masking())
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def lr_at(self, iteration: int) -> float:
        """The learning rate of 1-based ``iteration``."""
        warm = max(1, math.ceil(self.warmup * self.iterations))
        if iteration <= warm:
            return self.lr * iteration / warm
        progress = (iteration - warm) / max(1, self.iterations - warm)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * progress))

    def batch(self, images: torch.Tensor, iteration: int, stage: int) -> torch.Tensor:
        """The images of one step (drawn from the seed, the stage and the iteration), on the device."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + stage * 100_003 + iteration)
        index = torch.randint(0, len(images), (min(self.batch_size, len(images)),), generator=g)
        return images[index].to(self.device, non_blocking=True)

    def masks(self, batch: int, grid: Sequence[int], iteration: int, stage: int) -> list[Any]:
        """This step's mask groups, on the device."""
        seed = self.seed * 1_000_003 + stage * 100_003 + iteration + 7
        return [m.to(self.device) for m in self.masking(batch, grid, seed=seed)]


def _masking(**kwargs: Any) -> MultiBlockMasking:
    from medkd.nets.token_vit import MultiBlockMasking

    return MultiBlockMasking(**kwargs)


def _optimise(modules: Sequence[nn.Module], schedule: PretrainSchedule, step_loss: Any, stage: int,
              what: str) -> list[float]:
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    losses: list[float] = []
    every = max(1, schedule.iterations // 10)
    for iteration in range(1, schedule.iterations + 1):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(iteration)
        loss = step_loss(iteration, stage)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if iteration % every == 0 or iteration == schedule.iterations:
            logger.info("SALT %s %d/%d: loss %.4f", what, iteration, schedule.iterations, losses[-1])
    return losses


def train_pixel_teacher(encoder: TokenEncoder, decoder: nn.Module, images: torch.Tensor,
                        schedule: PretrainSchedule, *, norm_pix: bool = True) -> list[float]:
    """Stage 1: train ``encoder`` (visible tokens only) and the pixel ``decoder`` (a
    :class:`~medkd.nets.token_vit.MaskedPredictor` with ``out_dim = encoder.patch_dim``) to reconstruct the
    masked patches of ``images`` ``(N, C, *spatial)``; returns the loss of each iteration."""
    encoder.train()
    decoder.train()

    def step(iteration: int, stage: int) -> torch.Tensor:
        x = schedule.batch(images, iteration, stage)
        patches = encoder.patchify(x)
        losses = [pixel_loss(decoder(encoder(x, m.visible), m.visible, m.masked), patches, m.masked, norm_pix)
                  for m in schedule.masks(len(x), encoder.grid, iteration, stage)]
        return torch.stack(losses).mean()

    return _optimise([encoder, decoder], schedule, step, 1, "teacher")


def train_latent_student(student: TokenEncoder, predictor: nn.Module, teacher: TokenEncoder, images: torch.Tensor,
                         schedule: PretrainSchedule) -> list[float]:
    """Stage 2: the frozen ``teacher`` encodes each whole image; ``student`` encodes the visible tokens and
    ``predictor`` regresses the teacher's tokens at the masked positions (L1). The teacher is put in ``eval()``
    with ``requires_grad`` off and runs without autograd; returns the loss of each iteration.

    Raises:
        ValueError: teacher and student token grids differ.
    """
    if tuple(teacher.grid) != tuple(student.grid):
        raise ValueError(f"teacher and student token grids differ: {teacher.grid} vs {student.grid}")
    teacher.eval().requires_grad_(False)
    student.train()
    predictor.train()

    def step(iteration: int, stage: int) -> torch.Tensor:
        x = schedule.batch(images, iteration, stage)
        with torch.no_grad():
            targets = teacher(x)
        losses = [latent_l1_loss(predictor(student(x, m.visible), m.visible, m.masked), targets, m.masked)
                  for m in schedule.masks(len(x), student.grid, iteration, stage)]
        return torch.stack(losses).mean()

    return _optimise([student, predictor], schedule, step, 2, "student")


def pretraining_images(ctx: StrategyContext, unlabelled: str = "unlabelled",
                       splits: Sequence[str] = ()) -> torch.Tensor:
    """The training split's images, those of the other labelled ``splits`` (labels unused), plus
    ``<data root>/<unlabelled>/*.png`` (when that folder exists) resized to ``data.image_size`` as the labelled
    images are: ``(N, C, *image_size)``.

    Raises:
        DataError: a missing split, or an unlabelled image with another channel count than ``data.in_channels``,
            or unreadable.
    """
    from medkd.data.classification import load_image

    names = [ctx.cfg.data.train_split, *(s for s in splits if s != ctx.cfg.data.train_split)]
    images = torch.cat([ctx.data.tensors(name)[0] for name in names])
    folder = Path(ctx.data_root) / unlabelled if unlabelled else None
    files = sorted(folder.glob("*.png")) if folder is not None and folder.is_dir() else []
    if not files:
        return images
    size = tuple(images.shape[2:])
    extra = [torch.from_numpy(load_image(f)) for f in files]
    bad = [f for f, x in zip(files, extra) if x.shape[0] != images.shape[1] or x.ndim - 1 != len(size)]
    if bad:
        raise DataError(bad[0], f"unlabelled image of shape {tuple(extra[files.index(bad[0])].shape)}; the labelled "
                                f"images are {tuple(images.shape[1:])} (channels, *image_size)")
    shapes = {tuple(x.shape) for x in extra}
    mode = "bilinear" if len(size) == 2 else "trilinear"
    if len(shapes) == 1:
        stacked = torch.stack(extra)
        unl = stacked if tuple(stacked.shape[2:]) == size else F.interpolate(stacked, size=size, mode=mode,
                                                                             align_corners=False)
    else:
        unl = torch.cat([F.interpolate(x[None], size=size, mode=mode, align_corners=False) for x in extra])
    logger.info("SALT pretraining on %d training + %d unlabelled images (%s)", len(images), len(unl), folder)
    return torch.cat([images, unl.to(images.dtype)])


def _loss_summary(losses: list[float]) -> dict[str, float | None]:
    if not losses:
        return {"first": None, "last": None, "final_mean": None}
    tail = losses[-max(1, len(losses) // 10):]
    return {"first": round(losses[0], 6), "last": round(losses[-1], 6), "final_mean": round(sum(tail) / len(tail), 6)}


def _accuracy(summary: dict[str, Any]) -> float | None:
    best = summary.get("best", {})
    entry = best.get("test") or best.get("val") or {}
    return entry.get("accuracy")


def _salt_vit_keywords() -> set[str]:
    from medkd.nets.token_vit import salt_vit

    return set(inspect.signature(salt_vit).parameters) - set(_SET_BY_DATA)


@register_strategy("salt")
class SALT(Strategy):
    """SALT (Li et al., arXiv 2509.24317): frozen pixel-MAE teacher, masked latent prediction, then a linear probe.

    Args:
        teacher_iterations: stage 1 steps (0: the teacher stays at its random initialisation).
        student_iterations: stage 2 steps (0: no pretraining of the student encoder).
        net_params: the student encoder's ``salt_vit`` keywords (``dim``, ``depth``, ``heads``, ``patch``,
            ``mlp_ratio``, ``pos_embed``; ``image_size``/``frames`` come from ``data.image_size``), over
            ``student.net_params`` when ``student.net`` is ``salt_vit``.
        teacher_params: keywords overriding ``net_params`` for the teacher encoder (the grid must stay the same;
            SALT finds small teachers suffice).
        predictor_depth / predictor_width / predictor_heads: the stage-2 predictor (paper: 12, 384, 12).
        decoder_depth: blocks of the stage-1 pixel decoder (width ``predictor_width``) [recon].
        mask_blocks / mask_scales: blocks and block area of each mask group (V-JEPA: ``[8, 2]``, ``[0.15, 0.7]``).
        aspect_ratio / temporal_scale / min_keep: see :func:`~medkd.nets.token_vit.multiblock_mask`.
        norm_pix: per-patch standardised pixel targets in stage 1.
        lr / weight_decay / batch_size: stages 1-2 AdamW (``batch_size`` 0: ``data.batch_size``).
        unlabelled: folder of extra unlabelled PNGs under the data root ("" for none).
        pretrain_splits: further labelled splits whose images join stages 1-2, labels unused (``[teacher_train]``).
        random_baseline: also probe the untrained encoder (``RUN/random_probe``).
        finetune: train the whole ``salt_vit`` in stage 3 instead of the head only (not SALT's protocol; a
            pretrained-initialisation comparison for tasks a linear probe cannot separate).

    Raises:
        ConfigError: a bad value or an unknown ``net_params`` key (the allowed ones are listed).
    """

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def __init__(self, teacher_iterations: int = 500, student_iterations: int = 500,
                 net_params: dict[str, Any] | None = None, teacher_params: dict[str, Any] | None = None,
                 predictor_depth: int = 12, predictor_width: int = 384, predictor_heads: int = 12,
                 decoder_depth: int = 4, mask_blocks: Sequence[int] = (8, 2),
                 mask_scales: Sequence[float] = (0.15, 0.7),
                 aspect_ratio: Sequence[float] = (0.75, 1.5), temporal_scale: float = 1.0, min_keep: int = 4,
                 norm_pix: bool = True, lr: float = 1e-3, weight_decay: float = 0.05, batch_size: int = 0,
                 unlabelled: str = "unlabelled", pretrain_splits: Sequence[str] = (), random_baseline: bool = True,
                 finetune: bool = False) -> None:
        if teacher_iterations < 0 or student_iterations < 0 or batch_size < 0:
            raise ConfigError(f"teacher_iterations, student_iterations and batch_size must be >= 0, got "
                              f"{teacher_iterations}, {student_iterations}, {batch_size}")
        sizes = (predictor_depth, predictor_width, predictor_heads, decoder_depth)
        if min(sizes) < 1 or predictor_width % predictor_heads:
            raise ConfigError(f"predictor_depth, predictor_width, predictor_heads and decoder_depth must be positive "
                              f"and predictor_width divisible by predictor_heads; got {predictor_depth}, "
                              f"{predictor_width}, {predictor_heads}, {decoder_depth}")
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        allowed = _salt_vit_keywords()
        for name, params in (("net_params", net_params), ("teacher_params", teacher_params)):
            unknown = sorted(set(params or {}) - allowed)
            if unknown:
                raise ConfigError(f"strategy 'salt': {name} has unknown keys {unknown}; allowed: "
                                  f"{', '.join(sorted(allowed))}")
        try:
            self.masking = _masking(blocks=tuple(int(b) for b in mask_blocks),
                                    scales=tuple(float(s) for s in mask_scales),
                                    aspect_ratio=tuple(float(a) for a in aspect_ratio),
                                    temporal_scale=float(temporal_scale), min_keep=int(min_keep))
        except ValueError as err:
            raise ConfigError(f"strategy 'salt' masks: {err}") from None
        self.teacher_iterations, self.student_iterations = int(teacher_iterations), int(student_iterations)
        self.net_params, self.teacher_params = dict(net_params or {}), dict(teacher_params or {})
        self.predictor = {"depth": int(predictor_depth), "width": int(predictor_width), "heads": int(predictor_heads)}
        self.decoder_depth, self.norm_pix = int(decoder_depth), bool(norm_pix)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)
        self.unlabelled, self.random_baseline, self.finetune = str(unlabelled), bool(random_baseline), bool(finetune)
        if isinstance(pretrain_splits, str):
            raise ConfigError(f"strategy 'salt': pretrain_splits is a list of split names, got {pretrain_splits!r}")
        self.pretrain_splits = tuple(str(s) for s in pretrain_splits)
        self._summary: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------ pieces
    def student_net_params(self, ctx: StrategyContext) -> dict[str, Any]:
        """``salt_vit``'s ``net_params`` for this experiment: the encoder keywords plus the input size.

        Raises:
            ConfigError: ``image_size``/``frames`` that contradict ``data.image_size``.
        """
        params = dict(ctx.cfg.student.net_params) if ctx.cfg.student.net == "salt_vit" else {}
        params.update(self.net_params)
        size = [int(s) for s in ctx.cfg.data.image_size]
        derived: dict[str, Any] = {"image_size": size} if len(size) == 2 else {"frames": size[0],
                                                                               "image_size": size[1:]}
        for key, value in derived.items():
            given = params.get(key, value)
            given = [int(given)] * 2 if key == "image_size" and isinstance(given, int) else given
            if (list(given) if key == "image_size" else int(given)) != value:
                raise ConfigError(f"strategy 'salt': net_params {key}={params[key]} contradicts data.image_size "
                                  f"{size}")
            params[key] = value
        return params

    def _encoder(self, ctx: StrategyContext, params: dict[str, Any]) -> TokenEncoder:
        from medkd.nets.token_vit import TokenEncoder

        kwargs = {k: v for k, v in params.items() if k not in (*_SET_BY_DATA, "head_norm")}
        try:
            return TokenEncoder(ctx.cfg.data.in_channels, spatial_dims=len(ctx.cfg.data.image_size), **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"strategy 'salt': encoder {kwargs}: {err}") from None

    def _schedule(self, ctx: StrategyContext, iterations: int) -> PretrainSchedule:
        return PretrainSchedule(iterations=iterations, batch_size=self.batch_size or ctx.cfg.data.batch_size,
                                lr=self.lr, weight_decay=self.weight_decay, seed=ctx.cfg.experiment.seed,
                                masking=self.masking, device=ctx.device)

    def _probe_net(self, ctx: StrategyContext, params: dict[str, Any], encoder_state: dict[str, torch.Tensor],
                   head_state: dict[str, torch.Tensor]) -> nn.Module:
        net = ctx.build_student("salt_vit", params)
        net.encoder.load_state_dict(encoder_state)
        net.head.load_state_dict(head_state)
        net.encoder.requires_grad_(self.finetune)
        return net

    # ------------------------------------------------------------------------------------------------ run
    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        """Stages 1-3 (module docstring); returns the linear probe's run summary."""
        from medkd.nets import count_parameters
        from medkd.nets.token_vit import MaskedPredictor

        if ctx.cfg.student.net != "salt_vit":
            logger.warning("SALT trains a salt_vit student; student.net %r is not used", ctx.cfg.student.net)
        if ctx.teacher is not None:
            logger.warning("SALT trains its own frozen teacher; the experiment's teacher is not used")
        params = self.student_net_params(ctx)
        teacher_params = {**params, **self.teacher_params}
        seed = ctx.cfg.experiment.seed
        folder = ctx.out / "salt"
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        teacher = self._encoder(ctx, teacher_params).to(ctx.device)
        student = self._encoder(ctx, params).to(ctx.device)
        if tuple(teacher.grid) != tuple(student.grid):
            raise ConfigError(f"strategy 'salt': teacher_params change the token grid {student.grid} -> "
                              f"{teacher.grid}; keep patch (and tubelet) the same")
        width, depth, heads = self.predictor["width"], self.predictor["depth"], self.predictor["heads"]
        decoder = MaskedPredictor(teacher.dim, teacher.patch_dim, teacher.grid, width=width, depth=self.decoder_depth,
                                  heads=heads).to(ctx.device)
        predictor = MaskedPredictor(student.dim, teacher.dim, student.grid, width=width, depth=depth,
                                    heads=heads).to(ctx.device)
        initial = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        images = pretraining_images(ctx, self.unlabelled, self.pretrain_splits)
        seconds: dict[str, float] = {}

        t0 = time.perf_counter()
        teacher_losses = _stage(
            folder / "teacher.pt", teacher, ctx, lambda: train_pixel_teacher(
                teacher, decoder, images, self._schedule(ctx, self.teacher_iterations), norm_pix=self.norm_pix,
            ) if self.teacher_iterations else [], {"decoder": decoder, "net_params": teacher_params})
        seconds["teacher"] = round(time.perf_counter() - t0, 3)
        teacher.eval().requires_grad_(False)

        t0 = time.perf_counter()
        student_losses = _stage(
            folder / "student.pt", student, ctx, lambda: train_latent_student(
                student, predictor, teacher, images, self._schedule(ctx, self.student_iterations),
            ) if self.student_iterations else [], {"predictor": predictor, "net_params": params})
        seconds["student"] = round(time.perf_counter() - t0, 3)

        torch.manual_seed(seed + 1)
        head = ctx.build_student("salt_vit", params).head.state_dict()
        trained = {k: v.detach().cpu() for k, v in student.state_dict().items()}
        baseline = None
        if self.random_baseline:
            t0 = time.perf_counter()
            baseline = ctx.train(out=ctx.out / "random_probe", net="salt_vit", net_params=params, teacher=None,
                                 student=self._probe_net(ctx, params, initial, head))
            seconds["random_probe"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        result = ctx.train(net="salt_vit", net_params=params, teacher=None,
                           student=self._probe_net(ctx, params, trained, head))
        seconds["probe"] = round(time.perf_counter() - t0, 3)
        probe, random = _accuracy(result), _accuracy(baseline) if baseline is not None else None
        self._summary = {
            "teacher_loss": _loss_summary(teacher_losses),
            "student_loss": _loss_summary(student_losses),
            "probe_accuracy": probe,
            "random_probe_accuracy": random,
            "probe_gain": round(probe - random, 6) if probe is not None and random is not None else None,
            "probe": "finetune" if self.finetune else "linear",
            "probe_split": "test" if result.get("best", {}).get("test") else "val",
            "pretraining_images": len(images),
            "tokens": student.num_tokens,
            "sizes": {"teacher": count_parameters(teacher), "student_encoder": count_parameters(student),
                       "predictor": count_parameters(predictor), "decoder": count_parameters(decoder)},
            "seconds": seconds,
        }
        return result

    def summary(self) -> dict[str, Any]:
        """Stage losses (first, last, mean of the last 10 %), probe accuracy (best checkpoint, test split when
        evaluated) with and without pretraining, parameter counts (``sizes``) and seconds per stage (not under
        ``params``: the runner stores ``distill.strategy_params`` there)."""
        return dict(self._summary)


def _stage(file: Path, encoder: nn.Module, ctx: StrategyContext, train: Callable[[], list[float]],
           extra: dict[str, Any]) -> list[float]:
    """One pretraining stage: read back from ``file`` on ``--resume``, else ``train()`` and save ``encoder``, its
    losses and ``extra`` (modules saved as state dicts) to ``file``; returns the stage's losses."""
    if ctx.resume and file.is_file():
        saved = torch.load(file, map_location=ctx.device, weights_only=True)
        encoder.load_state_dict(saved["encoder"])
        return list(saved["losses"])
    losses = train()
    _save(file, {"encoder": encoder.state_dict(), "losses": losses,
                 **{k: v.state_dict() if isinstance(v, nn.Module) else v for k, v in extra.items()}})
    return losses


def _save(path: Path, payload: dict[str, Any]) -> None:
    from medkd.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
