"""Faults: `kill -9` of a training process at several points, checkpoint writes included, a full disk, and runs
side by side.

A killed run resumed as often as it takes must end with the weights of a run that was never interrupted, and no
kill or failed write may leave a checkpoint that does not load. A seeded run gives the same weights whatever else
the machine does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytestmark = pytest.mark.slow  # several training subprocesses

CONFIG = {
    "model": {"name": "nafnet", "width": 4, "enc_blocks": [1, 1], "middle_blocks": 0, "dec_blocks": [1, 1]},
    "data": {"format": "sample", "patch_size": 32, "num_workers": 0, "val_max_images": 1},
    "train": {"iters": 12, "batch_size": 2, "lr": 2e-3, "warmup_iters": 2, "log_every": 2, "ckpt_every": 2,
              "ema": 0.9},
    "val": {"every": 4},
    "run": {"device": "cpu", "seed": 5},
}  # fmt: skip

# Runs `train` (fresh, or resuming the run directory) and, at one point, prints KILLME and waits to be killed:
#   step N   after optimizer step N, between checkpoints;
#   write N  inside the write of last.pt at step N: half the bytes are in the temporary file, nothing renamed yet.
DRIVER = r"""
import sys, time
from pathlib import Path
from nafrestore.config import load_config
from nafrestore.engine import checkpoint, config_for_resume, train, trainer

config, run, point, at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def hang():
    print("KILLME", flush=True)
    time.sleep(600)

callbacks = []
if point == "step":
    callbacks.append(lambda s: hang() if s.step == at else None)
elif point == "write":
    from nafrestore.utils.files import atomic_write
    real = trainer.save_checkpoint
    def save(ckpt, path):
        if ckpt["step"] == at and Path(path).name == "last.pt":
            with atomic_write(path) as f:
                f.write(b"\x50\x4b\x03\x04" + b"\0" * 4096)  # the start of a zip, then nothing
                f.flush()
                hang()
        return real(ckpt, path)
    trainer.save_checkpoint = save
resume = run if (run / "checkpoints" / "last.pt").exists() else None
cfg = config_for_resume(resume) if resume else load_config(config, [f"run.dir={run}"])
train(cfg, resume=resume, quiet=True, callbacks=callbacks)
"""


def _run(config: Path, run: Path, point: str = "none", at: int = 0, threads: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(config), str(run), point, str(at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )


def _kill_when_asked(proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    line = ""
    while "KILLME" not in line:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its kill point"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == CONFIG["train"]["iters"]
    return {"model": ckpt["model"], "ema": ckpt["ema"]}


def test_kill_9_anywhere_then_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    whole = _run(config, tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.communicate()

    run = tmp_path / "killed"
    # Between checkpoints (3), during the write of the step-4 checkpoint, right after a checkpoint (6), during the
    # write of the step-10 checkpoint after a validation (8 validated, 10 not yet): each resumed from what is there.
    for point, at in (("step", 3), ("write", 4), ("step", 6), ("write", 10)):
        proc = _run(config, run, point, at)
        _kill_when_asked(proc)
        # What the kill left loads (the previous checkpoint, or none yet): never the half-written file.
        last = run / "checkpoints" / "last.pt"
        if last.exists():
            saved = torch.load(last, map_location="cpu", weights_only=True)
            assert saved["step"] < at or (point == "step" and saved["step"] <= at)
    leftovers = list((run / "checkpoints").glob(".last.pt.*.tmp"))
    assert leftovers  # the killed writes left their temporary files ...
    final = _run(config, run)
    assert final.wait(timeout=600) == 0, final.communicate()
    assert not list((run / "checkpoints").glob(".*.tmp"))  # ... which the next start removed

    want, got = _weights(tmp_path / "whole"), _weights(run)
    for key in ("model", "ema"):
        for name in want[key]:
            torch.testing.assert_close(got[key][name], want[key][name], rtol=0, atol=1e-6, msg=f"{key}.{name}")


def test_the_same_seed_gives_the_same_weights_alone_side_by_side_and_resumed(tmp_path: Path) -> None:
    """Issue 33: the memory format was chosen by timing a step, so the machine's load picked the numerics (alone
    channels-last, busy contiguous), and a resumed process computed with its own thread count. Two runs side by side
    and one killed and resumed (with another OMP_NUM_THREADS, beside them) end bit for bit where a run alone does."""
    config = tmp_path / "cfg.yaml"
    # train.memory_format: auto; a loader worker process, whose samples must not depend on when it runs either.
    config.write_text(yaml.safe_dump({**CONFIG, "data": {**CONFIG["data"], "num_workers": 1}, "val": {"every": 100}}))
    alone = _run(config, tmp_path / "alone")
    assert alone.wait(timeout=600) == 0, alone.communicate()

    runs = [tmp_path / "side1", tmp_path / "side2", tmp_path / "resumed"]
    side = [_run(config, run) for run in runs[:2]]
    _kill_when_asked(_run(config, runs[2], "step", 5))  # last.pt is at step 4
    resumed = _run(config, runs[2], threads=2)
    for proc in [*side, resumed]:
        assert proc.wait(timeout=600) == 0, proc.communicate()

    want = _weights(tmp_path / "alone")
    for run in runs:
        log = (run / "train.log").read_text()
        assert "memory format channels_last (auto: the rule for cpu at fp32" in log
        got = _weights(run)
        for key in ("model", "ema"):
            for name in want[key]:
                assert torch.equal(got[key][name], want[key][name]), f"{run.name}: {key}.{name}"
    assert "1 intra-op threads, as before the interruption (this process had 2)" in log


def test_a_full_disk_during_a_checkpoint_write_keeps_the_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import errno

    from nafrestore.config import load_config
    from nafrestore.engine import config_for_resume, train
    from nafrestore.errors import OutputError

    run = tmp_path / "run"
    cfg = load_config(None, [f"{section}.{key}={value}" for section, keys in CONFIG.items()
                             for key, value in keys.items()] + [f"run.dir={run}", "train.iters=4"])  # fmt: skip
    train(cfg, quiet=True)
    good = (run / "checkpoints" / "last.pt").read_bytes()

    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"\0" * 1024)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    resumed = config_for_resume(run, None, ["train.iters=8"])
    with pytest.raises(OutputError, match="no space left on the device"):
        train(resumed, resume=run, quiet=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
