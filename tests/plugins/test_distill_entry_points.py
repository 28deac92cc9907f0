# SPDX-License-Identifier: Apache-2.0
"""Distillation plugins of other packages: a loss registered through a ``medkd.plugins`` entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from plugins.dist import install_plugin

import medkd.distill.losses  # noqa: F401 - built-ins registered before the registry snapshot
from medkd.cli import main
from medkd.distill import create_loss, get_plugin, list_plugins, register_loss


def test_entry_point_loss_is_discovered_listed_and_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-distill", {"toy_distill": "toy_distill"})
    assert "toy_distill" not in sys.modules
    loss = create_loss("toy_l2", scale=2.0)  # not registered until discovery
    s, t = torch.ones(2, 3), torch.zeros(2, 3)
    assert float(loss({"logits": s}, {"logits": t}, {})["toy_l2"]) == pytest.approx(2.0)
    [row] = [r for r in list_plugins() if r.key == "toy_l2"]
    assert (row.kind.value, row.distribution, row.module) == ("loss", "toy-distill", "toy_distill")


def test_entry_point_plugin_shows_in_the_cli_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-distill", {"toy_distill": "toy_distill"})
    assert main(["distill", "list", "--kind", "loss"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert ["toy_l2", "loss", "toy-distill"] in [line[:3] for line in lines]
    assert {"kd", "dkd", "bpkd"} <= {line[0] for line in lines}


def test_a_plugin_cannot_take_a_builtin_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-distill", {"toy_distill": "toy_distill"})
    with pytest.raises(ValueError, match="'kd' is already registered"):
        register_loss("kd")(type("Fake", (torch.nn.Module,), {}))
    assert get_plugin("kd").__module__ == "medkd.distill.losses.kd"


def test_discovery_off_keeps_builtins_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-distill", {"toy_distill": "toy_distill"})
    monkeypatch.setenv("MEDKD_NO_PLUGINS", "1")
    assert "toy_l2" not in [r.key for r in list_plugins()]
    with pytest.raises(KeyError, match="unknown distillation plugin 'toy_l2'"):
        create_loss("toy_l2")
