"""Blurry/sharp pairs from video frames: linear-light averaging, the middle frame as target, seeding, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.config import load_config
from nafrestore.data.build import build_datasets
from nafrestore.data.frames import AveragedFramesDataset, average_frames, frame_sequences
from nafrestore.errors import DataError


def _write_sequence(folder: Path, count: int, size: int = 48, step: int = 2) -> list[np.ndarray]:
    """A bright square moving ``step`` px right per frame over a textured background, as PNG frames."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    background = (rng.random((size, size, 3)) * 120).astype(np.uint8)
    frames = []
    for i in range(count):
        frame = background.copy()
        frame[16:28, 4 + step * i : 16 + step * i] = 250
        cv2.imwrite(str(folder / f"{i:04d}.png"), frame[:, :, ::-1])
        frames.append(frame)
    return frames


def test_averaging_a_static_scene_returns_the_frame():
    frame = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(average_frames([frame] * 9) * 255, frame, atol=1e-3)


def test_frames_are_averaged_in_linear_light():
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    np.testing.assert_allclose(average_frames([black, white]), 0.5 ** (1 / 2.2), atol=1e-6)
    np.testing.assert_allclose(average_frames([black, white], gamma=1.0), 0.5, atol=1e-6)


def test_training_pairs_are_random_per_sample_and_target_the_middle_frame(tmp_path):
    frames = _write_sequence(tmp_path / "train" / "clip", 12)
    sequences = frame_sequences(tmp_path / "train", "data.train_dir", 3)
    data = AveragedFramesDataset(sequences, (3, 5), [], patch_size=48)
    a, b, c = data[(0, 1)], data[(0, 1)], data[(0, 2)]
    assert a["lq"].shape == a["gt"].shape == (3, 48, 48)
    assert np.array_equal(a["lq"], b["lq"]) and not np.array_equal(a["lq"], c["lq"])
    gt = np.rint(a["gt"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    index = next(i for i, f in enumerate(frames) if np.array_equal(f, gt))  # the target is one of the frames...
    lq = a["lq"].permute(1, 2, 0).numpy()
    # ...the middle of the window that was averaged: some K in 3..5 and start around it reproduce the input
    windows = [(k, index - k // 2) for k in range(3, 6) if 0 <= index - k // 2 and index - k // 2 + k <= 12]
    assert any(np.allclose(average_frames(frames[s : s + k]), lq, atol=1e-5) for k, s in windows)
    assert not np.allclose(lq, a["gt"].permute(1, 2, 0).numpy(), atol=0.05)  # the moving square is blurred


def test_validation_pairs_are_fixed_per_window(tmp_path):
    _write_sequence(tmp_path / "val" / "a", 10)
    _write_sequence(tmp_path / "val" / "b", 5)
    sequences = frame_sequences(tmp_path / "val", "data.val_dir", 5)
    noisy = [{"type": "gaussian_noise", "sigma": 10}]
    one, two = AveragedFramesDataset(sequences, (3, 5), noisy), AveragedFramesDataset(sequences, (3, 5), noisy)
    assert len(one) == 3  # windows of 5 frames: two in a, one in b
    for i in range(len(one)):
        x, y = one[i], two[i]
        assert x["name"] == y["name"] and x["name"].split("/")[0] in ("a", "b")
        assert np.array_equal(x["lq"], y["lq"]) and x["lq"].shape == (3, 48, 48)


def test_frames_config_builds_both_datasets(tmp_path, monkeypatch):
    _write_sequence(tmp_path / "train" / "clip", 9)
    _write_sequence(tmp_path / "val" / "clip", 9)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        None,
        [
            "data.format=frames", "data.train_dir=train", "data.val_dir=val", "data.frames=[3, 7]",
            "data.patch_size=32", "data.degradations=[{type: jpeg, quality: 80, p: 0.5}]",
        ],
    )  # fmt: skip
    train, val = build_datasets(cfg.data, seed=0)
    assert isinstance(train, AveragedFramesDataset) and train[(0, 3)]["lq"].shape == (3, 32, 32)
    assert len(val) == 1 and val[0]["lq"].shape == (3, 48, 48)


def test_bad_frame_folders_are_refused_with_the_key_and_the_fix(tmp_path):
    _write_sequence(tmp_path / "short" / "clip", 4)
    with pytest.raises(DataError, match=r"data.train_dir .* no sequence has the 7 frames .*clip \(4\).*lower"):
        frame_sequences(tmp_path / "short", "data.train_dir", 7)
    with pytest.raises(DataError, match=r"data.val_dir folder .*missing does not exist"):
        frame_sequences(tmp_path / "missing", "data.val_dir", 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no images.*clip1/000001.png"):
        frame_sequences(tmp_path / "empty", "data.train_dir", 3)
    mixed = tmp_path / "mixed" / "clip"
    _write_sequence(mixed, 4)
    cv2.imwrite(str(mixed / "0009.png"), np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match=r"mix frame sizes: clip \(30x20, 48x48\)"):
        AveragedFramesDataset(frame_sequences(tmp_path / "mixed", "k", 3), (3, 3))


def test_frames_train_through_the_cli_and_validate_named_windows(tmp_path):
    """The frames format trains and validates: the validation windows have names (the check of validation sizes and
    the scores need them), and the run writes its checkpoint."""
    _write_sequence(tmp_path / "train" / "clip", 9)
    _write_sequence(tmp_path / "val" / "a", 10)
    run = tmp_path / "run"
    overrides = [
        "model.name=nafnet", "model.width=4", "model.enc_blocks=[1,1]", "model.middle_blocks=0",
        "model.dec_blocks=[1,1]", "data.format=frames", f"data.train_dir={tmp_path / 'train'}",
        f"data.val_dir={tmp_path / 'val'}", "data.frames=[3,5]", "data.patch_size=32", "data.num_workers=0",
        "train.batch_size=2", "train.iters=2", "val.every=2", "val.metrics=[psnr]", "run.device=cpu",
        f"run.dir={run}",
    ]  # fmt: skip
    config = Path(__file__).resolve().parents[1] / "configs" / "nafnet-gopro-width32.yaml"
    result = CliRunner().invoke(app, ["train", str(config), "--quiet", *overrides])
    assert result.exit_code == 0, result.output
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    log = (run / "train.log").read_text()
    assert "validation at step 2 (2 images" in log
    val = AveragedFramesDataset(frame_sequences(tmp_path / "val", "data.val_dir", 5), (3, 5), seed=0)
    assert val.names == [val[i]["name"] for i in range(len(val))]  # what the items are scored under
