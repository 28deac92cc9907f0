# SPDX-License-Identifier: Apache-2.0
"""Data-parallel training under ``torchrun`` for every method (NCCL on GPU, gloo on CPU).

Launch any medkd training with ``torchrun --nproc_per_node N ...``: :func:`init_distributed` reads the
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` variables that torchrun sets and joins the process group; with one
process it creates no group and every helper below is a no-op.

**Why gradients are averaged by hand instead of wrapping the student in DistributedDataParallel.**
BCP makes two separate student forwards (one per mixed half-batch, so that batch-norm statistics are computed
per half as in the reference, spec §6) before one backward. DDP's reducer expects one forward per backward and
rejects or mis-synchronises that pattern. Averaging the gradients after ``loss.backward()`` with
:func:`average_gradients` is the same data parallelism (every rank applies the mean gradient, so parameters
stay identical), and it works for any number of forwards. Gradients are flattened into a few large buckets
so a step costs a handful of collective calls, not one per parameter. :func:`broadcast_buffers` then gives
every rank rank 0's batch-norm statistics, as DDP does with ``broadcast_buffers=True``. Methods with one
forward per step may use :func:`wrap_ddp` instead (the engine detects the wrapper and skips both helpers).

Example:
    >>> info = init_distributed()  # single process: no process group
    >>> info.world_size, is_main()
    (1, True)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = [
    "DistInfo",
    "init_distributed",
    "get_dist_info",
    "is_main",
    "barrier",
    "cleanup",
    "broadcast_object",
    "all_gather_object",
    "all_reduce_mean",
    "average_gradients",
    "broadcast_buffers",
    "wrap_ddp",
]

logger = logging.getLogger(__name__)

_BUCKET_BYTES = 25 * 2**20  # as DDP's default bucket_cap_mb


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a data-parallel run.

    Args:
        rank: global rank, 0 … world_size-1.
        world_size: number of processes.
        local_rank: rank on this host (selects the GPU).
        device: the device this process trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that validates, logs and writes files."""
        return self.rank == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the torchrun process group (if ``WORLD_SIZE`` > 1) and pick this process's device.

    Args:
        backend: ``"nccl"``, ``"gloo"``, ...; default ``"nccl"`` if CUDA is available, else ``"gloo"``.

    Returns:
        The process's :class:`DistInfo`; device ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.

    Raises:
        ValueError: a torchrun variable is not an integer, or RANK is outside [0, WORLD_SIZE).

    Example:
        >>> init_distributed().rank
        0
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("joined process group: rank %d/%d, backend %s, device %s", rank, world_size, backend, device)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def get_dist_info() -> DistInfo:
    """Describe the current process from the initialised process group (or as a single process).

    Returns:
        :class:`DistInfo`; rank 0 of 1 on CPU/``cuda:0`` when no process group exists.
    """
    cuda = torch.cuda.is_available()
    if dist.is_available() and dist.is_initialized():
        local_rank = _env_int("LOCAL_RANK", 0)
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    return DistInfo(0, 1, 0, torch.device("cuda", 0) if cuda else torch.device("cpu"))


def is_main() -> bool:
    """True on rank 0 or when no process group is initialised."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if _active():
        if dist.get_backend() == "nccl":  # name the device, so NCCL need not guess it
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def cleanup() -> None:
    """Wait for every rank, then destroy the process group, if one exists.

    The barrier matters with gloo: a rank that tears the group down while a peer is still finishing its last
    collective makes the peer abort (SIGABRT).
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return ``src``'s ``obj`` on every rank (picklable objects; no-op in a single process).

    Example:
        >>> broadcast_object({"score": 0.5})
        {'score': 0.5}
    """
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Return ``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks, as a new tensor (the input itself in a single process).

    Example:
        >>> all_reduce_mean(torch.tensor([2.0]))
        tensor([2.])
    """
    if not _active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out.div_(dist.get_world_size()) if out.is_floating_point() else out // dist.get_world_size()


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Group tensors by (device, dtype) into buckets of at most ``_BUCKET_BYTES`` (order preserved)."""
    groups: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
    sizes: dict[tuple[torch.device, torch.dtype], int] = {}
    for t in tensors:
        key = (t.device, t.dtype)
        nbytes = t.numel() * t.element_size()
        if key not in groups or sizes[key] + nbytes > _BUCKET_BYTES:
            groups.setdefault(key, []).append([])
            sizes[key] = 0
        groups[key][-1].append(t)
        sizes[key] += nbytes
    return [bucket for buckets in groups.values() for bucket in buckets if bucket]


def average_gradients(model: nn.Module) -> None:
    """All-reduce (mean) the gradients of every parameter that has one, in flattened buckets.

    Call after ``loss.backward()`` and before ``optimizer.step()``. Every rank must hold gradients for the
    same parameters (true when all ranks run the same computation). No-op in a single process.

    Args:
        model: the trained network (a DDP wrapper is not expected: DDP averages gradients itself).

    Raises:
        ValueError: a parameter has a sparse gradient.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> net(torch.ones(1, 2)).sum().backward()
        >>> average_gradients(net)  # single process: gradients unchanged
    """
    if not _active():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if any(g.is_sparse for g in grads):
        raise ValueError("average_gradients supports dense gradients only")
    world_size = dist.get_world_size()
    for bucket in _buckets(grads):
        flat = _flatten_dense_tensors(bucket)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        torch._foreach_copy_(bucket, list(_unflatten_dense_tensors(flat, bucket)))


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers (batch-norm statistics), in flattened buckets; no-op in one process.

    Args:
        model: the trained network.
        src: the rank whose buffers win.
    """
    if not _active():
        return
    buffers = [b for b in model.buffers() if b.numel() > 0]
    for bucket in _buckets(buffers):
        flat = _flatten_dense_tensors(bucket)
        dist.broadcast(flat, src=src)
        torch._foreach_copy_(bucket, list(_unflatten_dense_tensors(flat, bucket)))


def wrap_ddp(model: nn.Module, info: DistInfo, **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` for methods with one forward per backward.

    Args:
        model: the network, already on ``info.device``.
        info: from :func:`init_distributed`.
        **kwargs: passed to ``DistributedDataParallel``.

    Returns:
        The DDP-wrapped model, or ``model`` itself when ``info.world_size == 1``.
    """
    if info.world_size == 1 or not _active():
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **kwargs)
