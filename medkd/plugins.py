# SPDX-License-Identifier: Apache-2.0
"""Plugins from other packages: the ``medkd.plugins`` entry-point group.

A package adds methods, networks, losses or app views to medkd by declaring an entry point in the group
``medkd.plugins``; its value is a module (importing it registers things, e.g. with ``@register_net``) or a callable
(``pkg.module:register``, called with no arguments)::

    # the plugin's pyproject.toml
    [project.entry-points."medkd.plugins"]
    toy = "toy_plugin"                  # or "toy_plugin.setup:register"

Discovery runs once, lazily: when any :class:`medkd.registry.Registry` is first listed or asked for a name it does
not hold, or when :func:`load_plugins` is called. ``import medkd`` and ``medkd --help`` never scan entry points.
A plugin that fails (an ``ImportError`` or any other exception) is logged with its name and skipped;
:func:`loaded_plugins` reports what loaded and what failed. Setting ``MEDKD_NO_PLUGINS=1`` turns discovery off.

Example:
    >>> status = load_plugins()
    >>> all(s.name for s in status) and status == loaded_plugins()
    True
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

__all__ = [
    "ENTRY_POINT_GROUP",
    "NO_PLUGINS_ENV",
    "PluginStatus",
    "ensure_plugins",
    "load_plugins",
    "loaded_plugins",
    "loading_distribution",
    "plugins_disabled",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "medkd.plugins"
"""The entry-point group scanned for plugins."""

NO_PLUGINS_ENV = "MEDKD_NO_PLUGINS"
"""Environment variable; ``1``/``true``/``yes``/``on`` turns plugin discovery off."""

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class PluginStatus:
    """The outcome of loading one entry point.

    Attributes:
        name: the entry point's name.
        value: what it points at, ``"module"`` or ``"module:callable"``.
        distribution: the installed distribution declaring it (``None`` when unknown).
        loaded: whether it imported (and, for a callable, ran) without an exception.
        error: ``"ExceptionType: message"`` when it failed, else ``None``.
    """

    name: str
    value: str
    distribution: str | None
    loaded: bool
    error: str | None = None


_lock = threading.RLock()
_done = False
_loading_thread: int | None = None
_status: dict[tuple[str, str], PluginStatus] = {}
_loading_dist: str | None = None


def loading_distribution() -> str | None:
    """The distribution whose entry point is being loaded right now (None outside discovery): registries record
    it as the origin of what the plugin registers."""
    return _loading_dist


def plugins_disabled() -> bool:
    """Whether ``MEDKD_NO_PLUGINS`` turns plugin discovery off."""
    return os.environ.get(NO_PLUGINS_ENV, "").strip().lower() in _TRUE


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The group's entry points, de-duplicated (a distribution found twice on ``sys.path``) and sorted by name."""
    unique: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        unique.setdefault((ep.name, ep.value), ep)
    return [unique[key] for key in sorted(unique)]


def _distribution(ep: importlib.metadata.EntryPoint) -> str | None:
    try:
        dist = ep.dist
        return None if dist is None else str(dist.name)
    except Exception:  # noqa: BLE001 - a malformed METADATA only loses the distribution name
        return None


def _load_one(ep: importlib.metadata.EntryPoint) -> PluginStatus:
    global _loading_dist
    dist = _distribution(ep)
    _loading_dist = dist
    try:
        obj = ep.load()
        if callable(obj) and not isinstance(obj, ModuleType):
            obj()
    except Exception as err:
        logger.warning(
            "medkd plugin %r (%s%s) failed and is skipped: %s: %s",
            ep.name,
            ep.value,
            f" from {dist}" if dist else "",
            type(err).__name__,
            err,
        )
        logger.debug("traceback of medkd plugin %r", ep.name, exc_info=True)
        return PluginStatus(ep.name, ep.value, dist, loaded=False, error=f"{type(err).__name__}: {err}")
    finally:
        _loading_dist = None
    logger.debug("loaded medkd plugin %r (%s)", ep.name, ep.value)
    return PluginStatus(ep.name, ep.value, dist, loaded=True)


def load_plugins(*, force: bool = False) -> list[PluginStatus]:
    """Discover and load the ``medkd.plugins`` entry points (once; later calls return the first result).

    Args:
        force: scan the entry points again, loading those not loaded yet (newly installed or failed before).

    Returns:
        The status of every plugin seen so far, sorted by name; empty when ``MEDKD_NO_PLUGINS`` is set.
    """
    global _done, _loading_thread
    if plugins_disabled():
        logger.debug("plugin discovery is off (%s is set)", NO_PLUGINS_ENV)
        return []
    with _lock:
        if _loading_thread is not None:  # a plugin listing a registry while it loads: no recursion
            return loaded_plugins()
        if _done and not force:
            return loaded_plugins()
        _loading_thread = threading.get_ident()
        try:
            for ep in _entry_points():
                key = (ep.name, ep.value)
                if key in _status and _status[key].loaded:
                    continue
                _status[key] = _load_one(ep)
        finally:
            _loading_thread = None
            _done = True
        return loaded_plugins()


def ensure_plugins() -> None:
    """Load the plugins unless done, disabled or already in progress on this thread (the registries' lazy hook)."""
    if _done or _loading_thread == threading.get_ident():
        return
    load_plugins()


def loaded_plugins() -> list[PluginStatus]:
    """What discovery found so far: one :class:`PluginStatus` per entry point, sorted by name."""
    with _lock:
        return [_status[key] for key in sorted(_status)]


def _reset(keys: Iterable[tuple[str, str]] | None = None) -> None:
    """Forget discovery (all entry points, or the given ``(name, value)`` keys); for tests."""
    global _done
    with _lock:
        _done = False
        for key in list(_status) if keys is None else keys:
            _status.pop(key, None)
