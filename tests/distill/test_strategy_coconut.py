# SPDX-License-Identifier: Apache-2.0
"""``coconut`` (continual, spec §3.16 [recon]): SupCon's properties, the class-balanced reservoir buffer, the
forgetting formula, and tiny class- and site-incremental runs from the preset (with the fine-tuning baseline and
the paired-modality InfoNCE)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medkd import api
from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.strategies.coconut import (
    ClassBalancedBuffer, average_accuracy, average_forgetting, backward_transfer, class_balanced_selection,
    info_nce_loss, supcon_loss,
)
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_coconut.yaml"
FAST = ["optim.iterations=6", "eval.val_interval=3", "eval.log_interval=3", "data.batch_size=8",
        "data.image_size=[16, 16]", "student.net_params={width: 4}"]


# ------------------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_samples_of_one_class_give_supcon_zero(seed: int) -> None:
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(seed))
    assert abs(float(supcon_loss(z, torch.tensor([4, 4]), temperature=0.1))) < 1e-6


def test_supcon_is_lower_for_aligned_than_for_shuffled_embeddings() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(8)
    centres = torch.randn(4, 32, generator=g)
    z = centres[labels] + 0.1 * torch.randn(32, 32, generator=g)
    shuffled = labels[torch.randperm(32, generator=g)]
    assert supcon_loss(z, labels) < supcon_loss(z, shuffled) - 1.0
    assert float(supcon_loss(z, torch.arange(32))) == 0.0  # no positives at all
    z.requires_grad_(True)
    supcon_loss(z, labels).backward()
    assert torch.isfinite(z.grad).all()


def test_info_nce_prefers_matching_pairs() -> None:
    a = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    assert info_nce_loss(a, a) < info_nce_loss(a, a.roll(1, 0))


# ------------------------------------------------------------------------------------------------------ buffer
def test_selection_keeps_the_lowest_priorities_of_each_class() -> None:
    labels = torch.tensor([2, 0, 2, 0, 2, 1])
    priority = torch.tensor([0.9, 0.5, 0.1, 0.2, 0.3, 0.7])
    assert class_balanced_selection(labels, priority, 2).tolist() == [1, 2, 3, 4, 5]
    assert class_balanced_selection(labels, priority, 1).tolist() == [2, 3, 5]
    assert class_balanced_selection(labels, priority, 0).tolist() == []


def test_buffer_stays_class_balanced_after_several_updates() -> None:
    buf = ClassBalancedBuffer(12, seed=0)
    g = torch.Generator().manual_seed(1)

    def offer(classes: list[int], n: int) -> None:
        labels = torch.tensor(classes).repeat_interleave(n)
        buf.update(torch.rand(len(labels), 1, 2, 2, generator=g), labels, cases=[f"c{i}" for i in range(len(labels))])

    offer([0, 1], 20)
    assert buf.counts() == {0: 6, 1: 6}
    offer([2], 30)
    assert buf.counts() == {0: 4, 1: 4, 2: 4}
    offer([0, 3], 15)
    assert buf.counts() == {0: 3, 1: 3, 2: 3, 3: 3} and len(buf) == 12
    offer([4], 1)  # a class with fewer samples than slots keeps them all
    assert buf.counts() == {0: 2, 1: 2, 2: 2, 3: 2, 4: 1}
    batch = buf.sample(5, torch.Generator().manual_seed(0))
    assert batch["image"].shape == (5, 1, 2, 2) and len(batch["case"]) == 5
    assert len(set(zip(batch["label"].tolist(), batch["case"]))) == 5  # distinct samples


def test_buffer_is_a_uniform_reservoir_within_a_class_and_deterministic() -> None:
    def run(seed: int) -> torch.Tensor:
        buf = ClassBalancedBuffer(100, seed=seed)
        for chunk in range(10):  # ids 0..999 of one class, 100 per update
            ids = torch.arange(chunk * 100, (chunk + 1) * 100)
            buf.update(ids.float().view(-1, 1, 1, 1), torch.zeros(100, dtype=torch.long))
        return buf.images.flatten().sort().values

    kept = run(0)
    assert len(kept) == 100 and torch.equal(kept, run(0)) and not torch.equal(kept, run(1))
    per_chunk = torch.bincount((kept // 100).long(), minlength=10)
    assert per_chunk.min() >= 3 and per_chunk.max() <= 20  # every update is represented, none dominates
    assert 400 < float(kept.mean()) < 600


def test_buffer_rejects_inconsistent_updates() -> None:
    buf = ClassBalancedBuffer(4)
    buf.update(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="paired images"):
        buf.update(torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), paired=torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match="one image, label"):
        buf.update(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1]))


# ------------------------------------------------------------------------------------------------------ metrics
def test_forgetting_and_average_accuracy_on_a_known_matrix() -> None:
    acc = [[0.8, 0.1, 0.0],
           [0.5, 0.9, 0.2],
           [0.4, 0.6, 0.9]]
    assert average_accuracy(acc) == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert average_forgetting(acc) == pytest.approx(((0.8 - 0.4) + (0.9 - 0.6)) / 2)
    assert backward_transfer(acc) == pytest.approx(((0.4 - 0.8) + (0.6 - 0.9)) / 2)
    assert average_forgetting([[0.7]]) == 0.0
    # Chaudhry et al.: the max runs over the stages before the last, so a stage that improved later counts negative
    assert average_forgetting([[0.5, 0.0], [0.9, 0.3]]) == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="square"):
        average_forgetting([[0.5, 0.1]])


@pytest.mark.parametrize(("params", "message"), [
    ({"stages": [[0, 1], [1, 2]]}, "more than one stage"),
    ({"stages": [[0], []]}, "non-empty list of class indices"),
    ({"stages": [[0]], "key": "modality"}, "not both"),
    ({"values": ["A"]}, "set key too"),
    ({"buffer": -1}, "buffer and stage_iterations >= 0"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"kd_weight": -0.5}, "kd_weight must be >= 0"),
    ({"buffr": 10}, "Did you mean 'buffer'"),
])
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_strategy("coconut", **params)


# ------------------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=0, n_train=30, n_val=15,
                                 n_test=15, n_unlabelled=0, size=32, paired=True)
    write_classification_datalist(root)
    return root


@pytest.fixture(scope="module")
def continual(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "coconut"
    return out, api.distill_run(PRESET, lesions, out, progress=False, overrides=FAST)


def _logged(run: Path) -> set[str]:
    lines = (run / "student" / "metrics.jsonl").read_text().splitlines()
    return {k for line in lines for k in json.loads(line)}


def test_class_incremental_run_reports_a_stage_matrix(continual: tuple[Path, dict]) -> None:
    out, summary = continual
    strategy = summary["strategy"]
    assert strategy["mode"] == "class" and strategy["stages"] == [[0, 1], [2, 3], [4]]
    matrix = strategy["accuracy_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert all(0.0 <= a <= 1.0 for row in matrix for a in row)
    assert strategy["average_accuracy"] == pytest.approx(average_accuracy(matrix))
    assert strategy["average_forgetting"] == pytest.approx(average_forgetting(matrix))
    assert strategy["stage_runs"] == ["stages/s0", "stages/s1", "."]
    for stage in ("s0", "s1"):
        assert (out / "stages" / stage / "student" / "last.pt").is_file()
    assert summary["student"]["best"]["test"]["n"] == 15  # the final run is evaluated on every class
    assert summary["student"]["extra_params"] > 0  # the projection head trains with the student
    assert {"supcon", "kd_prev"} <= _logged(out)  # the last stage rehearses, contrasts and distils
    first = _logged(out / "stages" / "s0")
    assert "supcon" in first and "kd_prev" not in first  # no previous model in the first stage
    per_class = strategy["buffer"]["per_class"]
    assert set(per_class) == {"0", "1", "2", "3", "4"} and strategy["buffer"]["size"] <= 200


def test_fine_tuning_baseline_has_no_buffer_supcon_or_kd(lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "finetune"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[
        *FAST, "distill.strategy_params={stages: [[0, 1, 2], [3, 4]], buffer: 0, supcon_weight: 0, kd_weight: 0}"])
    strategy = summary["strategy"]
    assert len(strategy["accuracy_matrix"]) == 2 and strategy["buffer"]["size"] == 0
    assert summary["student"]["extra_params"] == 0
    assert not {"supcon", "kd_prev"} & _logged(out)


def test_site_incremental_run_with_paired_infonce(lesions: Path, tmp_path: Path) -> None:
    out = tmp_path / "sites"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[
        *FAST, "data.paired_column=paired", "distill.strategy_params={key: modality, infonce_weight: 0.5}"])
    strategy = summary["strategy"]
    assert strategy["mode"] == "site" and strategy["stages"] == ["A", "B"]
    assert len(strategy["accuracy_matrix"]) == 2 and all(len(r) == 2 for r in strategy["accuracy_matrix"])
    assert {"supcon", "infonce", "kd_prev"} <= _logged(out)


def test_stages_naming_missing_classes_fail_before_training(lesions: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stages name classes \[7\]"):
        api.distill_run(PRESET, lesions, tmp_path / "bad", progress=False,
                        overrides=[*FAST, "distill.strategy_params={stages: [[0, 7]]}"])
    with pytest.raises(ConfigError, match="num_stages 6 exceeds the 5 classes"):
        api.distill_run(PRESET, lesions, tmp_path / "bad", progress=False,
                        overrides=[*FAST, "distill.strategy_params={num_stages: 6}"])
