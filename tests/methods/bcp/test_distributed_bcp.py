# SPDX-License-Identifier: Apache-2.0
"""BCP under torchrun: 2 processes, gloo backend, CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medkd.data.synthetic import write_synthetic_acdc
from medkd.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_bcp_trains_with_two_gloo_processes(tmp_path):
    data = write_synthetic_acdc(tmp_path / "data", n_train=6, n_val=1, n_test=1, n_slices=6, seed=0)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    sets = ["patch=[64, 64]", "batch_size=4", "labeled_batch_size=2", "labeled=1", "pretrain_iterations=6",
            "selftrain_iterations=6", "val_interval=3", "num_workers=0", "snapshot_interval=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "medkd", "-q", "bcp", "train", "--config",
           str(ROOT / "apps" / "bcp" / "cpu_2d.yaml"), "--data-root", str(data), "--out", str(tmp_path / "run")]
    for s in sets:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run written to") == 1  # rank 0 only
    for stage in ("pretrain", "selftrain"):
        ckpt = load_checkpoint(tmp_path / "run" / stage / "last.pt")
        assert ckpt["iteration"] == 6 and len(ckpt.get("rng_ranks", [])) == 2
