# SPDX-License-Identifier: Apache-2.0
"""medkd: teacher-student learning for medical and surgical imaging, built on MONAI and PyTorch.

Importing ``medkd`` is cheap: heavy modules (torch, monai, pydicom, ...) load only when a
subpackage that needs them is imported.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
