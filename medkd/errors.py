# SPDX-License-Identifier: Apache-2.0
"""Exceptions that medkd raises for bad input; the CLI prints them as one line, without a traceback."""

from __future__ import annotations

from os import PathLike

__all__ = ["MedkdError", "ConfigError", "DataError", "UntrustedBundleError"]


class MedkdError(Exception):
    """Base class of medkd's user-facing errors (bad configs, bad data, missing runs)."""


class ConfigError(MedkdError, ValueError):
    """A configuration file or override is invalid: unknown key, wrong type, inconsistent values."""


class DataError(MedkdError, ValueError):
    """An input file is missing, unreadable or malformed.

    Args:
        path: the offending file or folder; it is named first in the message.
        problem: what is wrong with it, in words a user can act on.

    Example:
        >>> str(DataError("case1.h5", "missing key 'label'"))
        "case1.h5: missing key 'label'"
    """

    def __init__(self, path: str | PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UntrustedBundleError(DataError):
    """A bundle's configs hold code (a ``$`` expression or a ``_target_`` outside medkd's allowlist) and the user
    did not pass ``--trust-bundle`` / ``trust=True``.

    Args:
        path: the config file.
        key: where the code is, as a config path (``inferer#_target_``).
        problem: what was refused and how to proceed.

    Example:
        >>> err = UntrustedBundleError("b/configs/inference.json", "run", "'$os.system(...)' is a $ expression")
        >>> err.key
        'run'
    """

    def __init__(self, path: str | PathLike[str], key: str, problem: str) -> None:
        self.key = key
        super().__init__(path, f"{key}: {problem}")
