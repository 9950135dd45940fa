"""Inference: the folded path, tiling, the array API, TTA, precision and load_model."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest
import torch

from nafrestore.errors import CheckpointError, ConfigError, ImageArrayError, NafrestoreError
from nafrestore.inference import fold_for_inference, load_model, restore, restore_tiled
from nafrestore.inference.api import run_model
from nafrestore.inference.fold import FoldedLayerNorm2d, prefer_channels_last
from nafrestore.inference.tiling import auto_tile, forward, tile_weights
from nafrestore.models import create_model
from nafrestore.models.layers import LargeKernelAttention, LargeSeparableKernelAttention, LayerNorm2d
from nafrestore.models.nafnet import LKABlock, NAFBlock
from nafrestore.utils.tiles import tile_starts

TINY = {
    "nafnet": dict(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1]),
    "lka_nafnet": dict(width=8, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1]),  # LKA + NAF blocks
}


def randomized(name: str, seed: int = 0, tlc: int | None = None, scale: float = 0.5, **args) -> torch.nn.Module:
    """A tiny model with every 1-D parameter (norm affines, biases) and beta/gamma/layer scales randomized.

    ``args`` are extra model arguments (e.g. ``attention="lska"``).
    """
    torch.manual_seed(seed)
    model = create_model(name, tlc_train_size=tlc, **TINY[name], **args).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith(("beta", "gamma", "scale")):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            elif key.endswith("norm1.weight") or key.endswith("norm2.weight"):
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.3)
            elif p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def identity_model() -> torch.nn.Module:
    """NAFNet whose residual branches and ending conv are zero: output == input."""
    model = create_model("nafnet", **TINY["nafnet"]).eval()
    with torch.no_grad():
        model.ending.weight.zero_()
        model.ending.bias.zero_()
    return model


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")


def photo(height: int = 128, width: int | None = None) -> np.ndarray:
    """skimage's astronaut photograph, resized to height x width, float32 in [0, 1]."""
    import cv2
    from skimage import data

    size = (width or height, height)
    return cv2.resize(data.astronaut(), size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255


# ------------------------------------------------------------------------------------------------------------
# Folding


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
@pytest.mark.parametrize("tlc", [None, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_model_equals_unfolded(name, tlc, channels_last):
    model = randomized(name, tlc=tlc)
    folded = fold_for_inference(model, channels_last=channels_last)
    x = torch.rand(2, 3, 37, 30)
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert (want - x).abs().max() > 0.1  # the randomized model is far from the identity
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize("tlc", [None, 16])
def test_folded_model_with_a_highpassed_residual_equals_unfolded(tlc):
    model = randomized("lka_nafnet", tlc=tlc, residual_highpass=2.0)
    folded = fold_for_inference(model)
    x = torch.rand(2, 3, 37, 30)
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert (want - x).abs().max() > 0.1
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


@pytest.mark.parametrize(("attention", "kernel_size"), [("lska", 23), ("lska", 65), ("lka", 35), ("lka", 53)])
@pytest.mark.parametrize("tlc", [None, 16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_large_kernel_model_equals_unfolded(attention, kernel_size, tlc, channels_last):
    model = randomized("lka_nafnet", tlc=tlc, attention=attention, kernel_size=kernel_size)
    folded = fold_for_inference(model, channels_last=channels_last)
    cls = LargeKernelAttention if attention == "lka" else LargeSeparableKernelAttention
    units = [m for m in folded.modules() if isinstance(m, cls)]
    assert len(units) == 2 and all(u.kernel_size == kernel_size for u in units)
    x = torch.rand(2, 3, 37, 30)
    with torch.inference_mode():
        want, got = model(x), folded(x)
    assert (want - x).abs().max() > 0.1  # the randomized model is far from the identity
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_fold_returns_a_new_module_with_folded_blocks():
    model = randomized("lka_nafnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_for_inference(model)
    assert folded is not model and folded.folded and not folded.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert not any(isinstance(m, NAFBlock | LKABlock) for m in folded.modules())
    norms = [m for m in folded.modules() if isinstance(m, LayerNorm2d)]
    assert norms and all(isinstance(m, FoldedLayerNorm2d) for m in norms)
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any() for m in norms)
    assert not any(p.requires_grad for p in folded.parameters())
    assert fold_for_inference(folded) is folded  # folding twice is a no-op


def test_memory_format_rule_and_measurement():
    assert prefer_channels_last("cpu") is True and prefer_channels_last("cuda") is None  # None: measured at fold
    model = randomized("nafnet")
    folded = fold_for_inference(model, channels_last="measure")
    assert isinstance(folded.channels_last, bool)
    x = torch.rand(1, 3, 24, 20)
    with torch.inference_mode():
        assert torch.allclose(folded(x), model(x), atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize(
    ("size", "tile", "overlap"), [(100, 32, 8), (64, 32, 8), (33, 32, 4), (20, 32, 8), (129, 48, 16)]
)
def test_tile_starts_cover_the_image_exactly(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    length = min(tile, size)
    assert starts[0] == 0 and starts[-1] + length == size  # last tile flush with the border
    covered = np.zeros(size, bool)
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a <= tile - overlap and a + length - b >= overlap  # neighbours share at least the overlap
    for s in starts:
        covered[s : s + length] = True
    assert covered.all()
    weights = tile_weights(starts, length, size)
    total = torch.zeros(size)
    for s, w in zip(starts, weights, strict=True):
        assert (w > 0).all() and (w <= 1).all()
        total[s : s + length] += w
    assert (total > 0.5).all()


def test_neighbouring_ramps_are_complementary():
    starts = tile_starts(96, 32, 8)  # 0, 24, 48, 64: regular overlaps of 8, then 16 for the flush last tile
    weights = tile_weights(starts, 32, 96)
    assert torch.allclose(weights[0][24:] + weights[1][:8], torch.ones(8))
    assert torch.allclose(weights[2][16:] + weights[3][:16], torch.ones(16))
    assert torch.equal(weights[0][:24], torch.ones(24)) and torch.equal(weights[-1][16:], torch.ones(16))


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
@pytest.mark.parametrize("size", [(128, 128), (126, 117)])  # 126 x 117: padded to 128 x 120 inside the network
def test_tiled_result_matches_untiled_on_a_photograph(name, size):
    model = fold_for_inference(randomized(name))
    image = photo(*size)
    whole = run_model(model, image)
    assert psnr(whole, image) < 30  # not the identity
    tiled = run_model(model, image, tile=48, overlap=16)  # 4 x 4 tiles
    assert tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 40


def test_restore_tiled_accumulates_into_the_given_buffer():
    model = fold_for_inference(randomized("nafnet"))
    image = torch.rand(3, 40, 70)
    buffer = torch.empty(40, 70, 3).permute(2, 0, 1)  # a float32 (C, H, W) view of an (H, W, C) array
    out = restore_tiled(model, image, tile=32, overlap=8, out=buffer)
    assert out is buffer
    with pytest.raises(NafrestoreError, match="overlap"):
        restore_tiled(model, image, tile=32, overlap=16)


def test_large_images_are_tiled_automatically():
    assert auto_tile(4000, 6000, None, None, "cpu") == 512
    assert auto_tile(100, 100, None, None, "cpu") is None
    assert auto_tile(100, 100, 64, None, "cpu") == 64
    model = fold_for_inference(randomized("nafnet"))
    image = photo(96)
    auto = restore(model, image, max_megapixels=0.001)  # 96 x 96 > 1000 px: tiled with 512 clipped to the image
    assert psnr(auto, restore(model, image)) > 60


# ------------------------------------------------------------------------------------------------------------
# The array API


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("shape", [(30, 41), (30, 41, 1), (30, 41, 3), (30, 41, 4)])
def test_restore_keeps_shape_and_dtype_and_alpha(dtype, shape):
    model = fold_for_inference(randomized("nafnet"))
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        image = rng.random(shape, dtype=np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    out = restore(model, image)
    assert out.shape == image.shape and out.dtype == image.dtype
    if len(shape) == 3 and shape[2] == 4:
        assert np.array_equal(out[..., 3], image[..., 3])  # alpha untouched
    if dtype == np.float32:
        assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_identity_model_returns_the_input(dtype):
    model = fold_for_inference(identity_model())
    rng = np.random.default_rng(1)
    image = (rng.random((24, 35, 3)) * (1 if dtype == np.float32 else np.iinfo(dtype).max)).astype(dtype)
    for tta in (False, True):
        out = restore(model, image, tta=tta)
        assert np.allclose(out, image, atol=1e-6 if dtype == np.float32 else 0)
    gray = image[..., 0]
    assert np.allclose(restore(model, gray), gray, atol=1e-6 if dtype == np.float32 else 1)


def test_tta_averages_the_eight_dihedral_transforms():
    model = fold_for_inference(randomized("lka_nafnet"))
    x = torch.rand(1, 3, 32, 32)
    plain, tta = forward(model, x), forward(model, x, tta=True)
    assert (plain - tta).abs().max() > 1e-3  # a generic network is not equivariant: TTA changes the result
    manual = torch.zeros_like(x)
    for k in range(4):
        for flip in (False, True):
            t = torch.rot90(x, k, (2, 3))
            t = t.flip(3) if flip else t
            y = forward(model, t)
            y = y.flip(3) if flip else y
            manual += torch.rot90(y, -k, (2, 3))
    assert torch.allclose(tta, manual / 8, atol=1e-5)
    # The ensemble is itself equivariant: transforming the input transforms the output.
    rotated = forward(model, torch.rot90(x, 1, (2, 3)), tta=True)
    assert torch.allclose(rotated, torch.rot90(tta, 1, (2, 3)), atol=1e-5)
    assert torch.allclose(forward(model, x.flip(2), tta=True), tta.flip(2), atol=1e-5)


def test_precision_options_on_cpu():
    model = fold_for_inference(randomized("nafnet"))
    image = photo(32)
    with pytest.raises(NafrestoreError, match="fp16"):
        restore(model, image, precision="fp16")
    bf16 = restore(model, image, precision="bf16")
    assert bf16.dtype == np.float32 and psnr(bf16, restore(model, image)) > 25


def test_restore_rejects_bad_input():
    model = fold_for_inference(randomized("nafnet"))
    with pytest.raises(ValueError, match="float32"):
        restore(model, np.zeros((8, 8, 3), np.float64))
    with pytest.raises(ValueError, match="shape"):
        restore(model, np.zeros((8, 8, 2), np.uint8))


# ------------------------------------------------------------------------------------------------------------
# load_model


def save_checkpoint(path, model, name="nafnet", tlc=None):
    ckpt = {
        "format_version": 1,
        "model_name": name,
        "model_args": TINY[name],
        "tlc_train_size": tlc,
        "config": {},
        "model": model.state_dict(),
    }
    torch.save(ckpt, path)
    return path


def write_config(path, name="nafnet", **extra):
    lines = [f"model:\n  name: {name}"] + [f"  {k}: {v}" for k, v in {**TINY[name], **extra}.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_model_from_checkpoint_run_dir_and_config_with_weights(tmp_path):
    net = randomized("nafnet")
    x = torch.rand(1, 3, 20, 28)
    with torch.inference_mode():
        want = net(x)
    ckpt = save_checkpoint(tmp_path / "m.pt", net)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", net)
    torch.save({"params": net.state_dict()}, tmp_path / "official.pth")
    config = write_config(tmp_path / "tiny.yaml")
    for model in (
        load_model(ckpt),
        load_model(tmp_path / "run"),
        load_model(config, weights=tmp_path / "official.pth"),
        load_model(str(config), weights=ckpt),
    ):
        assert model.folded and not model.training
        with torch.inference_mode():
            assert torch.allclose(model(x), want, atol=1e-5)
    assert not load_model(ckpt, fold=False).__dict__.get("folded", False)


def test_load_model_errors_are_clear(tmp_path):
    net = randomized("nafnet")
    torch.save({"params": net.state_dict()}, tmp_path / "official.pth")
    config = write_config(tmp_path / "tiny.yaml")
    with pytest.raises(CheckpointError, match="no trained weights"):
        load_model(config)
    with pytest.raises(CheckpointError, match="--model"):
        load_model(tmp_path / "official.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(write_config(tmp_path / "wide.yaml", width=16), weights=tmp_path / "official.pth")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "missing.pt")


def test_load_model_tlc_default_and_override(tmp_path):
    ckpt = save_checkpoint(tmp_path / "m.pt", randomized("nafnet", tlc=64), tlc=64)
    assert load_model(ckpt).tlc_enabled
    assert not load_model(ckpt, tlc=False).tlc_enabled
    plain = save_checkpoint(tmp_path / "p.pt", randomized("nafnet"))
    assert not load_model(plain).tlc_enabled and load_model(plain, tlc=True).tlc_enabled
    config = write_config(tmp_path / "tlc.yaml", tlc="true", tlc_train_size=64)
    assert load_model(config, weights=plain).tlc_enabled


def test_import_nafrestore_is_lazy():
    code = "import sys, nafrestore; assert 'torch' not in sys.modules; assert callable(nafrestore.restore)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tile", [None, 32])
def test_restore_refuses_non_finite_and_out_of_range_floats_and_empty_images(tile):
    """Issue 33: one NaN pixel blanked the whole image (a whole tile with `tile`), a float image in 0..255 came
    back 99.4 % white, and 0x0 / 0x10 arrays ended in torch's "Kernel size can't be greater than actual input
    size"; each is now refused, saying why, and what is accepted is restored as before."""
    model = fold_for_inference(randomized("nafnet"))
    run = functools.partial(restore, model, tile=tile, overlap=8)
    image = np.random.default_rng(0).random((40, 40, 3), dtype=np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        spoilt = image.copy()
        spoilt[5, 7, 1] = bad
        with pytest.raises(ImageArrayError, match=r"holds 1 NaN or infinite sample\(s\)"):
            run(spoilt)
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*this one spans \[0, 255\]"):
        run(np.round(image * 255).astype(np.float32))  # a ValueError, as the API said before
    with pytest.raises(ImageArrayError, match=r"spans \[-1.49"):
        run(image - np.float32(1.5))
    # Unclipped noise a little outside [0, 1] is restored as given (the networks were trained on such input).
    unclipped = image * np.float32(1.4) - np.float32(0.2)
    assert np.abs(run(unclipped) - np.clip(unclipped, 0, 1)).max() > 0.01
    for shape in ((0, 0, 3), (0, 10), (10, 0, 4)):
        with pytest.raises(ImageArrayError, match=rf"at least 1x1 pixels, got shape \({shape[0]}, {shape[1]}"):
            run(np.zeros(shape, np.float32))
    # NaN alpha is passed through untouched (it is not restored); the colour is checked only.
    rgba = np.concatenate([image, np.full((40, 40, 1), np.nan, np.float32)], axis=2)
    out = run(rgba)
    assert np.isnan(out[..., 3]).all() and np.isfinite(out[..., :3]).all()
    assert np.abs(out[..., :3] - image).max() > 0.01  # restored, not refused
    assert run(np.zeros((1, 1, 3), np.uint8)).shape == (1, 1, 3)


@pytest.mark.parametrize("value", [float("nan"), -1.0, 0.0])
def test_restore_refuses_a_tiling_threshold_that_is_not_a_positive_number(value):
    model = fold_for_inference(randomized("nafnet"))
    with pytest.raises(ConfigError, match="max_megapixels must be a positive number"):
        restore(model, np.zeros((8, 8, 3), np.uint8), max_megapixels=value)
