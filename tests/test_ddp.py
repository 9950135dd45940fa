"""Two-process DistributedDataParallel training on the CPU (Gloo), launched by torchrun: two processes on one node,
and two nodes (two torchrun launchers meeting on 127.0.0.1) training on shards."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import yaml

from nafrestore.config import load_config
from nafrestore.data import prepare_shards, save_image
from nafrestore.engine import read_metrics, train
from nafrestore.errors import ConfigError

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


# Trains like `python -m nafrestore train CONFIG`, recording the keys of the samples this rank trains on and its
# final weights (each rank's, not only rank 0's checkpoint).
DRIVER = r"""
import json, os, sys
import torch
from nafrestore.config import load_config
from nafrestore.engine import trainer

config, out = sys.argv[1], sys.argv[2]
rank, step, keys = int(os.environ["RANK"]), trainer.train_step, []

def spy(model, batch, *args, **kwargs):
    keys.extend(batch["key"])
    return step(model, batch, *args, **kwargs)

def save_weights(s):
    if s.step == s.cfg.train.iters:
        torch.save(s.raw.state_dict(), f"{out}/weights-{rank}.pt")

trainer.train_step = spy
trainer.train(load_config(config), quiet=True, callbacks=[save_weights])
with open(f"{out}/keys-{rank}.json", "w") as f:
    json.dump(keys, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_on_disjoint_shards_and_end_with_identical_weights(tmp_path: Path) -> None:
    # 6 training pairs of 48x48 -> 4 crops of 32 each: 24 samples in shards of 5.
    for split, count in (("train", 6), ("val", 1)):
        for i in range(count):
            gt = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(i))
            save_image(tmp_path / "pairs" / split / "gt" / f"{i}.png", gt)
            save_image(tmp_path / "pairs" / split / "lq" / f"{i}.png", (gt + 0.1 * torch.rand(3, 48, 48)).clamp(0, 1))
    shards = tmp_path / "shards"
    prepare_shards("folder", tmp_path / "pairs" / "train", shards, val=tmp_path / "pairs" / "val", crop_size=32,
                   step=16, shard_size=5, workers=0, progress=False)  # fmt: skip
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    config = tmp_path / "nodes.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "nafnet", "width": 4, "enc_blocks": [1, 1], "middle_blocks": 0, "dec_blocks": [1, 1]},
                "data": {"format": "shards", "shards": str(shards), "patch_size": 32, "num_workers": 1},
                "train": {"iters": 6, "batch_size": 2, "lr": 2e-3, "log_every": 2, "ckpt_every": 6},
                "val": {"every": 6, "metrics": ["psnr"]},
                "run": {"dir": str(run), "device": "cpu", "seed": 1},
            }
        )
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # The README's multi-node command, each "node" a torchrun launcher of one process, meeting on a local port.
    port = _free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    launch += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen([*launch, "--node_rank", str(node), str(driver), str(config), str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for node in (0, 1)
    ]  # fmt: skip
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]

    keys = [json.loads((out / f"keys-{rank}.json").read_text()) for rank in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 12 and not set(keys[0]) & set(keys[1])  # disjoint samples
    assert sorted(keys[0] + keys[1]) == [f"{i:08d}" for i in range(24)]  # an epoch: every sample once
    weights = [torch.load(out / f"weights-{rank}.pt", weights_only=True) for rank in (0, 1)]
    last = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert last["step"] == 6
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]) and torch.equal(value, last["model"][name]), name
    assert "2 processes x batch 2" in (run / "train.log").read_text()
    # The checkpoint records the data order's settings: resumed by one process, the run is refused, not reshuffled.
    assert last["data_order"]["processes"] == 2 and last["data_order"]["data.num_workers"] == 1
    with pytest.raises(ConfigError, match=r"the number of training processes was 2, now 1.*\(launch 2 process\(es\)"):
        train(load_config(config, ["train.iters=8"]), resume=run, quiet=True)
