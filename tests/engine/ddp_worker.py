# SPDX-License-Identifier: Apache-2.0
"""Worker for tests/engine/test_distributed.py, launched with torchrun (2 processes, gloo, CPU).

Usage: ``python -m torch.distributed.run --nproc_per_node 2 tests/engine/ddp_worker.py OUT``. Each rank trains
the same tiny network on its own data with the medkd Engine (out_dir ``OUT/rank<r>``, written by rank 0 only)
and saves its final state to ``OUT/final_rank<r>.pt``; the collective helpers are checked on the way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

ITERATIONS = 6
BATCH = 8


def make_student() -> nn.Module:
    """The network every rank (and the single-process reference in the test) starts from."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))


def make_optimizer(student: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)


def make_batch(iteration: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-specific data: ranks see different samples, so unsynchronised ranks would diverge."""
    g = torch.Generator().manual_seed(1000 * iteration + rank)
    x = torch.randn(BATCH, 3, generator=g) * (1 + rank)
    return x, x.sum(1, keepdim=True) - rank


def main(out: Path) -> None:
    from medkd.engine import (
        EMATeacher,
        Engine,
        EngineConfig,
        TrainTask,
        all_gather_object,
        all_reduce_mean,
        broadcast_object,
        cleanup,
        init_distributed,
        is_main,
    )

    torch.set_num_threads(1)
    info = init_distributed(backend="gloo")
    assert info.world_size == 2 and info.device == torch.device("cpu")
    assert is_main() is (info.rank == 0)
    assert broadcast_object({"from": info.rank}) == {"from": 0}
    assert all_gather_object(info.rank) == [0, 1]
    assert all_reduce_mean(torch.tensor([float(info.rank)])).item() == 0.5

    class Task(TrainTask):
        def __init__(self) -> None:
            self.student = make_student()
            self.teacher = EMATeacher(self.student, decay=0.5)
            self.optimizer = make_optimizer(self.student)
            self.validated = 0

        def batches(self, start_iteration: int) -> Iterator[Any]:
            it = start_iteration
            while True:
                yield make_batch(it, info.rank)
                it += 1

        def compute_loss(self, batch: Any, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
            x, y = batch
            return nn.functional.mse_loss(self.student(x), y), {}

        def validate(self) -> dict[str, float]:
            self.validated += 1
            x, y = make_batch(10_000, 0)
            return {"score": -float(nn.functional.mse_loss(self.student(x), y))}

    task = Task()
    cfg = EngineConfig(max_iterations=ITERATIONS, val_interval=3, log_interval=1, progress=False)
    result = Engine(task, out / f"rank{info.rank}", cfg, dist=info).run()
    torch.save(
        {
            "student": task.student.state_dict(),
            "teacher": task.teacher.state_dict(),
            "validated": task.validated,
            "best_score": result.best_score,
        },
        out / f"final_rank{info.rank}.pt",
    )
    (out / f"done_rank{info.rank}.json").write_text(json.dumps({"last_iteration": result.last_iteration}))
    cleanup()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
