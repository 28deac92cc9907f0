# SPDX-License-Identifier: Apache-2.0
"""Seeding and random-number-generator state that survives a checkpoint.

:func:`seed_everything` seeds Python's :mod:`random`, NumPy's global generator and torch (CPU and every
CUDA device). :func:`get_rng_state` captures the same generators as **plain types and tensors only**, so a
checkpoint that holds it loads with ``torch.load(weights_only=True)``; :func:`set_rng_state` puts it back.
Together they make a resumed run draw the same random numbers as an uninterrupted one.

Example:
    >>> import torch
    >>> seed_everything(1337)
    >>> state = get_rng_state()
    >>> a = torch.rand(3)
    >>> set_rng_state(state)
    >>> torch.equal(a, torch.rand(3))
    True
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["seed_everything", "get_rng_state", "set_rng_state"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and all CUDA devices).

    Args:
        seed: the seed; NumPy receives ``seed % 2**32``.
        deterministic: also ask torch for deterministic algorithms
            (``torch.use_deterministic_algorithms(True, warn_only=True)``, ``cudnn.deterministic=True``,
            ``cudnn.benchmark=False`` and ``CUBLAS_WORKSPACE_CONFIG`` if unset). Slower on GPU; ops without a
            deterministic implementation warn instead of failing.

    Raises:
        TypeError: ``seed`` is not an integer.

    Example:
        >>> seed_everything(0, deterministic=False)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily if CUDA is not initialised yet)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    logger.debug("seeded random, numpy and torch with %d (deterministic=%s)", seed, deterministic)


def get_rng_state() -> dict[str, Any]:
    """Capture the state of Python's ``random``, NumPy's global generator, torch CPU and (if used) CUDA.

    Returns:
        ``{"python": {...}, "numpy": {...}, "torch": uint8 tensor, "cuda": [uint8 tensor per device]}``;
        ``"cuda"`` is present only when CUDA is initialised. Every leaf is an int, float, str, None or a
        tensor, so the dict can be saved in a checkpoint read with ``torch.load(weights_only=True)``.

    Example:
        >>> sorted(get_rng_state())[:3]
        ['numpy', 'python', 'torch']
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),  # 624 uint32 words + position
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "bit_generator": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # 624 uint32 words, widened
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore generator states captured by :func:`get_rng_state`; missing entries are left alone.

    Args:
        state: the dict returned by :func:`get_rng_state` (possibly after a save/load round trip).

    Raises:
        ValueError: an entry is malformed (e.g. not produced by :func:`get_rng_state`).

    Example:
        >>> set_rng_state(get_rng_state())
    """
    try:
        if "python" in state:
            py = state["python"]
            words = py["state"].tolist() if isinstance(py["state"], torch.Tensor) else list(py["state"])
            random.setstate((int(py["version"]), tuple(int(w) for w in words), py["gauss_next"]))
        if "numpy" in state:
            nps = state["numpy"]
            keys = nps["keys"].numpy() if isinstance(nps["keys"], torch.Tensor) else np.asarray(nps["keys"])
            np.random.set_state(
                (
                    str(nps["bit_generator"]),
                    keys.astype(np.uint32),
                    int(nps["pos"]),
                    int(nps["has_gauss"]),
                    float(nps["cached_gaussian"]),
                )
            )
        if "torch" in state:
            torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"malformed RNG state ({type(err).__name__}: {err})") from err
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if len(cuda_states) != count:
            logger.warning("RNG state holds %d CUDA generators but %d devices are visible", len(cuda_states), count)
        for device, cuda_state in enumerate(cuda_states[:count]):
            torch.cuda.set_rng_state(cuda_state.cpu().to(torch.uint8), device)
