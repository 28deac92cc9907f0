# SPDX-License-Identifier: Apache-2.0
"""FF-G2M loss plugin (``medkd/distill/losses/ff_g2m.py``): KD limit, edge semantics, kNN graph, invariances."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medkd.distill import create_loss
from medkd.distill.losses.ff_g2m import FFG2MLoss, knn_edges
from medkd.errors import ConfigError

NO_EDGES = torch.empty(2, 0, dtype=torch.long)


def _nodes(n: int = 7, c: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), 2.0 * torch.randn(n, c, generator=g)


def _kl(p_t_logits: torch.Tensor, p_s_logits: torch.Tensor, tau: float = 1.0) -> float:
    """KL(softmax(t / tau) || softmax(s / tau)) of two vectors, written out."""
    p, q = torch.softmax(p_t_logits / tau, dim=0), torch.softmax(p_s_logits / tau, dim=0)
    return float((p * (p.log() - q.log())).sum())


def _total(out: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(out.values())


def test_self_loops_only_and_lam_zero_is_kd_at_t1() -> None:
    s, t = _nodes()
    out = create_loss("ff_g2m", lam=0.0)({"logits": s}, {"logits": t}, {"edges": NO_EDGES})
    kd = create_loss("kd", temperature=1.0)({"logits": s}, {"logits": t}, {})["kd"]
    torch.testing.assert_close(_total(out), kd)
    assert out["hfd"].item() == 0.0 and out["ce"].item() == 0.0


def test_lfd_and_hfd_match_written_out_sums_per_edge() -> None:
    s, t = _nodes(n=3, c=3)
    edges = torch.tensor([[0, 2], [1, 1]])  # student 0 <- teacher 1, student 2 <- teacher 1
    out = create_loss("ff_g2m", lam=0.0, temperature=1.2)({"logits": s}, {"logits": t}, {"edges": edges})
    lfd_pairs = [(0, 1), (2, 1), (0, 0), (1, 1), (2, 2)]  # the edges plus one self-loop per node
    lfd = sum(_kl(t[j], s[i]) for i, j in lfd_pairs) / len(lfd_pairs)
    hfd = sum(_kl((t[i] - t[j]).abs(), (s[i] - s[j]).abs(), 1.2) for i, j in [(0, 1), (2, 1)]) / 2
    assert out["lfd"].item() == pytest.approx(lfd, rel=1e-5)
    assert out["hfd"].item() == pytest.approx(hfd, rel=1e-5)


def test_given_self_loops_are_not_counted_twice() -> None:
    s, t = _nodes()
    loss = create_loss("ff_g2m")
    edges = torch.tensor([[0, 1, 3], [1, 0, 4]])
    with_loops = torch.cat([edges, torch.tensor([[2, 5], [2, 5]])], dim=1)
    a = loss({"logits": s}, {"logits": t}, {"edges": edges})
    b = loss({"logits": s}, {"logits": t}, {"edges": with_loops})
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_edge_direction_student_at_source_learns_teacher_at_target() -> None:
    s, t = _nodes(n=2, c=3)
    loss = create_loss("ff_g2m", lam=0.0)
    forward = loss({"logits": s}, {"logits": t}, {"edges": torch.tensor([[0], [1]])})["lfd"]
    backward = loss({"logits": s}, {"logits": t}, {"edges": torch.tensor([[1], [0]])})["lfd"]
    want = (_kl(t[1], s[0]) + _kl(t[0], s[0]) + _kl(t[1], s[1])) / 3
    assert forward.item() == pytest.approx(want, rel=1e-5)
    assert abs(forward.item() - backward.item()) > 1e-4


@pytest.mark.parametrize("shift_student, shift_teacher", [(5.0, 0.0), (0.0, -3.0), (2.0, 7.0)])
def test_hfd_invariant_to_a_common_logit_shift(shift_student: float, shift_teacher: float) -> None:
    s, t = _nodes()
    edges = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    loss = create_loss("ff_g2m")
    a = loss({"logits": s}, {"logits": t}, {"edges": edges})["hfd"]
    b = loss({"logits": s + shift_student}, {"logits": t + shift_teacher}, {"edges": edges})["hfd"]
    torch.testing.assert_close(a, b)
    # a per-node shift changes the neighbour differences, so HFD must move
    per_node = loss({"logits": s + torch.arange(7.0)[:, None]}, {"logits": t}, {"edges": edges})["hfd"]
    assert abs(per_node.item() - a.item()) > 1e-4


def test_knn_edges_are_the_nearest_other_nodes() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(9, 4, generator=g)
    edges = knn_edges(x, k=3)
    assert edges.shape == (2, 27) and edges.dtype == torch.long
    assert torch.equal(edges[0], torch.arange(9).repeat_interleave(3))
    for i in range(9):
        dists = sorted((float((x[i] - x[j]).norm()), j) for j in range(9) if j != i)
        assert set(edges[1, edges[0] == i].tolist()) == {j for _, j in dists[:3]}


@pytest.mark.parametrize("n, k, expected", [(1, 4, 0), (3, 4, 6), (5, 4, 20)])
def test_knn_clips_k_to_the_batch(n: int, k: int, expected: int) -> None:
    assert knn_edges(torch.randn(n, 2), k).shape == (2, expected)


def test_knn_graph_over_teacher_logits_built_when_edges_absent() -> None:
    s, t = _nodes()
    loss = create_loss("ff_g2m", knn=2)
    built = loss({"logits": s}, {"logits": t}, {})
    explicit = loss({"logits": s}, {"logits": t}, {"edges": knn_edges(t, 2)})
    for key in built:
        torch.testing.assert_close(built[key], explicit[key])
    assert built["hfd"].item() > 0  # there were edges
    from_student = loss({"logits": s}, {"logits": t}, {"edges": knn_edges(s, 2)})
    assert not torch.equal(knn_edges(s, 2), knn_edges(t, 2))
    assert abs(from_student["lfd"].item() - built["lfd"].item()) > 1e-6


def test_cross_entropy_on_labelled_nodes_only_and_weights_applied() -> None:
    s, t = _nodes()
    label = torch.tensor([0, -100, 2, 3, -100, 1, 0])
    batch = {"label": label, "edges": torch.tensor([[0, 1, 2], [1, 2, 3]])}
    ce_only = create_loss("ff_g2m", lam=1.0)({"logits": s}, {"logits": t}, batch)
    torch.testing.assert_close(ce_only["ce"], F.cross_entropy(s, label, ignore_index=-100))
    assert ce_only["lfd"].item() == 0.0 and ce_only["hfd"].item() == 0.0
    kd_only = create_loss("ff_g2m", lam=0.0)({"logits": s}, {"logits": t}, batch)
    mixed = create_loss("ff_g2m", lam=0.4)({"logits": s}, {"logits": t}, batch)
    torch.testing.assert_close(mixed["ce"], 0.4 * ce_only["ce"])
    torch.testing.assert_close(mixed["lfd"], 0.6 * kd_only["lfd"])
    torch.testing.assert_close(mixed["hfd"], 0.6 * kd_only["hfd"])


def test_teacher_gets_no_gradient() -> None:
    s, t = _nodes()
    s.requires_grad_()
    t.requires_grad_()
    out = create_loss("ff_g2m")({"logits": s}, {"logits": t}, {"label": torch.tensor([0, 1, 2, 3, 0, 1, 2])})
    _total(out).backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "edges, match",
    [
        (torch.tensor([0, 1]), r"\(2, E\)"),
        (torch.tensor([[0.0], [1.0]]), "integer"),
        (torch.tensor([[0], [7]]), r"\[0, 7\)"),
        (torch.tensor([[-1], [2]]), r"\[0, 7\)"),
    ],
)
def test_bad_edges_raise(edges: torch.Tensor, match: str) -> None:
    s, t = _nodes()
    with pytest.raises(ValueError, match=match):
        create_loss("ff_g2m")({"logits": s}, {"logits": t}, {"edges": edges})


def test_dense_logits_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        create_loss("ff_g2m")({"logits": torch.randn(2, 3, 4)}, {"logits": torch.randn(2, 3, 4)}, {})


def test_requires_and_example_inputs() -> None:
    assert FFG2MLoss.requires.batch == ()
    student, teacher, batch, ctx = FFG2MLoss.example_inputs()
    assert batch["edges"].shape == (2, 14) and int((batch["label"] == -100).sum()) == 2
    out = create_loss("ff_g2m")(student, teacher, batch, ctx)
    assert list(out) == ["ce", "lfd", "hfd"] and all(v.ndim == 0 and v.item() > 0 for v in out.values())


@pytest.mark.parametrize(
    "params, match",
    [({"temperature": 0.0}, "temperature"), ({"lam": 1.5}, "lam"), ({"lam": -0.1}, "lam"), ({"knn": 0}, "knn"),
     ({"knn": 2.5}, "knn")],
)
def test_bad_values_raise(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_loss("ff_g2m", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'lam'"):
        create_loss("ff_g2m", lamb=0.5)
