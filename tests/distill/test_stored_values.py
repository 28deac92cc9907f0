# SPDX-License-Identifier: Apache-2.0
"""Stored values: every registered loss plugin, on its seeded ``example_inputs``, reproduces
``tests/fixtures/distill_values.json`` (rtol 1e-5), so a change to any plugin's math shows up here.

Regenerating is explicit, after a deliberate change of a plugin (say which in the commit message)::

    MEDKD_WRITE_DISTILL_VALUES=1 python -m pytest tests/distill/test_stored_values.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from medkd.distill import create_loss, get_plugin, list_plugins

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "distill_values.json"
WRITE = os.environ.get("MEDKD_WRITE_DISTILL_VALUES") == "1"
SEEDS = (0, 1)


def _values(key: str, seed: int) -> dict[str, float]:
    torch.manual_seed(1234)  # plugins with their own modules (projectors, branches) initialise from here
    loss = create_loss(key)
    student, teacher, batch, ctx = get_plugin(key).example_inputs(seed)
    with torch.no_grad():
        out = loss(student, teacher, batch, ctx)
    return {name: float(value) for name, value in out.items()}


def _builtin_losses() -> list[str]:
    return [p.key for p in list_plugins(kind="loss") if p.distribution == "medkd"]


def test_write_stored_values() -> None:
    if not WRITE:
        pytest.skip("set MEDKD_WRITE_DISTILL_VALUES=1 to regenerate the stored values")
    table = {key: {str(seed): _values(key, seed) for seed in SEEDS} for key in _builtin_losses()}
    FIXTURE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    assert json.loads(FIXTURE.read_text()) == table


@pytest.mark.parametrize("key", _builtin_losses())
def test_loss_reproduces_its_stored_values(key: str) -> None:
    stored = json.loads(FIXTURE.read_text())
    assert key in stored, f"no stored values for {key!r}: regenerate (see the module docstring)"
    for seed in SEEDS:
        expected = stored[key][str(seed)]
        got = _values(key, seed)
        assert sorted(got) == sorted(expected), key
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7), f"{key}[{seed}].{name}"


def test_the_fixture_has_no_stale_plugins() -> None:
    stored = json.loads(FIXTURE.read_text())
    assert sorted(stored) == sorted(_builtin_losses())
