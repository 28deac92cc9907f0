# SPDX-License-Identifier: Apache-2.0
"""Deterministic, stateless ``--shard k/n``: ``n`` machines split a tree with no coordination.

A series (or a file outside any series) belongs to shard ``k`` when the SHA-1 of its UID (or path) modulo ``n`` is
``k - 1``, so the union of the shards' reports lists every file once.

Example:
    >>> parse_shard("2/4")
    (2, 4)
    >>> sum(in_shard("1.2.3", (k, 3)) for k in (1, 2, 3))
    1
"""

from __future__ import annotations

import hashlib

from medkd.errors import ConfigError

__all__ = ["in_shard", "parse_shard"]


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"k/n"`` -> ``(k, n)`` with ``1 <= k <= n``; ``None`` -> ``(1, 1)``.

    Raises:
        ConfigError: not of the form ``k/n`` or out of range.
    """
    if not text:
        return 1, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like k/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard k/n needs 1 <= k <= n, got {text!r}")
    return k, n


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """Deterministic, stateless split: the key's SHA-1 modulo ``n`` is ``k - 1``."""
    k, n = shard
    return n == 1 or int(hashlib.sha1(key.encode()).hexdigest(), 16) % n == k - 1
