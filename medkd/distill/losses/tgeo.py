# SPDX-License-Identifier: Apache-2.0
"""Sample-wise mixing of KD and cross-entropy learned from the teacher-student-label geometry (Hu et al., "Less
or More From Teacher: Exploiting Trilateral Geometry for Knowledge Distillation", ICLR 2024, TGeo-KD). The paper's
bilevel solver is reconstructed here, not taken from code.

``tgeo = mean_i [alpha_i * KD_i + (1 - alpha_i) * CE_i]`` over samples (voxels for dense logits, ``ignore_index``
voxels dropped), with ``KD_i = T^2 * KL(p_t,i || p_s,i)`` at temperature T and ``CE_i`` the cross-entropy with the
label. ``alpha_i = sigmoid(MLP(r_i))``, where ``r_i`` concatenates (all at T = 1, detached) the student's
probabilities S, the teacher's T, the one-hot label G, the edges ``S - T``, ``S - G``, ``T - G`` and ``T̄_y``, a
running class mean of the teacher's probabilities (an EMA buffer updated from the labelled samples in training).

The MLP learns only from a validation loss (bilevel): in :meth:`TGeoLoss.forward` alpha is computed without
gradient, and :meth:`TGeoLoss.meta_step` unrolls one student step ``theta' = theta - lr * grad L_train(alpha)``
(``torch.func.functional_call``, ``create_graph=True``), takes the student's cross-entropy at ``theta'`` on a
validation batch and steps the MLP's own Adam. The MLP and that optimiser are kept *outside* the module's
parameters (a plain holder attribute, saved through the module's extra state): ``loss.parameters()``, which the
runner trains with the student, does not include them. ``constant_alpha`` replaces the MLP by a fixed mix.

Example:
    >>> import torch
    >>> s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    >>> loss = TGeoLoss(num_classes=3)
    >>> list(loss.parameters()), sum(p.numel() for p in loss.meta_parameters())
    ([], 1473)
    >>> out = TGeoLoss(constant_alpha=0.0)({"logits": s}, {"logits": t}, {"label": y})
    >>> round(float(out["tgeo"]), 5) == round(float(torch.nn.functional.cross_entropy(s, y)), 5)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, as_rows, logit_rows, mean_or_zero, tempered_kl
from medkd.distill.registry import register_loss

__all__ = ["TGeoLoss", "geometry_features"]

#: how many blocks of C values make up r_i (S, T, G, S-T, S-G, T-G, T̄_y)
_BLOCKS = 7


def geometry_features(student: Tensor, teacher: Tensor, label: Tensor, class_mean: Tensor) -> Tensor:
    """TGeo-KD's ``r_i``: ``[S, T, G, S-T, S-G, T-G, T̄_y]``, ``(N, 7C)``, from logits ``(N, C)`` (detached).

    Args:
        student, teacher: logits ``(N, C)``. label: ``(N,)`` class indices. class_mean: ``(C, C)``, row ``c`` the
            running mean of the teacher's probabilities over samples of class ``c``.
    """
    p_s = F.softmax(student.detach(), dim=1)
    p_t = F.softmax(teacher.detach(), dim=1)
    g = F.one_hot(label, student.shape[1]).to(p_s.dtype)
    return torch.cat([p_s, p_t, g, p_s - p_t, p_s - g, p_t - g, class_mean.to(p_s)[label]], dim=1)


def _as_logits(out: Any) -> Tensor:
    """A network's logits from its output: a tensor, a dict's ``"logits"`` or a tuple's first item."""
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    raise TypeError(f"cannot read logits from a student output of type {type(out).__name__}")


class _MetaNet:
    """The alpha-MLP and its Adam, held outside ``nn.Module`` registration (not trained by the student's optimiser).
    """

    def __init__(self, num_classes: int, hidden: int, lr: float) -> None:
        self.mlp = nn.Sequential(nn.Linear(_BLOCKS * num_classes, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.lr = lr
        self.optimizer: torch.optim.Adam | None = None

    def to(self, device: torch.device) -> None:
        if next(self.mlp.parameters()).device == device:
            return
        self.mlp.to(device)
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                for key, value in state.items():
                    if isinstance(value, Tensor) and value.ndim > 0:
                        state[key] = value.to(device)

    def adam(self) -> torch.optim.Adam:
        if self.optimizer is None:
            self.optimizer = torch.optim.Adam(self.mlp.parameters(), lr=self.lr)
        return self.optimizer


@register_loss("tgeo")
class TGeoLoss(DistillLoss):
    """TGeo-KD: a per-sample (per-voxel) learned mix of KD and CE, the mixing MLP trained bilevel.

    Args:
        num_classes: C; None: taken from the logits at the first forward (pass it to restore a checkpoint into a
            fresh loss).
        hidden: width of the MLP's hidden layer (64).
        meta_lr: learning rate of the MLP's Adam (1e-3).
        temperature: T of the KD term (4).
        constant_alpha: a fixed alpha in [0, 1] instead of the MLP (no bilevel step).
        momentum: EMA momentum of the running class mean T̄ (0.9).
        ignore_index: label value of voxels left out.

    Raises:
        ValueError: a non-positive temperature, hidden, meta_lr or num_classes; constant_alpha outside [0, 1];
            momentum outside [0, 1).
    """

    requires = Requires(student=("logits",), teacher=("logits",), batch=("label",))

    class_mean: Tensor | None
    class_seen: Tensor | None

    def __init__(self, num_classes: int | None = None, hidden: int = 64, meta_lr: float = 1e-3,
                 temperature: float = 4.0, constant_alpha: float | None = None, momentum: float = 0.9,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if int(hidden) != hidden or hidden < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden}")
        if not meta_lr > 0:
            raise ValueError(f"meta_lr must be > 0, got {meta_lr}")
        if num_classes is not None and (int(num_classes) != num_classes or num_classes < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes}")
        if constant_alpha is not None and not 0.0 <= constant_alpha <= 1.0:
            raise ValueError(f"constant_alpha must lie in [0, 1] (or be None to learn alpha), got {constant_alpha}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.hidden, self.meta_lr, self.temperature = int(hidden), float(meta_lr), float(temperature)
        self.constant_alpha = None if constant_alpha is None else float(constant_alpha)
        self.momentum, self.ignore_index = float(momentum), ignore_index
        self.num_classes: int | None = None
        self._meta: _MetaNet | None = None
        self.register_buffer("class_mean", None)
        self.register_buffer("class_seen", None)
        if num_classes is not None:
            self._build(int(num_classes), torch.device("cpu"))

    def _build(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.class_mean = torch.full((num_classes, num_classes), 1.0 / num_classes, device=device)
        self.class_seen = torch.zeros(num_classes, dtype=torch.bool, device=device)
        if self.constant_alpha is None:
            self._meta = _MetaNet(num_classes, self.hidden, self.meta_lr)
            self._meta.to(device)

    def _ready(self, num_classes: int, device: torch.device) -> None:
        if self.num_classes is None:
            self._build(num_classes, device)
        elif num_classes != self.num_classes:
            raise ValueError(f"tgeo was built for {self.num_classes} classes, the logits have {num_classes}")
        if self._meta is not None:
            self._meta.to(device)

    @property
    def mlp(self) -> nn.Module | None:
        """The alpha-MLP (None with ``constant_alpha`` or before the first batch when ``num_classes`` is None)."""
        return None if self._meta is None else self._meta.mlp

    def meta_parameters(self) -> Iterator[nn.Parameter]:
        """The MLP's parameters (trained by :meth:`meta_step`, never by the student's optimiser)."""
        return iter(()) if self._meta is None else self._meta.mlp.parameters()

    def alpha(self, student: Tensor, teacher: Tensor, label: Tensor) -> Tensor:
        """alpha_i ``(N,)`` for logit rows ``(N, C)`` and labels ``(N,)``: ``constant_alpha`` or
        ``sigmoid(MLP(r_i))`` (differentiable in the MLP's parameters)."""
        if self.constant_alpha is not None:
            return torch.full_like(student[:, 0], self.constant_alpha).detach()
        self._ready(student.shape[1], student.device)
        assert self._meta is not None and self.class_mean is not None
        r = geometry_features(student, teacher, label, self.class_mean)
        return torch.sigmoid(self._meta.mlp(r.to(next(self._meta.mlp.parameters()).dtype))).squeeze(1).to(student)

    @torch.no_grad()
    def update_class_mean(self, teacher: Tensor, label: Tensor) -> None:
        """EMA of the teacher's probabilities per class present in ``label`` (the first sighting sets it)."""
        self._ready(teacher.shape[1], teacher.device)
        assert self.class_mean is not None and self.class_seen is not None
        onehot = F.one_hot(label, teacher.shape[1]).to(self.class_mean.dtype)
        counts = onehot.sum(0)
        present = counts > 0
        batch_mean = (onehot.T @ F.softmax(teacher.float(), dim=1).to(onehot)) / counts.clamp_min(1)[:, None]
        ema = self.momentum * self.class_mean + (1.0 - self.momentum) * batch_mean
        new = torch.where(self.class_seen[:, None], ema, batch_mean)
        self.class_mean.copy_(torch.where(present[:, None], new, self.class_mean))
        self.class_seen |= present

    def _mixed(self, student: Tensor, teacher: Tensor, label: Tensor, alpha: Tensor) -> Tensor:
        kd = self.temperature**2 * tempered_kl(student, teacher, self.temperature)
        ce = F.cross_entropy(student, label, reduction="none")
        return mean_or_zero(alpha * kd + (1.0 - alpha) * ce, student)

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        rows = logit_rows(student["logits"], teacher["logits"], batch["label"], self.ignore_index)
        s, t, y = rows.student, rows.teacher.detach(), rows.label
        assert y is not None
        with torch.no_grad():  # the MLP learns from the validation loss only (meta_step)
            alpha = self.alpha(s, t, y)
        if self.training and y.numel():
            self.update_class_mean(t, y)
        return {"tgeo": self._mixed(s, t, y, alpha)}

    def meta_step(self, student: nn.Module, batch: Mapping[str, Any], teacher_logits: Tensor,
                  val_batch: Mapping[str, Any], lr: float) -> dict[str, float]:
        """One bilevel step of the alpha-MLP; the student's parameters, gradients and buffers are left as they are.

        ``theta' = theta - lr * grad_theta L_train(alpha)`` with ``L_train`` this loss on ``batch["image"]`` /
        ``batch["label"]`` and ``teacher_logits`` (alpha from the MLP, with gradient); the validation loss is the
        cross-entropy of the student at ``theta'`` on ``val_batch["image"]`` / ``val_batch["label"]``; its gradient
        reaches the MLP through ``theta'`` and the MLP's own Adam (created on the first call) takes one step.

        Args:
            student: the student network (its output: logits, a dict with ``"logits"`` or a tuple of them first).
            batch: the training batch. teacher_logits: the teacher's logits on ``batch["image"]``.
            val_batch: a labelled validation batch. lr: the student's learning rate for the unrolled step (>= 0).

        Returns:
            ``{"meta_train": L_train, "meta_val": L_val, "alpha_mean": mean alpha}`` (before the MLP's step).

        Raises:
            RuntimeError: ``constant_alpha`` is set (nothing to learn). ValueError: ``lr < 0``.
        """
        if self.constant_alpha is not None:
            raise RuntimeError("tgeo: meta_step needs the learned alpha, but constant_alpha is set")
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        params = {n: p for n, p in student.named_parameters() if p.requires_grad}
        buffers = {n: b.clone() for n, b in student.named_buffers()}  # BatchNorm statistics stay untouched
        logits = _as_logits(functional_call(student, (params, buffers), (batch["image"],)))
        rows = logit_rows(logits, teacher_logits.detach(), batch["label"], self.ignore_index)
        s, t, y = rows.student, rows.teacher, rows.label
        assert y is not None
        alpha = self.alpha(s, t, y)
        train = self._mixed(s, t, y, alpha)
        grads = torch.autograd.grad(train, list(params.values()), create_graph=True, allow_unused=True)
        fast = {n: p if g is None else p - lr * g for (n, p), g in zip(params.items(), grads)}
        val_logits = as_rows(_as_logits(functional_call(student, (fast, buffers), (val_batch["image"],))))
        val_label = val_batch["label"].reshape(-1).long()
        keep = val_label != self.ignore_index
        val = mean_or_zero(F.cross_entropy(val_logits[keep], val_label[keep], reduction="none"), val_logits)
        assert self._meta is not None
        mlp_params = list(self._meta.mlp.parameters())
        mlp_grads = torch.autograd.grad(val, mlp_params, allow_unused=True) if val.requires_grad else \
            [None] * len(mlp_params)
        optimizer = self._meta.adam()
        for p, g in zip(mlp_params, mlp_grads):
            p.grad = torch.zeros_like(p) if g is None else g.detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return {"meta_train": float(train.detach()), "meta_val": float(val.detach()),
                "alpha_mean": float(alpha.detach().mean()) if alpha.numel() else 0.0}

    def get_extra_state(self) -> dict[str, Any]:
        """The MLP's and its Adam's state (they are not registered parameters)."""
        if self._meta is None:
            return {}
        opt = self._meta.optimizer
        return {"mlp": self._meta.mlp.state_dict(), "optimizer": None if opt is None else opt.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        if not state or self.constant_alpha is not None:
            return
        if self._meta is None:
            in_features = state["mlp"]["0.weight"].shape[1]
            self._build(in_features // _BLOCKS, torch.device("cpu"))
        assert self._meta is not None
        self._meta.mlp.load_state_dict(state["mlp"])
        if state.get("optimizer") is not None:
            self._meta.adam().load_state_dict(state["optimizer"])

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # lazily sized buffers: allocate them so that a checkpoint loads into a loss built without num_classes
        key = prefix + "class_mean"
        if self.class_mean is None and key in state_dict:
            self._build(state_dict[key].shape[0], state_dict[key].device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
