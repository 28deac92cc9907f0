# SPDX-License-Identifier: Apache-2.0
"""The one device resolver of medkd: ``auto`` picks CUDA, then MPS, then the CPU.

Training (``cfg.device``), ``load_predictor(..., device=...)``, the pipeline and the app all resolve devices here.
torch is imported on call, so importing this module stays cheap.

Example:
    >>> resolve_device("cpu").type
    'cpu'
    >>> resolve_device("auto", mps=False).type in ("cpu", "cuda")
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto", *, mps: bool = True) -> torch.device:
    """A ``torch.device`` for a device name.

    Args:
        device: ``auto`` or ``None`` (CUDA if available, then MPS if ``mps``, else the CPU), or any name torch
            accepts (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or a ``torch.device``.
        mps: whether ``auto`` may pick Apple's MPS backend (training runs keep to CUDA or CPU).

    Returns:
        The device.

    Raises:
        RuntimeError: torch does not know the device name.
    """
    import torch

    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        backend: Any = getattr(torch.backends, "mps", None)
        if mps and backend is not None and backend.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)
