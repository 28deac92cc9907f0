# SPDX-License-Identifier: Apache-2.0
"""Balanced state assignment: Sinkhorn-Knopp codes, unit-norm prototypes with early freezing, and a queue.

Following SwAV (Caron et al., NeurIPS 2020; spec §3): the N x K **cosine** scores of unit embeddings against unit
prototypes become soft codes Q whose rows each sum to 1 and whose columns each get about N/K of the mass, so no
prototype absorbs every clip. Computed in float64 after subtracting the maximum, without gradient.

Example:
    >>> import torch
    >>> z = torch.nn.functional.normalize(torch.randn(256, 8), dim=1)
    >>> protos = Prototypes(8, 4)
    >>> q = sinkhorn_knopp(protos(z), epsilon=0.05, iterations=50)
    >>> bool(torch.allclose(q.sum(1), torch.ones(256), atol=1e-6)), bool(torch.allclose(q.sum(0), torch.full((4,), 64.0), rtol=0.02))
    (True, True)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Prototypes", "EmbeddingQueue", "sinkhorn_knopp"]


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Balanced soft codes ``(N, K)`` for cosine ``scores`` ``(N, K)`` (no gradient; float32 out).

    Each row of the result sums to 1; each column sums to about ``N / K`` (exactly after enough iterations).

    Raises:
        ValueError: ``scores`` not 2-D or empty, or ``epsilon``/``iterations`` not positive.
    """
    if scores.ndim != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty (N, K) matrix, got {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"need epsilon > 0 and iterations >= 1, got {epsilon}, {iterations}")
    s = scores.detach().double()
    q = torch.exp((s - s.max()) / epsilon).t()  # K x N
    n, k = q.shape[1], q.shape[0]
    q /= q.sum()
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True).clamp_min(1e-300)
        q /= k
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-300)
        q /= n
    q = (q * n).t()
    return q.float()


class Prototypes(nn.Module):
    """K learnable unit-norm prototypes; ``forward(z)`` gives cosine scores ``z @ C.T`` for unit ``z``.

    :meth:`normalize_` rescales the rows to unit L2 (call before every step); :meth:`set_frozen` zeroes their
    gradient (SwAV freezes them for the first iterations).
    """

    def __init__(self, dim: int, count: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.functional.normalize(torch.randn(count, dim), dim=1))
        self.frozen = False

    @property
    def count(self) -> int:
        """K."""
        return int(self.weight.shape[0])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine scores ``(..., K)`` of unit embeddings ``z`` ``(..., d)``."""
        weight = self.weight.detach() if self.frozen else self.weight
        return z @ weight.t()

    @torch.no_grad()
    def normalize_(self) -> None:
        """Rescale every prototype to unit L2 norm, in place."""
        self.weight.copy_(nn.functional.normalize(self.weight, dim=1))

    def set_frozen(self, frozen: bool) -> None:
        """Freeze (no gradient reaches the prototypes) or unfreeze."""
        self.frozen = bool(frozen)


class EmbeddingQueue(nn.Module):
    """A FIFO of the last ``size`` unit embeddings (a buffer, so it is checkpointed), joined to SK batches.

    Example:
        >>> q = EmbeddingQueue(4, 2)
        >>> q.push(torch.ones(3, 2)); q.filled
        3
        >>> q.push(torch.zeros(3, 2)); q.filled, q.items().sum().item()
        (4, 2.0)
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.size = int(size)
        self.register_buffer("data", torch.zeros(self.size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def filled(self) -> int:
        """How many slots hold embeddings."""
        return int(min(int(self.count), self.size))

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        """Append ``z`` ``(n, d)`` (detached), dropping the oldest."""
        if self.size == 0:
            return
        z = z.detach().reshape(-1, self.data.shape[1])[-self.size:]
        self.data.copy_(torch.cat([z.to(self.data), self.data])[: self.size])
        self.count += z.shape[0]

    def items(self) -> torch.Tensor:
        """The stored embeddings ``(filled, d)``, newest first."""
        return self.data[: self.filled]
