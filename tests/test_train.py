"""End-to-end training on CPU with tiny models: learning, run directory, exact resume, signals, non-finite
losses and the time budget."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import Dataset

from nafrestore.config import Config, config_to_dict, load_config
from nafrestore.data import build_datasets
from nafrestore.engine import (
    TrainingDivergedError,
    TrainingInterrupted,
    TrainState,
    config_for_resume,
    read_metrics,
    train,
)
from nafrestore.loading import load_spec

NAFNET = ["model.name=nafnet", "model.width=8", "model.enc_blocks=[1,1]", "model.dec_blocks=[1,1]"]
LKA = ["model.name=lka_nafnet", "model.width=8", "model.enc_blocks=[1,1]", "model.dec_blocks=[1,1]"]


def tiny_cfg(run_dir: Path, *overrides: str, model: list[str] = LKA) -> Config:
    base = [
        *model,
        "data.format=sample",
        "data.patch_size=32",
        "data.num_workers=0",
        "data.val_max_images=1",
        "train.batch_size=4",
        "train.lr=3e-3",
        "train.iters=12",
        "train.warmup_iters=2",
        "train.log_every=2",
        "train.ckpt_every=4",
        "val.every=100",
        "run.device=cpu",
        "run.seed=3",
        f"run.dir={run_dir}",
        "train.memory_format=contiguous",  # the format these tests' thresholds were set in (auto: channels-last)
    ]
    return load_config(None, [*base, *overrides])


class TinyVal(Dataset):
    """One 48x48 crop of a sample validation image (fast to validate)."""

    def __init__(self, cfg: Config) -> None:
        item = build_datasets(cfg.data, seed=cfg.run.seed)[1][0]
        self.item = {k: v[:, 100:148, 100:148] if torch.is_tensor(v) else v for k, v in item.items()}

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict:
        return self.item


def small_data(cfg: Config) -> tuple[Dataset, Dataset]:
    return build_datasets(cfg.data, seed=cfg.run.seed)[0], TinyVal(cfg)


def ckpt(run_dir: Path, which: str = "last") -> dict:
    return torch.load(run_dir / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------------------------------------------


def test_training_learns_and_writes_the_run_directory(tmp_path: Path) -> None:
    """On the sample data a tiny NAFNet's loss falls and its validation PSNR beats the noisy input's."""
    run = tmp_path / "run"
    cfg = tiny_cfg(
        run,
        "train.iters=60",
        "train.batch_size=8",
        "train.lr=4e-3",
        "train.log_every=5",
        "train.ckpt_every=30",
        "val.every=30",
        "data.val_max_images=2",
        model=[*NAFNET, "model.middle_blocks=1"],
    )
    assert train(cfg, quiet=True) == run

    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    vals = [r for r in records if "val/psnr" in r]
    assert [r["step"] for r in steps] == list(range(5, 61, 5))
    assert all({"loss", "lr", "it_s"} <= set(r) for r in steps)
    assert [r["step"] for r in vals] == [30, 60]
    # The loss (minus the PSNR on training patches) falls.
    assert steps[-1]["loss"] < steps[0]["loss"] - 2.0
    # The degraded input is scored once; the restored images beat it.
    inputs = [r["val/input_psnr"] for r in records if "val/input_psnr" in r]
    assert len(inputs) == 1
    assert vals[-1]["val/psnr"] > inputs[0] + 0.5  # about +2 dB with these settings
    assert 0 < vals[-1]["val/ssim"] < 1

    # Run directory contents.
    assert load_config(run / "config.yaml") == cfg
    assert (run / "curves.png").stat().st_size > 10_000
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    log = (run / "train.log").read_text()
    assert "validation at step 60" in log and "degraded input PSNR" in log

    # Checkpoints: self-describing, loadable with weights_only=True, no wrapper prefixes.
    last, best = ckpt(run), ckpt(run, "best")
    for c in (last, best):
        assert c["format_version"] == 1 and c["model_name"] == "nafnet"
        assert c["model_args"] == cfg.model.args and c["config"] == config_to_dict(cfg)
        assert c["tlc_train_size"] is None
        assert not any(k.startswith(("module.", "_orig_mod.")) for k in c["model"])
    assert last["step"] == 60 and last["weights"] == "raw" and last["ema"] is None
    assert set(last["rng"]) >= {"torch", "cuda", "numpy", "python"}
    assert last["optimizer"] is not None and last["scheduler"] is not None
    assert best["optimizer"] is None  # best.pt is for inference
    assert best["best_metric"] == pytest.approx(max(r["val/psnr"] for r in vals))
    net = load_spec(run).build()  # a run directory means its best.pt
    assert net(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)


def test_memory_format_auto_is_logged_recorded_and_kept_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.memory_format=auto")
    data = small_data(cfg)
    with pytest.raises(TrainingInterrupted):
        train(cfg, quiet=True, datasets=data, callbacks=[_raise_signal_at(5)])
    log = (run / "train.log").read_text()
    assert "memory format channels_last (auto: the rule for cpu at fp32" in log
    part = ckpt(run)
    assert part["memory_format"] == "channels_last"
    assert all(v.is_contiguous() for v in part["model"].values())  # stored contiguous, for any reader

    # A checkpoint whose run chose otherwise (e.g. by timing, as before) is resumed in its own format.
    part["memory_format"] = "contiguous"
    torch.save(part, run / "checkpoints" / "last.pt")
    train(None, resume=run, quiet=True, datasets=data)
    assert "memory format contiguous (auto, kept from the checkpoint)" in (run / "train.log").read_text()
    assert ckpt(run)["memory_format"] == "contiguous" and ckpt(run)["step"] == 12


def test_channels_last_training_matches_contiguous_training(tmp_path: Path) -> None:
    # Same seed, same data: the two memory formats differ by float rounding only.
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        cfg = tiny_cfg(tmp_path / fmt, f"train.memory_format={fmt}", "model.drop_path_rate=0.2")
        train(cfg, quiet=True, datasets=small_data(cfg))
        runs[fmt] = ckpt(tmp_path / fmt)
        assert runs[fmt]["memory_format"] == fmt
    for name, value in runs["contiguous"]["model"].items():
        torch.testing.assert_close(runs["channels_last"]["model"][name], value, rtol=0, atol=1e-4, msg=name)
    assert any(v.ndim == 4 for v in runs["contiguous"]["model"].values())


def _raise_signal_at(step: int, signum: int = signal.SIGINT) -> Callable[[TrainState], None]:
    def callback(s: TrainState) -> None:
        if s.step == step:
            signal.raise_signal(signum)

    return callback


def test_resume_after_interruption_gives_the_same_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Stochastic depth draws from torch's RNG during training: the restored random state matters too.
    opts = ["train.ema=0.9", "train.grad_clip=0.5", "train.weight_decay=0.01", "val.every=4"]
    opts.append("model.drop_path_rate=0.2")
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    cfg_full = tiny_cfg(full_dir, *opts)
    data = small_data(cfg_full)
    train(cfg_full, quiet=True, datasets=data)

    # The same run, interrupted by SIGINT after step 5 (between checkpoints and validations).
    sigint = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as info:
        train(tiny_cfg(part_dir, *opts), quiet=True, datasets=data, callbacks=[_raise_signal_at(5)])
    assert signal.getsignal(signal.SIGINT) is sigint  # handlers restored
    assert info.value.exit_code == 130 and info.value.step == 5
    assert f"nafrestore train --resume {part_dir}" in capsys.readouterr().err
    assert ckpt(part_dir)["step"] == 5

    # Resume with the config stored in the checkpoint.
    assert train(None, resume=part_dir, quiet=True, datasets=data) == part_dir
    a, b = ckpt(full_dir), ckpt(part_dir)
    assert a["step"] == b["step"] == 12
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            torch.testing.assert_close(a[key][name], b[key][name], rtol=0, atol=1e-6, msg=f"{key}.{name}")
    assert a["best_metric"] == pytest.approx(b["best_metric"], abs=1e-6)
    assert ckpt(part_dir, "best")["weights"] == "ema"
    # metrics.jsonl: every step logged once across both sessions.
    logged = [r["step"] for r in read_metrics(part_dir / "metrics.jsonl") if "loss" in r]
    assert logged == list(range(2, 13, 2))


@pytest.mark.slow  # a training subprocess, interrupted by a real signal
def test_real_sigint_saves_last_pt_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    # DataLoader workers too: Ctrl-C in a terminal signals the whole process group, workers included.
    opts = ["train.iters=100000", "train.log_every=1", "train.ckpt_every=100000", "val.every=100000"]
    cfg = tiny_cfg(run, *opts, "data.num_workers=2")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(cfg)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nafrestore", "train", str(config), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,  # its own process group, as a terminal job
    )
    try:
        deadline = time.monotonic() + 120
        while len(read_metrics(run / "metrics.jsonl")) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"nafrestore train --resume {run}" in err
    assert err.count("Interrupted by SIGINT") == 1 and err.count("SIGINT received") == 1  # each said once
    saved = ckpt(run)
    assert saved["step"] >= 3 and not (run / "checkpoints" / "best.pt").exists()

    # Resume from the run directory alone, extending nothing but the iteration count.
    resumed = config_for_resume(run, None, [f"train.iters={saved['step'] + 2}"])
    assert resumed.run_dir == run and resumed.train.iters == saved["step"] + 2
    resumed.data.num_workers = 0
    train(resumed, resume=run, quiet=True)
    assert ckpt(run)["step"] == saved["step"] + 2


def _nan_between(first: int, last: int | None) -> Callable[[TrainState], None]:
    """Make the model's training outputs NaN from step ``first`` to ``last`` (None: for ever), as bad training data
    would; in eval mode (validation, the checkpoint's health probe) it stays as it is."""
    handles = []

    def callback(s: TrainState) -> None:
        if s.step == first - 1:
            handles.append(s.raw.register_forward_hook(lambda m, i, o: o * math.nan if m.training else o))
        if last is not None and s.step == last:
            handles.pop().remove()

    return callback


def test_non_finite_losses_are_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.max_bad_steps=3")
    train(cfg, quiet=True, datasets=small_data(cfg), callbacks=[_nan_between(6, 7)])
    last = ckpt(run)
    assert last["step"] == 12 and all(torch.isfinite(v).all() for v in last["model"].values())
    records = {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}
    # Steps 6 and 7 skipped; the logged mean loss of each window leaves them out.
    assert records[6]["skipped"] == 1 and records[8]["skipped"] == 1 and "skipped" not in records[10]
    assert all(math.isfinite(r["loss"]) for r in records.values())
    assert (run / "train.log").read_text().count("non-finite loss") == 2


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.max_bad_steps=3", "train.ckpt_every=4")
    good = {}

    def remember(s: TrainState) -> None:
        if s.step == 8:
            good.update({k: v.clone() for k, v in s.raw.state_dict().items()})

    with pytest.raises(TrainingDivergedError, match=r"3 non-finite losses in a row \(steps 9 to 11\)") as info:
        train(cfg, quiet=True, datasets=small_data(cfg), callbacks=[remember, _nan_between(9, None)])
    assert "last.pt" in str(info.value)
    last = ckpt(run)
    assert last["step"] == 8
    for name, value in last["model"].items():
        assert torch.equal(value, good[name])
    assert "Training diverged" in (run / "train.log").read_text()


def test_time_budget_stops_after_final_validation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.iters=100000", "train.time_budget_min=0.05", "train.log_every=1")
    train(cfg, quiet=True, datasets=small_data(cfg))
    last = ckpt(run)
    assert 0 < last["step"] < 100000 and last["elapsed_s"] >= 3.0
    records = read_metrics(run / "metrics.jsonl")
    assert any(r.get("step") == last["step"] and "val/psnr" in r for r in records)
    assert (run / "checkpoints" / "best.pt").exists()
    # The schedule follows the clock, so the weights depend on the machine's load: the log says so.
    assert "the weights depend on the machine's speed and load" in (run / "train.log").read_text()


def test_resume_errors(tmp_path: Path) -> None:
    from nafrestore.errors import CheckpointError

    with pytest.raises(CheckpointError, match="nothing to resume"):
        config_for_resume(tmp_path)
    with pytest.raises(CheckpointError, match="no such run directory"):
        train(None, resume=tmp_path / "nope")


def test_metrics_jsonl_is_valid_json(tmp_path: Path) -> None:
    # Non-finite values must still give valid JSON lines (written as strings).
    from nafrestore.engine.logging import RunLogger

    log = RunLogger(tmp_path, quiet=True)
    log.record(1, {"loss": math.nan, "lr": 1e-3})
    log.close()
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert json.loads(line) == {"step": 1, "loss": "nan", "lr": 1e-3}


def test_sigterm_exit_code(tmp_path: Path) -> None:
    cfg = tiny_cfg(tmp_path / "run", "train.iters=6")
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, quiet=True, datasets=small_data(cfg), callbacks=[_raise_signal_at(2, signal.SIGTERM)])
    assert info.value.exit_code == 143 and ckpt(tmp_path / "run")["step"] == 2


def test_compiled_model_checkpoints_without_prefixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The eager backend exercises the torch.compile wrapping without a C++ toolchain (inductor's default).
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend="eager", **kw))
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.compile=true", "train.iters=4", "train.ema=0.99")
    train(cfg, quiet=True, datasets=small_data(cfg))
    for which in ("last", "best"):
        c = ckpt(run, which)
        assert not any("_orig_mod" in k or k.startswith("module.") for k in c["model"])
    assert not any("_orig_mod" in k for k in ckpt(run)["ema"])


# ----------------------------------------------------------------------------------------------------------------
# Nothing lost (issue: bad-input and fault campaign)


def test_a_fresh_run_never_reuses_another_runs_directory(tmp_path: Path) -> None:
    from nafrestore.errors import ConfigError

    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.iters=4")
    train(cfg, quiet=True, datasets=small_data(cfg))
    before = (run / "checkpoints" / "last.pt").read_bytes()
    (run / "eval.json").write_text("{}")  # what `make demo` leaves beside a run
    with pytest.raises(ConfigError, match=r"already holds a run .*--resume .*run.dir=NEW_DIR.*--overwrite"):
        train(cfg, quiet=True, datasets=small_data(cfg))
    assert (run / "checkpoints" / "last.pt").read_bytes() == before and (run / "eval.json").exists()
    train(cfg, quiet=True, datasets=small_data(cfg), overwrite=True)
    assert not (run / "eval.json").exists()  # the old run's files went with it
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [2, 4]
    assert (run / "train.log").read_text().count("starting:") == 1


def test_divergence_never_writes_an_unhealthy_checkpoint_and_resuming_with_a_lower_lr_trains(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.iters=4")
    train(cfg, quiet=True, datasets=small_data(cfg))  # a healthy last.pt at step 4
    # lr 1e4: the weights stay finite (up to ~1e4) while the outputs and validation become NaN.
    blown = config_for_resume(run, None, ["train.iters=40", "train.lr=1e4", "train.ckpt_every=5", "val.every=5"])
    kept = r"unhealthy .*last good checkpoint, .*last.pt \(step 4\), was kept"
    with pytest.raises(TrainingDivergedError, match=kept):
        train(blown, resume=run, quiet=True, datasets=small_data(blown))
    assert ckpt(run)["step"] == 4
    with torch.no_grad():
        assert torch.isfinite(load_spec(run / "checkpoints" / "last.pt").build()(torch.rand(1, 3, 32, 32))).all()
    sane = config_for_resume(run, None, ["train.iters=12", "train.lr=1e-3", "val.every=12"])
    train(sane, resume=run, quiet=True, datasets=small_data(sane))
    assert ckpt(run)["step"] == 12
    psnr = [r["val/psnr"] for r in read_metrics(run / "metrics.jsonl") if "val/psnr" in r]
    assert math.isfinite(psnr[-1]) and psnr[-1] > 15


class FailingVal(TinyVal):
    """The tiny validation image, unreadable from the second validation on (as a file deleted mid-run would be)."""

    calls = 0

    def __getitem__(self, index: int) -> dict:
        FailingVal.calls += 1
        if FailingVal.calls > 1:
            from nafrestore.errors import DataError

            raise DataError("Image file val/x.png cannot be decoded")
        return self.item


def test_a_validation_error_never_costs_the_checkpoint(tmp_path: Path) -> None:
    from nafrestore.errors import DataError

    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.iters=12", "val.every=4", "train.ckpt_every=100")
    with pytest.raises(DataError, match="val/x.png"):
        train(cfg, quiet=True, datasets=(build_datasets(cfg.data, seed=cfg.run.seed)[0], FailingVal(cfg)))
    assert ckpt(run)["step"] == 8  # the failed validation's step was saved before the error went up


def test_small_validation_images_are_named_at_start_and_no_run_directory_is_made(tmp_path: Path) -> None:
    from nafrestore.data import save_image
    from nafrestore.errors import DataError

    clean = tmp_path / "clean"
    save_image(clean / "big.png", torch.rand(3, 64, 64))
    save_image(clean / "tiny.png", torch.rand(3, 8, 40))
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "data.format=synthetic", f"data.train_dir={clean}", f"data.val_dir={clean}",
                   "data.val_max_images=null", "val.metrics=[psnr, ssim]")  # fmt: skip
    with pytest.raises(DataError, match=r"'tiny' is 40x8 px.*at least 11 px"):
        train(cfg, quiet=True)
    assert not run.exists()


def test_a_missing_metric_network_leaves_no_half_made_run_directory(tmp_path: Path, monkeypatch) -> None:
    from nafrestore.errors import WeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("NAFRESTORE_WEIGHTS_DIR", raising=False)
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "val.metrics=[psnr, lpips]")
    with pytest.raises(WeightsError, match="alexnet"):
        train(cfg, quiet=True, datasets=small_data(cfg))
    assert not run.exists()


def test_an_unwritable_run_directory_is_one_message_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = tiny_cfg(blocker / "run")
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(config_to_dict(cfg)))
    from typer.testing import CliRunner

    from nafrestore.cli import app

    result = CliRunner().invoke(app, ["train", str(config), "--quiet"])
    assert result.exit_code == 1 and "a-file is a file, not a folder" in result.output, result.output
    assert "Traceback" not in result.output


def test_temporaries_of_a_killed_checkpoint_write_are_removed_at_the_next_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = tiny_cfg(run, "train.iters=4")
    train(cfg, quiet=True, datasets=small_data(cfg))
    leftovers = [run / "checkpoints" / f".last.pt.{i:08x}.tmp" for i in range(3)]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    resumed = config_for_resume(run, None, ["train.iters=6"])
    train(resumed, resume=run, quiet=True, datasets=small_data(resumed))
    assert not any(path.exists() for path in leftovers) and ckpt(run)["step"] == 6
