# SPDX-License-Identifier: Apache-2.0
"""Self-distillation over generations with ground-truth weighting (Borup & Andersen, "Even your Teacher Needs
Guidance: Ground-Truth Targets Dampen Regularization Imposed by Self-Distillation", NeurIPS 2021; code
``Kennethborup/self_distillation``).

Generation 0 fits the labels ``y``; generation ``t >= 1`` is a fresh model fitted to ``alpha * y + (1 - alpha) *
f_{t-1}(X)``, the previous generation's predictions mixed with the ground truth.

- **Kernel ridge regression** (the paper's analysis, :func:`krr_self_distill`): with ridge ``lam`` each generation
  is ``c_t = (K + lam I)^-1 (alpha y + (1 - alpha) K c_{t-1})``; the iteration converges to the closed form
  :func:`krr_limit` ``f_inf = alpha K_q (alpha K + lam I)^-1 y``, plain ridge with ``lam / alpha`` (so ``alpha = 1``
  is ridge, and ground truth keeps the iteration from collapsing to zero as pure self-distillation does).
- **Step-optimal weight** (:func:`step_optimal_alpha`): the ``alpha`` minimising ``||alpha f[y] + (1 - alpha)
  f[yhat] - y_ref||^2`` is ``<f[y] - f[yhat], y_ref - f[yhat]> / ||f[y] - f[yhat]||^2``, with ``f[y]`` the fit to the
  labels and ``f[yhat]`` the fit to the previous generation's predictions; ``y_ref`` is held-out truth (validation
  labels here) [recon].
- **Deep networks** (:class:`BorupSelfDistillation`, ``distill.strategy: borup_sd``): generation 0 trains the
  student on ``distill.terms`` (usually ``ce``); generation ``t >= 1`` trains a fresh student (same architecture,
  same seed) on :func:`borup_loss` ``alpha MSE(softmax(s), onehot(y)) + (1 - alpha) MSE(softmax(s),
  softmax(f_{t-1}))`` with the previous generation (its best checkpoint) as a frozen network. ``alpha: auto``
  estimates ``alpha*`` per generation with a kernel-ridge proxy [recon] (:func:`proxy_alpha`): a linear kernel on
  the previous generation's pooled features of the training split, ``f[y]`` and ``f[yhat]`` its ridge fits to the
  one-hot labels and to the previous softmax, evaluated on the validation split against its one-hot labels, clipped
  to ``[0, 1]``.

**When ``alpha: auto`` gives 0 (or 1).** The unclipped estimate is a projection, so it leaves ``[0, 1]`` whenever the
best mix on the reference lies outside it; the clip then picks the nearest end, and a warning says so (with the
previous generation's accuracy on the training labels and on validation). In the kernel-ridge analysis ``f[yhat]``
is the more shrunk fit, so ``alpha* < 0`` means the step wants more regularisation than even pure
self-distillation gives (an under-regularised fit; ``alpha* > 1``: an over-regularised one, the labels alone are
best). With deep networks the usual cause of 0 is a previous generation that memorised a noisy training split: on
SynthLesion-2D (``synth_lesion_borup_sd.yaml``, 20 % label noise, 1000 training images) generation 0 (``kd_cnn``)
reaches 1.00 accuracy on the noisy training labels after the preset's 300 iterations (0.97 after 150) and about
0.26 on validation. Its pooled features then separate the training labels but say little about validation, every
ridge fit on them does worse there than a constant, and the fit to the previous softmax, a shrunk copy of the label
fit (``f[yhat] ~ beta f[y] + (1 - beta) c``), wins: without any signal the estimate is ``-beta / (1 - beta)``, which
tends to minus infinity as the softmax becomes one-hot (-1.3 after 150 iterations, -65 after 300), clipped to 0.
That is the estimator answering its question, not a sign error (``alpha*`` matches a grid search and the
kernel-ridge step optimum); the two fits then differ little, so the choice matters little to the proxy either.
To keep the ground truth in such runs set a fixed ``alpha`` (paper 0.6). A previous generation whose softmax
equals the labels exactly gives ``f[y] = f[yhat]``, where every alpha fits the same: 1.

Run folder: generation ``t < G`` in ``RUN/generations/g<t>`` (each a normal run), the last one (``G`` =
``generations``) in ``RUN`` itself; ``summary.json`` ``strategy.generations`` holds each generation's alpha and
best-checkpoint validation/test accuracy. The strategy is teacher-free: an experiment teacher is ignored (with a
warning), so generation 0 must use teacher-free terms. Classification only.

Paper defaults: ``alpha = 0.6``, 5 generations, lr 1e-4, 75 epochs, batch 16 (the last three are the YAML's
``optim`` and ``data`` sections).

Example:
    >>> import torch
    >>> x = torch.linspace(-1, 1, 8, dtype=torch.float64)[:, None]
    >>> K, y = torch.exp(-(x - x.T) ** 2), torch.sin(3 * x)
    >>> f = krr_self_distill(K, y, alpha=0.6, lam=0.1, generations=60)
    >>> bool(torch.allclose(f, krr_limit(K, y, alpha=0.6, lam=0.1), atol=1e-12))
    True
    >>> step_optimal_alpha(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, 0.0]))
    0.5
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medkd.distill.registry import register_strategy
from medkd.distill.strategy import Strategy, StrategyContext
from medkd.errors import ConfigError

if TYPE_CHECKING:
    from medkd.distill.task import DistillTask

__all__ = [
    "BorupSelfDistillation", "borup_loss", "clip_alpha", "feature_kernel", "krr_limit", "krr_self_distill",
    "proxy_alpha", "step_optimal_alpha",
]

logger = logging.getLogger(__name__)

_REDUCTIONS = ("mean", "sum")


# ---------------------------------------------------------------------------------------------- kernel ridge


def _check_krr(K: Tensor, y: Tensor, lam: float, K_query: Tensor | None) -> None:
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (N, N) kernel matrix, got {tuple(K.shape)}")
    if y.ndim not in (1, 2) or y.shape[0] != K.shape[0]:
        raise ValueError(f"y must be (N,) or (N, C) with N = {K.shape[0]}, got {tuple(y.shape)}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    if K_query is not None and (K_query.ndim != 2 or K_query.shape[1] != K.shape[0]):
        raise ValueError(f"K_query must be (M, {K.shape[0]}), got {tuple(K_query.shape)}")


def krr_self_distill(K: Tensor, y: Tensor, alpha: float, lam: float, generations: int,
                     K_query: Tensor | None = None) -> Tensor:
    """Iterated kernel ridge self-distillation: the predictions of generation ``generations``.

    Generation 0 is ridge regression on ``y``: ``c_0 = (K + lam I)^-1 y``; generation ``t`` fits ``alpha y + (1 -
    alpha) K c_{t-1}`` (the labels mixed with the previous generation's training predictions) with the same ridge.

    Args:
        K: the training kernel ``(N, N)`` (symmetric positive semi-definite). y: targets ``(N,)`` or ``(N, C)``.
        alpha: the ground-truth weight in ``[0, 1]`` (1: every generation is plain ridge).
        lam: the ridge (> 0). generations: self-distillation steps after generation 0 (>= 0).
        K_query: ``(M, N)`` kernel between query and training points (default ``K``: training predictions).

    Returns:
        The predictions ``K_query c_T``, shaped like ``y`` with ``M`` rows.

    Raises:
        ValueError: bad shapes, ``alpha`` outside ``[0, 1]``, ``lam <= 0`` or ``generations < 0``.
    """
    _check_krr(K, y, lam, K_query)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if generations < 0:
        raise ValueError(f"generations must be >= 0, got {generations}")
    target = y if y.ndim == 2 else y[:, None]
    eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
    chol = torch.linalg.cholesky(K + lam * eye)
    coef = torch.cholesky_solve(target, chol)
    for _ in range(generations):
        coef = torch.cholesky_solve(alpha * target + (1.0 - alpha) * (K @ coef), chol)
    pred = (K if K_query is None else K_query) @ coef
    return pred if y.ndim == 2 else pred[:, 0]


def krr_limit(K: Tensor, y: Tensor, alpha: float, lam: float, K_query: Tensor | None = None) -> Tensor:
    """The limit of :func:`krr_self_distill` over generations: ``alpha K_q (alpha K + lam I)^-1 y``, i.e. ridge
    regression with ridge ``lam / alpha``.

    Args:
        K, y, lam, K_query: as for :func:`krr_self_distill`. alpha: the ground-truth weight in ``(0, 1]``.

    Raises:
        ValueError: bad shapes, ``alpha`` outside ``(0, 1]`` or ``lam <= 0``.

    Example:
        >>> import torch
        >>> K, y = torch.eye(2, dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> krr_limit(K, y, alpha=0.5, lam=0.5).tolist()  # ridge with lam 1: y / 2
        [0.5, 1.0]
    """
    _check_krr(K, y, lam, K_query)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1] for the limit, got {alpha}")
    eye = torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
    target = y if y.ndim == 2 else y[:, None]
    coef = alpha * torch.linalg.solve(alpha * K + lam * eye, target)
    pred = (K if K_query is None else K_query) @ coef
    return pred if y.ndim == 2 else pred[:, 0]


def step_optimal_alpha(f_y: Tensor, f_yhat: Tensor, y_ref: Tensor) -> float:
    """The ``alpha`` minimising ``||alpha f_y + (1 - alpha) f_yhat - y_ref||^2`` (unclipped).

    ``<f_y - f_yhat, y_ref - f_yhat> / ||f_y - f_yhat||^2`` over all entries; 1.0 (the ground truth) when ``f_y ==
    f_yhat``, where every ``alpha`` gives the same fit.

    Args:
        f_y: the fit to the labels. f_yhat: the fit to the previous generation's predictions. y_ref: the reference
            targets. Any one shape, shared by the three.

    Raises:
        ValueError: the shapes differ.
    """
    if not f_y.shape == f_yhat.shape == y_ref.shape:
        raise ValueError(f"f_y, f_yhat and y_ref must have one shape, got {tuple(f_y.shape)}, "
                         f"{tuple(f_yhat.shape)}, {tuple(y_ref.shape)}")
    d = (f_y - f_yhat).double().flatten()
    r = (y_ref - f_yhat).double().flatten()
    denom = float(d @ d)
    return float(d @ r) / denom if denom > 0 else 1.0


def feature_kernel(train: Tensor, query: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Linear kernels (float64) on features standardised with the training mean and deviation, plus a bias: ``K =
    (Z Z^T) / d + 1`` between training rows and ``K_q`` between query and training rows [recon].

    Args:
        train: training features ``(N, *)`` (flattened per row). query: query features ``(M, *)`` or None.

    Returns:
        ``K`` ``(N, N)`` and ``K_q`` ``(M, N)`` (None without ``query``).
    """
    x = train.flatten(1).double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-6)
    z = (x - mean) / std
    scale = z.shape[1]
    K = z @ z.T / scale + 1.0
    if query is None:
        return K, None
    zq = (query.flatten(1).double() - mean) / std
    return K, zq @ z.T / scale + 1.0


def proxy_alpha(train_features: Tensor, train_onehot: Tensor, train_soft: Tensor, val_features: Tensor,
                val_onehot: Tensor, ridge: float = 1e-2) -> float:
    """The step-optimal ``alpha`` of a kernel-ridge proxy of the next generation [recon] (unclipped).

    ``f[y]`` and ``f[yhat]`` are ridge fits (:func:`feature_kernel`, ridge ``ridge`` times the mean diagonal of
    ``K``) to the training one-hot labels and to the previous generation's training softmax, evaluated on the
    validation features; ``y_ref`` is the validation one-hot labels (:func:`step_optimal_alpha`).

    Args:
        train_features: ``(N, *)``. train_onehot / train_soft: ``(N, C)``. val_features: ``(M, *)``.
        val_onehot: ``(M, C)``. ridge: relative ridge (> 0).

    Raises:
        ValueError: mismatched rows or ``ridge <= 0``.
    """
    if not ridge > 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    if not (len(train_features) == len(train_onehot) == len(train_soft) and len(val_features) == len(val_onehot)):
        raise ValueError("features and targets must have the same number of rows per split")
    K, Kq = feature_kernel(train_features, val_features)
    lam = ridge * float(K.diagonal().mean())
    targets = torch.cat([train_onehot.double(), train_soft.double()], dim=1)
    fits = krr_limit(K, targets, 1.0, lam, Kq)
    c = train_onehot.shape[1]
    return step_optimal_alpha(fits[:, :c], fits[:, c:], val_onehot.double())


def clip_alpha(raw: float, generation: int = 0, train_accuracy: float | None = None,
               val_accuracy: float | None = None) -> float:
    """``raw`` (an unclipped ``alpha*``) clipped to ``[0, 1]``; a clipped value is logged as a warning with its usual
    cause (module docstring, "When alpha: auto gives 0").

    Args:
        raw: the estimate. generation: the generation it is for (logged). train_accuracy / val_accuracy: the
            previous generation's accuracy on the training labels and on validation (logged when given).

    Example:
        >>> clip_alpha(0.25), clip_alpha(-1.3), clip_alpha(1.7)
        (0.25, 0.0, 1.0)
    """
    alpha = min(max(raw, 0.0), 1.0)
    if alpha == raw:
        return alpha
    seen = ""
    if train_accuracy is not None and val_accuracy is not None:
        seen = (f" (the previous generation's accuracy: {train_accuracy:.3f} on the training labels, "
                f"{val_accuracy:.3f} on validation)")
    if raw < 0.0:
        logger.warning(
            "borup_sd generation %d: alpha* = %.4f < 0, clipped to 0 (pure self-distillation, no ground truth): on "
            "validation the previous generation's outputs beat the labels even at alpha 0%s. Usual cause: it "
            "memorised the training split, so fits on its features generalise worse than its softer outputs. This is "
            "the estimator's answer, not an error; set a fixed strategy_params.alpha (paper 0.6) to keep the ground "
            "truth", generation, raw, seen)
    else:
        logger.warning(
            "borup_sd generation %d: alpha* = %.4f > 1, clipped to 1 (the labels alone): on validation the labels "
            "beat every mix with the previous generation's outputs%s", generation, raw, seen)
    return alpha


# ---------------------------------------------------------------------------------------------- deep networks


def borup_loss(student_logits: Tensor, previous_logits: Tensor | None, label: Tensor, alpha: float,
               reduction: str = "mean") -> tuple[Tensor, Tensor, Tensor]:
    """``alpha MSE(softmax(s), onehot(y)) + (1 - alpha) MSE(softmax(s), softmax(prev))`` and its two parts.

    Args:
        student_logits: ``(N, C)``. previous_logits: the previous generation's ``(N, C)`` (detached here; None
            only with ``alpha = 1``). label: class indices ``(N,)``. alpha: the ground-truth weight in ``[0, 1]``.
        reduction: ``mean`` over every entry (``nn.MSELoss``, the authors' code) or ``sum`` over classes, mean over
            samples (C times larger: SGD at classification learning rates).

    Returns:
        ``(total, gt_mse, previous_mse)`` (``previous_mse`` is 0 without ``previous_logits``).

    Raises:
        ValueError: an unknown reduction, or no previous logits with ``alpha < 1``.

    Example:
        >>> import torch
        >>> s = torch.tensor([[0.0, 0.0]])
        >>> [round(float(v), 4) for v in borup_loss(s, s, torch.tensor([0]), 0.5)]
        [0.125, 0.25, 0.0]
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    p = F.softmax(student_logits.float(), dim=1)
    onehot = F.one_hot(label.long(), p.shape[1]).to(p.dtype)

    def mse(target: Tensor) -> Tensor:
        sq = (p - target).square()
        return sq.mean() if reduction == "mean" else sq.sum(1).mean()

    gt = mse(onehot)
    if previous_logits is None:
        if alpha < 1.0:
            raise ValueError("previous_logits are needed when alpha < 1")
        return gt, gt, gt.detach() * 0.0
    prev = mse(F.softmax(previous_logits.detach().float(), dim=1))
    return alpha * gt + (1.0 - alpha) * prev, gt, prev


def _feature_module(net: nn.Module, name: str) -> tuple[str, str]:
    """The module to tap and its side: ``name`` (output), else ``pool`` (output), else the last Linear's input."""
    if name:
        return name, "output"
    modules = dict(net.named_modules())
    if "pool" in modules:
        return "pool", "output"
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linear:
        raise ConfigError("borup_sd alpha=auto: the network has no 'pool' module and no Linear layer; name the "
                          "feature module with strategy_params.feature")
    return linear[-1], "input"


def _features(net: nn.Module, images: Tensor, device: torch.device, name: str, io: str,
              batch: int = 256) -> tuple[Tensor, Tensor]:
    """Flattened features ``(N, D)`` and logits ``(N, C)`` of ``net`` (eval mode, no grad), on the CPU."""
    from medkd.distill.hooks import FeatureTap, tap_key

    feats, logits = [], []
    was = net.training
    net.eval()
    with FeatureTap(net, [name], io=io, detach=True) as tap, torch.inference_mode():
        for i in range(0, len(images), batch):
            logits.append(net(images[i:i + batch].to(device)).float().cpu())
            feats.append(tap.pop()[tap_key(name)].flatten(1).float().cpu())
    net.train(was)
    return torch.cat(feats), torch.cat(logits)


@register_strategy("borup_sd")
class BorupSelfDistillation(Strategy):
    """Self-distillation over generations with ground-truth weighting (Borup & Andersen, NeurIPS'21).

    Args:
        alpha: the ground-truth weight in ``[0, 1]`` (paper 0.6), or ``"auto"``: per generation the step-optimal
            weight of the kernel-ridge proxy (:func:`proxy_alpha`), clipped to ``[0, 1]`` [recon] (:func:`clip_alpha`;
            0 after a previous generation that memorised noisy training labels, see the module docstring).
        generations: self-distillation generations after generation 0 (paper 5; ``generations + 1`` trainings).
        reduction: the MSE's reduction (:func:`borup_loss`): ``mean`` (the authors') or ``sum``.
        ridge: the proxy's relative ridge (``alpha: auto``).
        feature: the module whose output feeds the proxy's kernel (default ``pool``, else the last Linear's input).
        proxy_samples: at most this many training images for the proxy's kernel (a seeded random subset).

    Raises:
        ConfigError: a bad value (allowed values named); at run time, terms that need a teacher.

    Example:
        >>> strategy = BorupSelfDistillation(alpha="auto", generations=2)
        >>> strategy.alpha, strategy.generations
        ('auto', 2)
    """

    requires_teacher: ClassVar[bool] = False
    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})

    def __init__(self, alpha: float | str = 0.6, generations: int = 5, reduction: str = "mean", ridge: float = 1e-2,
                 feature: str = "", proxy_samples: int = 2000) -> None:
        if isinstance(alpha, str):
            if alpha != "auto":
                raise ConfigError(f"borup_sd alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
        elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"borup_sd alpha must be a number in [0, 1] or 'auto', got {alpha!r}")
        if isinstance(generations, bool) or not isinstance(generations, int) or generations < 0:
            raise ConfigError(f"borup_sd generations must be an integer >= 0, got {generations!r}")
        if reduction not in _REDUCTIONS:
            raise ConfigError(f"borup_sd reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
        if not (isinstance(ridge, (int, float)) and ridge > 0):
            raise ConfigError(f"borup_sd ridge must be > 0, got {ridge!r}")
        if not (isinstance(proxy_samples, int) and proxy_samples >= 2):
            raise ConfigError(f"borup_sd proxy_samples must be an integer >= 2, got {proxy_samples!r}")
        self.alpha = alpha if isinstance(alpha, str) else float(alpha)
        self.generations, self.reduction = generations, reduction
        self.ridge, self.feature, self.proxy_samples = float(ridge), feature, proxy_samples
        self._alpha = 1.0  # the weight of the generation being trained
        self._results: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, ctx: StrategyContext) -> dict[str, Any]:
        """Train generations ``0 .. G`` (see the module docstring); return the last one's summary."""
        from medkd.distill.networks import supervised_terms
        from medkd.distill.teachers import load_teacher
        from medkd.distill.terms import WeightedTerms

        if ctx.teacher is not None:
            logger.warning("borup_sd is teacher-free: ignoring the experiment's teacher %s", ctx.teacher.source)
        needy = [name for name, req in WeightedTerms(ctx.cfg.distill.terms).requirements().items() if req.teacher]
        if needy:
            raise ConfigError(f"borup_sd is teacher-free: generation 0 trains on distill.terms without a teacher, "
                              f"but term(s) {', '.join(map(repr, needy))} need teacher outputs; use e.g. "
                              "distill.terms=[{name: ce, plugin: ce}]")
        self._results = []
        previous: nn.Module | None = None
        summary: dict[str, Any] = {}
        for t in range(self.generations + 1):
            out = ctx.out if t == self.generations else ctx.out / "generations" / f"g{t}"
            entry: dict[str, Any] = {"generation": t, "alpha": None,
                                     "run": str(out.relative_to(ctx.out)) if out != ctx.out else "."}
            if previous is None:
                summary = ctx.train(out=out, teacher=None)
            else:
                self._alpha = self._alpha_for(ctx, previous, entry)
                entry["alpha"] = self._alpha
                summary = ctx.train(out=out, teacher=previous, terms=supervised_terms(ctx.cfg.task), hooks=self)
            best = summary.get("best", {})
            entry["val_accuracy"] = best.get("val", {}).get("accuracy")
            entry["test_accuracy"] = best.get("test", {}).get("accuracy")
            self._results.append(entry)
            logger.info("borup_sd generation %d (alpha %s): val accuracy %s", t, entry["alpha"], entry["val_accuracy"])
            if t < self.generations:
                previous = load_teacher(out, ctx.device).network
        return summary

    def _alpha_for(self, ctx: StrategyContext, previous: nn.Module, entry: dict[str, Any]) -> float:
        """This generation's alpha: the fixed one, or the clipped proxy estimate (logged, raw value in ``entry``)."""
        if self.alpha != "auto":
            return float(self.alpha)
        data, cfg = ctx.data, ctx.cfg
        train_x, train_y, _ = data.tensors(cfg.data.train_split)
        val_x, val_y, _ = data.tensors(cfg.data.val_split)
        if len(train_y) > self.proxy_samples:
            g = torch.Generator().manual_seed(cfg.experiment.seed)
            keep = torch.randperm(len(train_y), generator=g)[:self.proxy_samples]
            train_x, train_y = train_x[keep], train_y[keep]
        name, io = _feature_module(previous, self.feature)
        train_f, train_logits = _features(previous, train_x, ctx.device, name, io)
        val_f, val_logits = _features(previous, val_x, ctx.device, name, io)
        c = data.num_classes
        raw = proxy_alpha(train_f, F.one_hot(train_y, c), F.softmax(train_logits, dim=1), val_f,
                          F.one_hot(val_y, c), self.ridge)
        alpha = clip_alpha(raw, entry["generation"], float((train_logits.argmax(1) == train_y).float().mean()),
                           float((val_logits.argmax(1) == val_y).float().mean()))
        entry["alpha_raw"] = raw
        logger.info("borup_sd generation %d: proxy alpha* %.4f (raw %.4f, features %s %s)", entry["generation"],
                    alpha, raw, name, io)
        return alpha

    def train_step(self, task: DistillTask, batch: dict[str, Any], iteration: int,
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        """Generation ``t >= 1``: :func:`borup_loss` against the frozen previous generation (the task's teacher)."""
        _, logs = task.step_loss(batch, iteration)  # the forwards (student, previous generation); CE only logged
        assert task.last is not None
        total, gt, prev = borup_loss(task.last.student["logits"], task.last.teacher["logits"],
                                     task.last.batch["label"], self._alpha, self.reduction)
        return total, {"borup/gt_mse": float(gt.detach()), "borup/prev_mse": float(prev.detach()),
                       "borup/alpha": self._alpha, "ce": logs.get("ce/raw", float("nan"))}

    def summary(self) -> dict[str, Any]:
        """``generations``: per generation its alpha (None for generation 0), best-checkpoint accuracies, folder."""
        return {"generations": list(self._results), "alphas": [r["alpha"] for r in self._results[1:]]}
