# SPDX-License-Identifier: Apache-2.0
"""Tests for medkd.engine.distributed: single-process no-ops, and a 2-process gloo run under torchrun."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from medkd.engine import distributed as dist_mod
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.metrics_log import read_metrics

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_single_process_helpers_are_no_ops(no_torchrun_env) -> None:
    info = dist_mod.init_distributed()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    assert not torch.distributed.is_initialized()
    assert dist_mod.is_main() and dist_mod.get_dist_info().world_size == 1
    t = torch.tensor([1.0, 2.0])
    assert dist_mod.all_reduce_mean(t) is t
    assert dist_mod.broadcast_object([1]) == [1] and dist_mod.all_gather_object("a") == ["a"]
    net = nn.Linear(2, 1)
    net(torch.ones(3, 2)).sum().backward()
    grad = net.weight.grad.clone()
    dist_mod.average_gradients(net)
    dist_mod.broadcast_buffers(net)
    dist_mod.barrier()
    assert torch.equal(net.weight.grad, grad)
    assert dist_mod.wrap_ddp(net, info) is net


@pytest.mark.parametrize(
    "env, match",
    [({"WORLD_SIZE": "2", "RANK": "2"}, "invalid torchrun"), ({"WORLD_SIZE": "two"}, "not an integer")],
)
def test_bad_torchrun_environment(no_torchrun_env, monkeypatch, env: dict, match: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        dist_mod.init_distributed()


def test_buckets_group_by_dtype_and_cap_size(monkeypatch) -> None:
    monkeypatch.setattr(dist_mod, "_BUCKET_BYTES", 64)
    tensors = [torch.zeros(8), torch.zeros(8), torch.zeros(2, dtype=torch.int64), torch.zeros(20), torch.zeros(1)]
    buckets = dist_mod._buckets(tensors)
    shapes = [[tuple(t.shape) for t in b] for b in buckets]
    assert shapes == [[(8,), (8,)], [(20,)], [(1,)], [(2,)]]  # float32 buckets of <= 64 bytes, then int64


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_worker():
    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_gloo_processes_train_in_lockstep(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    address = ["--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    cmd = [*launcher, *address, str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    finals = [torch.load(tmp_path / f"final_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for part in ("student", "teacher"):
        for key, value in finals[0][part].items():
            assert torch.equal(value, finals[1][part][key]), f"{part}.{key} differs between ranks"
    assert finals[0]["best_score"] == finals[1]["best_score"]  # score broadcast from rank 0
    assert (finals[0]["validated"], finals[1]["validated"]) == (2, 0)  # rank 0 validates alone

    # only rank 0 wrote files
    assert not (tmp_path / "rank1").exists()
    run = tmp_path / "rank0"
    assert {p.name for p in run.iterdir()} == {"best.pt", "last.pt", "metrics.jsonl", "engine_state.json"}
    lines = read_metrics(run / "metrics.jsonl")
    assert [r["iteration"] for r in lines if "loss" in r] == list(range(1, 7))
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["iteration"] == 6 and len(ckpt["rng_ranks"]) == 2

    # averaged gradients == one process averaging the two ranks' losses (separate forwards, as in BCP)
    worker = _load_worker()
    student = worker.make_student()
    optimizer = worker.make_optimizer(student)
    for it in range(1, worker.ITERATIONS + 1):
        optimizer.zero_grad()
        losses = [nn.functional.mse_loss(student(x), y) for x, y in (worker.make_batch(it, r) for r in (0, 1))]
        (sum(losses) / 2).backward()
        optimizer.step()
    for key, param in student.named_parameters():
        torch.testing.assert_close(finals[0]["student"][key], param.detach(), atol=1e-5, rtol=1e-5)
