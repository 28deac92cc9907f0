# SPDX-License-Identifier: Apache-2.0
"""N2N (spec §4): the reward C(2-C)·acc_s/acc_t rises with the compression, is 1 at C=1 with equal accuracy and -1
on a violated constraint; REINFORCE raises the probability of a rewarded action; the seeded search respects the
budget; tiny ``medkd distill search n2n`` runs with the DisWOT proxy and with short trainings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import get_plugin
from medkd.distill.utilities.n2n import (
    N2N, CategoricalPolicy, n2n_reward, reinforce, remove_stages, score_to_ratio, shrink_width,
)
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_diswot.yaml"
FAST = ["optim.iterations=4", "eval.val_interval=2", "eval.log_interval=2", "data.batch_size=8",
        "data.image_size=[16, 16]"]


@pytest.mark.parametrize("ratio", [0.3, 0.8, 1.0, 1.2])
def test_reward_rises_with_the_compression(ratio: float) -> None:
    params_s = np.linspace(100.0, 0.0, 41)  # C = 0 .. 1
    rewards = [n2n_reward(p, 100.0, ratio) for p in params_s]
    assert rewards[0] == 0.0 and rewards[-1] == pytest.approx(ratio)
    assert all(b > a for a, b in zip(rewards, rewards[1:]))
    c = 1 - params_s / 100.0
    assert np.allclose(rewards, c * (2 - c) * ratio)


def test_reward_is_one_at_full_compression_and_minus_one_on_violation() -> None:
    assert n2n_reward(0, 1000, 1.0) == 1.0
    assert n2n_reward(10, 1000, 1.0, violated=True) == n2n_reward(999, 1000, 0.5, violated=True) == -1.0
    assert n2n_reward(50, 100, 0.5) == pytest.approx(0.375)  # C = 0.5: 0.75 x 0.5
    with pytest.raises(ValueError, match="teacher"):
        n2n_reward(1, 0, 1.0)
    assert score_to_ratio(0.0) == 1.0 and 0.0 < score_to_ratio(-3.0) < score_to_ratio(-1.0) < 1.0


def test_architecture_actions() -> None:
    assert remove_stages(32, [True, True, False, True]) == (32, 3)
    assert remove_stages(32, [False] * 4) is None
    assert shrink_width(32, 3, 0.375) == (12, 3) and shrink_width(3, 2, 0.1) == (1, 2)


@pytest.mark.parametrize("rollouts", [1, 3])
def test_policy_probability_of_a_rewarded_action_rises(rollouts: int) -> None:
    def reward(actions: list[int]) -> float:  # only choice 2 of the first decision pays
        return 1.0 if actions[0] == 2 else 0.0

    probs = [1 / 3]  # uniform at start
    for episodes in (10, 40):
        policy = CategoricalPolicy(2, 3)
        log = reinforce(policy, reward, episodes=episodes, lr=0.1, rollouts=rollouts, seed=0)
        assert len(log) == episodes and all(len(e.rewards) == rollouts for e in log)
        probs.append(float(policy.probabilities()[0, 2]))
    assert probs[0] < probs[1] < probs[2] and probs[2] > 0.8


def test_baseline_is_a_moving_average() -> None:
    rewards = iter([1.0, 0.0, 0.0, 0.0])
    log = reinforce(CategoricalPolicy(1, 2), lambda a: next(rewards), episodes=4, baseline_decay=0.5)
    assert [e.baseline for e in log] == [1.0, 1.0, 0.5, 0.25]


@pytest.fixture(scope="module")
def setup(lesions_and_teacher: tuple[Path, Path]) -> tuple[Path, Path]:
    return lesions_and_teacher


def _search(setup: tuple[Path, Path], out: Path, **params) -> dict:
    from medkd import api

    root, teacher = setup
    return api.distill_tool("n2n", PRESET, root, out, overrides=[*FAST, f"teacher.checkpoint={teacher}"],
                            params=params, command="search", progress=False)


DISWOT = {"proxy": "diswot", "episodes_removal": 12, "episodes_shrink": 12, "budget_params": 10000, "seed": 3}


@pytest.fixture(scope="module")
def diswot_run(setup: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("n2n")
    return out, _search(setup, out, **DISWOT)


def test_seeded_search_with_the_diswot_proxy_respects_the_budget(diswot_run: tuple[Path, dict],
                                                                 setup: tuple[Path, Path], tmp_path: Path) -> None:
    out, res = diswot_run
    assert json.loads((out / "n2n.json").read_text())["student"] == res["student"]
    assert res["teacher"]["width"] == 8 and res["teacher"]["depth"] == 4 and res["proxy"] == "diswot"
    assert len(res["removal"]["episodes"]) == len(res["shrink"]["episodes"]) == 12 and len(res["rewards"]) == 24
    for rec in res["evaluated"]:
        if rec["params"] > 10000:
            assert rec["violated"] == ["params"] and rec["reward"] == -1.0 and rec["acc_ratio"] is None
        elif rec["compression"] == 0.0:  # the teacher's own architecture: R = 0, not measured
            assert rec["reward"] == 0.0 and rec["acc_ratio"] is None
        else:
            assert 0.0 < rec["acc_ratio"] <= 1.0 and rec["diswot_score"] <= 0.0
            assert rec["reward"] == pytest.approx(rec["compression"] * (2 - rec["compression"]) * rec["acc_ratio"])
    assert any(rec["violated"] for rec in res["evaluated"])  # the budget binds (the teacher has 74k parameters)
    best = res["best"]
    assert best["params"] <= 10000 and best["reward"] == max(r["reward"] for r in res["evaluated"])
    assert res["student"] == {"net": "kd_cnn", "net_params": best["net_params"]}
    assert res["shrink"]["episodes"][0]["actions"][0][0] in range(len(res["shrink"]["scales"]))
    assert sum(res["shrink"]["scale_probabilities"]) == pytest.approx(1.0)
    again = _search(setup, tmp_path, **DISWOT)
    assert again["rewards"] == res["rewards"] and again["student"] == res["student"]  # seeded


def test_train_proxy_distils_each_candidate_briefly(setup: tuple[Path, Path], tmp_path: Path) -> None:
    res = _search(setup, tmp_path, episodes_removal=2, episodes_shrink=2, train_iterations=2, train=True)
    acc_t = res["teacher"]["val_accuracy"]
    assert 0.0 < acc_t <= 1.0
    for rec in res["evaluated"]:
        if rec["compression"] == 0.0:
            continue
        w, d = rec["net_params"]["width"], rec["net_params"]["depth"]
        assert (tmp_path / "candidates" / f"w{w}_d{d}" / "student" / "best.pt").is_file()
        assert rec["acc_ratio"] == pytest.approx(rec["val_accuracy"] / acc_t)
    assert 0.0 <= res["chosen"]["test_accuracy_best"] <= 1.0 and (tmp_path / "default" / "run.json").is_file()


@pytest.mark.parametrize(("params", "match"), [
    ({"proxy": "dsiwot"}, "Did you mean 'diswot'"),
    ({"scales": [0.5, 1.5]}, "scales must be in"),
    ({"episodes_removal": 0}, "must be >= 1"),
    ({"teacher_weights": "pretrained"}, "teacher_weights"),
])
def test_bad_input(params: dict, match: str, setup: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        _search(setup, tmp_path, **params)


def test_only_kd_cnn_teachers(setup: tuple[Path, Path], tmp_path: Path,
                               random_teacher_run: Callable[..., Path]) -> None:
    resnet = random_teacher_run(tmp_path / "resnet", "monai_resnet10", {"widen_factor": 0.125})
    with pytest.raises(ConfigError, match="kd_cnn-family teachers"):
        _search((setup[0], resnet), tmp_path / "out", proxy="diswot")


def test_registered_as_a_search() -> None:
    assert get_plugin("n2n", kind="utility") is N2N and N2N.command == "search"
