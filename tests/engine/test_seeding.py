# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.seeding: seeds, RNG capture/restore and weights_only round trips."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medkd.engine.seeding import get_rng_state, seed_everything, set_rng_state


def _draw() -> tuple[float, float, float, float, torch.Tensor]:
    """One draw from every generator, including the cached Gaussians of random and numpy."""
    return random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()), torch.rand(4)


def _same(a: tuple, b: tuple) -> bool:
    return a[:4] == b[:4] and torch.equal(a[4], b[4])


@pytest.fixture
def restore_determinism():
    enabled = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


@pytest.mark.parametrize("seed_a, seed_b, equal", [(7, 7, True), (7, 8, False), (2**40, 2**40, True)])
def test_seed_everything_repeats_draws(seed_a: int, seed_b: int, equal: bool) -> None:
    seed_everything(seed_a)
    first = _draw()
    seed_everything(seed_b)
    assert _same(first, _draw()) is equal


def test_deterministic_flag_sets_torch_flags(restore_determinism) -> None:
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark


@pytest.mark.parametrize("bad", [1.5, "3", True, None])
def test_seed_must_be_int(bad) -> None:
    with pytest.raises(TypeError):
        seed_everything(bad)


@pytest.mark.parametrize("advance", [0, 1, 3])  # odd advances leave a cached Gaussian in random and numpy
def test_state_round_trip_through_weights_only_checkpoint(tmp_path, advance: int) -> None:
    seed_everything(123)
    for _ in range(advance):
        random.gauss(0, 1)
        np.random.randn()
    state = get_rng_state()
    expected = _draw()
    path = tmp_path / "rng.pt"
    torch.save({"rng": state}, path)
    loaded = torch.load(path, weights_only=True)["rng"]
    seed_everything(999)  # scramble
    set_rng_state(loaded)
    assert _same(expected, _draw())


def test_partial_state_only_restores_given_generators() -> None:
    seed_everything(5)
    state = {"torch": get_rng_state()["torch"]}
    t_expected = torch.rand(3)
    py_next = random.random()
    set_rng_state(state)
    assert torch.equal(torch.rand(3), t_expected)
    assert random.random() != py_next  # python generator untouched: it moved on


@pytest.mark.parametrize(
    "state",
    [{"python": {"version": 3}}, {"numpy": {"keys": torch.zeros(3)}}, {"torch": torch.zeros(2, dtype=torch.uint8)}],
)
def test_malformed_state_raises_value_error(state: dict) -> None:
    with pytest.raises(ValueError, match="malformed RNG state"):
        set_rng_state(state)
