# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's Sinkhorn-Knopp codes, prototypes and queue, the teacher/student output shapes, the config checks and
the presets (spec surgfutr.md §3 and §10 items 1, 2 and 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from medkd.config import config_from_dict, load_config
from medkd.errors import ConfigError
from medkd.methods.surgfutr.config import SurgFUTRConfig, Variant, split_numbers
from medkd.methods.surgfutr.model import Student, Teacher
from medkd.methods.surgfutr.modules import HeadLayout
from medkd.methods.surgfutr.sinkhorn import EmbeddingQueue, Prototypes, sinkhorn_knopp

REPO = Path(__file__).resolve().parents[3]

#: a student of a few thousand parameters: D=32, d=16, K=4, L=3 clips of T=2 frames
SMALL = {"model": {"feature_dim": 32, "state_dim": 16, "width": 8, "prototypes": 4, "window": 3, "clip_frames": 2,
                   "heads": 2}}
#: P=5 phases, C=6 presence classes at 3 Δ, E=2 events at 2 h, 2 transition horizons
LAYOUT = HeadLayout(5, 6, 2, (1, 2, 5), (5, 10), (2.0, 3.0))
B = 2

#: the 50 CholecT50 video ids (CAMMA-public/cholect50 dataloader_pth.py, the five cross-validation folds)
CHOLECT50_IDS = (1, 2, 4, 5, 6, 8, 10, 12, 13, 14, 15, 18, 22, 23, 25, 26, 27, 29, 31, 32, 35, 36, 40, 42, 43, 47, 48,
                 49, 50, 51, 52, 56, 57, 60, 62, 65, 66, 68, 70, 73, 74, 75, 78, 79, 80, 92, 96, 103, 110, 111)
CHOLECT50_FOLD1 = (79, 2, 51, 6, 25, 14, 66, 23, 50, 111)


def _cosine_scores(n: int, k: int = 16, d: int = 64, seed: int = 0) -> torch.Tensor:
    """``(n, k)`` cosine scores of random unit embeddings against random unit prototypes."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.t()


def _cfg(**sections: Any) -> SurgFUTRConfig:
    data = {key: dict(value) for key, value in SMALL.items()}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(SurgFUTRConfig, data)


def _frames(cfg: SurgFUTRConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window ``(B, L, T, 3, 32, 32)``, future clip ``(B, T, 3, 32, 32)`` (uint8) and elapsed minutes ``(B,)``."""
    g = torch.Generator().manual_seed(seed)
    m = cfg.model
    frames = torch.randint(0, 256, (B, m.window, m.clip_frames, 3, 32, 32), generator=g, dtype=torch.uint8)
    future = torch.randint(0, 256, (B, m.clip_frames, 3, 32, 32), generator=g, dtype=torch.uint8)
    return frames, future, torch.tensor([0.5, 12.0])


# --- Sinkhorn-Knopp (§10 item 1) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("iterations", [1, 3, 10])
@pytest.mark.parametrize("n, k", [(256, 16), (37, 5), (8, 8)])
def test_sk_sample_codes_sum_to_one(n: int, k: int, iterations: int) -> None:
    q = sinkhorn_knopp(_cosine_scores(n, k, 16), epsilon=0.05, iterations=iterations)
    assert q.shape == (n, k) and q.dtype == torch.float32
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(n), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iterations, tolerance", [(3, 0.15), (10, 0.01)])
def test_sk_prototype_masses_are_balanced(seed: int, iterations: int, tolerance: float) -> None:
    # spec §3 pitfalls: random unit vectors, K=16, d=64, N=256 (= 16 K). Over 200 seeds the largest prototype's
    # deviation at 3 iterations has median 6 % and exceeds 15 % in 2 % of draws; the seeds here are typical.
    n, k = 256, 16
    q = sinkhorn_knopp(_cosine_scores(n, k, 64, seed), epsilon=0.05, iterations=iterations)
    deviation = (q.sum(dim=0) - n / k).abs() / (n / k)
    assert float(deviation.max()) <= tolerance
    assert torch.isclose(q.sum(), torch.tensor(float(n)), rtol=1e-6)


def test_sk_more_iterations_balance_better() -> None:
    scores = _cosine_scores(256, 16, 64, seed=3)
    spread = [float(sinkhorn_knopp(scores, iterations=i).sum(0).std()) for i in (1, 3, 10)]
    assert spread[0] > spread[1] > spread[2]


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_sk_no_nan_at_small_epsilon(scale: float) -> None:
    # ε = 0.01 puts exp(S / ε) over a range of e^200 (e^2000 for scores of scale 10): the max is subtracted first
    q = sinkhorn_knopp(scale * _cosine_scores(256, 16, 64), epsilon=0.01, iterations=3)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(256), atol=1e-6, rtol=0)


def test_sk_is_equivariant_to_sample_order() -> None:
    scores = _cosine_scores(256, 16, 64, seed=1)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sinkhorn_knopp(scores[perm]), sinkhorn_knopp(scores)[perm], atol=1e-6, rtol=1e-5)


def test_sk_takes_no_gradient() -> None:
    scores = _cosine_scores(16, 4, 8).requires_grad_(True)
    q = sinkhorn_knopp(scores)
    assert not q.requires_grad and q.grad_fn is None


@pytest.mark.parametrize(
    "scores, kwargs",
    [
        (torch.zeros(5), {}),
        (torch.zeros(0, 4), {}),
        (torch.zeros(3, 4, 2), {}),
        (torch.zeros(3, 4), {"epsilon": 0.0}),
        (torch.zeros(3, 4), {"iterations": 0}),
    ],
)
def test_sk_bad_input(scores: torch.Tensor, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sinkhorn_knopp(scores, **kwargs)


# --- prototypes and queue (§10 item 2) ----------------------------------------------------------------------------


def test_prototypes_unit_norm_after_normalize_following_a_step() -> None:
    torch.manual_seed(0)
    protos = Prototypes(16, 8)
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(8))
    z = F.normalize(torch.randn(32, 16), dim=1)
    optimizer = torch.optim.SGD(protos.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (-protos(z).logsumexp(dim=1).mean()).backward()
        optimizer.step()
        assert (protos.weight.norm(dim=1) - 1).abs().max() > 1e-3  # the step moved them off the sphere
        direction = F.normalize(protos.weight.detach().clone(), dim=1)
        protos.normalize_()
        torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(8), atol=1e-6, rtol=0)
        torch.testing.assert_close(protos.weight.detach(), direction)  # rescaled, not turned
    assert protos.weight.requires_grad  # normalize_ keeps the parameter a leaf


def test_prototypes_frozen_get_no_gradient() -> None:
    torch.manual_seed(0)
    protos = Prototypes(16, 8)
    z = F.normalize(torch.randn(32, 16), dim=1).requires_grad_(True)
    protos.set_frozen(True)
    protos(z).pow(2).sum().backward()
    assert protos.weight.grad is None or not protos.weight.grad.any()
    assert z.grad is not None and z.grad.abs().sum() > 0  # the embeddings still learn against fixed prototypes
    protos.set_frozen(False)
    protos(z).pow(2).sum().backward()
    assert protos.weight.grad is not None and protos.weight.grad.abs().sum() > 0
    assert protos.count == 8


@pytest.mark.parametrize("variant", ["surgfutr", "feature_regression"])
def test_frozen_prototypes_get_no_gradient_through_student_and_teacher(variant: str) -> None:
    cfg = _cfg(variant=variant)
    torch.manual_seed(0)
    student, teacher = Student(cfg, LAYOUT), Teacher(cfg, LAYOUT)
    frames, future, elapsed = _frames(cfg)

    def backward_all() -> None:
        student.zero_grad(set_to_none=True)
        out_s = student(frames, elapsed)
        out_t = teacher(frames, future, elapsed, student.prototypes)
        total = sum(v.float().sum() for out in (out_s, out_t) for v in out.values() if v.requires_grad)
        total.backward()

    student.prototypes.set_frozen(True)
    backward_all()
    grad = student.prototypes.weight.grad
    assert grad is None or not grad.any()
    assert student.state.mlp[0].weight.grad.abs().sum() > 0  # the rest still trains
    student.prototypes.set_frozen(False)
    backward_all()
    assert student.prototypes.weight.grad is not None and student.prototypes.weight.grad.abs().sum() > 0


def test_embedding_queue_is_fifo() -> None:
    queue = EmbeddingQueue(4, 2)
    assert queue.filled == 0 and queue.items().shape == (0, 2)
    rows = [torch.full((2, 2), float(i)) for i in range(1, 4)]  # batches of value 1, 2, 3
    queue.push(rows[0])
    assert queue.filled == 2 and queue.items()[:, 0].tolist() == [1.0, 1.0]
    queue.push(rows[1])
    assert queue.filled == 4 and queue.items()[:, 0].tolist() == [2.0, 2.0, 1.0, 1.0]  # newest first
    queue.push(rows[2])  # the oldest batch leaves
    assert queue.filled == 4 and queue.items()[:, 0].tolist() == [3.0, 3.0, 2.0, 2.0]
    assert int(queue.count) == 6
    queue.push(torch.arange(12.0).reshape(6, 2))  # more than the queue holds: the last 4 rows stay
    assert queue.items()[:, 0].tolist() == [4.0, 6.0, 8.0, 10.0]


def test_embedding_queue_detaches_checkpoints_and_can_be_empty() -> None:
    queue = EmbeddingQueue(3, 2)
    z = torch.ones(2, 2, requires_grad=True)
    queue.push(z * 2)
    assert not queue.items().requires_grad
    state = queue.state_dict()
    assert set(state) == {"data", "count"}
    restored = EmbeddingQueue(3, 2)
    restored.load_state_dict(state)
    assert restored.filled == 2 and torch.equal(restored.items(), queue.items())
    empty = EmbeddingQueue(0, 2)
    empty.push(torch.ones(5, 2))
    assert empty.filled == 0 and empty.items().shape == (0, 2)


# --- shapes (§10 item 8) ------------------------------------------------------------------------------------------


def _expected_student_shapes(cfg: SurgFUTRConfig, layout: HeadLayout) -> dict[str, tuple[int, ...]]:
    m = cfg.model
    shapes = {
        "o": (B, m.state_dim), "z": (B, m.window, m.state_dim), "scores": (B, m.window, m.prototypes),
        "future_state": (B, m.prototypes), "transition": (B, m.prototypes**2), "change": (B,),
        "phase_now": (B, layout.phases), "rsd": (B,),
        "presence": (B, len(layout.presence_deltas_s), layout.presence),
        "events": (B, len(layout.event_horizons_s), layout.events),
    }
    if layout.phases:
        shapes["phase_next"] = (B, len(layout.transition_horizons_min))
        shapes["phase_tta"] = (B, len(layout.transition_horizons_min), layout.phases)
    if cfg.variant is Variant.SURGFUTR and m.actdyn:
        shapes["delta_z"] = (B, m.state_dim)
    if cfg.variant is Variant.FEATURE_REGRESSION:
        shapes["future_feature"] = (B, m.feature_dim)
    return shapes


@pytest.mark.parametrize(
    "sections, layout",
    [
        ({}, LAYOUT),
        ({"variant": "no_teacher"}, LAYOUT),
        ({"variant": "feature_regression"}, LAYOUT),
        ({"model": {"actdyn": False}}, LAYOUT),
        ({"model": {"prototypes": 6, "graph_layers": 0, "window": 5, "clip_stride": 1}}, LAYOUT),
        ({}, HeadLayout(0, 3, 0, (1,), (), (2.0,))),  # no phase labels, no events
    ],
)
def test_student_output_shapes(sections: dict[str, Any], layout: HeadLayout) -> None:
    cfg = _cfg(**sections)
    torch.manual_seed(0)
    student = Student(cfg, layout).eval()
    frames, _, elapsed = _frames(cfg)
    out = student(frames, elapsed)
    expected = _expected_student_shapes(cfg, layout)
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    torch.testing.assert_close(out["z"].norm(dim=-1), torch.ones(B, cfg.model.window))
    assert (out["rsd"] >= 0).all()
    if layout.phases:
        h = torch.tensor(layout.transition_horizons_min)
        assert ((out["phase_next"] >= 0) & (out["phase_next"] <= h)).all()
        assert ((out["phase_tta"] >= 0) & (out["phase_tta"] <= h[:, None])).all()
    # the split forward (each frame once, clips, window) is what offline prediction and streaming use
    f = student.clip_features(student.frame_features(frames))
    assert f.shape == (B, cfg.model.window, cfg.model.feature_dim)
    torch.testing.assert_close(student.forward_window(f, elapsed)["transition"], out["transition"])


def test_variant_outputs() -> None:
    frames, _, elapsed = _frames(_cfg())
    outputs = {v: Student(_cfg(variant=v), LAYOUT)(frames, elapsed) for v in ("surgfutr", "no_teacher",
                                                                               "feature_regression")}
    assert "delta_z" in outputs["surgfutr"] and "future_feature" not in outputs["surgfutr"]
    assert "delta_z" not in outputs["no_teacher"] and "future_feature" not in outputs["no_teacher"]
    assert "future_feature" in outputs["feature_regression"] and "delta_z" not in outputs["feature_regression"]
    assert _cfg().uses_teacher() and not _cfg(variant="no_teacher").uses_teacher()


def test_teacher_output_shapes() -> None:
    cfg = _cfg()
    m = cfg.model
    torch.manual_seed(0)
    student, teacher = Student(cfg, LAYOUT).eval(), Teacher(cfg, LAYOUT).eval()  # BatchNorm: per-sample in eval
    frames, future, elapsed = _frames(cfg)
    out = teacher(frames, future, elapsed, student.prototypes)
    expected = {
        "o": (B, m.state_dim), "z": (B, m.window + 1, m.state_dim), "scores": (B, m.window + 1, m.prototypes),
        "future_state": (B, m.prototypes), "transition": (B, m.prototypes**2), "change": (B,),
        "phase_now": (B, 5), "phase_next": (B, 2), "phase_tta": (B, 2, 5), "rsd": (B,), "presence": (B, 3, 6),
        "events": (B, 2, 2),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    # the future clip is the last node: changing it changes z_{t+Δ} and leaves the window's node states alone
    other = teacher(frames, torch.zeros_like(future), elapsed, student.prototypes)
    torch.testing.assert_close(other["z"][:, :-1], out["z"][:, :-1])
    assert not torch.allclose(other["z"][:, -1], out["z"][:, -1])


# --- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, named",
    [
        ({"variantt": "surgfutr"}, "'variantt'"),
        ({"model": {"protoypes": 8}}, "'model.protoypes'"),
        ({"data": {"layuot": "cholect50"}}, "'data.layuot'"),
        ({"train": {"iteratoins": 5}}, "'train.iteratoins'"),
        ({"tasks": {"presence_delta_s": [1]}}, "'tasks.presence_delta_s'"),
    ],
)
def test_unknown_config_key_is_named(data: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match="unknown config key") as err:
        config_from_dict(SurgFUTRConfig, data, source="preset.yaml")
    assert named in str(err.value) and "preset.yaml" in str(err.value) and "Did you mean" in str(err.value)


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match="model.prototype'"):
        config_from_dict(SurgFUTRConfig, {}, overrides=["model.prototype=8"])


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model": {"state_dim": 30, "heads": 4}}, "divisible"),
        ({"model": {"transition": "proto"}}, "transition"),
        ({"data": {"train": "5-1"}}, "backwards"),
        ({"data": {"val": "a-b"}}, "'a-b'"),
        ({"data": {"test": "1-3,,7"}}, "not a video number"),
        ({"data": {"events": ["clipping"]}}, "name=Class"),
        ({"data": {"layout": "cholec81"}}, "data.layout"),
        ({"data": {"frame_size": [8, 8]}}, "frame_size"),
        ({"variant": "teacher_only"}, "variant"),
        ({"model": {"prototypes": 0}}, "model.prototypes"),
        ({"model": {"sinkhorn_epsilon": 0}}, "sinkhorn_epsilon"),
        ({"train": {"change_fraction": 1.5}}, "change_fraction"),
        ({"train": {"teacher_mode": "ema"}}, "teacher_mode"),
        ({"tasks": {"presence_deltas_s": []}}, "presence_deltas_s"),
        ({"tasks": {"presence_mode": "any"}}, "presence_mode"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_bad_config_values(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(SurgFUTRConfig, data)


@pytest.mark.parametrize(
    "spec, numbers",
    [
        ("1-3,7", [1, 2, 3, 7]),
        ("79,2,51", [79, 2, 51]),
        (" 4 - 6 , 9", [4, 5, 6, 9]),
        ("12", [12]),
        (5, [5]),
        ([3, 1], [3, 1]),
    ],
)
def test_split_numbers(spec: Any, numbers: list[int]) -> None:
    assert split_numbers(spec) == numbers


@pytest.mark.parametrize("spec", ["5-1", "a-b", "", "1-", "1,,2", "1-3;7", "-2"])
def test_split_numbers_bad(spec: str) -> None:
    with pytest.raises(ConfigError, match="split"):
        split_numbers(spec)


# --- presets ------------------------------------------------------------------------------------------------------

PRESETS = sorted((REPO / "apps" / "surgfutr").glob("*.yaml"))


def test_the_three_presets_exist() -> None:
    assert {"cpu_synthetic.yaml", "cholec80.yaml", "cholect50.yaml"} <= {p.name for p in PRESETS}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_loads(path: Path) -> None:
    cfg = load_config(SurgFUTRConfig, path)
    splits = {name: split_numbers(getattr(cfg.data, name)) for name in ("train", "val", "test")}
    assert all(splits.values())
    assert not set(splits["train"]) & (set(splits["val"]) | set(splits["test"]))
    assert not set(splits["val"]) & set(splits["test"])
    assert cfg.model.window * cfg.model.clip_stride < 300  # a window fits in a few minutes of video


def test_cholec80_preset_is_the_tecno_split() -> None:
    cfg = load_config(SurgFUTRConfig, REPO / "apps" / "surgfutr" / "cholec80.yaml")
    assert (cfg.data.layout.value, cfg.data.dataset) == ("cholec80", "cholec80")
    assert split_numbers(cfg.data.train) == list(range(1, 41))
    assert split_numbers(cfg.data.val) == list(range(41, 49))
    assert split_numbers(cfg.data.test) == list(range(49, 81))
    assert (cfg.device, cfg.precision) == ("auto", "fp32")
    m = cfg.model
    assert (m.prototypes, m.state_dim, m.queue, m.freeze_prototypes) == (64, 128, 3840, 313)
    assert cfg.train.batch_size + m.queue >= 16 * m.prototypes  # spec §3: batch + queue >= 16 K for balanced SK


def test_cholect50_preset_is_cross_validation_fold_1() -> None:
    cfg = load_config(SurgFUTRConfig, REPO / "apps" / "surgfutr" / "cholect50.yaml")
    assert (cfg.data.layout.value, cfg.data.dataset) == ("cholect50", "cholect50")
    assert cfg.data.presence_key() == "triplet" and cfg.data.tool_key() == "instrument"
    assert [c.lower() for _, c in cfg.data.event_pairs()] == ["clipper", "scissors"]
    train, val, test = (split_numbers(getattr(cfg.data, s)) for s in ("train", "val", "test"))
    assert sorted(test) == sorted(CHOLECT50_FOLD1)
    assert sorted(train + val + test) == sorted(CHOLECT50_IDS)  # every id once
    m = cfg.model
    assert cfg.train.batch_size + m.queue >= 16 * m.prototypes
