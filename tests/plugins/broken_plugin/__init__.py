# SPDX-License-Identifier: Apache-2.0
"""A medkd plugin that fails on import (entry point ``broken = broken_plugin``): medkd logs it and skips it."""

from __future__ import annotations

raise RuntimeError("broken_plugin cannot start: missing weights")
