# SPDX-License-Identifier: Apache-2.0
"""SD-DARTS voting snapshot teachers (spec §3.9): a snapshot equal to the current weights gives KL = 0, p_bar is the
mean probability, the ring drops the oldest, snapshots stay frozen (unchanged by training, no gradients), the shadow
carries no feature hooks, dense shapes, parameter errors, and a tiny run from YAML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medkd import api
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.hooks import FeatureTap
from medkd.distill.strategies.snapshot_teachers import SnapshotTeachers, snapshot_kl
from medkd.distill.task import StepOutputs
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_snapshot_teachers.yaml"
FAST = ["optim.iterations=6", "optim.iterations_per_epoch=2", "eval.val_interval=3", "eval.log_interval=3",
        "data.batch_size=8", "data.image_size=[16, 16]"]


class _Task:
    """The part of DistillTask a strategy uses: the student, ``step_loss`` (CE) and ``last``."""

    def __init__(self, student: nn.Module) -> None:
        self.student = student
        self.last: StepOutputs | None = None

    def step_loss(self, batch: dict[str, Any], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.student(batch["image"])
        self.last = StepOutputs({"logits": logits}, {}, batch, {"step": iteration})
        loss = F.cross_entropy(logits, batch["label"])
        return loss, {"ce/raw": float(loss.detach())}


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(10, 6, generator=g), "label": torch.randint(0, 4, (10,), generator=g)}


def _step(strategy: SnapshotTeachers, task: _Task, optimizer: torch.optim.Optimizer, it: int,
          ) -> dict[str, float]:
    optimizer.zero_grad()
    loss, logs = strategy.train_step(task, _batch(it), it)
    loss.backward()
    optimizer.step()
    return logs


def test_snapshot_of_the_current_weights_gives_zero_and_no_term_before_the_first() -> None:
    task = _Task(_mlp())
    strategy = SnapshotTeachers(k=3, weight=2.0, temperature=2.0)
    strategy.setup(task)
    batch = _batch()
    loss, logs = strategy.train_step(task, batch, 1)
    assert "snapshot_kl" not in logs and float(loss.detach()) == pytest.approx(logs["ce/raw"])  # no snapshot yet
    strategy.post_epoch(task, 0)
    strategy.post_epoch(task, 1)  # two snapshots of the same weights
    loss, logs = strategy.train_step(task, batch, 2)
    assert logs["snapshot_kl"] == pytest.approx(0.0, abs=1e-6) and logs["snapshots"] == 2
    assert float(loss.detach()) == pytest.approx(logs["ce/raw"], abs=1e-5)


def test_p_bar_is_the_mean_probability_and_the_term_is_t2_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, z1, z2 = (torch.randn(5, 4, generator=g) for _ in range(3))
    T = 3.0
    p_bar = 0.5 * ((z1 / T).softmax(1) + (z2 / T).softmax(1))
    expected = T**2 * (p_bar * (p_bar.log() - (s / T).log_softmax(1))).sum(1).mean()
    assert torch.allclose(snapshot_kl(s, [z1, z2], T), expected, atol=1e-6)
    # averaging probabilities, not logits: differs from KL to softmax of the mean logit
    mean_logit = (0.5 * (z1 + z2) / T).softmax(1)
    assert not torch.allclose(expected, T**2 * (mean_logit * (mean_logit.log() - (s / T).log_softmax(1))).sum(1)
                              .mean(), atol=1e-4)
    # gradient reaches the student only; at T the KD gradient T * (p_s - p_bar) / N
    s.requires_grad_(True)
    z1.requires_grad_(True)
    snapshot_kl(s, [z1, z2], T).backward()
    assert z1.grad is None
    assert torch.allclose(s.grad, T * ((s / T).softmax(1) - p_bar).detach() / 5, atol=1e-6)


def test_dense_logits_drop_ignored_voxels() -> None:
    g = torch.Generator().manual_seed(1)
    s, z = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    assert float(snapshot_kl(s, [s])) == pytest.approx(0.0, abs=1e-6)
    full = snapshot_kl(s, [z], label=label)
    label[0] = -100
    half = snapshot_kl(s, [z], label=label)
    assert full.ndim == 0 and not torch.allclose(full, half)
    label[:] = -100
    assert float(snapshot_kl(s, [z], label=label)) == 0.0
    with pytest.raises(ValueError, match="at least one snapshot"):
        snapshot_kl(s, [])


def test_the_ring_drops_the_oldest_and_snapshots_stay_frozen() -> None:
    task = _Task(_mlp())
    strategy = SnapshotTeachers(k=2)
    strategy.setup(task)
    optimizer = torch.optim.SGD(task.student.parameters(), lr=0.5)
    weights = []
    for epoch in range(3):
        for it in range(3):
            _step(strategy, task, optimizer, 10 * epoch + it)
        strategy.post_epoch(task, epoch)
        weights.append({k: v.detach().clone() for k, v in task.student.state_dict().items()})
    assert len(strategy.ring) == 2 and strategy.taken == 3
    for snap, kept in zip(strategy.ring, weights[1:]):  # epochs 1 and 2 kept, epoch 0 dropped
        assert all(torch.equal(snap[k], kept[k]) for k in kept)
    assert not any(torch.equal(snap["0.weight"], weights[0]["0.weight"]) for snap in strategy.ring)
    # further training moves the student, not the snapshots; neither snapshots nor shadow get gradients
    for it in range(3):
        logs = _step(strategy, task, optimizer, 100 + it)
    assert logs["snapshot_kl"] > 0 and logs["snapshots"] == 2
    assert not torch.equal(task.student.state_dict()["0.weight"], weights[2]["0.weight"])
    for snap, kept in zip(strategy.ring, weights[1:]):
        assert all(torch.equal(snap[k], kept[k]) and not snap[k].requires_grad and snap[k].device.type == "cpu"
                   for k in kept)
    assert strategy.shadow is not None and not strategy.shadow.training
    assert all(not p.requires_grad and p.grad is None for p in strategy.shadow.parameters())
    assert all(p.grad is not None for p in task.student.parameters())


def test_the_shadow_carries_no_feature_taps() -> None:
    student = _mlp()
    tap = FeatureTap(student, ["0"])
    task = _Task(student)
    strategy = SnapshotTeachers(k=1)
    strategy.setup(task)
    strategy.post_epoch(task, 0)
    images = _batch()["image"]
    student(images)
    mine = tap.pop()["feat:0"]
    strategy.snapshot_logits(images + 1.0)  # the shadow's forward must not overwrite the student's taps
    assert tap.features == {} and mine.shape == (10, 8)
    strategy.teardown(task)
    assert strategy.shadow is None


@pytest.mark.parametrize(("params", "message"), [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"weight": -1.0}, "weight must be a number >= 0"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"K": 2}, "no parameter 'K'"),
])
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_strategy("snapshot_teachers", **params)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=0, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)


def test_a_tiny_run_from_yaml(lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "snap"
    summary = api.distill_run(PRESET, lesions, out, progress=False,
                              overrides=[*FAST, "eval.log_interval=1", "distill.strategy_params={k: 2}"])
    strategy = summary["strategy"]
    assert strategy["name"] == "snapshot_teachers" and strategy["params"] == {"k": 2}
    # 6 steps, 2 per epoch: snapshots after epochs 0, 1 and 2 (the last at the end); steps 3-6 carry the term
    assert strategy["snapshots_taken"] == 3 and strategy["steps_with_term"] == 4
    assert strategy["snapshot_kl_mean"] > 0
    metrics = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    steps = {m["iteration"]: m for m in metrics if "iteration" in m and "loss" in m}
    assert "snapshot_kl" not in steps[2] and steps[3]["snapshots"] == 1 and steps[6]["snapshots"] == 2
    assert summary["student"]["extra_params"] == 0 and (out / "student" / "best.pt").is_file()
    ckpt = torch.load(out / "student" / "last.pt", weights_only=True)
    assert "strategy" not in ckpt.get("modules", {})


def test_listed_as_a_strategy() -> None:
    rows = {p.key: p for p in api.distill_list(kind="strategy")}
    assert "snapshot_teachers" in rows and "snapshot" in rows["snapshot_teachers"].summary
