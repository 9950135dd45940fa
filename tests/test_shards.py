"""`nafrestore prepare` and the `shards` format: fabricated SIDD (small frames; full-size ones in the slow tests) and
GoPro trees -> shards -> training -> resume; a resume with other settings; the index against the crops; an
interrupted preparation; corrupt shards; the epoch split."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.config import DataConfig, load_config
from nafrestore.data import (
    BatchStream,
    PrepareInterrupted,
    ShardTrainDataset,
    ShardValDataset,
    SyntheticDataset,
    build_datasets,
    build_train_loader,
    check_data_order,
    crop_grid,
    epoch_segments,
    load_shard_index,
    prepare_shards,
)
from nafrestore.data import prepare as prepare_module
from nafrestore.data.io import load_rgb_integer
from nafrestore.engine import TrainingInterrupted, load_checkpoint, train
from nafrestore.errors import ConfigError, DataError
from nafrestore.utils.files import atomic_write

TINY = ["model.name=nafnet", "model.width=4", "model.enc_blocks=[1,1]", "model.middle_blocks=0",
        "model.dec_blocks=[1,1]"]  # fmt: skip
NOISE = [{"type": "gaussian_noise", "sigma": 25}]


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])


def _noise(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _gopro(root: Path, frames: int = 3, height: int = 72, width: int = 96) -> Path:
    """GoPro's layout: train/<sequence>/{blur,sharp}/*.png and test/<sequence>/..., small noise images."""
    for split, sequences in (("train", ("GOPR0372_07_00", "GOPR0374_11_00")), ("test", ("GOPR0384_11_00",))):
        for s, sequence in enumerate(sequences):
            for f in range(frames):
                sharp = _noise(100 * s + f, height, width)
                _png(root / split / sequence / "sharp" / f"{f:06d}.png", sharp)
                _png(root / split / sequence / "blur" / f"{f:06d}.png", cv2.blur(sharp, (3, 3)))
    return root


def _prepare_gopro(tmp_path: Path, **kwargs) -> Path:
    dst = tmp_path / "shards"
    settings = {"crop_size": 48, "step": 32, "shard_size": 8, "workers": 0, "progress": False, **kwargs}
    prepare_shards("gopro", _gopro(tmp_path / "GOPRO_Large"), dst, **settings)
    return dst  # 6 frames of 72x96 -> 2 x 3 crops each: 36 samples in shards of 8, 8, 8, 8, 4; 3 validation images


def _members(dst: Path, pattern: str = "train-*.tar") -> list[str]:
    names = []
    for shard in sorted(dst.glob(pattern)):
        with tarfile.open(shard) as tar:
            names += tar.getnames()
    return names


def _cfg(shards: Path, run: Path, *extra: str):
    return load_config(None, [
        *TINY, "data.format=shards", f"data.shards={shards}", "data.patch_size=32", "data.num_workers=0",
        "data.shuffle_buffer=16", "train.batch_size=4", "train.iters=10", "train.lr=2e-3", "train.log_every=2",
        "train.ckpt_every=100", "val.every=100", "val.metrics=[psnr]", "run.device=cpu", "run.seed=3",
        f"run.dir={run}", *extra,
    ])  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


def _interrupt_at(step: int):
    def callback(s) -> None:
        if s.step == step:
            signal.raise_signal(signal.SIGINT)

    return callback


def _train_interrupted_and_resumed(cfg_full, cfg_part, at: int) -> None:
    """Trains cfg_full without a break and cfg_part interrupted at step ``at`` then resumed: same weights."""
    train(cfg_full, quiet=True)
    with pytest.raises(TrainingInterrupted):
        train(cfg_part, quiet=True, callbacks=[_interrupt_at(at)])
    train(None, resume=cfg_part.run_dir, quiet=True)
    full, part = _weights(cfg_full.run_dir), _weights(cfg_part.run_dir)
    for name in full:
        torch.testing.assert_close(full[name], part[name], rtol=0, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------------------------
# Cropping


def test_crop_grid_is_basicsrs_512_384_grid():
    grid = crop_grid(3000, 5328, 512, 384)  # a SIDD-Medium frame
    tops, lefts = sorted({t for t, _, _, _ in grid}), sorted({left for _, left, _, _ in grid})
    assert tops == [0, 384, 768, 1152, 1536, 1920, 2304, 2488]  # + one flush with the bottom edge
    assert lefts == [*range(0, 4609, 384), 4816] and len(grid) == 8 * 14 == 112
    assert {(h, w) for _, _, h, w in grid} == {(512, 512)}
    assert crop_grid(896, 512, 512, 384) == [(0, 0, 512, 512), (384, 0, 512, 512)]  # fits exactly: no extra
    assert crop_grid(100, 60, 64, 32) == [(0, 0, 64, 60), (32, 0, 64, 60), (36, 0, 64, 60)]  # narrow: whole width


# ----------------------------------------------------------------------------------------------------------------
# SIDD: small frames in the fast loop, full-size frames in the slow one


def _sidd(root: Path, frames: tuple[tuple[int, int], ...]) -> Path:
    """SIDD-Medium sRGB's layout, one scene per (height, width) in ``frames`` (gradients plus noise), and four
    64x64 validation blocks."""
    scipy_io = pytest.importorskip("scipy.io")
    scenes = ("0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N")
    for scene, (height, width) in zip(scenes, frames, strict=True):
        ramp_y = np.linspace(0, 200, height, dtype=np.float32)[:, None]
        ramp_x = np.linspace(0, 200, width, dtype=np.float32)[None, :]
        gt = np.stack(np.broadcast_arrays(ramp_x, ramp_y, (ramp_x + ramp_y) / 2), axis=-1).astype(np.uint8)
        _png(root / "Data" / scene / "GT_SRGB_010.PNG", gt)
        noise = np.random.default_rng(height).integers(0, 24, size=gt.shape, dtype=np.uint8)
        _png(root / "Data" / scene / "NOISY_SRGB_010.PNG", gt + noise)
    blocks = np.random.default_rng(0).integers(0, 256, size=(2, 2, 64, 64, 3), dtype=np.uint8)
    scipy_io.savemat(root / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": blocks})
    scipy_io.savemat(root / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": blocks // 2})
    return root


@pytest.fixture(scope="module")
def small_sidd_shards(tmp_path_factory) -> Path:
    """Two 1100x700 SIDD frames (landscape and portrait) prepared with the defaults (512 px crops, 384 px step):
    6 crops each, 12 samples in shards of 8 and 4."""
    root = _sidd(tmp_path_factory.mktemp("small-sidd") / "SIDD_Medium_Srgb", ((700, 1100), (1100, 700)))
    dst = root.parent / "shards"
    prepare_shards("sidd", root, dst, shard_size=8, workers=0, progress=False)
    return dst


@pytest.fixture(scope="module")
def sidd_shards(tmp_path_factory) -> tuple[Path, Path]:
    """Two full-size SIDD frames (5328x3000 and 3000x5328) prepared with the defaults in shards of 64."""
    root = _sidd(tmp_path_factory.mktemp("sidd") / "SIDD_Medium_Srgb", ((3000, 5328), (5328, 3000)))
    dst = root.parent / "shards"
    prepare_shards("sidd", root, dst, shard_size=64, workers=2, progress=False)
    return root, dst


def test_small_sidd_shards_train_then_resume_across_an_epoch_gives_the_same_weights(small_sidd_shards, tmp_path):
    train_split = load_shard_index(small_sidd_shards)["splits"]["train"]
    assert train_split["samples"] == 2 * len(crop_grid(700, 1100, 512, 384)) == 12
    assert [s["samples"] for s in train_split["shards"]] == [8, 4]
    # 12 samples in batches of 2: 6 steps an epoch; resumed at step 2, it goes on into the second. (Loader workers
    # cost seconds here; the GoPro tests and the slow full-size one train with them.)
    opts = ["data.patch_size=64", "train.batch_size=2", "train.iters=8", "data.num_workers=0", "val.every=8"]
    full, part = _cfg(small_sidd_shards, tmp_path / "full", *opts), _cfg(small_sidd_shards, tmp_path / "part", *opts)
    _train_interrupted_and_resumed(full, part, at=2)
    assert "validation at step 8 (4 images" in (tmp_path / "full" / "train.log").read_text()


@pytest.mark.slow  # two full-size frames: 15-25 s to write and prepare
def test_sidd_full_size_frames_index_counts_match_the_crops_and_samples_are_lossless(sidd_shards):
    root, dst = sidd_shards
    index = load_shard_index(dst)
    train_split, val_split = index["splits"]["train"], index["splits"]["val"]
    expected = len(crop_grid(3000, 5328, 512, 384)) + len(crop_grid(5328, 3000, 512, 384))
    assert train_split["samples"] == expected == 224 and train_split["images"] == 2
    assert [s["samples"] for s in train_split["shards"]] == [64, 64, 64, 32]
    assert [s["first"] for s in train_split["shards"]] == [0, 64, 128, 192]
    assert all(s["bytes"] == (dst / s["file"]).stat().st_size for s in train_split["shards"])
    assert index["settings"] == {"crop_size": 512, "step": 384, "shard_size": 64, "png_compression": 1}
    assert index["source"] == {"format": "sidd", "path": str(root), "val_path": None} and index["paired"]
    members = _members(dst)
    assert len(members) == 3 * expected and len(set(members)) == len(members)  # lq, gt and json of every sample
    assert sorted({m.split(".")[0] for m in members}) == [f"{i:08d}" for i in range(expected)]
    assert val_split["samples"] == 4 and not val_split["cropped"]

    with tarfile.open(dst / "train-000001.tar") as tar:  # sample 113: the portrait frame's second crop
        meta = json.loads(tar.extractfile("00000113.json").read())
        lq_bytes, gt_bytes = tar.extractfile("00000113.lq.png").read(), tar.extractfile("00000113.gt.png").read()
    assert meta == {"name": "0002_001_S6_00100_00020_3200_N/010", "top": 0, "left": 384, "height": 512, "width": 512}
    window = np.s_[0:512, 384:896]
    for data, kind in ((lq_bytes, "NOISY"), (gt_bytes, "GT")):
        stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
        source = load_rgb_integer(root / "Data" / meta["name"].split("/")[0] / f"{kind}_SRGB_010.PNG")
        np.testing.assert_array_equal(stored, source[window])  # lossless

    val = ShardValDataset(dst)
    assert val.names == ["00_00", "00_01", "01_00", "01_01"] and val.item_size(3) == (64, 64)
    assert val[0]["lq"].shape == (3, 64, 64)


@pytest.mark.slow
def test_sidd_shards_train_then_resume_gives_the_same_weights(sidd_shards, tmp_path):
    _, dst = sidd_shards
    opts = ["data.patch_size=64", "train.batch_size=2", "train.iters=6", "data.num_workers=2", "val.every=6"]
    _train_interrupted_and_resumed(_cfg(dst, tmp_path / "full", *opts), _cfg(dst, tmp_path / "part", *opts), at=3)
    log = (tmp_path / "full" / "train.log").read_text()
    assert "validation at step 6 (4 images" in log  # validated on the shards' validation blocks


# ----------------------------------------------------------------------------------------------------------------
# The epoch split and resume


def test_epoch_segments_give_every_process_equal_disjoint_parts():
    counts = [8, 8, 8, 5, 8, 3]  # 40 samples, uneven shards
    for world, streams, batch in ((1, 1, 4), (2, 2, 2), (3, 2, 3), (2, 3, 1)):
        reads = []
        for rank in range(world):
            for segments in epoch_segments(counts, epoch=1, seed=0, rank=rank, world_size=world, streams=streams,
                                           batch_size=batch):  # fmt: skip
                samples = [(k, i) for k, start, stop in segments for i in range(start, stop)]
                assert len(samples) == 40 // world // streams // batch * batch  # whole batches, same everywhere
                reads.append(samples)
        flat = [s for r in reads for s in r]
        assert len(flat) == len(set(flat))  # no sample read twice in an epoch
        assert 40 - len(flat) < world * streams * batch  # what an epoch leaves out
    orders = [[k for k, _, _ in epoch_segments(counts, epoch=e, seed=0, rank=0, world_size=1, streams=1,
                                                batch_size=1)[0]] for e in range(3)]  # fmt: skip
    assert len({tuple(o) for o in orders}) == 3  # the shard order changes every epoch


def test_two_ranks_with_two_workers_each_read_disjoint_samples(tmp_path):
    dst = _prepare_gopro(tmp_path)
    dataset = ShardTrainDataset(dst, patch_size=32, flip=True, rot90=True, shuffle_buffer=8)
    keys = {}
    for rank in (0, 1):
        loader = build_train_loader(dataset, batch_size=2, num_workers=2, seed=5, rank=rank, world_size=2)
        assert len(loader) == 8  # 36 samples: 18 per rank, 9 per worker, 4 whole batches each
        stream = iter(BatchStream(loader))
        keys[rank] = [k for _ in range(2 * len(loader)) for k in next(stream)["key"]]  # two epochs
    for epoch in (0, 1):
        first, second = (keys[r][16 * epoch : 16 * (epoch + 1)] for r in (0, 1))
        assert len(set(first)) == len(set(second)) == 16 and not set(first) & set(second)
    assert keys[0][:16] != keys[0][16:]  # reshuffled


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_gives_the_batches_of_an_uninterrupted_one(tmp_path, workers):
    dst = _prepare_gopro(tmp_path)
    dataset = build_datasets(DataConfig(format="shards", shards=str(dst), patch_size=32, shuffle_buffer=8), seed=0)[0]

    def batches(start: int, count: int) -> list[dict]:
        loader = build_train_loader(dataset, batch_size=2, num_workers=workers, seed=7)
        stream = iter(BatchStream(loader, start_step=start))
        return [next(stream) for _ in range(count)]

    full = batches(0, 24)  # an epoch is 18 batches
    for start in (1, 5, 17, 18, 19):
        for a, b in zip(full[start:], batches(start, 24 - start), strict=True):
            assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])


def test_gopro_shards_train_then_resume_across_an_epoch_gives_the_same_weights(tmp_path):
    dst = _prepare_gopro(tmp_path)
    opts = ["data.num_workers=2", "val.every=10"]  # 36 samples / 2 workers / batch 4: 8 steps an epoch
    _train_interrupted_and_resumed(_cfg(dst, tmp_path / "full", *opts), _cfg(dst, tmp_path / "part", *opts), at=5)


def test_a_resume_that_changes_the_data_order_is_refused_with_the_setting_named(tmp_path):
    dst = _prepare_gopro(tmp_path)
    run = tmp_path / "run"
    train(_cfg(dst, run, "train.iters=2"), quiet=True)
    ckpt = run / "checkpoints" / "last.pt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["data_order"]
    assert {k: saved[k] for k in ("processes", "data.num_workers", "train.batch_size", "run.seed")} == {
        "processes": 1, "data.num_workers": 0, "train.batch_size": 4, "run.seed": 3}  # fmt: skip
    assert saved["data.shards"].startswith("36 samples in 5 shards of 48 px sub-images every 32 px (layout ")

    with pytest.raises(ConfigError) as info:
        train(_cfg(dst, run, "train.iters=4", "train.batch_size=2"), resume=run, quiet=True)
    message = str(info.value)
    assert f"Cannot resume {ckpt} exactly: train.batch_size was 4, now 2." in message
    assert "(train.batch_size=4)" in message and f"model.init_from={ckpt}" in message and "\n" not in message
    assert load_checkpoint(ckpt)["step"] == 2  # nothing trained, nothing written

    check_data_order(saved, {**saved, "data.num_workers": 1}, "last.pt")  # 0 and 1 workers read one stream
    check_data_order(None, saved, "last.pt")  # a checkpoint from before the settings were stored
    with pytest.raises(ConfigError, match=r"number of training processes was 1, now 2; data.num_workers was 0, now "
                                          r"3\. .*\(launch 1 process\(es\), data.num_workers=0\)"):  # fmt: skip
        check_data_order(saved, {**saved, "processes": 2, "data.num_workers": 3}, "last.pt")
    other = _prepare_gopro(tmp_path / "other", step=24)
    with pytest.raises(ConfigError, match=r"data.shards was 36 samples in 5 shards of 48 px sub-images every 32 px "
                                          r"\(layout \w+\), now 36 .* every 24 px .*point data.shards at"):  # fmt: skip
        train(_cfg(other, run, "train.iters=4"), resume=run, quiet=True)  # as many samples, cropped differently


# ----------------------------------------------------------------------------------------------------------------
# Preparing: interruptions, re-runs, sources


def test_an_interrupted_prepare_resumes_without_duplicates_or_missing_samples(tmp_path, monkeypatch):
    root = _gopro(tmp_path / "GOPRO_Large")
    dst = tmp_path / "shards"
    write = prepare_module._write_shard
    calls = []

    def ctrl_c_in_the_third_shard(job):
        calls.append(job.path.name)
        if len(calls) == 3:
            (dst / f".{job.path.name}.deadbeef.tmp").write_bytes(b"half a shard")  # as a process killed mid-write
            raise KeyboardInterrupt
        return write(job)

    monkeypatch.setattr(prepare_module, "_write_shard", ctrl_c_in_the_third_shard)
    settings = {"crop_size": 48, "step": 32, "shard_size": 8, "workers": 0, "progress": False}
    with pytest.raises(PrepareInterrupted, match="2 of the 6 shards") as info:
        prepare_shards("gopro", root, dst, **settings)
    assert info.value.exit_code == 130
    assert sorted(p.name for p in dst.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    assert not (dst / "index.json").exists()
    with pytest.raises(DataError, match="did not finish"):
        ShardTrainDataset(dst, patch_size=32)
    finished = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}

    monkeypatch.setattr(prepare_module, "_write_shard", write)
    report = prepare_shards("gopro", root, dst, **settings)
    assert (report.written, report.skipped) == (4, 2)
    assert {p.name: p.stat().st_mtime_ns for p in dst.glob("train-00000[01].tar")} == finished  # not rewritten
    assert not list(dst.glob(".*.tmp"))  # the killed write's leftover is gone
    keys = [m.split(".")[0] for m in _members(dst) if m.endswith(".json")]
    assert keys == [f"{i:08d}" for i in range(36)]  # each sample once, in order
    assert load_shard_index(dst)["splits"]["train"]["samples"] == 36


def test_a_rerun_with_other_settings_is_refused(tmp_path):
    dst = _prepare_gopro(tmp_path)
    with pytest.raises(DataError, match=r"another preparation .*settings"):
        prepare_shards("gopro", tmp_path / "GOPRO_Large", dst, crop_size=40, step=32, shard_size=8, workers=0)
    (dst / "plan.json").unlink()
    with pytest.raises(DataError, match="no plan.json"):
        prepare_shards("gopro", tmp_path / "GOPRO_Large", dst, workers=0)


def test_a_prepare_that_failed_before_any_shard_does_not_block_the_rerun(tmp_path):
    src, dst = tmp_path / "clean", tmp_path / "shards"
    for i in range(3):
        _png(src / f"{i}.png", _noise(i, 40, 40))
    (src / "1.png").write_bytes((src / "1.png").read_bytes()[:300])  # truncated: its header reads, its pixels not
    args = ["prepare", "synthetic", str(src), str(dst), "--crop-size", "32", "--step", "32", "--workers", "0",
            "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"{src / '1.png'} cannot be decoded" in result.output, result.output
    assert sorted(p.name for p in dst.iterdir()) == ["plan.json"]  # no shard, no index
    (dst / "index.json").write_text("{}")  # as a complete earlier preparation would have left (its shards gone)
    (src / "1.png").unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert load_shard_index(dst)["splits"]["train"]["samples"] == 2 * 4  # two 40 px images, 2 x 2 crops each
    # With a shard of the other preparation there, the rerun is refused, naming it.
    _png(src / "3.png", _noise(3, 40, 40))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "holds shards of another preparation (train-000000.tar;" in result.output


def test_folder_and_synthetic_sources(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            gt = _noise(i, 40, 56)
            _png(tmp_path / "pairs" / split / "gt" / "sub" / f"{i}.png", gt)
            _png(tmp_path / "pairs" / split / "lq" / "sub" / f"{i}.png", 255 - gt)
            _png(tmp_path / "clean" / split / f"{i}.png", gt)
    folder = tmp_path / "folder-shards"
    prepare_shards("folder", tmp_path / "pairs" / "train", folder, val=tmp_path / "pairs" / "val", crop_size=32,
                   step=24, workers=0, progress=False)  # fmt: skip
    assert load_shard_index(folder)["splits"]["train"]["samples"] == 3 * 2 * 2
    item = ShardValDataset(folder)[1]
    assert item["name"] == "sub/1" and item["gt"].shape == (3, 40, 56)
    torch.testing.assert_close(item["lq"], 1 - item["gt"], rtol=0, atol=1e-6)  # whole, lossless
    sample = next(iter(ShardTrainDataset(folder, patch_size=16, flip=True, rot90=True)))
    torch.testing.assert_close(sample["lq"], 1 - sample["gt"], rtol=0, atol=1e-6)  # the same crop and symmetry

    synthetic = tmp_path / "synthetic-shards"
    prepare_shards("synthetic", tmp_path / "clean" / "train", synthetic, val=tmp_path / "clean" / "val",
                   crop_size=32, step=24, workers=0, progress=False)  # fmt: skip
    assert not load_shard_index(synthetic)["paired"] and "lq.png" not in " ".join(_members(synthetic))
    sample = next(iter(ShardTrainDataset(synthetic, patch_size=16, degradations=NOISE)))
    assert 15 < float(10 * torch.log10(1 / ((sample["lq"] - sample["gt"]) ** 2).mean())) < 25  # degraded on the fly
    val = ShardValDataset(synthetic, degradations=NOISE, seed=4)
    reference = SyntheticDataset(sorted((tmp_path / "clean" / "val").glob("*.png")), NOISE, seed=4)
    assert val.names == reference.names == ["0", "1"]
    assert torch.equal(val[1]["lq"], reference[1]["lq"])  # the same validation input as the folder gives
    # With target degradations too, the shards give what the folder gives.
    jpeg = [{"type": "jpeg", "quality": 40}]
    val = ShardValDataset(synthetic, degradations=NOISE, target_degradations=jpeg, seed=4)[1]
    reference = SyntheticDataset(sorted((tmp_path / "clean" / "val").glob("*.png")), NOISE, target_degradations=jpeg,
                                 seed=4)[1]  # fmt: skip
    assert torch.equal(val["gt"], reference["gt"]) and torch.equal(val["lq"], reference["lq"])
    assert not torch.equal(val["gt"], ShardValDataset(synthetic, degradations=NOISE, seed=4)[1]["gt"])
    sample = next(iter(ShardTrainDataset(synthetic, patch_size=16, target_degradations=jpeg)))
    assert torch.equal(sample["lq"], sample["gt"])

    # Paired shards store their targets: a target pipeline would be ignored, so it is refused.
    for paired in (lambda: ShardTrainDataset(folder, patch_size=16, target_degradations=jpeg),
                   lambda: ShardValDataset(folder, target_degradations=jpeg)):  # fmt: skip
        with pytest.raises(ConfigError, match=r"data.target_degradations .* shards in .*folder-shards are paired"):
            paired()
    with pytest.raises(DataError, match=r"pairs[/\\]lq \(inputs\)"):
        prepare_shards("folder", tmp_path / "pairs", tmp_path / "x", workers=0)


def test_shards_config_and_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs data.shards"):
        DataConfig(format="shards")
    with pytest.raises(ConfigError, match="data.shuffle_buffer must be >= 1"):
        DataConfig(format="shards", shards="x", shuffle_buffer=0)
    with pytest.raises(DataError, match=r"has no index.json: the folder does not exist.*nafrestore prepare"):
        build_datasets(DataConfig(format="shards", shards=str(tmp_path / "none")), seed=0)
    dst = _prepare_gopro(tmp_path)
    with pytest.raises(DataError, match=r"data.patch_size 64 is larger than the 48 px sub-images"):
        ShardTrainDataset(dst, patch_size=64)
    with pytest.raises(DataError, match=r"36 training samples: less than one batch of 8 .* 2 process\(es\) x 3"):
        build_train_loader(ShardTrainDataset(dst, patch_size=32), batch_size=8, num_workers=3, seed=0, world_size=2)
    (dst / "train-000002.tar").unlink()
    with pytest.raises(DataError, match=r"train-000002.tar is missing.*nafrestore prepare gopro .* --crop-size 48"):
        ShardTrainDataset(dst, patch_size=32)


def test_a_corrupt_shard_is_named_in_one_message(tmp_path):
    dst = _prepare_gopro(tmp_path)
    shard = dst / "train-000001.tar"
    data = shard.read_bytes()
    for broken in (data[: len(data) // 2], np.random.default_rng(0).bytes(len(data))):  # truncated; garbage
        shard.write_bytes(broken)
        cfg = _cfg(dst, tmp_path / f"run{len(broken)}", "data.num_workers=2", "train.batch_size=2")
        with pytest.raises(DataError) as info:
            train(cfg, quiet=True)  # in a loader worker process
        message = str(info.value)
        assert message.startswith(f"Shard {shard} is corrupt or truncated (")
        assert "Traceback" not in message and "Caught" not in message and "\n" not in message
        assert "nafrestore prepare gopro" in message
    val = dst / "val-000000.tar"
    val.write_bytes(val.read_bytes()[:700])
    with pytest.raises(DataError, match=rf"Shard {val} is corrupt or truncated"):
        ShardValDataset(dst)


def test_a_corrupt_shard_is_printed_once_by_train(tmp_path):
    """The run's log records the error in train.log; on the console only the command's own message shows it."""
    dst = _prepare_gopro(tmp_path)
    shard = dst / "train-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    config = Path(__file__).resolve().parents[1] / "configs" / "nafnet-gopro-width32.yaml"
    overrides = [*TINY, "data.format=shards", f"data.shards={dst}", "data.patch_size=32", "data.num_workers=0",
                 "data.shuffle_buffer=16", "train.batch_size=2", "train.iters=10", "val.every=100",
                 "val.metrics=[psnr]", "run.device=cpu", f"run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = CliRunner().invoke(app, ["train", str(config), "--quiet", *overrides])
    assert result.exit_code == 2, result.output
    assert result.output.count(f"Shard {shard} is corrupt or truncated") == 1, result.output
    assert f"error: Shard {shard} is corrupt or truncated" in result.output
    assert f"ERROR Shard {shard} is corrupt or truncated" in (tmp_path / "run" / "train.log").read_text()


def test_prepare_command(tmp_path):
    runner = CliRunner()
    src, dst = _gopro(tmp_path / "GOPRO_Large"), tmp_path / "shards"
    args = ["prepare", "gopro", str(src), str(dst), "--crop-size", "48", "--step", "32", "--shard-size", "8",
            "--workers", "2", "--quiet"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(train: 36 samples in 5 shards, val: 3 samples in 1 shards); wrote 6 shards" in result.output
    assert "skipped 6 already finished" in runner.invoke(app, args).output
    result = runner.invoke(app, ["prepare", "lmdb", str(src), str(dst)])
    assert result.exit_code == 2 and "unknown format 'lmdb'" in result.output


_WRITE_SHARD = prepare_module._write_shard


def _write_shard_or_die_in_shard_3(job):
    """prepare's _write_shard, except that the worker writing train-000003.tar is killed halfway (as by the
    out-of-memory killer). Module level, so the worker processes can unpickle it."""
    if job.path.name == "train-000003.tar":
        with atomic_write(job.path) as f:
            f.write(b"half a shard")
            os.kill(os.getpid(), signal.SIGKILL)
    return _WRITE_SHARD(job)


def test_shard_writers_end_with_the_job_and_a_failure_leaves_no_partial_shard(tmp_path, monkeypatch):
    # A finished prepare leaves no worker process behind (Pool.terminate() after the last shard once hung CI for
    # 90 minutes: its SIGTERM, caught by a Python handler, missed an idle worker).
    dst = _prepare_gopro(tmp_path, workers=2)
    assert load_shard_index(dst)["splits"]["train"]["samples"] == 36 and not multiprocessing.active_children()

    src = _gopro(tmp_path / "broken" / "GOPRO_Large", frames=6)  # 72 training samples in 9 shards
    bad = src / "train" / "GOPR0374_11_00" / "sharp" / "000005.png"  # in the last shard
    bad.write_bytes(bad.read_bytes()[:100])  # the size still reads from the header; the pixels do not
    out = tmp_path / "broken" / "shards"
    settings = {"crop_size": 48, "step": 32, "shard_size": 8, "workers": 2, "progress": False}
    with pytest.raises(DataError, match=r"000005\.png") as info:  # an error in a worker: its own message
        prepare_shards("gopro", src, out, **settings)
    assert "Traceback" not in str(info.value) and not multiprocessing.active_children()
    assert not list(out.glob(".*.tmp*")) and not (out / "index.json").exists()
    assert not (out / "train-000008.tar").exists() and (out / "train-000000.tar").is_file()

    # A worker killed from outside: one message (a multiprocessing.Pool would wait forever for the lost shard).
    monkeypatch.setattr(prepare_module, "_write_shard", _write_shard_or_die_in_shard_3)
    with pytest.raises(DataError, match=r"A worker process died .* fewer --workers than the 2 used"):
        prepare_shards("gopro", tmp_path / "GOPRO_Large", tmp_path / "killed", **settings)
    assert not list((tmp_path / "killed").glob(".*.tmp*")) and not (tmp_path / "killed" / "train-000003.tar").exists()
    assert not multiprocessing.active_children()


@pytest.mark.slow  # a prepare subprocess, stopped by a real Ctrl-C
def test_ctrl_c_during_prepare_leaves_only_finished_shards(tmp_path):
    src = _gopro(tmp_path / "GOPRO_Large", frames=6, height=256, width=256)  # 2352 crops in 59 shards
    dst = tmp_path / "shards"
    cmd = [sys.executable, "-m", "nafrestore", "prepare", "gopro", str(src), str(dst), "--crop-size", "48",
           "--step", "16", "--shard-size", "40", "--workers", "2", "--quiet"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # preexec_fn: SIGINT as a terminal gives it. A shell starts background jobs (nohup ... &, some CI runners) with
    # SIGINT ignored, and Python keeps an inherited SIG_IGN, so the Ctrl-C below would be ignored there.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(dst.glob("train-*.tar")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard was written"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Run the same command again" in err and "Traceback" not in err, err
    assert not (dst / "index.json").exists() and not list(dst.glob(".*.tmp"))
    finished = len(list(dst.glob("train-*.tar")))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"skipped {finished} already finished" in done.stdout
    keys = [m.split(".")[0] for m in _members(dst) if m.endswith(".json")]
    assert keys == [f"{i:08d}" for i in range(load_shard_index(dst)["splits"]["train"]["samples"])]
    shutil.rmtree(src)
