"""Two-process DistributedDataParallel training on the CPU (Gloo), launched by torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from nafrestore.engine import read_metrics

pytestmark = [
    pytest.mark.slow,  # two torchrun processes
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with Gloo"
    ),
]


def test_torchrun_two_processes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    config = tmp_path / "ddp.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "nafnet", "width": 8, "enc_blocks": [1, 1], "dec_blocks": [1, 1]},
                "data": {"format": "sample", "patch_size": 32, "num_workers": 0, "val_max_images": 2},
                "train": {"iters": 4, "batch_size": 2, "lr": 2e-3, "log_every": 2, "ckpt_every": 4},
                "val": {"every": 4},
                "run": {"dir": str(run), "device": "cpu", "seed": 1},
            }
        )
    )
    # The documented command: torchrun --nproc_per_node 2 -m nafrestore train CONFIG (gloo on CPU).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "nafrestore", "train", str(config), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(run)]  # rank 0 alone prints the run directory

    last = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["step"] == 4
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in last["model"])
    assert len(last["rng"]["ranks"]) == 2  # each process's random state, for resuming
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 4]  # written once, by rank 0
    val = [r for r in records if "val/psnr" in r]
    assert len(val) == 1 and val[0]["val/n_images"] == 2  # each rank scored one image; combined
    assert "2 processes x batch 2" in (run / "train.log").read_text()
