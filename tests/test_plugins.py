# SPDX-License-Identifier: Apache-2.0
"""Plugins from other packages (medkd.plugins): real entry points in a ``*.dist-info`` folder on ``sys.path``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from plugins.dist import PLUGIN_SRC, install_plugin

import medkd.plugins
from medkd.nets import NETS, create_net, list_nets, net_task
from medkd.nets.contracts import check_registered_net
from medkd.registry import Registry

TOY = {"toy": "toy_plugin"}


def test_registry_lookup_loads_plugin_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-plugin", TOY)
    assert "toy_plugin" not in sys.modules
    net = create_net("toy_plugin_classifier", in_channels=3, num_classes=5)  # not registered until discovery
    assert "toy_plugin" in sys.modules
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert net_task("toy_plugin_classifier") == "classification"
    check_registered_net("toy_plugin_classifier")
    [status] = medkd.plugins.loaded_plugins()
    assert (status.name, status.value, status.distribution, status.loaded) == ("toy", "toy_plugin", "toy-plugin", True)


def test_listing_any_registry_loads_plugins_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-plugin", TOY)
    assert Registry("other thing").list() == []  # any registry triggers discovery
    assert "toy_plugin_classifier" in NETS
    assert "toy_plugin_classifier" in list_nets(task="classification")
    import toy_plugin

    list_nets()
    medkd.plugins.load_plugins()
    assert toy_plugin.IMPORTS == [1]
    assert [s.name for s in medkd.plugins.load_plugins(force=True)] == ["toy"]


def test_callable_entry_point_is_called_without_recursion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-hooks", {"toy_hook": "toy_plugin.hooks:register"})
    assert "toy_plugin_segmenter" in list_nets()  # register() itself lists the registry while loading
    [status] = medkd.plugins.loaded_plugins()
    assert status.loaded, status.error
    check_registered_net("toy_plugin_segmenter")


def test_broken_plugin_is_logged_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_plugin(tmp_path, monkeypatch, "mixed-plugins", {"broken": "broken_plugin", **TOY, "gone": "no_such_mod"})
    with caplog.at_level(logging.WARNING, logger="medkd.plugins"):
        assert "toy_plugin_classifier" in list_nets()  # the good plugin still loads
    status = {s.name: s for s in medkd.plugins.loaded_plugins()}
    assert status["toy"].loaded and not status["broken"].loaded and not status["gone"].loaded
    assert status["broken"].error == "RuntimeError: broken_plugin cannot start: missing weights"
    assert status["gone"].error.startswith("ModuleNotFoundError")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "'broken'" in logged and "missing weights" in logged and "'gone'" in logged
    with pytest.raises(KeyError, match="unknown net 'broken_net'"):  # a miss after discovery stays a KeyError
        create_net("broken_net")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_no_plugins_env_turns_discovery_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-plugin", TOY)
    monkeypatch.setenv("MEDKD_NO_PLUGINS", value)
    assert "toy_plugin_classifier" not in list_nets()
    with pytest.raises(KeyError, match="toy_plugin_classifier"):
        create_net("toy_plugin_classifier")
    assert medkd.plugins.load_plugins() == [] and medkd.plugins.loaded_plugins() == []
    assert "toy_plugin" not in sys.modules
    monkeypatch.setenv("MEDKD_NO_PLUGINS", "0")
    assert "toy_plugin_classifier" in list_nets()


def test_import_medkd_does_not_discover_plugins(tmp_path: Path) -> None:
    from plugins.dist import write_dist_info

    write_dist_info(tmp_path, "toy-plugin", TOY)
    code = (
        "import sys, medkd, medkd.cli, medkd.nets, medkd.registry\n"
        "assert 'toy_plugin' not in sys.modules, 'discovered at import'\n"
        "medkd.nets.create_net('toy_plugin_classifier')\n"
        "assert 'toy_plugin' in sys.modules\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PLUGIN_SRC), str(Path(__file__).resolve().parents[1])]),
    }
    env.pop("MEDKD_NO_PLUGINS", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_membership_and_plugin_status_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, monkeypatch, "toy-plugin", TOY)
    assert medkd.plugins.loaded_plugins() == []  # nothing scanned yet
    assert NETS in Registry.instances()
    assert "toy_plugin_classifier" in NETS  # a name not held yet: `in` scans the entry points
    assert NETS.meta("toy_plugin_classifier") == {"task": "classification"}
    [status] = medkd.plugins.loaded_plugins()
    assert status.error is None and status.loaded
