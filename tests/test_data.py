"""Datasets and loaders: pairing, crops and symmetries, seeding, the sample/SIDD/GoPro layouts, build_datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nafrestore.config import DataConfig
from nafrestore.data import (
    PairedFolderDataset,
    SyntheticDataset,
    build_datasets,
    build_train_loader,
    build_val_loader,
    match_pairs,
    save_image,
)
from nafrestore.data.sample import SAMPLE_SPLIT, sample_images
from nafrestore.data.transforms import dihedral
from nafrestore.errors import ConfigError, DataError

NOISE_25 = [{"type": "gaussian_noise", "sigma": 25}]


def _image(seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    """A float32 (H, W, 3) image without symmetries (so every dihedral variant is distinct)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(height, width, 3)).astype(np.float32) / 255


def _write(path: Path, image: np.ndarray) -> Path:
    return save_image(path, image)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


@pytest.fixture
def paired(tmp_path) -> tuple[Path, Path]:
    """lq/gt folders with matching stems but different extensions, one in a sub-folder; gt = 1 - lq."""
    lq, gt = tmp_path / "lq", tmp_path / "gt"
    for i, (lq_name, gt_name) in enumerate([("a.png", "a.png"), ("b.tif", "b.png"), ("sub/c.bmp", "sub/c.png")]):
        image = _image(i, 40 + 8 * i, 48)
        _write(lq / lq_name, image)
        _write(gt / gt_name, 1 - image)
    return lq, gt


# ----------------------------------------------------------------------------------------------------------------
# Pairing


def test_match_pairs_by_relative_stem_across_extensions(paired):
    lq, gt = paired
    pairs = match_pairs(lq, gt)
    assert [name for name, _, _ in pairs] == ["a", "b", "sub/c"]
    assert [(p.name, q.name) for _, p, q in pairs] == [("a.png", "a.png"), ("b.tif", "b.png"), ("c.bmp", "c.png")]


def test_validation_items_are_whole_named_images(paired):
    dataset = PairedFolderDataset(*paired)
    assert len(dataset) == 3
    item = dataset[2]
    assert item["name"] == "sub/c"
    assert item["lq"].shape == item["gt"].shape == (3, 56, 48)
    assert item["lq"].dtype == torch.float32
    torch.testing.assert_close(item["gt"], 1 - item["lq"], atol=1e-6, rtol=0)


def test_unmatched_pairs_fail_with_counts_and_names(paired):
    lq, gt = paired
    _write(lq / "extra1.png", _image(9, 8, 8))
    _write(lq / "sub" / "extra2.jpg", _image(9, 8, 8))
    _write(gt / "lonely.png", _image(9, 8, 8))
    with pytest.raises(DataError) as info:
        PairedFolderDataset(lq, gt)
    message = str(info.value)
    assert "2 of 5 images" in message and "extra1" in message and "sub/extra2" in message
    assert "1 of 4 images" in message and "lonely" in message


def test_missing_or_empty_folders_fail(tmp_path, paired):
    with pytest.raises(DataError, match="nowhere"):
        match_pairs(tmp_path / "nowhere", paired[1])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        match_pairs(tmp_path / "empty", paired[1])


@pytest.mark.parametrize("cache", ["never", "always"])
def test_pairs_of_different_sizes_fail_naming_the_pair(paired, cache):
    lq, gt = paired
    _write(gt / "b.png", _image(0, 30, 30))
    with pytest.raises(DataError, match=r"1 of 3 image pairs differ in size.*\bb \(input 48x48.*target 30x30"):
        PairedFolderDataset(lq, gt, cache=cache)


# ----------------------------------------------------------------------------------------------------------------
# Training samples


def test_crops_have_patch_shape_and_same_op_on_lq_and_gt(paired):
    dataset = PairedFolderDataset(*paired, patch_size=32, flip=True, rot90=True, min_epoch_length=50)
    assert len(dataset) == 51  # 3 pairs cycled up to at least 50
    for index in range(12):
        item = dataset[(index, index)]
        assert set(item) == {"lq", "gt"}
        assert item["lq"].shape == item["gt"].shape == (3, 32, 32)
        torch.testing.assert_close(item["gt"], 1 - item["lq"], atol=1e-6, rtol=0)  # same crop, same symmetry


def test_identity_pairs_stay_identical_under_all_symmetries(tmp_path):
    image = _image(3, 16, 16)
    _write(tmp_path / "lq" / "x.png", image)
    shutil.copytree(tmp_path / "lq", tmp_path / "gt")
    dataset = PairedFolderDataset(tmp_path / "lq", tmp_path / "gt", patch_size=16, flip=True, rot90=True)
    variants = set()
    for seed in range(64):
        item = dataset[(0, seed)]
        assert torch.equal(item["lq"], item["gt"])
        variants.add(np.rint(item["lq"].numpy() * 255).astype(np.uint8).tobytes())
    levels = np.rint(image * 255).astype(np.uint8)
    expected = {np.ascontiguousarray(dihedral(levels, op).transpose(2, 0, 1)).tobytes() for op in range(8)}
    assert len(expected) == 8 and variants == expected  # the whole dihedral group, and nothing else


def test_flip_only_and_rot_only_choose_subgroups(tmp_path):
    image = _image(4, 16, 16)
    count = {}
    for flip, rot90 in ((True, False), (False, True), (False, False)):
        dataset = SyntheticDataset([image], [], patch_size=16, flip=flip, rot90=rot90)
        count[flip, rot90] = len({dataset[(0, s)]["gt"].numpy().tobytes() for s in range(40)})
    assert count == {(True, False): 4, (False, True): 4, (False, False): 1}


def test_small_images_are_reflect_padded():
    small = _image(5, 20, 12)
    dataset = SyntheticDataset([small], [], patch_size=24)
    crop = dataset[(0, 0)]["gt"].numpy().transpose(1, 2, 0)
    assert crop.shape == (24, 24, 3)
    # Height 20 -> 24 (2 + 2 rows), width 12 -> 24 (6 + 6 columns), mirrored without repeating the edge.
    np.testing.assert_allclose(crop, np.pad(small, ((2, 2), (6, 6), (0, 0)), mode="reflect"), atol=1e-6)


def test_synthetic_training_samples_differ_between_indices_and_are_seeded():
    dataset = SyntheticDataset([_image(0)], NOISE_25, patch_size=32, flip=True, rot90=True)
    a, b = dataset[(0, 1)], dataset[(1, 2)]
    assert not torch.equal(a["lq"], b["lq"])
    again = dataset[(0, 1)]
    assert torch.equal(a["lq"], again["lq"]) and torch.equal(a["gt"], again["gt"])
    torch.manual_seed(0)
    c = dataset[0]  # plain index: the sample seed comes from torch's RNG
    torch.manual_seed(0)
    assert torch.equal(c["lq"], dataset[0]["lq"])
    assert not torch.equal(c["lq"], dataset[0]["lq"])


def test_synthetic_validation_identical_across_instances(tmp_path):
    images = [_write(tmp_path / "clean" / f"{n}.png", _image(i)) for i, n in enumerate(("x", "y"))]
    first = SyntheticDataset(images, NOISE_25, seed=7)
    second = SyntheticDataset(list(reversed(images)), NOISE_25, seed=7, cache="never")  # order must not matter
    assert first[0]["name"] == "x" and second[1]["name"] == "x"
    assert torch.equal(first[0]["lq"], second[1]["lq"])
    assert torch.equal(first[0]["lq"], first[0]["lq"])  # and repeatable in one instance
    assert not torch.equal(first[0]["lq"], SyntheticDataset(images, NOISE_25, seed=8)[0]["lq"])


JPEG_30 = [{"type": "jpeg", "quality": 30}]


def _smooth(height: int = 64, width: int = 64) -> np.ndarray:
    """A float32 (H, W, 3) image of gradients and edges, where JPEG at quality 30 leaves visible blocks."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xx / width, yy / height, ((xx // 9 + yy // 7) % 2) * 0.6 + 0.2], axis=2).astype(np.float32)


def test_target_degradations_make_the_target_that_the_input_is_degraded_from(tmp_path):
    clean = _smooth()
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.rint(clean * 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 30])  # fmt: skip
    want = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255
    # Validation: the whole image, its target the JPEG (to within the rounding of 8-bit input), the input the target
    # with noise on top, the same in every instance.
    val = SyntheticDataset([_write(tmp_path / "v.png", clean)], NOISE_25, target_degradations=JPEG_30, seed=3)
    item = val[0]
    gt = item["gt"].numpy().transpose(1, 2, 0)
    assert np.abs(gt - want).max() <= 1.5 / 255 and np.abs(gt - clean).mean() > 2 / 255
    assert 19 < _psnr(item["lq"], item["gt"]) < 23  # sigma 25 on the target: about 20.2 dB
    again = SyntheticDataset([_write(tmp_path / "v.png", clean)], NOISE_25, target_degradations=JPEG_30, seed=3)[0]
    assert torch.equal(item["lq"], again["lq"]) and torch.equal(item["gt"], again["gt"])
    # Training: no other degradation, so the input is the target, and both are JPEG'd crops, not the clean crop.
    train = SyntheticDataset([clean], [], target_degradations=JPEG_30, patch_size=32, flip=False, rot90=False)
    sample = train[(0, 5)]
    assert torch.equal(sample["lq"], sample["gt"])
    crops = [clean[y : y + 32, x : x + 32] for y in range(33) for x in range(33)]
    err = min(np.abs(sample["gt"].numpy().transpose(1, 2, 0) - c).mean() for c in crops)
    assert err > 1 / 255  # no crop of the clean image is the target
    with pytest.raises(ConfigError, match=r"data\.target_degradations\[0\].*quality must be"):
        DataConfig(target_degradations=[{"type": "jpeg", "quality": 200}])
    with pytest.raises(ConfigError, match=r"data\.target_degradations applies to clean images.*'sidd'"):
        DataConfig(format="sidd", root=str(tmp_path), target_degradations=JPEG_30)


def test_sampling_weights():
    dataset = SyntheticDataset([_image(0, 8, 8), _image(1, 8, 8)], [], patch_size=8, weights=[2, 1], min_epoch_length=9)
    assert len(dataset) == 9
    first = dataset[(0, 0)]["gt"]
    picks = [torch.equal(dataset[(i, 0)]["gt"], first) for i in range(9)]
    assert sum(picks) == 6


# ----------------------------------------------------------------------------------------------------------------
# Loaders


def _first_batch(dataset, *, num_workers, seed, rank=0, world_size=1):
    loader = build_train_loader(
        dataset, batch_size=4, num_workers=num_workers, seed=seed, rank=rank, world_size=world_size
    )
    batch = next(iter(loader))
    del loader
    return batch


def test_train_loader_is_deterministic_for_any_worker_count():
    dataset = SyntheticDataset([_image(0), _image(1)], NOISE_25, patch_size=16, flip=True, rot90=True,
                               min_epoch_length=16)  # fmt: skip
    a = _first_batch(dataset, num_workers=0, seed=3)
    b = _first_batch(dataset, num_workers=0, seed=3)
    c = _first_batch(dataset, num_workers=2, seed=3)
    d = _first_batch(dataset, num_workers=2, seed=3)
    assert a["lq"].shape == (4, 3, 16, 16)
    for other in (b, c, d):
        assert torch.equal(a["lq"], other["lq"]) and torch.equal(a["gt"], other["gt"])
    assert not torch.equal(a["lq"], _first_batch(dataset, num_workers=0, seed=4)["lq"])
    assert not torch.equal(a["lq"], _first_batch(dataset, num_workers=0, seed=3, rank=1, world_size=2)["lq"])


def test_train_loader_epochs_and_ranks():
    dataset = SyntheticDataset([_image(0, 8, 8)], [], patch_size=8, min_epoch_length=10)
    loader = build_train_loader(dataset, batch_size=2, num_workers=0, seed=0)
    assert len(loader) == 5  # drop_last
    first, second = list(loader.sampler), list(loader.sampler)
    assert first != second  # each pass is a new epoch: new order and new sample seeds
    loader.sampler.set_epoch(0)
    assert list(loader.sampler) == first
    shards = [
        [i for i, _ in build_train_loader(dataset, batch_size=2, num_workers=0, seed=0, rank=r, world_size=2).sampler]
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 5 and not set(shards[0]) & set(shards[1])
    with pytest.raises(DataError, match="fewer than one batch"):
        build_train_loader(dataset, batch_size=11, num_workers=0, seed=0)


def test_val_loader_whole_images_in_order_and_sharded(paired):
    dataset = PairedFolderDataset(*paired)
    batches = list(build_val_loader(dataset))
    assert [b["name"] for b in batches] == [["a"], ["b"], ["sub/c"]]
    assert batches[1]["lq"].shape == (1, 3, 48, 48)
    shards = [[b["name"][0] for b in build_val_loader(dataset, rank=r, world_size=2)] for r in (0, 1)]
    assert shards == [["a", "sub/c"], ["b"]]


# ----------------------------------------------------------------------------------------------------------------
# Formats through build_datasets


def test_sample_dataset_offline_fixed_split_and_noise_level():
    val_names = [name for name, _ in sample_images("val")]
    assert val_names == list(SAMPLE_SPLIT["val"]) == ["astronaut", "chelsea", "camera", "coins"]
    train, val = build_datasets(DataConfig(format="sample", patch_size=64), seed=0)
    assert [val[i]["name"] for i in range(len(val))] == val_names
    assert not set(SAMPLE_SPLIT["val"]) & set(SAMPLE_SPLIT["train"])
    psnrs = []
    for i in range(len(val)):
        item = val[i]
        assert item["lq"].shape == item["gt"].shape and item["lq"].shape[0] == 3
        psnrs.append(_psnr(item["lq"], item["gt"]))
    # sigma 25 on 0-255: 20.17 dB unclipped; clipping at 0 and 1 removes a little error, more on dark/bright images.
    assert all(20.0 < p < 21.0 for p in psnrs), psnrs
    assert 20.2 < np.mean(psnrs) < 20.7, psnrs
    # camera (gray, first) and astronaut (colour) keep their character.
    camera = val[2]["gt"]
    assert torch.equal(camera[0], camera[1]) and not torch.equal(val[0]["gt"][0], val[0]["gt"][1])
    item = train[(0, 0)]
    assert item["lq"].shape == item["gt"].shape == (3, 64, 64)
    assert 18 < _psnr(item["lq"], item["gt"]) < 23
    assert train.num_images == len(SAMPLE_SPLIT["train"]) and len(train) >= 1000


def test_build_datasets_folder_with_val_limit(paired):
    lq, gt = paired
    cfg = DataConfig(format="folder", train_lq=str(lq), train_gt=str(gt), val_lq=str(lq), val_gt=str(gt),
                     patch_size=16, val_max_images=2)  # fmt: skip
    train, val = build_datasets(cfg, seed=0)
    assert train[(0, 0)]["lq"].shape == (3, 16, 16)
    assert len(val) == 2 and [val[i]["name"] for i in range(2)] == ["a", "sub/c"]  # evenly spaced
    with pytest.raises(ConfigError, match="data.val_lq"):  # checked when the config is read
        DataConfig(format="folder", train_lq=str(lq), train_gt=str(gt))


def test_build_datasets_synthetic(tmp_path):
    for name in ("p/one.png", "two.jpg"):
        _write(tmp_path / "train" / name, _image(0, 24, 24))
    _write(tmp_path / "val" / "v" / "three.png", _image(1, 24, 32))
    cfg = DataConfig(format="synthetic", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                     patch_size=16, degradations=[{"type": "gaussian_blur", "sigma": [0.5, 1.5]}])  # fmt: skip
    train, val = build_datasets(cfg, seed=0)
    assert train.names == ["p/one", "two"] and train[(0, 0)]["lq"].shape == (3, 16, 16)
    assert val[0]["name"] == "v/three" and val[0]["lq"].shape == (3, 24, 32)
    assert torch.equal(val[0]["lq"], build_datasets(cfg, seed=0)[1][0]["lq"])
    with pytest.raises(ConfigError, match=r"data\.degradations\[0\].*gaussian_noise"):
        DataConfig(format="synthetic", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                   degradations=[{"type": "gaussian_nois"}])  # fmt: skip


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.rint(image * 255).astype(np.uint8))


def test_sidd_layout(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "SIDD_Medium_Srgb"
    for scene in ("0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N"):
        for n, suffix in enumerate(("010", "011")):
            clean = _image(n, 48, 40)
            _png(root / "Data" / scene / f"GT_SRGB_{suffix}.PNG", clean)
            _png(root / "Data" / scene / f"NOISY_SRGB_{suffix}.PNG", np.clip(clean + 0.05, 0, 1))
    rng = np.random.default_rng(0)
    gt_blocks = rng.integers(0, 256, size=(2, 2, 64, 64, 3), dtype=np.uint8)
    noisy_blocks = np.clip(gt_blocks.astype(int) + 3, 0, 255).astype(np.uint8)
    with pytest.raises(DataError, match="ValidationNoisyBlocksSrgb.mat"):
        build_datasets(DataConfig(format="sidd", root=str(root)), seed=0)
    scipy_io.savemat(root / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy_blocks})
    scipy_io.savemat(root / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": gt_blocks})

    train, val = build_datasets(DataConfig(format="sidd", root=str(root), patch_size=32), seed=0)
    assert train.names == [
        "0001_001_S6_00100_00060_3200_L/010", "0001_001_S6_00100_00060_3200_L/011",
        "0002_001_S6_00100_00020_3200_N/010", "0002_001_S6_00100_00020_3200_N/011",
    ]  # fmt: skip
    assert train[(0, 0)]["lq"].shape == (3, 32, 32)
    assert len(val) == 4
    item = val[3]
    assert item["name"] == "01_01" and item["lq"].shape == (3, 64, 64)
    np.testing.assert_array_equal(np.rint(item["gt"].numpy().transpose(1, 2, 0) * 255), gt_blocks[1, 1])
    np.testing.assert_array_equal(np.rint(item["lq"].numpy().transpose(1, 2, 0) * 255), noisy_blocks[1, 1])
    _, limited = build_datasets(DataConfig(format="sidd", root=str(root), val_max_images=2), seed=0)
    assert [limited[i]["name"] for i in range(2)] == ["00_00", "01_01"]
    with pytest.raises(DataError, match=str(tmp_path / "elsewhere" / "Data")):
        build_datasets(DataConfig(format="sidd", root=str(tmp_path / "elsewhere")), seed=0)


def test_gopro_layout(tmp_path):
    root = tmp_path / "GOPRO_Large"
    for split, sequences in (("train", ("GOPR0372_07_00", "GOPR0374_11_00")), ("test", ("GOPR0384_11_00",))):
        for sequence in sequences:
            for frame in ("000047", "000048"):
                sharp = _image(int(frame), 40, 56)
                _png(root / split / sequence / "sharp" / f"{frame}.png", sharp)
                _png(root / split / sequence / "blur" / f"{frame}.png", cv2.blur(sharp, (3, 3)))
    train, val = build_datasets(DataConfig(format="gopro", root=str(root), patch_size=32), seed=0)
    assert train.num_images == 4 and train.names[0] == "GOPR0372_07_00/000047"
    assert train[(0, 0)]["gt"].shape == (3, 32, 32)
    assert [val[i]["name"] for i in range(len(val))] == ["GOPR0384_11_00/000047", "GOPR0384_11_00/000048"]
    assert val[0]["lq"].shape == (3, 40, 56)
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match=r"GOPRO_Large[/\\]test"):
        build_datasets(DataConfig(format="gopro", root=str(root)), seed=0)
