# SPDX-License-Identifier: Apache-2.0
"""Borup & Andersen self-distillation (spec §3.8): iterated kernel ridge self-distillation equals its closed form
(1e-10), alpha = 1 is ridge, the step-optimal alpha matches a grid search and the kernel-ridge step optimum (interior
for a moderate ridge), the proxy prefers the better target and goes below 0 on memorising features, clipping is
logged, the deep-net loss, parameter errors, and generations trained from YAML (folders, alphas, summary, teacher
ignored)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medkd import api
from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.strategies.borup_sd import (
    borup_loss, clip_alpha, krr_limit, krr_self_distill, proxy_alpha, step_optimal_alpha,
)
from medkd.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_borup_sd.yaml"
FAST = ["optim.iterations=6", "eval.val_interval=3", "eval.log_interval=3", "data.batch_size=8",
        "data.image_size=[16, 16]"]


def _kernel_problem(seed: int = 0, n: int = 24, m: int = 7, c: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    q = torch.randn(m, 4, generator=g, dtype=torch.float64)
    rbf = lambda a, b: torch.exp(-0.5 * torch.cdist(a, b).square())  # noqa: E731
    y = torch.randn(n, c, generator=g, dtype=torch.float64)
    return rbf(x, x), rbf(q, x), y


def _ridge(K: torch.Tensor, y: torch.Tensor, lam: float, Kq: torch.Tensor | None = None) -> torch.Tensor:
    coef = torch.linalg.inv(K + lam * torch.eye(len(K), dtype=K.dtype)) @ y
    return (K if Kq is None else Kq) @ coef


@pytest.mark.parametrize(("alpha", "lam"), [(0.3, 0.1), (0.6, 0.05), (0.9, 1.0)])
def test_iterated_krr_equals_the_closed_form(alpha: float, lam: float) -> None:
    K, Kq, y = _kernel_problem()
    for query in (None, Kq):
        iterated = krr_self_distill(K, y, alpha, lam, generations=300, K_query=query)
        limit = krr_limit(K, y, alpha, lam, K_query=query)
        assert torch.allclose(iterated, limit, rtol=0, atol=1e-10)
    assert torch.allclose(krr_limit(K, y, alpha, lam), _ridge(K, y, lam / alpha), rtol=0, atol=1e-10)
    # a single output works too, and a few generations are not yet the limit
    assert torch.allclose(krr_self_distill(K, y[:, 0], alpha, lam, 300), limit_1d := krr_limit(K, y[:, 0], alpha, lam),
                          atol=1e-10) and limit_1d.shape == (24,)
    assert (krr_self_distill(K, y, alpha, lam, 1) - krr_limit(K, y, alpha, lam)).abs().max() > 1e-4


def test_generations_follow_the_recursion_and_alpha_one_is_ridge() -> None:
    K, Kq, y = _kernel_problem(1)
    lam, alpha = 0.2, 0.6
    inv = torch.linalg.inv(K + lam * torch.eye(len(K), dtype=K.dtype))
    c = inv @ y
    for t in range(4):
        assert torch.allclose(krr_self_distill(K, y, alpha, lam, t, Kq), Kq @ c, atol=1e-10)
        c = inv @ (alpha * y + (1 - alpha) * K @ c)
    ridge = _ridge(K, y, lam, Kq)
    for t in (0, 1, 5):
        assert torch.allclose(krr_self_distill(K, y, 1.0, lam, t, Kq), ridge, atol=1e-10)
    assert torch.allclose(krr_self_distill(K, y, 0.3, lam, 0, Kq), ridge, atol=1e-10)  # generation 0 fits y
    assert torch.allclose(krr_limit(K, y, 1.0, lam, Kq), ridge, atol=1e-10)
    # pure self-distillation (alpha = 0) shrinks the fit generation after generation
    norms = [float(krr_self_distill(K, y, 0.0, lam, t).norm()) for t in range(4)]
    assert norms == sorted(norms, reverse=True)


def test_krr_bad_inputs() -> None:
    K, _, y = _kernel_problem()
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\]"):
        krr_limit(K, y, 0.0, 0.1)
    with pytest.raises(ValueError, match="lam must be > 0"):
        krr_self_distill(K, y, 0.5, 0.0, 2)
    with pytest.raises(ValueError, match="generations must be >= 0"):
        krr_self_distill(K, y, 0.5, 0.1, -1)
    with pytest.raises(ValueError, match="y must be"):
        krr_limit(K, y[:5], 0.5, 0.1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_step_optimal_alpha_matches_a_grid_search(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    f_y, f_yhat, y_ref = (torch.randn(30, 4, generator=g, dtype=torch.float64) for _ in range(3))
    y_ref = 0.3 * f_y + 0.7 * f_yhat + 0.5 * y_ref  # some alpha near 0.3, not exactly
    best = step_optimal_alpha(f_y, f_yhat, y_ref)
    grid = torch.linspace(-3, 3, 600_001, dtype=torch.float64)
    d, r = (f_y - f_yhat).flatten(), (y_ref - f_yhat).flatten()
    # ||a d - r||^2 for every a on the grid, expanded (the same objective as ||a f_y + (1-a) f_yhat - y_ref||^2)
    objective = grid.square() * (d @ d) - 2 * grid * (d @ r) + r @ r
    a = float(grid[objective.argmin()])
    assert abs(best - a) <= 1e-5
    direct = lambda al: float((al * f_y + (1 - al) * f_yhat - y_ref).square().sum())  # noqa: E731
    assert direct(best) <= direct(a) + 1e-12 and direct(best) <= direct(best + 1e-3)


def test_step_optimal_alpha_edge_cases() -> None:
    same = torch.ones(3)
    assert step_optimal_alpha(same, same, torch.zeros(3)) == 1.0
    assert step_optimal_alpha(torch.ones(3), torch.zeros(3), torch.ones(3)) == pytest.approx(1.0)
    assert step_optimal_alpha(torch.ones(3), torch.zeros(3), torch.zeros(3)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one shape"):
        step_optimal_alpha(torch.ones(3), torch.ones(2), torch.ones(3))


@pytest.mark.parametrize(("lam", "where"), [(0.01, "below"), (1.0, "inside"), (30.0, "above")])
def test_step_optimal_alpha_is_the_kernel_ridge_step_optimum(lam: float, where: str) -> None:
    """The paper's setting: noisy samples of a sinusoid, an RBF kernel; generation 1 is linear in alpha, so the closed
    form is the step optimum against the noise-free truth. Interior for a moderate ridge; below 0 when the fit is
    under-regularised (the step wants more shrinkage than pure self-distillation gives), above 1 when over-."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, generator=g, dtype=torch.float64)
    truth = torch.sin(2 * torch.pi * x[:, 0])
    y = truth + 0.5 * torch.randn(30, generator=g, dtype=torch.float64)
    K = torch.exp(-20 * torch.cdist(x, x).square())
    best = step_optimal_alpha(krr_self_distill(K, y, 1.0, lam, 1), krr_self_distill(K, y, 0.0, lam, 1), truth)
    grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
    errors = torch.stack([(krr_self_distill(K, y, float(a), lam, 1) - truth).square().sum() for a in grid])
    on_grid = float(grid[errors.argmin()])
    if where == "inside":
        assert 0.1 < best < 0.9 and abs(best - on_grid) <= 1e-3  # 0.413
    elif where == "below":
        assert best < 0.0 and on_grid == 0.0 and clip_alpha(best) == 0.0
    else:
        assert best > 1.0 and on_grid == 1.0 and clip_alpha(best) == 1.0


def test_the_proxy_gives_below_zero_on_features_that_only_memorise() -> None:
    """A previous generation that memorised random labels (features with no signal for validation, a softmax
    ``beta * onehot + (1 - beta) / C``): the softer targets win and alpha* is about ``-beta / (1 - beta)``."""
    g = torch.Generator().manual_seed(0)
    n, m, d, c = 200, 300, 400, 5
    labels = F.one_hot(torch.randint(0, c, (n,), generator=g), c).double()
    val = F.one_hot(torch.randint(0, c, (m,), generator=g), c).double()
    feats, val_feats = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    for beta in (0.5, 0.8):
        raw = proxy_alpha(feats, labels, beta * labels + (1 - beta) / c, val_feats, val)
        assert raw == pytest.approx(-beta / (1 - beta), rel=0.1)


def test_clipped_alpha_is_logged_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    logger = "medkd.distill.strategies.borup_sd"
    with caplog.at_level(logging.WARNING, logger=logger):
        assert clip_alpha(0.4, 1, 0.9, 0.8) == 0.4
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger=logger):
        assert clip_alpha(-65.0, 2, 1.0, 0.26) == 0.0
    assert "generation 2: alpha* = -65.0000 < 0, clipped to 0" in caplog.text
    assert "1.000 on the training labels, 0.260 on validation" in caplog.text and "memorised" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=logger):
        assert clip_alpha(1.5) == 1.0
    assert "alpha* = 1.5000 > 1, clipped to 1 (the labels alone)" in caplog.text


def test_the_proxy_weighs_the_better_target() -> None:
    g = torch.Generator().manual_seed(0)
    c, n = 3, 300
    w = torch.randn(8, c, generator=g)
    feats, val_feats = torch.randn(n, 8, generator=g), torch.randn(200, 8, generator=g)
    clean, val = F.one_hot((feats @ w).argmax(1), c).float(), F.one_hot((val_feats @ w).argmax(1), c).float()
    noisy = clean.clone()
    flip = torch.rand(n, generator=g) < 0.6
    noisy[flip] = F.one_hot(torch.randint(0, c, (int(flip.sum()),), generator=g), c).float()
    # noisy labels, a previous generation that predicts the clean labels: trust the previous generation
    assert proxy_alpha(feats, noisy, clean, val_feats, val) < 0.3
    # clean labels, a previous generation that outputs noise: trust the labels
    assert proxy_alpha(feats, clean, torch.rand(n, c, generator=g).softmax(1), val_feats, val) > 0.7
    # a previous generation that repeats the labels: every alpha fits the same, the labels win
    assert proxy_alpha(feats, clean, clean, val_feats, val) == 1.0


def test_deep_net_loss() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 4, generator=g, requires_grad=True)
    t = torch.randn(6, 4, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    p, q, onehot = s.softmax(1), t.softmax(1), F.one_hot(y, 4).float()
    total, gt, prev = borup_loss(s, t, y, 0.6)
    assert torch.allclose(gt, F.mse_loss(p, onehot)) and torch.allclose(prev, F.mse_loss(p, q))
    assert torch.allclose(total, 0.6 * gt + 0.4 * prev)
    assert torch.allclose(borup_loss(s, t, y, 1.0)[0], F.mse_loss(p, onehot))
    assert torch.allclose(borup_loss(s, t, y, 0.0)[0], F.mse_loss(p, q))
    assert torch.allclose(borup_loss(s, t, y, 0.6, "sum")[0], 4 * total)
    # generation t fits alpha * y + (1 - alpha) * previous: same gradient as MSE to the mixed target
    mixed = F.mse_loss(p, 0.6 * onehot + 0.4 * q.detach())
    grad = torch.autograd.grad(total, s, retain_graph=True)[0]
    assert torch.allclose(grad, torch.autograd.grad(mixed, s)[0], atol=1e-7)
    total.backward()
    assert t.grad is None  # the previous generation is frozen
    assert torch.allclose(borup_loss(s, None, y, 1.0)[0], F.mse_loss(p, onehot))
    with pytest.raises(ValueError, match="previous_logits"):
        borup_loss(s, None, y, 0.5)


@pytest.mark.parametrize(("params", "message"), [
    ({"alpha": 1.5}, "alpha must be a number in \\[0, 1\\] or 'auto'"),
    ({"alpha": "autox"}, "or 'auto'"),
    ({"generations": -1}, "generations must be an integer >= 0"),
    ({"reduction": "max"}, "reduction must be one of mean, sum"),
    ({"ridge": 0}, "ridge must be > 0"),
    ({"alpah": 0.5}, "Did you mean 'alpha'"),
])
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_strategy("borup_sd", **params)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=0, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)


@pytest.fixture(scope="module")
def run(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "borup"
    api.distill_run(PRESET, lesions, out, progress=False,
                    overrides=[*FAST, "distill.strategy_params={alpha: auto, generations: 2}"])
    return out


def test_generations_trained_from_yaml(run: Path) -> None:
    for t in (0, 1):
        assert (run / "generations" / f"g{t}" / "student" / "best.pt").is_file()
    assert not (run / "generations" / "g2").exists() and (run / "student" / "best.pt").is_file()
    summary = json.loads((run / "summary.json").read_text())
    strategy = summary["strategy"]
    assert strategy["name"] == "borup_sd"
    gens = strategy["generations"]
    assert [g["generation"] for g in gens] == [0, 1, 2] and [g["run"] for g in gens] == [
        "generations/g0", "generations/g1", "."]
    assert gens[0]["alpha"] is None and len(strategy["alphas"]) == 2
    assert all(0.0 <= a <= 1.0 for a in strategy["alphas"]) and all("alpha_raw" in g for g in gens[1:])
    assert all(0.0 <= g["val_accuracy"] <= 1.0 and 0.0 <= g["test_accuracy"] <= 1.0 for g in gens)
    assert gens[-1]["test_accuracy"] == summary["student"]["best"]["test"]["accuracy"]  # the last is the student
    metrics = [json.loads(line) for line in (run / "student" / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if "borup/alpha" in m]
    assert logged and logged[-1]["borup/alpha"] == pytest.approx(strategy["alphas"][-1])
    assert "borup/prev_mse" in logged[-1] and "borup/gt_mse" in logged[-1]
    g0 = [json.loads(line) for line in (run / "generations" / "g0" / "student" / "metrics.jsonl").read_text()
          .splitlines()]
    assert not any("borup/alpha" in m for m in g0)  # generation 0 trains on distill.terms (ce)
    assert summary["student"]["extra_params"] == 0


def test_a_teacher_is_ignored_and_teacher_terms_are_refused(run: Path, lesions: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="medkd.distill.strategies.borup_sd"):
        summary = api.distill_run(PRESET, lesions, tmp_path / "with_teacher", progress=False, overrides=[
            *FAST, f"teacher.checkpoint={run / 'generations' / 'g0'}", "distill.strategy_params={generations: 0}"])
    assert "ignoring the experiment's teacher" in caplog.text
    assert [g["generation"] for g in summary["strategy"]["generations"]] == [0]
    with pytest.raises(ConfigError, match="term\\(s\\) 'kd' need teacher outputs"):
        api.distill_run(PRESET, lesions, tmp_path / "kd", progress=False, overrides=[
            *FAST, f"teacher.checkpoint={run / 'generations' / 'g0'}",
            "distill.terms=[{name: ce, plugin: ce}, {name: kd, plugin: kd}]"])


def test_listed_as_a_strategy() -> None:
    rows = {p.key: p for p in api.distill_list(kind="strategy")}
    assert "borup_sd" in rows and "Borup" in rows["borup_sd"].summary
