# SPDX-License-Identifier: Apache-2.0
"""The one training engine shared by every method (BCP, Grounded Teacher, SurgFUTR, KD plugins).

- :mod:`~medkd.engine.task`: :class:`TrainTask`, what a method stage provides (networks, data, loss).
- :mod:`~medkd.engine.loop`: :class:`Engine`, the loop with logging, validation, checkpoints and resume.
- :mod:`~medkd.engine.ema`: :class:`EMATeacher` (``state_dict`` and ``params`` modes).
- :mod:`~medkd.engine.teachers`: the :class:`Teacher` protocol and :class:`FrozenTeacher`.
- :mod:`~medkd.engine.checkpoint`: the one checkpoint format, atomic writes, ``weights_only`` reads.
- :mod:`~medkd.engine.distributed`: torchrun / gradient averaging (NCCL on GPU, gloo on CPU).
- :mod:`~medkd.engine.seeding`, :mod:`~medkd.engine.metrics_log`: seeds and RNG state; JSON-lines metrics.

Example:
    >>> from medkd.engine import EngineConfig
    >>> EngineConfig(max_iterations=10, val_interval=5).val_interval
    5
"""

from __future__ import annotations

from medkd.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint, to_plain, unwrap
from medkd.engine.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    average_gradients,
    barrier,
    broadcast_buffers,
    broadcast_object,
    cleanup,
    get_dist_info,
    init_distributed,
    is_main,
    wrap_ddp,
)
from medkd.engine.ema import EMAMode, EMATeacher
from medkd.engine.loop import Engine, EngineConfig, TrainResult
from medkd.engine.metrics_log import MetricsLogger, read_metrics
from medkd.engine.seeding import get_rng_state, seed_everything, set_rng_state
from medkd.engine.task import TrainTask
from medkd.engine.teachers import FrozenTeacher, Teacher

__all__ = [
    "CHECKPOINT_FORMAT",
    "DistInfo",
    "EMAMode",
    "EMATeacher",
    "Engine",
    "EngineConfig",
    "FrozenTeacher",
    "MetricsLogger",
    "TrainResult",
    "Teacher",
    "TrainTask",
    "all_gather_object",
    "all_reduce_mean",
    "average_gradients",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "cleanup",
    "get_dist_info",
    "get_rng_state",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
    "to_plain",
    "unwrap",
    "wrap_ddp",
]
