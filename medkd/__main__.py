# SPDX-License-Identifier: Apache-2.0
"""``python -m medkd`` is the same as the ``medkd`` command."""

from __future__ import annotations

from medkd.cli import main

raise SystemExit(main())
