# SPDX-License-Identifier: Apache-2.0
"""models/zoo.yaml: entries parse, resolve under MEDKD_MODELS, and ``medkd bundle list`` reports them."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkd.bundle.zoo import load_zoo
from medkd.cli import main
from medkd.errors import ConfigError

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo.yaml"
REPO = ZOO.parents[1]


def test_shipped_zoo_entries_are_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKD_MODELS", str(tmp_path))
    entries = load_zoo(ZOO)
    assert "demo_acdc_bcp" in [e.name for e in entries]
    for entry in entries:
        assert entry.task and entry.get and (REPO / entry.pipeline).is_file()
        assert entry.folder == tmp_path / entry.path and not entry.present
    (tmp_path / "demo_acdc_bcp" / "configs").mkdir(parents=True)
    (tmp_path / "demo_acdc_bcp" / "configs" / "metadata.json").write_text("{}")
    assert {e.name: e.present for e in load_zoo(ZOO)}["demo_acdc_bcp"]


def test_bad_zoo_is_named(tmp_path):
    bad = tmp_path / "zoo.yaml"
    bad.write_text("bundles:\n  - name: a\n    path: a\n    colour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        load_zoo(bad)
    bad.write_text("models: []\n")
    with pytest.raises(ConfigError, match="bundles"):
        load_zoo(bad)


def test_bundle_list_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDKD_MODELS", str(tmp_path))
    assert main(["bundle", "list", "--zoo", str(ZOO)]) == 0
    out = capsys.readouterr().out
    assert "demo_acdc_bcp" in out and "missing" in out and "make demo" in out
