# SPDX-License-Identifier: Apache-2.0
"""A teacher-output cache: fp16 logits and tapped features keyed by (case, augmentation seed, teacher weights).

A frozen teacher gives the same outputs for the same input, so its outputs on a case under a given augmentation
can be computed once and read back in later epochs and runs. Entries live in
``<root>/<teacher fingerprint>/<case>__<seed>.pt`` (one file per case and seed: 3-D outputs stay chunked per case),
written atomically and read with ``weights_only=True``. A batch whose augmentation has no deterministic per-sample
seed cannot be cached (its inputs differ every time): :meth:`TeacherCache.get` and :meth:`TeacherCache.put`
refuse ``seed=None``. Also backs teacher-as-annotator runs (outputs over unlabelled archives).

Example:
    >>> import tempfile, torch
    >>> teacher = torch.nn.Linear(3, 2)
    >>> cache = TeacherCache(tempfile.mkdtemp(), teacher_fingerprint(teacher))
    >>> cache.get("case1", seed=0) is None
    True
    >>> cache.put("case1", 0, {"logits": torch.tensor([1.0, 2.0])})
    >>> cache.get("case1", seed=0)["logits"].dtype
    torch.float16
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from medkd.errors import DataError

__all__ = ["TeacherCache", "teacher_fingerprint"]


def teacher_fingerprint(teacher: nn.Module) -> str:
    """SHA-256 of the teacher's state dict (names, shapes, dtypes and values): changes when any weight changes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class TeacherCache:
    """Disk cache of a frozen teacher's outputs.

    Args:
        root: cache folder (created on first write).
        fingerprint: :func:`teacher_fingerprint` of the teacher; entries of other teachers are never read.
    """

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.folder = Path(root) / fingerprint[:24]
        self.hits = 0
        self.misses = 0

    def _path(self, case: str, seed: int | None) -> Path:
        if seed is None:
            raise ValueError(f"case {case!r}: the teacher cache needs a deterministic per-sample augmentation seed "
                             "(a random augmentation changes the teacher's input every time)")
        safe = _SAFE.sub("_", str(case))
        return self.folder / f"{safe}__{int(seed)}.pt"

    def get(self, case: str, seed: int | None) -> dict[str, Tensor] | None:
        """The cached outputs (fp16) of ``case`` under ``seed``, or None.

        Raises:
            ValueError: ``seed`` is None. DataError: a corrupt cache file (named).
        """
        path = self._path(case, seed)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt file
            raise DataError(path, f"corrupt teacher-cache entry ({type(err).__name__}); delete it to recompute") \
                from None
        self.hits += 1
        return entry

    def put(self, case: str, seed: int | None, outputs: dict[str, Tensor]) -> None:
        """Store ``outputs`` (floating tensors as fp16) for ``case`` under ``seed`` (atomically).

        Raises:
            ValueError: ``seed`` is None.
        """
        path = self._path(case, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
                 for k, v in outputs.items()}
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(entry, tmp)
        os.replace(tmp, path)
