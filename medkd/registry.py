# SPDX-License-Identifier: Apache-2.0
"""A small registry of named factories, shared by nets, losses, methods, datasets and distillers.

Example:
    >>> NETS = Registry("net")
    >>> @NETS.register("tiny")
    ... def tiny(width: int = 2) -> int:
    ...     return width
    >>> NETS.create("tiny", width=3)
    3
    >>> NETS.list("ti*")
    ['tiny']
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Names mapped to factories. Decorate a factory bare (its ``__name__``) or with a name.

    Args:
        kind: what the registry holds, used in error messages ("net", "method", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, F] = {}

    @overload
    def register(self, name: F) -> F: ...

    @overload
    def register(self, name: str | None = None) -> Callable[[F], F]: ...

    def register(self, name: str | F | None = None) -> F | Callable[[F], F]:
        """Register a factory; usable as ``@reg.register`` or ``@reg.register("name")``."""
        if callable(name):
            return self._add(name.__name__, name)

        def deco(fn: F) -> F:
            return self._add(name or fn.__name__, fn)

        return deco

    def _add(self, name: str, fn: F) -> F:
        if name in self._items and self._items[name] is not fn:
            logger.warning("%s %r registered again; the new one replaces the old", self.kind, name)
        self._items[name] = fn
        return fn

    def get(self, name: str) -> F:
        """Return the factory called ``name``.

        Raises:
            KeyError: unknown name; the message lists close matches and all known names.
        """
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

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style pattern."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
