# SPDX-License-Identifier: Apache-2.0
"""MST-Distill (spec §3.11): a uniform gate has no balance cost, one expert is plain KD, masks lie in (0, 1), the
gate learns from the KD term only when ``gate_weighted``; a tiny three-stage run on paired SynthLesion-2D, reusing
its multi-modal teacher frozen (``strategy_params.teacher_checkpoint`` or the experiment's ``teacher.checkpoint``);
bad settings and image-only teachers are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medkd import api
from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.losses.kd import KDLoss
from medkd.distill.strategies.mst_distill import (
    GateNet,
    MaskNet,
    balance_loss,
    masked_forward,
    topk_expert_kd,
)
from medkd.distill.students import load_classifier
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_mst_distill.yaml"
FAST = ["optim.iterations=4", "eval.val_interval=2", "eval.log_interval=2", "data.batch_size=8",
        "data.image_size=[16, 16]"]
PARAMS = "cotrain_iterations: 3, mask_iterations: 3, teacher_net: kd_cnn, teacher_params: {width: 4}"


def test_uniform_gate_has_no_balance_cost_and_skew_costs() -> None:
    assert float(balance_loss(torch.full((5, 4), 0.25))) == pytest.approx(0.0, abs=1e-7)
    # uniform on average, though no single row is uniform
    rows = torch.eye(4).repeat(2, 1) * 0.9 + 0.025
    assert float(balance_loss(rows)) == pytest.approx(0.0, abs=1e-6)
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(3, 1)
    expected = sum(0.25 * torch.log(torch.tensor(0.25 / m)) for m in (0.7, 0.1, 0.1, 0.1))
    assert float(balance_loss(skewed)) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_one_expert_is_plain_kd(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    loss, chosen = topk_expert_kd(s, t[:, None], torch.ones(6, 1), k=1, temperature=temperature)
    kd = KDLoss(temperature=temperature)({"logits": s}, {"logits": t}, {})["kd"]
    assert torch.allclose(loss, kd, rtol=1e-6) and chosen.eq(0).all()


def test_top_k_picks_the_gate_favourites_and_averages_them() -> None:
    g = torch.Generator().manual_seed(1)
    s, experts = torch.randn(3, 4, generator=g), torch.randn(3, 3, 4, generator=g)
    gate = torch.softmax(torch.randn(3, 3, generator=g), 1)
    loss, chosen = topk_expert_kd(s, experts, gate, k=2, temperature=2.0)
    assert torch.equal(chosen, gate.topk(2, 1).indices)
    manual = torch.stack([torch.stack([
        KDLoss(temperature=2.0)({"logits": s[b:b + 1]}, {"logits": experts[b:b + 1, e]}, {})["kd"]
        for e in chosen[b].tolist()]).mean() for b in range(3)]).mean()
    assert torch.allclose(loss, manual, rtol=1e-5)
    with pytest.raises(ValueError, match="k must be in 1..3"):
        topk_expert_kd(s, experts, gate, k=4)


def test_gate_learns_from_kd_only_when_weighted() -> None:
    g = torch.Generator().manual_seed(2)
    s, experts = torch.randn(4, 5, generator=g), torch.randn(4, 4, 5, generator=g)
    gate_net = GateNet(5, 4)
    for weighted in (False, True):
        gate_net.zero_grad()
        probs = torch.softmax(gate_net(s), 1)
        loss, _ = topk_expert_kd(s, experts, probs, k=1, weighted=weighted)
        plain, _ = topk_expert_kd(s, experts, probs.detach(), k=1)
        assert torch.allclose(loss, plain)  # same value either way
        if weighted:
            loss.backward()
            assert gate_net.fc2.weight.grad is not None and gate_net.fc2.weight.grad.abs().sum() > 0
        else:
            assert not loss.requires_grad or not torch.autograd.grad(loss, gate_net.fc2.weight, allow_unused=True)[0]


def test_masks_lie_in_open_unit_interval_and_scale_channels() -> None:
    torch.manual_seed(0)
    for feat in (torch.randn(3, 16, 5, 5) * 4, torch.randn(3, 16)):
        mask = MaskNet(16)(feat)
        assert mask.shape == (3, 16) and bool(((mask > 0) & (mask < 1)).all())
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    x = torch.randn(2, 1, 5, 5)
    with masked_forward(net[0], lambda f: torch.full(f.shape[:2], 0.5)):
        masked = net(x)
    assert torch.allclose(masked, torch.relu(0.5 * net[0](x)).flatten(1)) and not net[0]._forward_hooks


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"k must be in 1..4"):
        create_strategy("mst_distill", k=5)
    with pytest.raises(ConfigError, match="temperature"):
        create_strategy("mst_distill", temperature=0)
    with pytest.raises(ConfigError, match="mask_layers"):
        create_strategy("mst_distill", mask_layers=[])
    with pytest.raises(ConfigError, match="Did you mean 'gate_weighted'"):
        create_strategy("mst_distill", gate_weigted=True)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=0, n_train=24, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32, paired=True)
    write_classification_datalist(root)
    return root


@pytest.fixture(scope="module")
def run(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "mst"
    summary = api.distill_run(PRESET, lesions, out, progress=False,
                              overrides=[*FAST, f"distill.strategy_params={{{PARAMS}}}"])
    return out, summary


def test_three_stages_end_to_end(run: tuple[Path, dict]) -> None:
    out, summary = run
    strategy = summary["strategy"]
    assert strategy["name"] == "mst_distill" and strategy["cotrain"]["teacher_frozen"] is False
    assert strategy["experts"] == ["teacher:stages.2", "teacher:stages.3", "auxiliary:stages.2", "auxiliary:stages.3"]
    assert len(strategy["mask_kl"]["last"]) == 4 and strategy["mask_kl"]["iterations"] == 3
    assert sum(strategy["routing"]) == pytest.approx(1.0, abs=1e-3)
    assert set(strategy["test_accuracy"]) == {"teacher", "auxiliary", "experts"}
    student = summary["student"]
    assert student["iterations"] == 4 and student["best"]["test"]["n"] == 10 and student["extra_params"] > 0
    ckpt = torch.load(out / "student" / "last.pt", weights_only=True)
    assert any(k.startswith("gate.") for k in ckpt["modules"]["strategy"])
    assert any(k.startswith("masks.") for k in ckpt["modules"]["strategy"])
    assert not any("gate" in k or "mask" in k for k in ckpt["student"])  # never part of the student
    info, net = load_classifier(out)  # a plain single-modality student
    assert info.net == "kd_cnn" and info.in_channels == 1 and net(torch.rand(2, 1, 16, 16)).shape == (2, 5)
    metrics = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("mst_kd" in m and "balance" in m for m in metrics)
    cotrain = [json.loads(line) for line in (out / "cotrain" / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_t" in m and "loss_a" in m for m in cotrain)
    teacher_info, _ = load_classifier(out / "mm_teacher")
    assert teacher_info.in_channels == 2 and (out / "auxiliary" / "student" / "best.pt").is_file()


def test_reused_teacher_stays_frozen(run: tuple[Path, dict], lesions: Path, tmp_path: Path) -> None:
    out, _ = run
    reuse = f"teacher_checkpoint: {out / 'mm_teacher'}, k: 2, gate_weighted: true"
    summary = api.distill_run(PRESET, lesions, tmp_path / "again", progress=False,
                              overrides=[*FAST, f"distill.strategy_params={{{PARAMS}, {reuse}}}"])
    assert summary["strategy"]["cotrain"]["teacher_frozen"] is True
    assert not (tmp_path / "again" / "mm_teacher").exists() and (tmp_path / "again" / "auxiliary").is_dir()
    cotrain = (tmp_path / "again" / "cotrain" / "student" / "metrics.jsonl").read_text()
    assert '"loss_a"' in cotrain and '"loss_t"' not in cotrain  # the teacher is not co-trained
    with pytest.raises(ConfigError, match="takes 1 input channels"):
        api.distill_run(PRESET, lesions, tmp_path / "bad", progress=False, overrides=[
            *FAST, f"distill.strategy_params={{{PARAMS}, teacher_checkpoint: {out / 'auxiliary'}}}"])


def test_experiment_teacher_checkpoint_is_the_frozen_multimodal_teacher(run: tuple[Path, dict], lesions: Path,
                                                                         tmp_path: Path) -> None:
    """A multi-modal teacher (2 C inputs) given as the experiment's teacher.checkpoint: the runner neither times nor
    tests it on image-only batches (Strategy.owns_teacher), and MST-Distill uses it frozen with paired inputs."""
    out, _ = run
    summary = api.distill_run(PRESET, lesions, tmp_path / "ckpt", progress=False, overrides=[
        *FAST, f"distill.strategy_params={{{PARAMS}}}", f"teacher.checkpoint={out / 'mm_teacher'}",
        "eval.teacher=true"])
    assert summary["strategy"]["cotrain"]["teacher_frozen"] is True
    assert summary["teacher"]["source"] == str(out / "mm_teacher") and "latency_ms" not in summary["teacher"]
    assert set(summary["strategy"]["test_accuracy"]) == {"teacher", "auxiliary", "experts"}  # tested with pairs
    assert not (tmp_path / "ckpt" / "mm_teacher").exists()
    cotrain = (tmp_path / "ckpt" / "cotrain" / "student" / "metrics.jsonl").read_text()
    assert '"loss_a"' in cotrain and '"loss_t"' not in cotrain


def test_experiment_teacher_net_only_names_the_architecture(lesions: Path, tmp_path: Path) -> None:
    params = "cotrain_iterations: 3, mask_iterations: 3"
    summary = api.distill_run(PRESET, lesions, tmp_path / "net", progress=False, overrides=[
        *FAST, f"distill.strategy_params={{{params}}}", "teacher.net=kd_cnn", "teacher.net_params={width: 4}"])
    assert not (tmp_path / "net" / "teacher").exists() and "teacher" not in summary  # not trained image-only first
    info, _ = load_classifier(tmp_path / "net" / "mm_teacher")
    assert info.net == "kd_cnn" and info.net_params == {"width": 4} and info.in_channels == 2


def test_image_only_or_two_teacher_checkpoints_are_refused(run: tuple[Path, dict], lesions: Path,
                                                           tmp_path: Path) -> None:
    out, _ = run
    with pytest.raises(ConfigError, match=r"teacher\.checkpoint .*auxiliary takes 1 input channels.*needs 2"):
        api.distill_run(PRESET, lesions, tmp_path / "a", progress=False, overrides=[
            *FAST, f"distill.strategy_params={{{PARAMS}}}", f"teacher.checkpoint={out / 'auxiliary'}"])
    assert not (tmp_path / "a" / "cotrain").exists()  # refused before any training
    with pytest.raises(ConfigError, match="set only one"):
        api.distill_run(PRESET, lesions, tmp_path / "b", progress=False, overrides=[
            *FAST, f"distill.strategy_params={{{PARAMS}, teacher_checkpoint: {out / 'mm_teacher'}}}",
            f"teacher.checkpoint={out / 'mm_teacher'}"])


def test_needs_the_paired_modality_and_known_mask_layers(lesions: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.paired_column"):
        api.distill_run(PRESET, lesions, tmp_path / "a", progress=False, overrides=[*FAST, "data.paired_column="])
    with pytest.raises(ConfigError, match="no module 'stages.9'.*Did you mean"):
        api.distill_run(PRESET, lesions, tmp_path / "b", progress=False,
                        overrides=[*FAST, "distill.strategy_params={mask_layers: [stages.9]}"])
