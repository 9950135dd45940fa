"""Engine pieces without a full run: EMA, checkpoints, RNG states, tiled restoration, evaluation, the resumable
batch stream, one training step, devices and signals."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nafrestore.data import BatchStream, build_train_loader
from nafrestore.engine import (
    ModelEMA,
    StopSignals,
    build_loss,
    build_optimizer,
    load_checkpoint,
    make_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    train_step,
    unwrap_model,
)
from nafrestore.errors import CheckpointError, NafrestoreError
from nafrestore.evaluation import loader_items, model_restore, score
from nafrestore.inference.tiling import restore_batch
from nafrestore.metrics import MetricSuite
from nafrestore.models import create_model
from nafrestore.utils.device import autocast, resolve_device, resolve_precision, seed_everything


def tiny_model(name: str = "lka_nafnet") -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, width=8, enc_blocks=[1, 1], dec_blocks=[1, 1])


# ----------------------------------------------------------------------------------------------------------------
# EMA


def test_ema_update_formula_and_warmup() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = ModelEMA(model, decay=0.9)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(1000) == 0.9
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1000)
    expected = 0.9 * before["weight"] + 0.1 * model.weight.detach()
    assert torch.allclose(ema.state_dict()["weight"], expected)
    assert torch.allclose(ema.state_dict()["bias"], before["bias"])  # unchanged weights stay (nearly) unchanged


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def test_model_state_strips_wrappers() -> None:
    model = tiny_model()
    compiled = torch.compile(model, backend="eager")  # no C++ toolchain needed
    assert unwrap_model(compiled) is model
    keys = list(model_state(compiled))
    assert keys == list(model.state_dict())
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in keys)


def _ckpt(step: int) -> dict:
    model = tiny_model()
    return make_checkpoint(
        config={"model": {"name": "lka_nafnet"}},
        model_name="lka_nafnet",
        model_args={"width": 8, "enc_blocks": (1, 1)},
        tlc_train_size=None,
        model=model.state_dict(),
        optimizer=build_optimizer(model, lr=1e-3).state_dict(),
        step=step,
        rng=rng_state(),
    )


def test_checkpoint_layout_and_weights_only_load(tmp_path: Path) -> None:
    path = save_checkpoint(_ckpt(7), tmp_path / "checkpoints" / "last.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format_version"] == 1 and raw["step"] == 7 and raw["model_name"] == "lka_nafnet"
    assert raw["model_args"] == {"width": 8, "enc_blocks": [1, 1]}  # tuples become lists
    assert isinstance(raw["nafrestore_version"], str) and raw["weights"] == "raw"
    assert load_checkpoint(path)["step"] == 7
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary left behind


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(_ckpt(1), tmp_path / "last.pt")
    real_save = torch.save

    def dying_save(obj, f, *a, **k):  # writes half a file, then "gets killed"
        real_save(obj, f, *a, **k)
        f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_ckpt(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert os.listdir(tmp_path) == ["last.pt"]


def test_load_checkpoint_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"params": {"w": torch.zeros(1)}}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a nafrestore training checkpoint"):
        load_checkpoint(tmp_path / "bare.pt")


def test_rng_state_round_trip(tmp_path: Path) -> None:
    seed_everything(123)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    first = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and first[3] == again[3]


# ----------------------------------------------------------------------------------------------------------------
# Validation


def test_restore_tiled_matches_whole_image() -> None:
    # A pixelwise model gives the same output per tile, so blending must reproduce the whole-image output.
    model = nn.Conv2d(3, 3, 1)
    lq = torch.rand(2, 3, 70, 53)
    with torch.no_grad():
        whole = model(lq)
    tiled = restore_batch(model, lq, tile=32, overlap=8)
    assert tiled.shape == lq.shape
    assert torch.allclose(tiled, whole, atol=1e-6)
    # A real network (which pads every tile internally): the right shape, finite values.
    net = tiny_model("nafnet").eval()
    tiled = restore_batch(net, lq, tile=48, overlap=16)
    assert tiled.shape == lq.shape and torch.isfinite(tiled).all()


def _val_items(n: int = 2, size: int = 24) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    items = []
    for i in range(n):
        gt = torch.rand(1, 3, size, size + 4, generator=g)
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        items.append({"lq": lq, "gt": gt, "name": [f"img{i}"]})
    return items


def test_validation_scores_of_the_identity_equal_the_input_row() -> None:
    items = _val_items()
    suite, input_suite = MetricSuite(["psnr", "ssim"]), MetricSuite(["psnr", "ssim"])
    restore = model_restore(nn.Identity(), tile=16, overlap=4)
    res = score(loader_items(items), suite, restore=restore, input_suite=input_suite)
    assert res.n_images == 2 and [row["name"] for row in res.images] == ["img0", "img1"]
    assert res.summary["psnr"] == pytest.approx(res.input_summary["psnr"])
    assert res.summary["ssim"] == pytest.approx(res.input_summary["ssim"])
    assert 10 < res.summary["psnr"] < 40 and 0 < res.summary["ssim"] < 1
    model = tiny_model()
    model.train()
    score(loader_items(items), suite, restore=model_restore(model))
    assert model.training  # scoring leaves the mode to the caller (the trainer switches to eval and back)


# ----------------------------------------------------------------------------------------------------------------
# Data position


class SeededToy(torch.utils.data.Dataset):
    """10 items whose content comes from the per-sample seed (as the real datasets do)."""

    supports_sample_seeds = True

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: tuple[int, int]) -> dict:
        i, seed = index
        rng = np.random.default_rng(seed)
        x = torch.from_numpy(rng.random((3, 4, 4), dtype=np.float32)) + i
        return {"lq": x, "gt": x}


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_stream_resumes_mid_epoch(workers: int) -> None:
    def stream(start: int, n: int, num_workers: int) -> list[torch.Tensor]:
        loader = build_train_loader(SeededToy(), batch_size=3, num_workers=num_workers, seed=5)
        it = iter(BatchStream(loader, start_step=start))
        return [next(it)["lq"] for _ in range(n)]

    full = stream(0, 10, 0)  # 3 batches per epoch: this crosses three epoch boundaries
    assert not torch.equal(full[0], full[3])  # a new epoch reshuffles
    resumed = stream(4, 6, workers)  # epoch 1, one batch in; with or without worker processes
    for a, b in zip(full[4:], resumed, strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------------
# One step, devices, signals


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_updates_and_skips_non_finite(precision: str) -> None:
    model = tiny_model()
    opt = build_optimizer(model, lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = {"lq": torch.rand(2, 3, 16, 16), "gt": torch.rand(2, 3, 16, 16)}
    loss_fn = build_loss([("psnr", 1.0)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = train_step(model, batch, loss_fn, opt, scaler, precision=precision, grad_clip=0.1, device="cpu")
    assert not out["skipped"] and np.isfinite(out["loss"]) and out["grad_norm"] is not None
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    after = {k: v.clone() for k, v in model.state_dict().items()}
    bad = {"lq": batch["lq"] * float("nan"), "gt": batch["gt"]}
    out = train_step(model, bad, loss_fn, opt, scaler, precision=precision, grad_clip=None, device="cpu")
    assert out["skipped"] and np.isnan(out["loss"])
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_devices_and_precision() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(NafrestoreError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(NafrestoreError, match="'tpu'"):
        resolve_device("tpu")
    # One rule for train, eval and infer: fp16 needs a GPU, bf16 runs on the CPU.
    with pytest.raises(NafrestoreError, match="fp16 needs a GPU"):
        resolve_precision("fp16", torch.device("cpu"))
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with pytest.raises(NafrestoreError, match="fp32, bf16, fp16"):
        resolve_precision("none", torch.device("cpu"))
    with autocast(torch.device("cpu"), "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_stop_signals_request_and_restore() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal aborts at once
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [("cpu", "fp32", "channels_last"), ("cpu", "bf16", "channels_last"), ("cuda", "fp32", "contiguous"),
     ("cuda", "bf16", "channels_last"), ("cuda", "fp16", "channels_last"), ("mps", "fp32", "contiguous")],
)  # fmt: skip
def test_choose_memory_format_is_a_rule_never_a_timing(device, precision, expected, monkeypatch) -> None:
    """The format changes the rounding, so a timed choice let the machine's load pick a seeded run's weights."""
    import time

    from nafrestore.engine.build import choose_memory_format

    def no_clock():
        raise AssertionError("the memory format must not be chosen by timing")

    monkeypatch.setattr(time, "perf_counter", no_clock)
    kwargs = {"device": torch.device(device), "precision": precision}
    fmt, why = choose_memory_format("auto", **kwargs)
    assert fmt == expected and why == (
        f"memory format {expected} (auto: the rule for {device} at {precision}, the same whatever the machine's "
        "load; train.memory_format sets it)"
    )
    assert choose_memory_format("contiguous", **kwargs)[0] == "contiguous"
    other = "contiguous" if expected == "channels_last" else "channels_last"
    assert choose_memory_format("auto", **kwargs, resumed=other) == (
        other,
        f"memory format {other} (auto, kept from the checkpoint)",
    )
