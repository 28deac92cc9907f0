# SPDX-License-Identifier: Apache-2.0
"""Every ``Example:`` in medkd's docstrings runs and prints what it says (docs that drift are bugs)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import medkd

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(medkd.__path__, prefix="medkd.")
    # Streamlit pages need a script run; __main__ runs the command line on import
    if not m.name.startswith("medkd.app") and m.name != "medkd.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
