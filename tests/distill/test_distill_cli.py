# SPDX-License-Identifier: Apache-2.0
"""``medkd distill list`` and ``medkd distill list-modules``."""

from __future__ import annotations

import json

import pytest

from medkd.cli import main

ISSUE_LOSSES = {"kd", "dkd", "pld", "bpkd", "ofa", "tgeo", "margin_mse", "ff_g2m", "prokd", "leaf"}


def test_list_shows_every_plugin_with_kind_and_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_key = {r["key"]: r for r in rows}
    assert ISSUE_LOSSES <= set(by_key)
    assert all(by_key[k]["kind"] == "loss" and by_key[k]["distribution"] == "medkd" for k in ISSUE_LOSSES)
    assert main(["distill", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["key", "kind", "distribution"] and len(table) == len(rows) + 1


def test_list_modules_prints_tap_names_and_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "list-modules", "--net", "kd_cnn", "--num-classes", "5", "--size", "32", "32"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert {"stages.0", "stages.3", "pool", "head"} <= set(lines)
    assert "(1, 5)" in lines["head"]


def test_list_modules_of_an_unknown_net_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "list-modules", "--net", "kd_cn"]) == 2
    assert "Did you mean 'kd_cnn'" in capsys.readouterr().err
