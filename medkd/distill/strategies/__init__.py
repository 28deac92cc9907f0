# SPDX-License-Identifier: Apache-2.0
"""medkd's strategy plugins (generations, snapshots, routing, stages), one file each; importing this package imports every module in it, which registers them."""

from __future__ import annotations

from medkd.distill.registry import import_plugin_modules

__all__ = import_plugin_modules(__name__, __path__)
