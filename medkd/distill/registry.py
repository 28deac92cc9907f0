# SPDX-License-Identifier: Apache-2.0
"""The distillation plugin registry: ``register_loss``, ``register_strategy``, ``register_utility``.

One registry, :data:`PLUGINS`, keyed by plugin name; each entry's metadata records its :class:`PluginKind`, the
module that registered it and the distribution that module comes from. Plugins of other packages register
through the ``medkd.plugins`` entry-point group (:mod:`medkd.plugins`): the first listing or unknown lookup loads
them; medkd's own plugins register when ``medkd.distill`` is imported (its ``__init__`` runs before any of its
submodules). Keys are unique: registering a taken key raises, so a plugin cannot silently replace a built-in.

Example:
    >>> from torch import nn
    >>> @register_loss("toy_zero_doc")
    ... class ToyZero(nn.Module):
    ...     def forward(self, student, teacher, batch, ctx=None):
    ...         return {"zero": student["logits"].sum() * 0}
    >>> plugin_kind("toy_zero_doc")
    <PluginKind.LOSS: 'loss'>
    >>> "toy_zero_doc" in [p.key for p in list_plugins(kind="loss")]
    True
    >>> _unregister("toy_zero_doc")
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from medkd.errors import ConfigError
from medkd.registry import Registry, resolve_option

__all__ = [
    "PLUGINS",
    "PluginInfo",
    "PluginKind",
    "get_plugin",
    "import_plugin_modules",
    "list_plugins",
    "plugin_kind",
    "register_loss",
    "register_strategy",
    "register_utility",
]

logger = logging.getLogger(__name__)

P = TypeVar("P", bound=Callable[..., Any])


class PluginKind(StrEnum):
    """What a plugin is: a per-step ``loss`` term, a ``strategy`` owning the loop shape, or an offline ``utility``."""

    LOSS = "loss"
    STRATEGY = "strategy"
    UTILITY = "utility"


class _PluginRegistry(Registry):
    """A :class:`~medkd.registry.Registry` whose keys cannot be taken twice."""

    def _add(self, name: str, fn: Any, meta: dict[str, Any]) -> Any:
        old = self._items.get(name)
        reloaded = old is not None and _origin(old) == _origin(fn)  # the same module imported again
        if old is not None and old is not fn and not reloaded:
            owner = self._meta.get(name, {}).get("module", "?")
            raise ValueError(f"distillation plugin key {name!r} is already registered (by {owner}); pick another key")
        return super()._add(name, fn, meta)


def _origin(obj: Any) -> tuple[str, str]:
    return getattr(obj, "__module__", "?"), getattr(obj, "__qualname__", "?")


PLUGINS: Registry = _PluginRegistry("distillation plugin")
"""Plugin name -> class or factory; metadata: ``kind``, ``module``, ``distribution``."""


def _distribution(module: str) -> str:
    """The installed distribution providing ``module`` (``medkd`` for medkd's own, ``?`` when unknown)."""
    from medkd.plugins import loading_distribution

    top = module.split(".", 1)[0]
    if top == "medkd":
        return "medkd"
    if loading_distribution():
        return str(loading_distribution())
    try:
        names = importlib.metadata.packages_distributions().get(top, [])
    except Exception:  # noqa: BLE001 - a broken METADATA only loses the name
        names = []
    return names[0] if names else "?"


def _register(kind: PluginKind, key: str) -> Callable[[P], P]:
    if not isinstance(key, str) or not key:
        raise TypeError(f"register_{kind.value} needs a non-empty string key, e.g. @register_{kind.value}('mykd')")

    def deco(obj: P) -> P:
        module = getattr(obj, "__module__", "?")
        PLUGINS.register(key, kind=kind, module=module, distribution=_distribution(module))(obj)
        try:
            obj.plugin_key = key  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass
        return obj

    return deco


def register_loss(key: str) -> Callable[[P], P]:
    """Register a loss plugin: an ``nn.Module`` class whose ``forward(student, teacher, batch, ctx=None)`` returns
    a dict of named scalar tensors (see :class:`medkd.distill.base.DistillLoss`).

    Raises:
        ValueError: ``key`` is taken.
    """
    return _register(PluginKind.LOSS, key)


def register_strategy(key: str) -> Callable[[P], P]:
    """Register a strategy plugin (owns the loop shape: generations, snapshots, routing, stages).

    Raises:
        ValueError: ``key`` is taken.
    """
    return _register(PluginKind.STRATEGY, key)


def register_utility(key: str) -> Callable[[P], P]:
    """Register an offline utility (student search, teacher choice, annotation).

    Raises:
        ValueError: ``key`` is taken.
    """
    return _register(PluginKind.UTILITY, key)


@dataclass(frozen=True)
class PluginInfo:
    """One row of :func:`list_plugins`.

    Attributes:
        key: registry key (``kd``). kind: ``loss``/``strategy``/``utility``. module: where it is defined.
        distribution: the package providing it. summary: the first line of its docstring.
    """

    key: str
    kind: PluginKind
    module: str
    distribution: str
    summary: str


def get_plugin(key: str, kind: str | PluginKind | None = None) -> Any:
    """The class or factory registered as ``key``.

    Raises:
        KeyError: unknown key (close matches listed), or a plugin of another kind than ``kind``.
    """
    obj = PLUGINS.get(key)
    if kind is not None:
        wanted = resolve_option(PluginKind, kind, "plugin kind", "Kinds")
        have = PluginKind(PLUGINS.meta(key)["kind"])
        if have is not wanted:
            raise KeyError(f"unknown {wanted.value} plugin {key!r}: {key!r} is a {have.value} plugin. "
                           f"{wanted.value.capitalize()} plugins: {', '.join(_keys(wanted))}")
    return obj


def plugin_kind(key: str) -> PluginKind:
    """The :class:`PluginKind` of ``key``.

    Raises:
        KeyError: unknown key.
    """
    return PluginKind(PLUGINS.meta(key)["kind"])


def _keys(kind: PluginKind) -> list[str]:
    return [k for k in PLUGINS.list() if PLUGINS.meta(k)["kind"] == kind]


def list_plugins(pattern: str = "*", kind: str | PluginKind | None = None) -> list[PluginInfo]:
    """Every registered plugin (built-in and from entry points), sorted by kind then key.

    Args:
        pattern: shell-style pattern on the key. kind: only this kind.

    Raises:
        ValueError: unknown ``kind``.
    """
    wanted = None if kind is None else resolve_option(PluginKind, kind, "plugin kind", "Kinds")
    rows = []
    for key in PLUGINS.list(pattern):
        meta = PLUGINS.meta(key)
        if wanted is not None and meta["kind"] != wanted:
            continue
        doc = (getattr(PLUGINS.get(key), "__doc__", None) or "").strip().splitlines()
        rows.append(PluginInfo(key, PluginKind(meta["kind"]), meta["module"], meta["distribution"],
                               doc[0] if doc else ""))
    order = list(PluginKind)
    return sorted(rows, key=lambda r: (order.index(r.kind), r.key))




def import_plugin_modules(package: str, path: Sequence[str]) -> list[str]:
    """Import every module of a plugin folder (``medkd/distill/losses/``, ...), which registers them; returns
    their names, sorted (the package's ``__all__``)."""
    names = sorted(m.name for m in pkgutil.iter_modules(path))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names



def instantiate(cls: Any, what: str, allowed: Sequence[str], params: dict[str, Any], *,
                open_keywords: bool = False) -> Any:
    """``cls(**params)`` for plugin ``what`` (e.g. ``"strategy 'salt'"``), with errors a config author can act on.

    Raises:
        ConfigError: a key not in ``allowed`` (close matches listed; unless ``open_keywords``), or the plugin
            rejecting a value (its TypeError/ValueError message).

    Example:
        >>> instantiate(dict, "toy 'd'", ["a"], {"a": 1})
        {'a': 1}
    """
    for key in params:
        if key not in allowed and not open_keywords:
            close = difflib.get_close_matches(key, allowed, n=2)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"{what} has no parameter {key!r}.{hint} Parameters: {', '.join(allowed) or 'none'}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{what}: {err}") from None

def _unregister(key: str) -> None:
    """Remove ``key`` (tests and doctests only)."""
    PLUGINS._items.pop(key, None)
    PLUGINS._meta.pop(key, None)
