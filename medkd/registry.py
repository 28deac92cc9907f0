# SPDX-License-Identifier: Apache-2.0
"""A small registry of named factories, shared by nets, losses, methods, datasets and distillers.

Entries may carry metadata given at registration (a network's ``task``, a method's ``kind``), which
:meth:`Registry.list` filters on. Listing a registry, or asking it for a name it does not hold, first loads the
plugins of other packages (:mod:`medkd.plugins`, once), so their registrations are seen without importing them.

Example:
    >>> NETS = Registry("net")
    >>> @NETS.register("tiny", task="classification")
    ... def tiny(width: int = 2) -> int:
    ...     return width
    >>> NETS.create("tiny", width=3)
    3
    >>> NETS.list("ti*"), NETS.list(task="segmentation")
    (['tiny'], [])
    >>> NETS.meta("tiny")
    {'task': 'classification'}
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import weakref
from collections.abc import Callable, Iterator
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar, overload

__all__ = ["Registry", "resolve_option"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


E = TypeVar("E", bound=Enum)


def resolve_option(cls: type[E], value: str | E, what: str, listing: str = "Options") -> E:
    """The member of the option enum ``cls`` for ``value``.

    Raises:
        ValueError: unknown value; the message names ``what``, a close match and the allowed values.

    Example:
        >>> from enum import StrEnum
        >>> class Mode(StrEnum):
        ...     CLEAN = "clean"
        >>> resolve_option(Mode, "clean", "mode")
        <Mode.CLEAN: 'clean'>
        >>> resolve_option(Mode, "claen", "mode")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: unknown mode 'claen'. Did you mean 'clean'? Options: clean
    """
    try:
        return cls(value)
    except ValueError:
        options = [str(m.value) for m in cls]
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {value!r}.{hint} {listing}: {', '.join(options)}") from None


def _discover_plugins() -> None:
    """Load the ``medkd.plugins`` entry points once (imported here so ``import medkd.registry`` stays light)."""
    from medkd.plugins import ensure_plugins

    ensure_plugins()


class Registry(Generic[F]):
    """Names mapped to factories. Decorate a factory bare (its ``__name__``) or with a name.

    Args:
        kind: what the registry holds, used in error messages ("net", "method", ...).
    """

    _instances: ClassVar[weakref.WeakSet[Registry[Any]]] = weakref.WeakSet()

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        Registry._instances.add(self)

    @classmethod
    def instances(cls) -> list[Registry[Any]]:
        """Every live registry (nets, methods, views, ...), e.g. for a test to snapshot and restore them all."""
        return sorted(cls._instances, key=lambda r: r.kind)

    @overload
    def register(self, name: F) -> F: ...

    @overload
    def register(self, name: str | None = None, **meta: Any) -> Callable[[F], F]: ...

    def register(self, name: str | F | None = None, **meta: Any) -> F | Callable[[F], F]:
        """Register a factory; usable as ``@reg.register``, ``@reg.register("name")`` or with metadata
        (``@reg.register("name", task="detection")``)."""
        if callable(name):
            return self._add(name.__name__, name, meta)

        def deco(fn: F) -> F:
            return self._add(name or fn.__name__, fn, meta)

        return deco

    def _add(self, name: str, fn: F, meta: dict[str, Any]) -> F:
        if name in self._items and self._items[name] is not fn:
            logger.warning("%s %r registered again; the new one replaces the old", self.kind, name)
        self._items[name] = fn
        self._meta[name] = dict(meta)
        return fn

    def get(self, name: str) -> F:
        """Return the factory called ``name`` (loading the plugins first if it is not registered yet).

        Raises:
            KeyError: unknown name; the message lists close matches and all known names.
        """
        if name not in self._items:
            _discover_plugins()
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def meta(self, name: str) -> dict[str, Any]:
        """A copy of the metadata ``name`` was registered with (``{}`` when none).

        Raises:
            KeyError: unknown name, as :meth:`get`.
        """
        self.get(name)
        return dict(self._meta.get(name, {}))

    def list(self, pattern: str = "*", **where: Any) -> list[str]:
        """Sorted names matching a shell-style pattern and, if given, metadata values (``task="detection"``)."""
        _discover_plugins()
        return sorted(
            n
            for n in self._items
            if fnmatch.fnmatchcase(n, pattern)
            and all(k in self._meta.get(n, {}) and self._meta[n][k] == v for k, v in where.items())
        )

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            _discover_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        _discover_plugins()
        return len(self._items)
