# SPDX-License-Identifier: Apache-2.0
"""Full-frequency GNN-to-MLP distillation (Wu et al., "Extracting Low-/High-Frequency Knowledge from Graph Neural
Networks and Injecting it into Graph-free MLPs", AAAI 2023, "FF-G2M"; code LirongWu/FF-G2M): a graph-free
student learns a graph teacher's node predictions (low frequency) and the differences between neighbours (high
frequency).

Inputs are node logits ``z_s``, ``z_t`` ``(N, C)``, an edge list ``batch["edges"]`` ``(2, E)`` (long) and optionally
partial labels ``batch["label"]`` ``(N,)`` with ``ignore_index`` on unlabelled nodes. An edge ``(i, j)`` is the column
``(edges[0, e], edges[1, e])``: the student at node ``i`` learns from the teacher at node ``j`` (as the authors'
``edge_distribution_low``). With ``p = softmax(z)`` (temperature 1)::

    L_LFD = mean over E ∪ {(i, i)}  of KL(p_t,j || p_s,i)        (self-loops added once per node)
    L_HFD = mean over E \\ {(i, i)} of KL(softmax(|z_t,i - z_t,j| / tau) || softmax(|z_s,i - z_s,j| / tau))
    loss  = lam * CE(labelled nodes) + (1 - lam) * (L_LFD + L_HFD)

returned as ``{"ce": lam * CE, "lfd": (1 - lam) * L_LFD, "hfd": (1 - lam) * L_HFD}`` (``ce`` is 0 without labels;
``hfd`` is 0 without edges). With no edges (``(2, 0)``) and ``lam=0`` the loss is KD at ``T=1``. When the batch has no
``"edges"`` key, a directed k-nearest-neighbour graph over the teacher's logits within the batch is built (each node
``i`` gets edges ``(i, j)`` to its ``knn`` nearest other nodes ``j`` in Euclidean distance), e.g. for a batch of
cases or patches. Defaults are the authors' Cora-GCN settings ``tau=1.5, lam=0.4``; Cora-GAT uses ``tau=1.2,
lam=0.5``.

Example:
    >>> import torch
    >>> z = torch.randn(5, 3)
    >>> edges = torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]])
    >>> out = FFG2MLoss()({"logits": z}, {"logits": z.clone()}, {"edges": edges})
    >>> sorted(out)
    ['ce', 'hfd', 'lfd']
    >>> out["hfd"].item(), out["lfd"].item() > 0  # same neighbour differences; neighbours' predictions still differ
    (0.0, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medkd.distill.base import DistillLoss, Requires
from medkd.distill.dense import IGNORE_INDEX, mean_or_zero, tempered_kl
from medkd.distill.registry import register_loss

__all__ = ["FFG2MLoss", "knn_edges"]


def knn_edges(x: Tensor, k: int) -> Tensor:
    """Directed k-nearest-neighbour edges ``(2, N * k')`` among the rows of ``x`` ``(N, D)``, ``k' = min(k, N - 1)``.

    Column ``(i, j)`` links node ``i`` to one of its ``k'`` nearest other rows ``j`` (Euclidean; no self-loops).

    Example:
        >>> knn_edges(torch.tensor([[0.0], [1.0], [5.0]]), k=1).tolist()
        [[0, 1, 2], [1, 0, 1]]
    """
    n = x.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return torch.empty(2, 0, dtype=torch.long, device=x.device)
    dist = torch.cdist(x.detach().float(), x.detach().float())
    dist.fill_diagonal_(float("inf"))
    nbr = dist.topk(k, dim=1, largest=False).indices
    src = torch.arange(n, device=x.device).repeat_interleave(k)
    return torch.stack([src, nbr.reshape(-1)])


def _check_edges(edges: Tensor, n: int) -> Tensor:
    if not isinstance(edges, Tensor) or edges.ndim != 2 or edges.shape[0] != 2:
        shape = tuple(edges.shape) if isinstance(edges, Tensor) else type(edges).__name__
        raise ValueError(f"ff_g2m: batch['edges'] must be a (2, E) tensor of node indices, got {shape}")
    if edges.dtype.is_floating_point or edges.dtype == torch.bool:
        raise ValueError(f"ff_g2m: batch['edges'] must hold integer node indices, got {edges.dtype}")
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= n):
        raise ValueError(f"ff_g2m: batch['edges'] indices must lie in [0, {n}) for {n} nodes, "
                         f"got [{int(edges.min())}, {int(edges.max())}]")
    return edges.long()


@register_loss("ff_g2m")
class FFG2MLoss(DistillLoss):
    """FF-G2M: ``{"ce": lam * CE, "lfd": (1 - lam) * L_LFD, "hfd": (1 - lam) * L_HFD}`` on node logits.

    Args:
        temperature: tau (> 0) of the high-frequency softmax over ``|z_i - z_j|`` (1.5; Cora-GAT 1.2).
        lam: weight in [0, 1] of the cross-entropy; the distillation terms get ``1 - lam`` (0.4; Cora-GAT 0.5).
        knn: neighbours per node (>= 1) of the graph built over the teacher's logits when the batch has no
            ``"edges"`` (4).
        ignore_index: label value of unlabelled nodes.

    Raises:
        ValueError: a parameter out of range; at forward, logits that are not matching ``(N, C)`` or bad edges.
    """

    requires = Requires(student=("logits",), teacher=("logits",))

    def __init__(self, temperature: float = 1.5, lam: float = 0.4, knn: int = 4,
                 ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if isinstance(knn, bool) or not isinstance(knn, int) or knn < 1:
            raise ValueError(f"knn must be an integer >= 1, got {knn!r}")
        self.temperature, self.lam, self.knn = float(temperature), float(lam), knn
        self.ignore_index = ignore_index

    def forward(self, student: Mapping[str, Any], teacher: Mapping[str, Any], batch: Mapping[str, Any],
                ctx: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
        s, t = student["logits"], teacher["logits"].detach()
        if s.ndim != 2 or s.shape != t.shape:
            raise ValueError(f"ff_g2m needs node logits (N, C) of equal shape, got student {tuple(s.shape)} and "
                             f"teacher {tuple(t.shape)}")
        n = s.shape[0]
        edges = knn_edges(t, self.knn) if batch.get("edges") is None else _check_edges(batch["edges"], n)
        edges = edges.to(s.device)
        i, j = edges[:, edges[0] != edges[1]]
        loops = torch.arange(n, device=s.device)

        log_s, log_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)
        li, lj = torch.cat([i, loops]), torch.cat([j, loops])
        lfd = (log_t[lj].exp() * (log_t[lj] - log_s[li])).sum(dim=1)
        hfd = tempered_kl((s[i] - s[j]).abs(), (t[i] - t[j]).abs(), self.temperature)

        label = batch.get("label")
        if label is None:
            ce = s.sum() * 0.0
        else:
            y = label.reshape(-1).long()
            if y.numel() != n:
                raise ValueError(f"ff_g2m: label {tuple(label.shape)} does not match {n} nodes")
            keep = y != self.ignore_index
            ce = mean_or_zero(F.cross_entropy(s[keep], y[keep], reduction="none"), s)
        w = 1.0 - self.lam
        return {"ce": self.lam * ce, "lfd": w * mean_or_zero(lfd, s), "hfd": w * mean_or_zero(hfd, s)}

    @classmethod
    def example_inputs(cls, seed: int = 0) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Six nodes with five classes on an undirected ring with one chord, two nodes unlabelled."""
        g = torch.Generator().manual_seed(seed)
        student = {"logits": torch.randn(6, 5, generator=g)}
        teacher = {"logits": 2.0 * torch.randn(6, 5, generator=g)}
        label = torch.randint(0, 5, (6,), generator=g)
        label[[1, 4]] = IGNORE_INDEX
        a = torch.tensor([0, 1, 2, 3, 4, 5, 0])
        b = torch.tensor([1, 2, 3, 4, 5, 0, 3])
        edges = torch.stack([torch.cat([a, b]), torch.cat([b, a])])
        return student, teacher, {"label": label, "edges": edges}, {"epoch": 30.0, "step": 100}
