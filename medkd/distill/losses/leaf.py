# SPDX-License-Identifier: Apache-2.0
"""LEAF embedding alignment (Vujanic & Rueckstiess, "LEAF: Knowledge Distillation of Text Embedding Models with
Teacher-Aligned Representations", arXiv 2509.12539): a small student learns to embed into the space of a large,
possibly black-box teacher, so that student queries can search an archive indexed with the teacher's embeddings.

No labels and no teacher internals: only the two embeddings. A trainable linear map ``W, b`` takes the pooled
student embedding ``x`` ``(B, D_s)`` to the teacher's width ``D_t`` and the loss is the squared error to the
teacher embedding ``y`` ``(B, D_t)``, **summed over the embedding dimensions and averaged over samples**::

    leaf = mean_i || y_i - (W x_i + b) ||_2^2

Embeddings are read as ``out["embedding"]`` when present, else the first ``"feat:*"`` tap in sorted key order;
an input ``(B, D, *spatial)`` (channels on dimension 1) is global-average-pooled to ``(B, D)``. The map is an
ordinary submodule of the loss (trained with the student, counted as extra parameters, not exported with it); when
``student_dim`` or ``teacher_dim`` is not given it is an ``nn.LazyLinear`` whose widths are read from the first batch
(the runner's dry forward), initialised by PyTorch's default ``Linear`` init (seed torch before that forward for
reproducible values). At retrieval time the student query is ``W x + b``, searched against the teacher's index.

Example:
    >>> import torch
    >>> loss = LEAFLoss(student_dim=3, teacher_dim=3)
    >>> with torch.no_grad():
    ...     _ = loss.projection.weight.copy_(torch.eye(3)), loss.projection.bias.zero_()
    >>> x = torch.randn(4, 3)
    >>> loss({"embedding": x}, {"embedding": x + 1.0}, {})["leaf"].item()  # 3 dims, each off by 1
    3.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import mean_or_zero
from medkd.distill.hooks import FEAT_PREFIX
from medkd.distill.registry import register_loss

__all__ = ["LEAFLoss", "pooled_embedding"]


def pooled_embedding(out: Mapping[str, Any], side: str = "student") -> Tensor:
    """``out["embedding"]``, else the first ``"feat:*"`` entry by sorted key, pooled to ``(B, D)``.

    Args:
        out: a model's output dict. side: ``"student"`` or ``"teacher"`` (for the error message).

    Returns:
        ``(B, D)``: the input itself if 2-D, else its mean over dimensions ``2:`` (global average pooling).

    Raises:
        ValueError: no embedding or tap, or a tensor with fewer than 2 dimensions.
    """
    if "embedding" in out:
        key = "embedding"
    else:
        taps = sorted(k for k in out if k.startswith(FEAT_PREFIX))
        if not taps:
            raise ValueError(f"leaf needs the {side}'s 'embedding' or a feature tap ('feat:<module>'), "
                             f"got keys {sorted(out)}")
        key = taps[0]
    x = out[key]
    if x.ndim < 2:
        raise ValueError(f"leaf: {side} {key!r} must be (B, D) or (B, D, *spatial), got shape {tuple(x.shape)}")
    return x if x.ndim == 2 else x.flatten(2).mean(dim=2)


@register_loss("leaf")
class LEAFLoss(DistillLoss):
    """LEAF: ``{"leaf": mean_i ||y_t,i - (W x_s,i + b)||^2}`` with a trainable linear map ``D_s -> D_t``.

    Args:
        student_dim: D_s, the pooled student width (None: read from the first batch).
        teacher_dim: D_t, the teacher embedding width (None: read from the first batch).

    Raises:
        ValueError: a width that is not a positive integer; at forward, embeddings whose widths disagree with
            the map.
    """

    requires = Requires(student=("embedding|feat:*",), teacher=("embedding|feat:*",))

    def __init__(self, student_dim: int | None = None, teacher_dim: int | None = None) -> None:
        super().__init__()
        for name, dim in (("student_dim", student_dim), ("teacher_dim", teacher_dim)):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {dim!r}")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        if student_dim is not None and teacher_dim is not None:
            self.projection: nn.Module = nn.Linear(student_dim, teacher_dim)
        else:
            # out_features 0 is a placeholder until the first teacher embedding is seen
            self.projection = nn.LazyLinear(teacher_dim or 0)

    def _check_widths(self, x: Tensor, y: Tensor) -> None:
        proj = self.projection
        if isinstance(proj, nn.LazyLinear) and proj.has_uninitialized_params():
            want_s, want_t = self.student_dim, self.teacher_dim
            if want_t is None:
                proj.out_features = y.shape[1]  # LazyLinear reads in_features from x, out_features from here
        else:
            want_t, want_s = proj.weight.shape
        for side, dim, want in (("student", x.shape[1], want_s), ("teacher", y.shape[1], want_t)):
            if want is not None and dim != want:
                raise ValueError(f"leaf: the {side} embedding has width {dim}, the linear map expects {want}")

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        x = pooled_embedding(student, "student")
        y = pooled_embedding(teacher, "teacher").detach()
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"leaf: {x.shape[0]} student embeddings but {y.shape[0]} teacher embeddings")
        self._check_widths(x, y)
        err = (y - self.projection(x)) ** 2
        return {"leaf": mean_or_zero(err.sum(dim=1), x)}

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """A student feature tap ``(6, 8, 3, 3)`` and a teacher embedding tap ``(6, 4)``; no labels.

        The loss value also depends on the map's random initialisation: seed torch before building the loss (and,
        with unknown widths, before its first forward).
        """
        g = torch.Generator().manual_seed(seed)
        student = {"feat:encoder": torch.randn(6, 8, 3, 3, generator=g)}
        teacher = {"feat:head": torch.randn(6, 4, generator=g)}
        return student, teacher, {}, {"epoch": 30.0, "step": 100}
