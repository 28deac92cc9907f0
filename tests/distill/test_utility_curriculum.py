# SPDX-License-Identifier: Apache-2.0
"""Curriculum Designer (spec §4): a known order recovered from hand-made prototypes; pacing monotone and reaching
every class; batches restricted to the available classes; a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from medkd.data.synthetic.lesion_classes import LESION_CLASS_NAMES
from medkd.distill import get_plugin
from medkd.distill.utilities.curriculum import Curriculum, _Paced, class_order, class_prototypes, pacing_table
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_curriculum.yaml"
FAST = ["optim.iterations=10", "eval.val_interval=5", "eval.log_interval=5", "data.batch_size=8",
        "data.image_size=[16, 16]"]


def _at(degrees: list[float]) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1)


def test_a_known_order_is_recovered_from_hand_made_prototypes() -> None:
    # nearest-neighbour angles: class 0 and 1 are 10 deg apart, class 2 40 deg from 1, class 3 70 deg from 2
    order, nearest = class_order(3.0 * _at([0.0, 10.0, 50.0, 120.0]))  # the scale does not matter (cosine)
    assert order == [3, 2, 0, 1]
    expected = [math.cos(math.radians(a)) for a in (10, 10, 40, 70)]
    assert torch.allclose(nearest.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_the_order_follows_the_classes_when_they_are_permuted() -> None:
    protos = _at([0.0, 10.0, 50.0, 120.0, 200.0])
    order, _ = class_order(protos)
    perm = torch.tensor([4, 2, 0, 3, 1])  # new class k is old class perm[k]
    new_order, _ = class_order(protos[perm])
    assert [int(perm[k]) for k in new_order] == order


def test_prototypes_are_class_means() -> None:
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(30, 6, generator=g), torch.randint(0, 3, (30,), generator=g)
    protos = class_prototypes(feats, labels, 4)
    for k in range(3):
        assert torch.allclose(protos[k], feats[labels == k].mean(0), atol=1e-6)
    assert protos[3].abs().sum() == 0  # no case of class 3
    maps = feats[:, :, None, None].expand(30, 6, 2, 2)
    assert torch.allclose(class_prototypes(maps, labels, 4), protos)  # feature maps are averaged first
    with pytest.raises(ValueError, match="K >= 2"):
        class_order(protos[:1])


@pytest.mark.parametrize("kind", ["linear", "root"])
@pytest.mark.parametrize(("classes", "epochs", "start", "full_at"),
                         [(5, 34, 2, 0.5), (5, 4, 2, 0.5), (3, 10, 1, 0.9), (10, 7, 3, 1.0), (4, 1, 2, 0.5)])
def test_pacing_is_monotone_and_reaches_every_class(kind: str, classes: int, epochs: int, start: int,
                                                    full_at: float) -> None:
    table = pacing_table(classes, epochs, start=start, full_at=full_at, kind=kind)
    assert len(table) == epochs and table[0] == (start if epochs > 1 else classes)
    assert all(a <= b for a, b in zip(table, table[1:]))
    full = math.ceil(full_at * (epochs - 1))
    assert all(g == classes for g in table[full:]) and all(g < classes for g in table[:full])


def test_root_pacing_is_ahead_of_linear_and_full_at_zero_gives_everything() -> None:
    linear, root = pacing_table(5, 20, kind="linear"), pacing_table(5, 20, kind="root")
    assert all(r >= lin for r, lin in zip(root, linear)) and root != linear
    assert pacing_table(5, 6, full_at=0.0) == [5] * 6
    with pytest.raises(ValueError, match="Did you mean 'root'"):
        pacing_table(5, 6, kind="roots")


def test_batches_hold_only_the_available_classes() -> None:
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(40, 1, 4, 4, generator=g), torch.arange(40) % 5
    cases = [f"c{i}" for i in range(40)]
    seen: list[dict] = []
    task = SimpleNamespace(data=SimpleNamespace(tensors=lambda split: (images, labels, cases),
                                                cfg=SimpleNamespace(data=SimpleNamespace(train_split="train"))),
                           step_loss=lambda batch, it: (seen.append(batch) or torch.zeros(()), {}))
    strategy = _Paced(order=[3, 1, 0, 4, 2], table=[2, 4, 5])
    strategy.setup(task)
    for epoch, allowed in enumerate(([3, 1], [3, 1, 0, 4], [0, 1, 2, 3, 4])):
        strategy.pre_epoch(task, epoch)
        idx = torch.randperm(40, generator=g)[:16]
        batch = {"image": images[idx], "label": labels[idx], "case": [cases[i] for i in idx.tolist()]}
        _, logs = strategy.train_step(task, batch, epoch + 1)
        got = seen[-1]
        assert len(got["label"]) == 16 and set(got["label"].tolist()) <= set(allowed)
        keep = torch.isin(labels[idx], torch.tensor(allowed))
        assert torch.equal(got["image"][keep], images[idx][keep])  # available rows stay as they were
        rows = [cases.index(c) for c in got["case"]]
        assert torch.equal(got["image"], images[rows]) and torch.equal(got["label"], labels[rows])
        assert logs["curriculum/classes"] == len(allowed)
    assert strategy.summary()["classes_per_epoch"] == [2, 4, 5]


@pytest.fixture(scope="module")
def setup(lesions_and_teacher: tuple[Path, Path]) -> tuple[Path, Path]:
    return lesions_and_teacher


def test_tiny_run_designs_and_trains(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    res = api.distill_tool("curriculum", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                           progress=False)
    stored = json.loads((tmp_path / "curriculum.json").read_text())
    assert sorted(stored["order"]) == sorted(LESION_CLASS_NAMES) and len(stored["similarity"]) == 5
    assert stored["pacing"]["classes_per_epoch"] == [2, 3, 5, 5, 5]  # 20 images / 8 per batch: 5 epochs of 2 steps
    nearest = [stored["nearest_similarity"][name] for name in stored["order"]]
    assert nearest == sorted(nearest)  # easy (least similar to any other class) first
    assert res["trained_classes_per_epoch"] == [2, 3, 5, 5, 5] and 0.0 <= res["test_accuracy"] <= 1.0
    assert (tmp_path / "student" / "best.pt").is_file()


def test_design_only(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    res = api.distill_tool("curriculum", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                           params={"train": False, "pacing": "root", "full_at": 1.0}, progress=False)
    assert "student" not in res and not (tmp_path / "student").exists()
    assert res["pacing"]["classes_per_epoch"] == pacing_table(5, 5, full_at=1.0, kind="root")


@pytest.mark.parametrize(("params", "sets", "match"), [
    ({"pacing": "quadratic"}, [], "Pacings: linear, root"),
    ({"full_at": 1.5}, [], "full_at"),
    ({"tap": "pol"}, [], "Did you mean 'pool'"),
    ({}, ["teacher.checkpoint="], "needs a trained teacher"),
])
def test_bad_input(params: dict, sets: list[str], match: str, setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    with pytest.raises(ConfigError, match=match):
        api.distill_tool("curriculum", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}",
                         *sets], params=params, progress=False)


def test_registered_as_a_tool() -> None:
    assert get_plugin("curriculum", kind="utility") is Curriculum and Curriculum.command == "tool"
