# SPDX-License-Identifier: Apache-2.0
"""medkd's offline distillation utilities (student search, teacher choice, ...), one file each; importing this
package imports every module in it, which registers them with ``register_utility``."""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
    __all__.append(_module)
