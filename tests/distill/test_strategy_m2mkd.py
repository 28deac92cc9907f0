# SPDX-License-Identifier: Apache-2.0
"""m2mKD (spec §3.12): a copied teacher stage between identity stitches gives KL 0, the loss mixes CE and KL summed
over B * C, the meta model gets no gradient (and keeps its BatchNorm statistics) while a student stage trains inside
it; a tiny two-phase run, resumed from the saved modules; mismatched stages are refused. The MoE student: a mixture
keeps the stage's shape, equals the stage when all experts are the same and all are selected, its gates are
renormalised over the selected experts, its balance loss is 1 for a uniform router; a tiny run with experts=2 reloads
from student.json; bad MoE parameters are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from medkd import api
from medkd.config import load_config
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.config import DistillConfig
from medkd.distill.data import build_data
from medkd.distill.moe import MoEStage, balance_loss
from medkd.distill.strategies.m2mkd import HybridNet, Stitch, m2m_loss, stage_shapes
from medkd.errors import ConfigError
from medkd.distill.students import load_classifier
from medkd.nets import create_net

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_m2mkd.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.val_interval=3", "eval.log_interval=3",
        "data.batch_size=8", "data.image_size=[16, 16]", "teacher.net_params={width: 8}"]


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    teacher = create_net("kd_cnn_wide", width=8, depth=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        teacher.train()
        teacher(torch.randn(8, 1, 16, 16))
    return teacher.eval()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_copied_module_with_identity_stitches_gives_zero_kl(index: int) -> None:
    teacher = _teacher()
    widths = (1, *teacher.widths)
    block = copy.deepcopy(teacher.stages[index])
    hybrid = HybridNet(teacher, index, block, Stitch(widths[index], widths[index]),
                       Stitch(widths[index + 1], widths[index + 1])).eval()
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        _, parts = m2m_loss(hybrid(x), teacher(x), y)
        assert float(parts["kl"]) == pytest.approx(0.0, abs=1e-7)
        block[0][0].weight.mul_(-3)  # a perturbed student module is not the teacher's
        _, parts = m2m_loss(hybrid(x), teacher(x), y)
    assert float(parts["kl"]) > 1e-6


@pytest.mark.parametrize("alpha, temperature", [(0.0, 1.0), (1.0, 1.0), (0.5, 2.0)])
def test_loss_mixes_ce_and_kl_summed_over_batch_and_classes(alpha: float, temperature: float) -> None:
    g = torch.Generator().manual_seed(3)
    h, t, y = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g), torch.tensor([0, 1, 4, 2])
    loss, parts = m2m_loss(h, t, y, alpha, temperature)
    kl = F.kl_div(F.log_softmax(h / temperature, 1), F.softmax(t / temperature, 1), reduction="sum") / (4 * 5)
    assert torch.allclose(parts["kl"], temperature**2 * kl, rtol=1e-5)
    assert torch.allclose(loss, (1 - alpha) * F.cross_entropy(h, y) + alpha * temperature**2 * kl, rtol=1e-5)


def test_stitches_start_as_rectangular_identities() -> None:
    x = torch.randn(2, 6, 3, 3)
    assert torch.equal(Stitch(6, 6)(x), x)
    assert torch.equal(Stitch(6, 4)(x), x[:, :4])
    wide = Stitch(6, 8)(x)
    assert torch.equal(wide[:, :6], x) and not wide[:, 6:].any()
    assert torch.equal(Stitch(3, 3, spatial_dims=0)(x[:, :3, 0, 0]), x[:, :3, 0, 0])


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=30, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)


def test_meta_model_gets_no_gradient(lesions: Path, tmp_path: Path) -> None:
    cfg = load_config(DistillConfig, PRESET, FAST)
    data = build_data(cfg, lesions)
    teacher, student = _teacher(), create_net("kd_cnn", width=4, depth=3)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    strategy = create_strategy("m2mkd", module_iterations=3)
    ctx = SimpleNamespace(cfg=cfg, out=tmp_path, device=torch.device("cpu"), resume=False)
    shapes_t = stage_shapes(teacher, torch.zeros(1, 1, 16, 16))
    shapes_s = stage_shapes(student, torch.zeros(1, 1, 16, 16))
    block = student.stages[1]
    initial = {k: v.clone() for k, v in block.state_dict().items()}
    teacher.requires_grad_(False)
    hybrid = HybridNet(teacher, 1, block, Stitch(shapes_t[1][0][1], shapes_s[1][0][1]),
                       Stitch(shapes_s[1][1][1], shapes_t[1][1][1]))
    result = strategy._train_block(ctx, data, hybrid, 3)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # BN statistics too
    assert not teacher.training
    assert any(not torch.equal(initial[k], v) for k, v in block.state_dict().items())  # the student stage trained
    assert result["stage"] == 1 and 0.0 <= result["val_accuracy"] <= 1.0
    assert (tmp_path / "modules" / "stage_1.pt").is_file()


def test_two_phases_end_to_end_and_resume(lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "m2m"
    params = "distill.strategy_params={module_iterations: 2, head_iterations: 2}"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[*FAST, params])
    strategy = summary["strategy"]
    assert [b["stage"] for b in strategy["blocks"]] == [0, 1, 2, 3] and strategy["module_iterations"] == 2
    assert all(b["kl"] >= 0 and b["iterations"] == 2 for b in strategy["blocks"])
    assert 0.0 <= strategy["head_fit_val_accuracy"] <= 1.0
    student = summary["student"]
    assert student["iterations"] == 6 and student["best"]["test"]["n"] == 10 and student["extra_params"] == 0
    assert summary["teacher_training"]["net"] == "kd_cnn_wide"
    assert sorted(p.name for p in (out / "modules").iterdir()) == [f"stage_{i}.pt" for i in range(4)]
    metrics = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("kd/raw" in m for m in metrics)  # phase 2 trains on the YAML's terms with the teacher
    again = api.distill_run(PRESET, lesions, out, progress=False, overrides=[*FAST, params], resume=True)
    assert again["strategy"]["blocks"] == strategy["blocks"]  # the saved modules are read back


def test_mismatched_stages_are_refused(lesions: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="teacher has 3 stages, the student 4"):
        api.distill_run(PRESET, lesions, tmp_path / "r", progress=False,
                        overrides=[*FAST, "teacher.net_params={width: 8, depth: 3}"])
    with pytest.raises(ConfigError, match="alpha must be in"):
        create_strategy("m2mkd", alpha=1.5)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_moe_stage_keeps_the_shape_and_renormalises_its_gates(top_k: int) -> None:
    torch.manual_seed(0)
    stage = create_net("kd_cnn", width=4, depth=2).stages[1]
    moe = MoEStage(stage, experts=3, top_k=top_k)
    x = torch.randn(6, 4, 8, 8)
    assert moe(x).shape == stage(x).shape
    gates, chosen, probs = moe.route(x)
    assert gates.shape == chosen.shape == (6, top_k) and probs.shape == (6, 3)
    assert ((gates >= 0) & (gates <= 1)).all() and torch.allclose(gates.sum(1), torch.ones(6))
    assert (chosen.sort(1).values.diff(1) > 0).all()  # distinct experts per sample


def test_moe_of_identical_experts_all_selected_equals_the_stage() -> None:
    torch.manual_seed(1)
    stage = create_net("kd_cnn", width=4, depth=2).stages[1].eval()
    moe = MoEStage(stage, experts=2, top_k=2).eval()
    torch.nn.init.normal_(moe.router.weight)  # unequal gates: their sum, 1, is what makes the mixture the stage
    x = torch.randn(5, 4, 8, 8)
    with torch.no_grad():
        assert torch.allclose(moe(x), stage(x), atol=1e-5)


def test_balance_loss_is_one_for_a_uniform_router() -> None:
    moe = MoEStage(torch.nn.Conv2d(3, 3, 1), experts=4, top_k=2)
    torch.nn.init.zeros_(moe.router.weight)
    torch.nn.init.zeros_(moe.router.bias)
    moe(torch.randn(7, 3, 4, 4))
    assert float(moe.balance_loss) == pytest.approx(1.0)
    skewed = torch.tensor([[0.9, 0.1]] * 4)
    assert float(balance_loss(skewed, torch.zeros(4, 1, dtype=torch.long))) == pytest.approx(1.8)


def test_moe_student_end_to_end_and_reload(lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "moe"
    params = "distill.strategy_params={module_iterations: 1, experts: 2, top_k: 1}"
    summary = api.distill_run(PRESET, lesions, out, progress=False,
                              overrides=[*FAST, "optim.iterations=2", params])
    strategy = summary["strategy"]
    assert strategy["experts"] == 2 and strategy["top_k"] == 1
    assert all(b["balance"] > 0 for b in strategy["blocks"])
    assert json.loads((out / "student.json").read_text())["net_params"]["moe"]["experts"] == 2
    _, net = load_classifier(out)  # rebuilt from student.json, the trained weights fit
    assert sum(isinstance(m, MoEStage) for m in net.modules()) == len(strategy["blocks"])
    metrics = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("moe/balance" in m for m in metrics)
    again = api.distill_run(PRESET, lesions, out, progress=False, overrides=[*FAST, "optim.iterations=2", params],
                            resume=True)
    assert again["strategy"]["blocks"] == strategy["blocks"]  # the saved mixtures are read back


@pytest.mark.parametrize("params, match", [
    ({"experts": 1}, "experts must be >= 2"),
    ({"experts": 2, "top_k": 3}, "top_k must be in"),
    ({"experts": 2, "top_k": 0}, "top_k must be in"),
    ({"top_k": 2}, "needs experts >= 2"),
    ({"experts": 2, "balance_weight": -1.0}, "balance_weight must be >= 0"),
])
def test_bad_moe_parameters_are_refused(params: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_strategy("m2mkd", **params)
