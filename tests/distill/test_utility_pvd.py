# SPDX-License-Identifier: Apache-2.0
"""PVD-AL (spec §4): case weights proportional to the loss and summing to 1; the stage schedule; stages unfreeze in
order (a later stage's parameters are untouched before its stage); a tiny run against plain KD."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from medkd.config import load_config
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import get_plugin
from medkd.distill.config import DistillConfig
from medkd.distill.utilities.pvd import PVD, _Progressive, active_weights, stage_bounds, stage_of
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_pvd.yaml"
FAST = ["optim.iterations=10", "eval.val_interval=5", "eval.log_interval=5", "data.batch_size=8",
        "data.image_size=[16, 16]"]


@pytest.mark.parametrize("losses", [[1.0, 3.0], [0.2, 0.2, 0.6, 5.0], [0.0, 2.0, 0.0], [7.0]])
def test_weights_are_proportional_to_the_loss_and_sum_to_one(losses: list[float]) -> None:
    loss = torch.tensor(losses, requires_grad=True)
    w = active_weights(loss)
    assert not w.requires_grad and float(w.sum()) == pytest.approx(1.0)
    assert torch.allclose(w * sum(losses), torch.tensor(losses))


def test_zero_losses_give_uniform_weights() -> None:
    assert active_weights(torch.zeros(4)).tolist() == [0.25] * 4


@pytest.mark.parametrize(("iterations", "blocks", "fraction"), [(100, 4, 0.5), (10, 4, 0.8), (7, 3, 0.0)])
def test_stages_follow_each_other(iterations: int, blocks: int, fraction: float) -> None:
    bounds = stage_bounds(iterations, blocks, fraction)
    assert len(bounds) == blocks and list(bounds) == sorted(bounds)
    assert bounds[-1] == round(fraction * iterations)
    stages = [stage_of(it, bounds) for it in range(1, iterations + 1)]
    assert stages == sorted(stages) and stages[-1] == blocks + 1
    assert sum(s <= blocks for s in stages) == bounds[-1]
    with pytest.raises(ValueError, match="block_fraction"):
        stage_bounds(iterations, blocks, 1.0)


@pytest.fixture(scope="module")
def setup(lesions_and_teacher: tuple[Path, Path]) -> tuple[Path, Path]:
    return lesions_and_teacher


def _stage_state(net: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters of each student stage and of the head, flattened."""
    parts = [*net.stages, net.head]
    return [torch.cat([p.detach().flatten() for p in m.parameters()]).clone() for m in parts]


def test_stages_unfreeze_in_order(setup: tuple[Path, Path]) -> None:
    from medkd.distill.data import build_data
    from medkd.distill.networks import build_network
    from medkd.distill.task import DistillTask
    from medkd.distill.teachers import load_teacher
    from medkd.distill.terms import WeightedTerms

    root, teacher = setup
    cfg = load_config(DistillConfig, PRESET, FAST)
    data = build_data(cfg, root)
    torch.manual_seed(0)
    student = build_network(cfg, data, "kd_cnn", {})[0]
    taps = tuple(f"stages.{i}" for i in range(4))
    bounds = (2, 4, 6, 8)  # two steps per block stage, then two on the logits
    strategy = _Progressive(taps, taps, bounds)
    task = DistillTask(student=student, teacher=load_teacher(teacher).network, terms=WeightedTerms(cfg.distill.terms),
                       data=data, optim=replace(cfg.optim, iterations=10), device=torch.device("cpu"), hooks=strategy)
    start, batches = _stage_state(student), data.batches(0)
    connectors = [c.weight.detach().clone() for c in strategy.connectors]
    try:
        for it in range(1, 11):  # the engine's step: zero_grad(set_to_none=True), loss, backward, step
            task.optimizer.zero_grad(set_to_none=True)
            loss, logs = task.compute_loss(next(batches), it)
            loss.backward()
            task.optimizer.step()
            stage = stage_of(it, bounds)
            assert logs["pvd/stage"] == stage
            now = _stage_state(student)
            changed = [not torch.equal(a, b) for a, b in zip(start, now)]
            if stage <= 4:  # stages 0..stage-1 train (earlier ones keep training), later stages and the head wait
                assert changed == [k < stage for k in range(5)], (it, changed)
                assert [not torch.equal(a, c.weight) for a, c in zip(connectors, strategy.connectors)] == \
                    [k < stage for k in range(4)]
        assert all(not torch.equal(a, b) for a, b in zip(start, _stage_state(student)))
    finally:
        task.close()
    assert not strategy.s_tap._handles and not strategy.t_tap._handles


@pytest.fixture(scope="module")
def result(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from medkd import api

    root, teacher = setup
    out = tmp_path_factory.mktemp("pvd")
    return out, api.distill_tool("pvd", PRESET, root, out, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                                 progress=False)


def test_tiny_run_writes_a_normal_run_and_compares_with_kd(result: tuple[Path, dict]) -> None:
    out, res = result
    assert [s["stage"] for s in res["schedule"]] == [1, 2, 3, 4, 5]
    assert res["schedule"][-1]["last"] == 10 and res["schedule"][3]["last"] == 5
    for key in ("pvd", "kd"):
        assert 0.0 <= res[key]["test_accuracy_best"] <= 1.0 and res[key]["seconds"] > 0
    assert res["pvd"]["extra_params"] > 0 and res["kd"]["extra_params"] == 0  # the connectors
    assert json.loads((out / "run.json").read_text())["method"] == "distill"
    ckpt = torch.load(out / "student" / "last.pt", weights_only=True)
    assert any(k.startswith("0.") for k in ckpt["modules"]["strategy"])  # connectors saved for resume...
    assert set(ckpt["student"]) == set(torch.load(out / "kd" / "student" / "last.pt", weights_only=True)["student"])
    assert json.loads((out / "pvd.json").read_text())["delta_test_accuracy_best"] is not None


@pytest.mark.parametrize(("params", "sets", "match"), [
    ({"block_fraction": 1.0}, [], "block_fraction"),
    ({"student_taps": ["stages.0"], "teacher_taps": ["stages.0", "stages.1"]}, [], "pair stages"),
    ({"student_taps": ["stages.9"]}, [], "student has no module 'stages.9'"),
    ({}, ["teacher.checkpoint="], "needs a trained teacher"),
])
def test_bad_input(params: dict, sets: list[str], match: str, setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    with pytest.raises(ConfigError, match=match):
        api.distill_tool("pvd", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}", *sets],
                         params=params, progress=False)


def test_registered_as_a_tool() -> None:
    assert get_plugin("pvd", kind="utility") is PVD and PVD.command == "tool"
