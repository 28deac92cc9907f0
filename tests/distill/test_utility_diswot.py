# SPDX-License-Identifier: Apache-2.0
"""DisWOT (spec §3.6): identical nets score 0 (the maximum); the score ignores the batch order; the channel form
equals the official ICKD computation; the seeded aging evolution respects the budget and finds a toy optimum; FLOPs;
a tiny ``medkd distill search diswot`` run through the API, with the chosen and the default student trained."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medkd.config import load_config
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import get_plugin
from medkd.distill.config import DistillConfig
from medkd.distill.flops import count_flops
from medkd.distill.utilities.diswot import (
    DisWOT, DisWOTScorer, aging_evolution, create_space, diswot_score, gaussian_init_, relation_mismatch,
    semantic_mismatch,
)
from medkd.errors import ConfigError
from medkd.nets import count_parameters, create_net

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_diswot.yaml"
FAST = ["optim.iterations=4", "eval.val_interval=2", "eval.log_interval=2", "data.batch_size=8",
        "data.image_size=[16, 16]"]
NETS = [("kd_cnn", {"width": 4, "depth": 2}), ("monai_resnet10", {"widen_factor": 0.125})]


def _batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=g), torch.arange(n) % 3


def _net(name: str, params: dict, seed: int = 0) -> torch.nn.Module:
    return gaussian_init_(create_net(name, in_channels=1, num_classes=3, **params), seed).train()


@pytest.mark.parametrize(("name", "params"), NETS)
def test_identical_nets_score_zero_the_maximum(name: str, params: dict) -> None:
    x, y = _batch()
    net = _net(name, params)
    same = diswot_score(net, copy.deepcopy(net), x, y)
    assert (same.score, same.m_sem, same.m_rel) == (0.0, 0.0, 0.0) and same.semantic == "channel"
    for other in (_net(name, params, seed=1), _net("kd_cnn", {"width": 6, "depth": 3})):
        assert diswot_score(net, other, x, y).score < 0.0


@pytest.mark.parametrize("student", [("kd_cnn", {"width": 4, "depth": 2}), ("kd_cnn", {"width": 6, "depth": 3})])
def test_batch_order_invariant(student: tuple[str, dict]) -> None:
    x, y = _batch(12)
    teacher, net = _net("kd_cnn", {"width": 4, "depth": 2}, seed=3), _net(*student)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    a, b = diswot_score(teacher, net, x, y), diswot_score(teacher, net, x[perm], y[perm])
    assert a.score < 0 and b.score == pytest.approx(a.score, rel=1e-5, abs=1e-9)
    assert b.m_rel == pytest.approx(a.m_rel, rel=1e-5) and b.m_sem == pytest.approx(a.m_sem, rel=1e-5, abs=1e-9)


def test_channel_form_equals_the_official_ickd_loss() -> None:
    g = torch.Generator().manual_seed(0)
    g_t, g_s = torch.randn(5, 16, generator=g, dtype=torch.float64), torch.randn(5, 16, generator=g,
                                                                                 dtype=torch.float64)
    g_s[0, :3] = 0.0  # zero gradients give zero rows
    # lliai/DisWOT-CVPR2023 distiller_zoo/ICKD.py on grad.unsqueeze(-1).unsqueeze(-1): (K, D, 1) -> (K, D, D)
    emb = [F.normalize(torch.bmm(f[:, :, None], f[:, None, :]), dim=2) for f in (g_s, g_t)]
    expected = ((emb[0] - emb[1]) ** 2).sum() / (16 * 5)
    value, form = semantic_mismatch(g_t, g_s, "channel")
    assert form == "channel" and value == pytest.approx(float(expected), rel=1e-10)
    # the class-Gram fallback for unequal widths: mean squared distance of normalised Gram rows
    h = torch.randn(5, 9, generator=g, dtype=torch.float64)
    value, form = semantic_mismatch(g_t, h)
    gram = [F.normalize(a @ a.T, dim=1) for a in (g_t, h)]
    assert form == "class" and value == pytest.approx(float(((gram[0] - gram[1]) ** 2).sum() / 5))
    with pytest.raises(ConfigError, match="equal classifier widths"):
        semantic_mismatch(g_t, h, "channel")
    with pytest.raises(ConfigError, match="Did you mean 'class'"):
        semantic_mismatch(g_t, h, "clas")


def test_relation_mismatch_is_the_row_normalised_gram_distance() -> None:
    f = torch.rand(6, 3, 4, 4)
    assert relation_mismatch(f, 3.0 * f) == pytest.approx(0.0, abs=1e-12)  # rows normalised: scale-free
    other = torch.rand(6, 5, 2, 2)
    gram = [F.normalize((a.flatten(1) @ a.flatten(1).T).double(), dim=1) for a in (f, other)]
    assert relation_mismatch(f, other) == pytest.approx(float(((gram[0] - gram[1]) ** 2).sum() / 36))


def test_scorer_gives_the_teacher_architecture_zero_and_averages_seeds() -> None:
    x, y = _batch()
    teacher = create_net("kd_cnn_wide", in_channels=1, num_classes=3, width=4, depth=2)
    for repeats in (1, 3):
        scorer = DisWOTScorer(teacher, x, y, seed=5, repeats=repeats)
        assert scorer(create_net("kd_cnn", in_channels=1, num_classes=3, width=4, depth=2)).score == 0.0
        assert scorer(create_net("kd_cnn", in_channels=1, num_classes=3, width=4, depth=3)).score < 0.0
    trained = DisWOTScorer(teacher, x, y, teacher_weights="trained")
    assert trained(create_net("kd_cnn", in_channels=1, num_classes=3, width=4, depth=2)).score < 0.0


def _toy_cost(c) -> dict[str, float]:
    g = c.genes_dict
    return {"params": g["width"] * 2 ** g["depth"]}


def _toy_score(c) -> float:  # prefers wide and deep: the best under the budget is known by enumeration
    g = c.genes_dict
    return g["width"] + 4 * g["depth"]


def test_seeded_search_respects_the_budget_and_finds_the_toy_optimum() -> None:
    space = create_space("kd_cnn", image_size=(32, 32))
    budget = {"params": 200, "flops": None}
    everything = [space.candidate("kd_cnn", width=w, depth=d) for w in space.families["kd_cnn"].genes["width"]
                  for d in space.families["kd_cnn"].genes["depth"]]
    assert len(everything) == len(space) == 40
    feasible = [c for c in everything if _toy_cost(c)["params"] <= 200]
    optimum = max(feasible, key=_toy_score)
    assert max(everything, key=_toy_score) not in feasible  # the budget binds
    scored: list = []

    def score(c) -> float:
        scored.append(c)
        return _toy_score(c)

    res = aging_evolution(space, score, _toy_cost, budget=budget, cycles=60, population=10, sample=4, seed=0)
    assert res.best.candidate == optimum and res.best.score == _toy_score(optimum)
    assert all(_toy_cost(c)["params"] <= 200 for c in scored) and len(scored) == len(set(scored))  # once each
    assert len(res.cycles) == 60 and res.rejected > 0
    again = aging_evolution(space, _toy_score, _toy_cost, budget=budget, cycles=60, population=10, sample=4, seed=0)
    assert [e.candidate for e in again.cycles] == [e.candidate for e in res.cycles]  # seeded
    band = aging_evolution(space, _toy_score, _toy_cost, budget={"params": (100, 200)}, cycles=20, population=6,
                           sample=3, seed=1)
    assert all(100 <= e.cost["params"] <= 200 for e in band.cycles)
    with pytest.raises(ValueError, match="no candidate within the budget"):
        aging_evolution(space, _toy_score, _toy_cost, budget={"params": 1}, cycles=5, max_tries=50)


def test_mutation_changes_one_gene_or_the_family() -> None:
    space, rng = create_space("all", image_size=(16, 16)), random.Random(0)
    assert set(space.families) == {"kd_cnn", "monai_resnet"} and len(space) == 40 + 12
    for _ in range(200):
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
        assert child != parent
        if child.family == parent.family:
            assert sum(a != b for a, b in zip(parent.genes, child.genes)) == 1
    net = create_net(child.net, in_channels=1, num_classes=5, **child.net_params)
    assert net(torch.rand(2, 1, 16, 16)).shape == (2, 5)
    with pytest.raises(ConfigError, match="the families are"):
        create_space("vgg")


def test_flops_of_kd_cnn_match_the_hand_count() -> None:
    net = create_net("kd_cnn", in_channels=1, num_classes=5, width=4, depth=2)
    macs = 4 * 1 * 9 * 256 + 4 * 4 * 9 * 256 + 8 * 4 * 9 * 64 + 8 * 8 * 9 * 64 + 8 * 5
    assert count_flops(net, (1, 16, 16)) == 2 * macs
    assert net.training  # mode restored
    wide = create_net("monai_resnet10", in_channels=1, num_classes=5, widen_factor=0.25)
    assert count_flops(wide, (1, 16, 16)) > count_flops(create_net("monai_resnet10", in_channels=1, num_classes=5,
                                                                   widen_factor=0.125), (1, 16, 16))


@pytest.fixture(scope="module")
def setup(lesions_and_teacher: tuple[Path, Path]) -> tuple[Path, Path]:
    return lesions_and_teacher


@pytest.fixture(scope="module")
def result(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from medkd import api

    root, teacher = setup
    out = tmp_path_factory.mktemp("diswot")
    return out, api.distill_tool("diswot", PRESET, root, out, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                                 params={"cycles": 30, "population": 8, "sample": 3, "train": True},
                                 command="search", progress=False)


def test_tiny_search_writes_the_student_and_compares_it_with_the_default(result: tuple[Path, dict]) -> None:
    out, res = result
    assert json.loads((out / "diswot.json").read_text())["student"] == res["student"]
    yaml_student = load_config(DistillConfig, PRESET).student  # the preset's student: the searched one
    assert res["default_student"]["net_params"] == yaml_student.net_params == {"width": 24, "depth": 3}
    budget = count_parameters(create_net("kd_cnn", in_channels=1, num_classes=5, **yaml_student.net_params))
    assert res["budget"]["params"] == budget == res["default_student"]["params"]  # the default budget
    assert res["cycles"] == 30 and res["evaluated"] == len(res["candidates"]) and res["seconds_per_candidate"] > 0
    assert all(c["params"] <= budget and c["flops"] > 0 and c["score"] <= 0 for c in res["candidates"])
    assert res["best"]["score"] == max(c["score"] for c in res["candidates"]) == res["trajectory"][-1]
    assert res["trajectory"] == sorted(res["trajectory"])
    best = res["student"]
    assert res["best"]["net"] == best["net"] and res["overrides"][0] == f"student.net={best['net']}"
    if best["net_params"] == {"width": 8, "depth": 4}:  # the teacher's own architecture, if visited, scores 0
        assert res["best"]["score"] == 0.0
    for key in ("chosen", "default"):
        assert 0.0 <= res[key]["test_accuracy_best"] <= 1.0
        assert json.loads((out / key / "run.json").read_text())["method"] == "distill"
    assert res["chosen"]["net_params"] == best["net_params"] and res["delta_test_accuracy_best"] is not None


def test_budget_floor_keeps_students_of_about_the_budget(setup: tuple[Path, Path], tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    res = api.distill_tool("diswot", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                           params={"cycles": 6, "population": 4, "sample": 2, "budget_floor": 0.5,
                                   "budget_params": 100_000, "space": "all"}, progress=False)
    assert res["budget"]["params"] == 100_000 and res["budget_floor"] == 0.5
    assert all(50_000 <= c["params"] <= 100_000 for c in res["candidates"])


@pytest.mark.parametrize(("params", "sets", "error", "match"), [
    ({"budget_floor": 1.0}, [], ConfigError, "budget_floor"),
    ({"space": "vgg"}, [], ConfigError, "the families are"),
    ({"teacher_weights": "pretrained"}, [], ConfigError, "teacher_weights"),
    ({"budget_params": 10}, [], ConfigError, "no candidate within the budget"),
    ({"cyles": 3}, [], ConfigError, "Did you mean 'cycles'"),
    ({}, ["teacher.checkpoint="], ConfigError, "needs a trained teacher"),
])
def test_bad_input(params: dict, sets: list[str], error: type[Exception], match: str, setup: tuple[Path, Path],
                   tmp_path: Path) -> None:
    from medkd import api

    root, teacher = setup
    with pytest.raises(error, match=match):
        api.distill_tool("diswot", PRESET, root, tmp_path, overrides=[*FAST, f"teacher.checkpoint={teacher}", *sets],
                         params={"cycles": 3, "population": 2, "sample": 2, **params}, progress=False)


def test_registered_as_a_search() -> None:
    assert get_plugin("diswot", kind="utility") is DisWOT and DisWOT.command == "search"
