# SPDX-License-Identifier: Apache-2.0
"""On-disk feature cache: a long video is decoded and encoded once, then reused across epochs and runs.

Long-horizon tasks train on per-second features of whole videos (spec ``surgfutr.md`` §3: "features cached
offline"). :class:`FeatureCache` stores one ``.npy`` array per (video, encoder, settings) under a folder. The key is
the SHA-256 of

* the video's identity (:func:`file_identity`: resolved path, size and modification time; for a folder of frames,
  the same for every file in it), so an edited or replaced video is encoded again;
* the encoder weights' digest (:func:`weights_digest` of a module, a state dict or a checkpoint file);
* a settings dict (frame rate, size, clip length, normalisation, ...), compared as canonical JSON.

Writes are atomic (a temporary file, then ``os.replace``), so an interrupted run never leaves a half-written entry.
An entry that cannot be read back (truncated, overwritten, not an array) is recomputed with a warning.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> video = folder / "video01.mp4"
    >>> _ = video.write_bytes(b"frames")
    >>> cache = FeatureCache(folder / "cache", encoder="sha256:abc", settings={"fps": 1, "size": [64, 64]})
    >>> features = cache.get_or_compute(video, lambda: np.ones((3, 4), np.float32))
    >>> again = cache.get_or_compute(video, lambda: np.zeros((3, 4), np.float32))
    >>> bool((again == 1).all()), (cache.hits, cache.misses)
    (True, (1, 1))
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medkd.errors import DataError
from medkd.io.atomic import atomic_path

__all__ = ["CACHE_VERSION", "FeatureCache", "file_identity", "weights_digest", "cache_key"]

logger = logging.getLogger(__name__)

#: part of every key: bump it when the cache's file format changes
CACHE_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a video on disk: resolved path, size in bytes and modification time (ns).

    A folder (1-fps frame images) is identified by its resolved path plus the name, size and time of every file in it
    (one ``stat`` per file, no reading).

    Raises:
        DataError: if ``path`` does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.mp4"
        >>> _ = p.write_bytes(b"123")
        >>> sorted(file_identity(p)), file_identity(p)["size"]
        (['mtime_ns', 'path', 'size'], 3)
    """
    path = Path(path)
    try:
        resolved = path.resolve(strict=True)
        stat = resolved.stat()
    except (OSError, RuntimeError):
        raise DataError(path, "video not found (cannot key its cached features)") from None
    if not resolved.is_dir():
        return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    count = total = 0
    for child in sorted(resolved.iterdir()):
        if child.is_file():
            st = child.stat()
            digest.update(f"{child.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
            total += st.st_size
    return {"path": str(resolved), "files": count, "size": total, "listing": digest.hexdigest()}


def _tensor_bytes(value: Any) -> tuple[str, tuple[int, ...], bytes]:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        import torch

        t = value.detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return str(t.dtype), tuple(t.shape), raw
    array = np.ascontiguousarray(np.asarray(value))
    if array.dtype == object:
        raise TypeError(f"cannot digest a value of type {type(value).__name__}")
    return str(array.dtype), tuple(array.shape), array.tobytes()


def weights_digest(weights: Any) -> str:
    """A stable digest of encoder weights: ``"sha256:<hex>"``.

    Args:
        weights: a module (anything with ``state_dict()``), a mapping name -> tensor/array (a state dict), a
            checkpoint file (hashed byte by byte), or a string that already names the weights (returned as is).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> digest = weights_digest(net)
        >>> digest.startswith("sha256:"), digest == weights_digest(net.state_dict())
        (True, True)
        >>> with torch.no_grad():
        ...     _ = net.bias.add_(1.0)
        >>> digest == weights_digest(net)
        False
    """
    if isinstance(weights, Path) or (isinstance(weights, str) and Path(weights).is_file()):
        digest = hashlib.sha256()
        with Path(weights).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return "sha256:" + digest.hexdigest()
    if isinstance(weights, str):
        return weights
    if hasattr(weights, "state_dict") and callable(weights.state_dict):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a module, a state dict, a file or a string, got {type(weights).__name__}")
    digest = hashlib.sha256()
    for name in sorted(weights):
        dtype, shape, raw = _tensor_bytes(weights[name])
        digest.update(f"{name}\0{dtype}\0{shape}\0{len(raw)}\0".encode())
        digest.update(raw)
    return "sha256:" + digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cache settings must be JSON-like; {type(value).__name__} ({value!r:.40}) is not")


def cache_key(video: str | Path, encoder: str, settings: Mapping[str, Any]) -> str:
    """The SHA-256 hex key of (video identity, encoder digest, settings).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.mp4"
        >>> _ = p.write_bytes(b"1")
        >>> cache_key(p, "enc", {"fps": 1, "size": (32, 32)}) == cache_key(p, "enc", {"size": [32, 32], "fps": 1})
        True
    """
    doc = {"version": CACHE_VERSION, "video": file_identity(video), "encoder": encoder, "settings": dict(settings)}
    return hashlib.sha256(_canonical(doc).encode()).hexdigest()


def _canonical(doc: Any) -> str:
    """Canonical JSON (sorted keys, tuples as lists); ``ValueError`` for values that are not JSON-like."""
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=_jsonable, allow_nan=True)
    except (TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


class FeatureCache:
    """Per-video feature arrays under ``root``, keyed by video identity, encoder weights and settings.

    Args:
        root: the cache folder (created on the first write). Several encoders and settings may share it.
        encoder: the encoder's weights: anything :func:`weights_digest` takes (a module, state dict, checkpoint file
            or digest string).
        settings: what else changes the features (fps, size, clip length, normalisation, ...), JSON-like.
        mmap: load entries memory-mapped (read-only) instead of into memory.

    Attributes:
        hits: entries served from disk.
        misses: entries computed (absent, stale or corrupt).
    """

    def __init__(self, root: str | Path, *, encoder: Any, settings: Mapping[str, Any] | None = None,
                 mmap: bool = False) -> None:  # fmt: skip
        self.root = Path(root)
        self.encoder = weights_digest(encoder)
        self.settings = dict(settings or {})
        self.mmap = mmap
        self.hits = 0
        self.misses = 0
        _canonical(self.settings)  # fail early on settings that are not JSON-like

    def key(self, video: str | Path) -> str:
        """The entry's key (SHA-256 hex) for ``video``."""
        return cache_key(video, self.encoder, self.settings)

    def path(self, video: str | Path) -> Path:
        """The entry's file: ``<root>/<video name>-<key[:24]>.npy``."""
        stem = _UNSAFE.sub("_", Path(video).name)[:80] or "video"
        return self.root / f"{stem}-{self.key(video)[:24]}.npy"

    def load(self, video: str | Path) -> np.ndarray | None:
        """The cached features of ``video``, or ``None`` if absent; a corrupt entry is deleted with a warning and
        ``None`` returned."""
        path = self.path(video)
        if not path.is_file():
            return None
        try:
            array = np.load(path, mmap_mode="r" if self.mmap else None, allow_pickle=False)
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub" or array.ndim == 0:
                raise ValueError(f"holds {type(array).__name__} {getattr(array, 'dtype', '')}, not a numeric array")
        except (OSError, ValueError, EOFError) as err:
            logger.warning("%s: cached features are corrupt (%s); recomputing them for %s", path, err, video)
            path.unlink(missing_ok=True)
            return None
        return array

    def save(self, video: str | Path, features: np.ndarray) -> Path:
        """Store ``features`` for ``video`` atomically; returns the entry's file."""
        array = np.asarray(features)
        if array.dtype.kind not in "fiub" or array.ndim == 0:
            raise ValueError(f"features must be a numeric array with at least one axis, got {array.dtype} "
                             f"{array.shape}")  # fmt: skip
        path = self.path(video)
        with atomic_path(path, suffix=".npy") as tmp:
            with tmp.open("wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        return path

    def get_or_compute(self, video: str | Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached features of ``video``, or ``compute()`` stored and returned (a miss).

        Raises:
            DataError: if ``video`` does not exist.
        """
        cached = self.load(video)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        features = np.asarray(compute())
        path = self.save(video, features)
        logger.info("cached features %s of %s in %s", features.shape, video, path)
        return np.load(path, mmap_mode="r") if self.mmap else features

    def __contains__(self, video: object) -> bool:
        """Whether an entry exists for ``video`` (a missing video has none)."""
        if not isinstance(video, (str, Path)) or not Path(video).exists():
            return False
        return self.path(video).is_file()

    def clear(self) -> int:
        """Delete every ``.npy`` entry under ``root`` (all encoders and settings); returns how many."""
        entries = list(self.root.glob("*.npy")) if self.root.is_dir() else []
        for entry in entries:
            entry.unlink(missing_ok=True)
        return len(entries)
