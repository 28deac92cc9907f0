# SPDX-License-Identifier: Apache-2.0
"""Install a test plugin "for real": a ``<name>.dist-info`` folder with an ``entry_points.txt`` on ``sys.path``.

Example (in a test)::

    from plugins.dist import install_plugin

    def test_x(tmp_path, monkeypatch):
        install_plugin(tmp_path, monkeypatch, "toy-plugin", {"toy": "toy_plugin"})
        create_net("toy_plugin_classifier")  # found through the entry point
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

__all__ = ["PLUGIN_SRC", "install_plugin", "write_dist_info"]

PLUGIN_SRC = Path(__file__).resolve().parent
"""The folder holding the test plugin packages (``toy_plugin``, ``broken_plugin``)."""

GROUP = "medkd.plugins"


def write_dist_info(site: Path, dist: str, entry_points: Mapping[str, str], version: str = "0.1") -> Path:
    """Write ``<dist>-<version>.dist-info/{METADATA,entry_points.txt}`` under ``site``; returns the folder."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = [f"[{GROUP}]", *(f"{name} = {value}" for name, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return info


def install_plugin(site: Path, monkeypatch: pytest.MonkeyPatch, dist: str, entry_points: Mapping[str, str]) -> Path:
    """Make ``entry_points`` visible as distribution ``dist``; the plugin packages import from :data:`PLUGIN_SRC`.

    Also resets medkd's plugin discovery, so the next registry lookup scans again, and undoes discovery state and
    every registry's entries (nets, methods, views, ...) when the test ends. The plugin modules are dropped from
    ``sys.modules`` first, so loading them registers again.
    """
    import medkd.nets  # the built-in networks are registered before the snapshot
    import medkd.plugins
    from medkd.registry import Registry

    # register medkd's own entries first (before the plugin is visible, so their imports cannot load it into the
    # real registries), so that the snapshot below holds them: a module first imported while the plugin is
    # installed would otherwise lose its registrations at teardown and never make them again
    from medkd.inference.loading import BUILTIN_SOURCE_MODULES

    for module in ("medkd.app.views", "medkd.distill.losses", *BUILTIN_SOURCE_MODULES):
        importlib.import_module(module)
    info = write_dist_info(site, dist, entry_points)
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()  # importlib.metadata caches the folders it has looked at
    for registry in Registry.instances():
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_meta", dict(registry._meta))
    packages = {value.split(":")[0].split(".")[0] for value in entry_points.values()}
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        monkeypatch.delitem(sys.modules, name)
    medkd.plugins._reset()
    monkeypatch.setattr(medkd.plugins, "_status", {})  # restored (with the old results) after the test
    monkeypatch.setattr(medkd.plugins, "_done", False)
    monkeypatch.delenv(medkd.plugins.NO_PLUGINS_ENV, raising=False)
    return info
