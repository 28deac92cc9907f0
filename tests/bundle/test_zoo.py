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
    assert "segmentation" in out  # each entry's kind


def test_zoo_entries_carry_their_kind(tmp_path):
    kinds = {e.name: e.kind for e in load_zoo(ZOO)}
    assert kinds["demo_acdc_bcp"] == "segmentation" and kinds["demo_mammo_gt"] == "detection"
    assert "kind: segmentation" in ZOO.read_text() and "kind: detection" in ZOO.read_text()  # written out
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("bundles:\n  - name: old\n    path: old\n"  # written before kinds: segmentation
                   "  - name: polyps\n    path: polyps\n    kind: detection\n"
                   "  - name: phases\n    path: phases\n    kind: forecasting\n")
    assert [(e.name, e.kind) for e in load_zoo(zoo)] == [
        ("old", "segmentation"), ("polyps", "detection"), ("phases", "forecasting")
    ]


def test_unknown_zoo_kind_names_file_entry_and_known_kinds(tmp_path):
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text("bundles:\n  - name: a\n    path: a\n  - name: b\n    path: b\n    kind: segmentaton\n")
    with pytest.raises(ConfigError) as info:
        load_zoo(zoo)
    message = str(info.value)
    assert str(zoo) in message and "bundles[1] (b)" in message and "'segmentaton'" in message
    assert all(k in message for k in ("segmentation", "detection", "forecasting"))
