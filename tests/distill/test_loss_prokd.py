# SPDX-License-Identifier: Apache-2.0
"""ProKD (``prokd``): prototype InfoNCE, soft labels, EMA prototypes, self-training on unlabelled samples."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medkd.distill import create_loss
from medkd.distill.base import Requires
from medkd.distill.dense import IGNORE_INDEX
from medkd.distill.losses.prokd import ProKDLoss, proto_infonce, prototype_soft_labels
from medkd.errors import ConfigError

U = IGNORE_INDEX


def _inputs(label: list[int], seed: int = 0, c: int = 4, ds: int = 6, dt: int = 6) -> tuple[dict, dict, dict]:
    g = torch.Generator().manual_seed(seed)
    n = len(label)
    student = {"logits": torch.randn(n, c, generator=g), "feat:enc": torch.randn(n, ds, 2, 2, generator=g)}
    teacher = {"logits": torch.randn(n, c, generator=g), "feat:enc": torch.randn(n, dt, 2, 2, generator=g)}
    return student, teacher, {"label": torch.tensor(label)}


def test_registered_and_requires() -> None:
    loss = create_loss("prokd")
    assert type(loss).requires == Requires(student=("logits", "feat:*"), teacher=("logits", "feat:*"),
                                           batch=("label",))
    assert (loss.momentum, loss.tau_proto, loss.tau_self) == (0.9, 0.1, 1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_alignment_minimal_when_prototypes_coincide(seed: int, scale: float) -> None:
    """Separated (orthogonal) class prototypes: a perturbation of practical size, of either side, raises the InfoNCE.

    Not an exact minimum: InfoNCE saturates near coincidence (loss ~1e-4 at tau=0.1) and also rewards pushing the
    student's prototypes apart, so perturbations of ~0.01-0.1 of the prototypes' norm can lower it slightly.
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.linalg.qr(torch.randn(8, 5, generator=g))[0].T * (1 + torch.rand(5, 1, generator=g))
    perturbed = protos + scale * torch.randn(5, 8, generator=g)
    same = proto_infonce(protos, protos, 0.1)
    assert float(same) < float(proto_infonce(perturbed, protos, 0.1))
    assert float(same) < float(proto_infonce(protos, perturbed, 0.1))
    assert float(proto_infonce(protos.roll(1, 0), protos, 0.1)) > float(same) + 1.0  # mismatched classes


def test_alignment_is_symmetric() -> None:
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert float(proto_infonce(a, b)) == pytest.approx(float(proto_infonce(b, a)), rel=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_soft_labels_peak_at_the_nearest_prototype(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    feats, protos = torch.randn(20, 5, generator=g), torch.randn(4, 5, generator=g)
    q = prototype_soft_labels(feats, protos, tau=1.0)
    assert torch.allclose(q.sum(1), torch.ones(20))
    assert torch.equal(q.argmax(1), torch.cdist(feats, protos).argmin(1))
    sharper = prototype_soft_labels(feats, protos, tau=0.1)
    assert bool((sharper.max(1).values >= q.max(1).values).all())
    valid = torch.tensor([True, False, True, True])
    masked = prototype_soft_labels(feats, protos, valid=valid)
    assert float(masked[:, 1].abs().sum()) == 0.0 and torch.allclose(masked.sum(1), torch.ones(20))


def test_prototypes_update_only_for_present_classes() -> None:
    loss = create_loss("prokd", momentum=0.5)
    student, teacher, batch = _inputs([0, 2, 2, 0])
    loss(student, teacher, batch)
    f_t = teacher["feat:enc"].mean(dim=(2, 3))
    assert loss.teacher_seen.tolist() == [True, False, True, False]
    assert torch.allclose(loss.teacher_protos[0], f_t[[0, 3]].mean(0), atol=1e-6)
    assert torch.allclose(loss.teacher_protos[2], f_t[[1, 2]].mean(0), atol=1e-6)
    assert float(loss.teacher_protos[[1, 3]].abs().sum()) == 0.0
    before = loss.teacher_protos.clone()
    student2, teacher2, batch2 = _inputs([1, 0], seed=1)
    loss(student2, teacher2, batch2)
    f_t2 = teacher2["feat:enc"].mean(dim=(2, 3))
    assert torch.equal(loss.teacher_protos[2], before[2])  # absent: unchanged
    assert torch.allclose(loss.teacher_protos[1], f_t2[0], atol=1e-6)  # first sighting: the batch mean
    assert torch.allclose(loss.teacher_protos[0], 0.5 * before[0] + 0.5 * f_t2[1], atol=1e-6)  # EMA
    assert loss.teacher_seen.tolist() == [True, True, True, False]


def test_student_prototypes_use_teacher_pseudo_labels_for_unlabelled() -> None:
    loss = create_loss("prokd")
    student, teacher, batch = _inputs([0, U, U])
    teacher["logits"] = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 5.0]])
    loss(student, teacher, batch)
    f_s = student["feat:enc"].mean(dim=(2, 3))
    assert loss.student_seen.tolist() == [True, False, False, True]
    assert loss.teacher_seen.tolist() == [True, False, False, False]  # teacher prototypes: labelled only
    assert torch.allclose(loss.student_protos[3], f_s[1:].mean(0), atol=1e-6)


def test_identical_features_align_at_the_minimum() -> None:
    student, teacher, batch = _inputs([0, 1, 2, 3, 1])
    teacher["feat:enc"] = student["feat:enc"].clone()
    out = create_loss("prokd")(student, teacher, batch)
    protos = F.one_hot(batch["label"], 4).float().T @ student["feat:enc"].mean(dim=(2, 3))
    protos = protos / F.one_hot(batch["label"], 4).sum(0)[:, None]
    assert out["prokd_align"].item() == pytest.approx(float(proto_infonce(protos, protos, 0.1)), rel=1e-5)
    assert out["prokd_self"].item() == 0.0  # nothing unlabelled


def test_self_term_is_soft_cross_entropy_on_unlabelled_rows() -> None:
    student, teacher, batch = _inputs([0, 1, U, U, 2, U])
    loss = create_loss("prokd", tau_self=0.5)
    out = loss(student, teacher, batch)
    f_s = student["feat:enc"].mean(dim=(2, 3))
    unl = batch["label"] == U
    q = prototype_soft_labels(f_s[unl], loss.student_protos, 0.5, loss.student_seen)
    want = -(q * F.log_softmax(student["logits"][unl], dim=1)).sum(1).mean()
    assert out["prokd_self"].item() == pytest.approx(float(want), rel=1e-5)
    # the labelled rows' logits do not enter the self term
    loss2 = create_loss("prokd", tau_self=0.5)
    student2 = dict(student, logits=student["logits"].clone())
    student2["logits"][~unl] = 30 * torch.randn(3, 4)
    assert loss2(student2, teacher, batch)["prokd_self"].item() == pytest.approx(out["prokd_self"].item(), rel=1e-5)


def test_teacher_self_target_uses_teacher_prototypes() -> None:
    student, teacher, batch = _inputs([0, 1, U, 2], seed=2)
    loss = create_loss("prokd", self_target="teacher")
    out = loss(student, teacher, batch)
    f_t = teacher["feat:enc"].mean(dim=(2, 3))
    q = prototype_soft_labels(f_t[2:3], loss.teacher_protos, 1.0, loss.teacher_seen)
    want = -(q * F.log_softmax(student["logits"][2:3], dim=1)).sum(1).mean()
    assert out["prokd_self"].item() == pytest.approx(float(want), rel=1e-5)


def test_gradients_projector_and_no_teacher_gradient() -> None:
    student, teacher, batch = _inputs([0, 1, U, 2, U, 1], ds=5, dt=7)
    student = {k: v.requires_grad_(True) for k, v in student.items()}
    teacher = {k: v.requires_grad_(True) for k, v in teacher.items()}
    loss = create_loss("prokd")
    out = loss(student, teacher, batch)
    assert loss.proj is not None and loss.proj.weight.shape == (7, 5)
    assert loss.student_protos.shape == (4, 7)
    sum(out.values()).backward()
    assert all(v.grad is None for v in teacher.values())
    assert float(student["feat:enc"].grad.abs().sum()) > 0 and float(student["logits"].grad.abs().sum()) > 0
    assert all(p.grad is not None for p in loss.parameters())
    assert not loss.student_protos.requires_grad


def test_eager_projector_with_teacher_dim() -> None:
    loss = create_loss("prokd", teacher_dim=7)
    assert len(list(loss.parameters())) == 2  # registered before the first batch (lazy input width)
    student, teacher, batch = _inputs([0, U], ds=5, dt=7)
    loss(student, teacher, batch)
    assert loss.proj.weight.shape == (7, 5)


def test_eval_mode_leaves_prototypes() -> None:
    loss = create_loss("prokd")
    loss(*_inputs([0, 1, 2]))
    before = loss.teacher_protos.clone(), loss.student_protos.clone()
    loss.eval()
    out = loss(*_inputs([0, 1, 3], seed=5))
    assert torch.equal(loss.teacher_protos, before[0]) and torch.equal(loss.student_protos, before[1])
    assert loss.teacher_seen.tolist() == [True, True, True, False]
    assert torch.isfinite(out["prokd_align"])


@pytest.mark.parametrize("spatial, feat_spatial", [((6, 6), (3, 3)), ((4, 4, 4), (2, 2, 2))])
def test_dense_voxel_prototypes(spatial: tuple[int, ...], feat_spatial: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, *spatial, generator=g, requires_grad=True)
    t = torch.randn(2, 3, *spatial, generator=g)
    label = torch.randint(0, 3, (2, *spatial), generator=g)
    label[1] = U  # the second case comes from the new site
    loss = create_loss("prokd")
    out = loss({"logits": s, "feat:dec": torch.randn(2, 8, *feat_spatial, generator=g)},
               {"logits": t, "feat:dec": torch.randn(2, 8, *feat_spatial, generator=g)}, {"label": label})
    assert loss.teacher_protos.shape == (3, 8) and bool(loss.teacher_seen.all())
    sum(out.values()).backward()
    assert float(s.grad[1].abs().sum()) > 0 and float(s.grad[0].abs().sum()) == 0  # self term: unlabelled only


def test_embedding_output_when_no_tap() -> None:
    g = torch.Generator().manual_seed(0)
    student = {"logits": torch.randn(4, 3, generator=g), "embedding": torch.randn(4, 5, generator=g)}
    teacher = {"logits": torch.randn(4, 3, generator=g), "embedding": torch.randn(4, 5, generator=g)}
    out = create_loss("prokd")(student, teacher, {"label": torch.tensor([0, 1, U, 2])})
    assert torch.isfinite(out["prokd_align"]) and torch.isfinite(out["prokd_self"])
    with pytest.raises(KeyError, match="feature"):
        create_loss("prokd")({"logits": student["logits"]}, teacher, {"label": torch.tensor([0, 1, U, 2])})


def test_state_dict_round_trip_with_lazy_buffers_and_projector() -> None:
    torch.manual_seed(0)
    loss = create_loss("prokd")
    loss(*_inputs([0, 1, U, 2], ds=5, dt=7))
    fresh = create_loss("prokd")
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.student_protos, loss.student_protos) and torch.equal(fresh.proj.weight, loss.proj.weight)


def test_example_inputs() -> None:
    student, teacher, batch, ctx = ProKDLoss.example_inputs(0)
    assert int((batch["label"] == U).sum()) == 2
    torch.manual_seed(0)
    out = create_loss("prokd")(student, teacher, batch, ctx)
    assert out["prokd_self"].item() > 0 and torch.isfinite(out["prokd_align"])


@pytest.mark.parametrize("params", [{"momentum": 1.0}, {"tau_proto": 0.0}, {"tau_self": -1.0}, {"teacher_dim": 0},
                                    {"self_target": "teachr"}, {"align_weight": -1.0}, {"num_classes": 0}])
def test_bad_values_raise(params: dict) -> None:
    with pytest.raises(ConfigError):
        create_loss("prokd", **params)


def test_unknown_parameter_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="tau_proto"):
        create_loss("prokd", tau_protos=0.2)
