# SPDX-License-Identifier: Apache-2.0
"""The ``salt`` strategy (spec §3.18): losses on masked tokens only, a student that never sees them, a frozen
teacher in stage 2, bad parameters, and a tiny end-to-end run (pretraining on train + unlabelled images, the
linear probe as a normal classifier run, the random-encoder baseline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medkd import api
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.strategies.salt import (
    PretrainSchedule,
    latent_l1_loss,
    pixel_loss,
    train_latent_student,
    train_pixel_teacher,
)
from medkd.errors import ConfigError
from medkd.nets.token_vit import MaskedPredictor, MultiBlockMasking, TokenEncoder, multiblock_mask

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_salt.yaml"
TINY = "{dim: 16, depth: 1, heads: 2, patch: 4}"
FAST = ["optim.iterations=6", "eval.val_interval=3", "eval.log_interval=3", "data.batch_size=8",
        "data.image_size=[16, 16]", f"student.net_params={TINY}",
        "distill.strategy_params={teacher_iterations: 3, student_iterations: 3, predictor_depth: 1, "
        "predictor_width: 16, predictor_heads: 2, pretrain_splits: [teacher_train], decoder_depth: 1}"]
SMALL = {"image_size": 16, "patch": 4, "dim": 16, "depth": 1, "heads": 2}


def _pair(seed: int = 0) -> tuple[TokenEncoder, TokenEncoder, MaskedPredictor]:
    torch.manual_seed(seed)
    student, teacher = TokenEncoder(1, **SMALL), TokenEncoder(1, **SMALL)
    return student, teacher, MaskedPredictor(16, 16, student.grid, width=8, depth=1, heads=2)


def test_latent_loss_ignores_the_teacher_at_visible_positions() -> None:
    student, teacher, predictor = _pair()
    x = torch.rand(3, 1, 16, 16)
    m = multiblock_mask(3, student.grid, blocks=2, scale=0.2, seed=0)
    with torch.no_grad():
        targets, pred = teacher(x), predictor(student(x, m.visible), m.visible, m.masked)
    changed = targets.clone()
    changed.scatter_(1, m.visible[..., None].expand(-1, -1, 16), 50.0)  # teacher latents at visible tokens only
    assert float(latent_l1_loss(pred, targets, m.masked)) == float(latent_l1_loss(pred, changed, m.masked))
    changed.scatter_(1, m.masked[:, :1, None].expand(-1, -1, 16), 50.0)  # one masked target: the loss moves
    assert float(latent_l1_loss(pred, changed, m.masked)) > float(latent_l1_loss(pred, targets, m.masked)) + 1.0


def test_pixel_loss_uses_masked_patches_only() -> None:
    patches = torch.randn(2, 16, 16)
    masked = torch.tensor([[1, 5, 9], [0, 2, 15]])
    pred = torch.randn(2, 3, 16)
    visible_changed = patches.clone()
    keep = torch.ones(2, 16, dtype=torch.bool).scatter_(1, masked, False)
    visible_changed[keep] = 99.0
    for norm in (True, False):
        assert float(pixel_loss(pred, patches, masked, norm)) == float(pixel_loss(pred, visible_changed, masked, norm))
    assert float(pixel_loss(torch.zeros(1, 1, 2), torch.tensor([[[1.0, 3.0]]]), torch.tensor([[0]]))) == \
        pytest.approx(1.0, abs=1e-5)  # standardised target (-1, 1)


def test_student_never_sees_masked_tokens() -> None:
    """Stage 2's student output at the visible tokens is blind to the pixels of masked (and dropped) patches."""
    student, _, _ = _pair()
    x = torch.rand(2, 1, 16, 16)
    m = MultiBlockMasking()(2, student.grid, seed=3)[0]
    unseen = torch.ones(2, 16, dtype=torch.bool).scatter_(1, m.visible, False).view(2, 1, 4, 1, 4, 1)
    y = x + 10.0 * unseen.expand(-1, -1, -1, 4, -1, 4).reshape(2, 1, 16, 16)  # change every non-visible patch
    with torch.no_grad():
        assert not torch.allclose(student(x), student(y))
        torch.testing.assert_close(student(x, m.visible), student(y, m.visible))


def test_teacher_is_frozen_during_stage_two() -> None:
    student, teacher, predictor = _pair()
    images = torch.rand(10, 1, 16, 16)
    schedule = PretrainSchedule(iterations=3, batch_size=4, lr=1e-2)
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    losses = train_latent_student(student, predictor, teacher, images, schedule)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert any(not torch.equal(v, student.state_dict()[k]) for k, v in student_before.items())


def test_pixel_teacher_learns_and_schedule_warms_up() -> None:
    torch.manual_seed(0)
    encoder = TokenEncoder(1, **SMALL)
    decoder = MaskedPredictor(16, encoder.patch_dim, encoder.grid, width=16, depth=1, heads=2)
    images = torch.rand(1, 1, 16, 16).repeat(8, 1, 1, 1)  # one image: reconstruction is learnable quickly
    losses = train_pixel_teacher(encoder, decoder, images, PretrainSchedule(iterations=40, batch_size=4, lr=1e-2))
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    s = PretrainSchedule(iterations=100, lr=1.0, warmup=0.1)
    assert s.lr_at(1) == pytest.approx(0.1) and s.lr_at(10) == pytest.approx(1.0) and s.lr_at(100) < 0.01


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"net_params": {"widht": 8}}, "unknown keys"),
        ({"mask_blocks": [8], "mask_scales": [0.1, 0.2]}, "one entry per mask group"),
        ({"predictor_width": 10, "predictor_heads": 4}, "divisible"),
        ({"teacher_iterations": -1}, ">= 0"),
        ({"min_keep": 0}, "min_keep"),
        ({"pretrain_splits": "teacher_train"}, "list of split names"),
    ],
)
def test_bad_parameters(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_strategy("salt", **params)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=1, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=6, size=32)


@pytest.fixture(scope="module")
def run(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "salt"
    api.distill_run(PRESET, lesions, out, overrides=FAST, progress=False)
    return out


def test_end_to_end_linear_probe_run(run: Path) -> None:
    summary = json.loads((run / "summary.json").read_text())
    salt = summary["strategy"]
    assert salt["name"] == "salt" and salt["pretraining_images"] == 27  # 20 training + 1 teacher_train + 6 unlabelled
    assert salt["tokens"] == 16 and salt["probe_split"] == "test"
    assert salt["teacher_loss"]["last"] is not None and salt["student_loss"]["first"] is not None
    assert salt["probe_accuracy"] == summary["student"]["best"]["test"]["accuracy"]
    assert 0.0 <= salt["random_probe_accuracy"] <= 1.0
    student = json.loads((run / "student.json").read_text())
    assert student["net"] == "salt_vit" and student["net_params"]["image_size"] == [16, 16]
    assert "teacher" not in summary and not (run / "teacher").exists()
    # the probe trained only the head: the run's encoder is stage 2's, the random probe's its initialisation
    best = torch.load(run / "student" / "best.pt", weights_only=True)["student"]
    pretrained = torch.load(run / "salt" / "student.pt", weights_only=True)["encoder"]
    assert all(torch.equal(best[f"encoder.{k}"], v) for k, v in pretrained.items())
    baseline = torch.load(run / "random_probe" / "student" / "best.pt", weights_only=True)["student"]
    assert any(not torch.equal(baseline[f"encoder.{k}"], v) for k, v in pretrained.items())
    assert summary["student"]["extra_params"] == 0


def test_the_probe_is_a_normal_classifier_run(run: Path, lesions: Path) -> None:
    metrics = api.distill_eval(run, lesions, split="val", progress=False)
    assert metrics["n"] == 10 and 0.0 <= metrics["accuracy"] <= 1.0
    from medkd.nets import create_net

    info = json.loads((run / "student.json").read_text())
    net = create_net(info["net"], in_channels=info["in_channels"], num_classes=info["num_classes"],
                     **info["net_params"])
    net.load_state_dict(torch.load(run / "student" / "best.pt", weights_only=True)["student"])
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 5)


def test_resume_skips_finished_pretraining_stages(run: Path, lesions: Path) -> None:
    stamps = {name: (run / "salt" / name).stat().st_mtime_ns for name in ("teacher.pt", "student.pt")}
    before = json.loads((run / "summary.json").read_text())["strategy"]
    again = api.distill_run(PRESET, lesions, run, overrides=FAST, resume=True, progress=False)["strategy"]
    assert {name: (run / "salt" / name).stat().st_mtime_ns for name in stamps} == stamps
    assert again["teacher_loss"] == before["teacher_loss"] and again["student_loss"] == before["student_loss"]


def test_finetune_trains_the_encoder_too(lesions: Path, tmp_path: Path) -> None:
    params = FAST[-1].replace("decoder_depth: 1}", "decoder_depth: 1, finetune: true, random_baseline: false}")
    summary = api.distill_run(PRESET, lesions, tmp_path / "ft", overrides=[*FAST[:-1], params], progress=False)
    assert summary["strategy"]["probe"] == "finetune" and summary["strategy"]["random_probe_accuracy"] is None
    assert not (tmp_path / "ft" / "random_probe").exists()
    last = torch.load(tmp_path / "ft" / "student" / "last.pt", weights_only=True)["student"]
    pretrained = torch.load(tmp_path / "ft" / "salt" / "student.pt", weights_only=True)["encoder"]
    assert any(not torch.equal(last[f"encoder.{k}"], v) for k, v in pretrained.items())


def test_net_params_must_match_the_data(lesions: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="contradicts data.image_size"):
        api.distill_run(PRESET, lesions, tmp_path / "bad", progress=False,
                        overrides=[*FAST, "student.net_params={dim: 16, depth: 1, heads: 2, image_size: 32}"])
