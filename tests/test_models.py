"""NAFNet and LKA-NAFNet (LKA and LSKA attention, any kernel size): official layout and counts, shapes, gradients,
TLC, loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nafrestore.config import load_config
from nafrestore.errors import CheckpointError, ConfigError
from nafrestore.loading import build_model, load_spec, load_weights, read_checkpoint, state_dict_from
from nafrestore.models import create_model, list_models
from nafrestore.models.layers import (
    LARGE_KERNELS,
    GaussianHighPass,
    LargeKernelAttention,
    LargeSeparableKernelAttention,
    noise_level,
    quiet_block_noise_level,
)
from nafrestore.models.nafnet import LKABlock, NAFBlock
from nafrestore.summary import count_macs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {
    "nafnet": dict(width=4, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1]),
    "lka_nafnet": dict(width=4, enc_blocks=[1, 1], middle_blocks=0, dec_blocks=[1, 0]),
}
LSKA = dict(attention="lska", kernel_size=23)
# Attention settings the shape test covers: LSKA smallest / default / largest, LKA beyond 23.
LARGE_KERNEL_CASES = [("lska", 7), ("lska", 23), ("lska", 65), ("lka", 35), ("lka", 53)]


def randomize_scales(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised residual scales (beta/gamma) random values so every branch matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def build_preset(name: str) -> torch.nn.Module:
    cfg = load_config(CONFIGS / name)
    return build_model(cfg.model.name, cfg.model.args, cfg.model.tlc_train_size if cfg.model.tlc else None)


@pytest.mark.parametrize(
    ("preset", "keys", "params"),
    [
        ("nafnet-sidd-width32.yaml", 664, 29_159_715),
        ("nafnet-gopro-width64.yaml", None, 67_888_835),
        ("lka-nafnet-w12.yaml", None, 444_927),
    ],
)
def test_presets_match_official_counts(preset, keys, params):
    model = build_preset(preset)
    assert sum(p.numel() for p in model.parameters()) == params
    if keys is not None:
        assert len(model.state_dict()) == keys


def test_nafnet_state_dict_uses_official_names_and_shapes():
    # Hand-derived from the official NAFNet-SIDD-width32: width 32, 4 levels (32, 64, 128, 256), bottom 512.
    sd = build_preset("nafnet-sidd-width32.yaml").state_dict()
    expected = {
        "intro.weight": (32, 3, 3, 3),
        "ending.weight": (3, 32, 3, 3),
        "encoders.0.1.conv2.weight": (64, 1, 3, 3),  # depthwise over 2C
        "encoders.0.0.sca.1.weight": (32, 32, 1, 1),
        "encoders.3.7.beta": (1, 256, 1, 1),
        "downs.3.weight": (512, 256, 2, 2),
        "middle_blks.11.gamma": (1, 512, 1, 1),
        "middle_blks.0.norm1.weight": (512,),
        "ups.0.0.weight": (1024, 512, 1, 1),  # bias-free 1x1 before PixelShuffle(2)
        "decoders.3.1.conv5.weight": (32, 32, 1, 1),
        "decoders.3.1.norm2.bias": (32,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "ups.0.0.bias" not in sd


def test_gopro_presets_have_tlc_and_lka_layout():
    assert build_preset("nafnet-gopro-width32.yaml").tlc_enabled
    assert not build_preset("nafnet-sidd-width32.yaml").tlc_enabled
    lka = build_preset("lka-nafnet-w12.yaml")
    assert [len(e) for e in lka.encoders] == [1, 3, 4, 0]
    assert [len(d) for d in lka.decoders] == [1, 1, 1, 0]
    assert len(lka.middle_blks) == 0
    assert all(isinstance(b, LKABlock) for e in lka.encoders for b in e)
    assert all(isinstance(b, NAFBlock) for d in lka.decoders for b in d)
    rates = [b.drop_path.drop_prob for e in create_model("lka_nafnet", drop_path_rate=0.2).encoders for b in e]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)


def test_nafblock_is_identity_at_init_and_lkablock_without_scale():
    x = torch.randn(2, 8, 9, 7)
    assert torch.equal(NAFBlock(8)(x), x)
    block = LKABlock(8, layer_scale_init=0.0)
    assert torch.equal(block(x), x)
    block = LKABlock(8)  # LayerScale 1e-2: a small step away from the identity
    assert 0 < (block(x) - x).abs().max() < 0.5


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
@pytest.mark.parametrize(("channels", "size"), [(3, (37, 53)), (1, (17, 9)), (3, (8, 8)), (3, (1, 5))])
def test_output_shape_equals_input_shape(name, channels, size):
    model = create_model(name, in_channels=channels, **TINY[name])
    x = torch.rand(2, channels, *size)
    assert model(x).shape == x.shape
    with torch.no_grad():
        assert model.eval()(x).shape == x.shape


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
def test_every_parameter_gets_a_finite_gradient(name):
    model = randomize_scales(create_model(name, **TINY[name]))
    out = model(torch.rand(2, 3, 20, 12))
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
def test_model_gradcheck_in_float64(name):
    torch.manual_seed(0)
    model = randomize_scales(create_model(name, width=2, enc_blocks=[1], middle_blocks=1, dec_blocks=[1])).double()
    x = torch.rand(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5)


def test_global_residual_makes_zero_ending_an_identity():
    model = create_model("lka_nafnet", **TINY["lka_nafnet"])
    with torch.no_grad():
        model.ending.weight.zero_()
        model.ending.bias.zero_()
    x = torch.rand(1, 3, 11, 13)
    torch.testing.assert_close(model(x), x)


@pytest.mark.parametrize("name", ["nafnet", "lka_nafnet"])
def test_highpassed_residual_cannot_shift_colours_and_keeps_the_keys(name):
    plain = create_model(name, **TINY[name])
    model = create_model(name, **TINY[name], residual_highpass=3.0)
    assert model.state_dict().keys() == plain.state_dict().keys()
    model.load_state_dict(plain.state_dict())
    with torch.no_grad():  # a residual that is a constant colour shift: the plain model adds it, the other can't
        for net in (plain, model):
            net.ending.weight.zero_()
            net.ending.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    x = torch.rand(1, 3, 11, 13)
    torch.testing.assert_close(plain(x), x + torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), x)
    x.requires_grad_(True)
    model(x).sum().backward()  # differentiable, for training with it
    assert torch.isfinite(x.grad).all()


def test_bad_residual_highpass_is_a_config_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: nafnet\n  residual_highpass: -2\n")
    with pytest.raises(ConfigError, match=r"model.residual_highpass \(.*bad.yaml, line 3\) must be a Gaussian sigma"):
        load_config(path)
    assert load_config(None, ["model.residual_highpass=4"]).model.args == {"residual_highpass": 4.0}


def smooth_image(h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """(1, 3, h, w) in [0.2, 0.8]: ramps and a soft blob, nothing at the Haar detail scales the estimate reads."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    blob = torch.exp(-((xx - 0.4) ** 2 + (yy - 0.6) ** 2) / 0.1)
    return torch.stack([0.2 + 0.4 * xx, 0.3 + 0.3 * yy, 0.2 + 0.5 * blob])[None]


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_noise_level_reads_white_noise_as_scikit_image_does(sigma):
    from skimage.restoration import estimate_sigma

    g = torch.Generator().manual_seed(1)
    clean = smooth_image()
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    ours = float(noise_level(noisy)[0])
    oracle = float(estimate_sigma(noisy[0].permute(1, 2, 0).numpy(), channel_axis=-1, average_sigmas=True))
    assert ours == pytest.approx(sigma, rel=0.1)
    assert ours == pytest.approx(oracle, rel=0.1)
    assert float(noise_level(clean)[0]) < 0.05 * sigma
    # Per image in a batch, and nothing to read under 4x4 pixels.
    both = noise_level(torch.cat([clean, noisy]))
    assert both[0] < 0.05 * sigma and both[1] == pytest.approx(ours, rel=1e-6)
    assert noise_level(torch.rand(2, 3, 3, 9)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_quiet_block_noise_level_reads_white_noise_at_its_sigma(sigma):
    from skimage.restoration import estimate_sigma

    g = torch.Generator().manual_seed(4)
    clean = smooth_image(256, 256)
    noisy = clean + sigma * torch.randn(clean.shape, generator=g)
    ours = float(quiet_block_noise_level(noisy)[0])
    oracle = float(estimate_sigma(noisy[0].permute(1, 2, 0).numpy(), channel_axis=-1, average_sigmas=True))
    assert ours == pytest.approx(sigma, rel=0.08) and ours == pytest.approx(oracle, rel=0.1)
    assert float(quiet_block_noise_level(clean)[0]) < 0.05 * sigma
    both = quiet_block_noise_level(torch.cat([clean, noisy]))  # per image in a batch
    assert both[0] < 0.05 * sigma and both[1] == pytest.approx(ours, rel=1e-6)
    # Narrower than a block: the whole-image wavelet estimate.
    small = noisy[:, :, :16, :40]
    assert quiet_block_noise_level(small).tolist() == noise_level(small).tolist()


def test_quiet_blocks_read_texture_as_clean_where_the_wavelet_estimate_reads_noise():
    from skimage import data

    g = torch.Generator().manual_seed(5)
    for texture in (data.grass(), data.gravel()):  # fine natural texture, 512 px, gray
        clean = torch.from_numpy(texture).float().div(255).expand(1, 3, -1, -1).contiguous()
        assert float(noise_level(clean)[0]) * 255 > 15  # the wavelet estimate takes it for strong noise
        assert float(quiet_block_noise_level(clean)[0]) * 255 < 1
        noisy = clean + 10 / 255 * torch.randn(clean.shape, generator=g)  # and real noise on it still reads
        assert float(quiet_block_noise_level(noisy)[0]) * 255 == pytest.approx(10, rel=0.1)
    # Noise must cover the image: noise in a corner (1/16 of the blocks) is below the quiet quartile.
    corner = smooth_image(256, 256)
    corner[:, :, :64, :64] += 10 / 255 * torch.randn(1, 3, 64, 64, generator=g)
    assert float(quiet_block_noise_level(corner)[0]) * 255 < 0.5
    # One band alone: the RGB detail of a gray texture reads it, its chroma does not.
    assert float(quiet_block_noise_level(clean, bands="rgb")[0]) * 255 > 10
    assert float(quiet_block_noise_level(clean, bands="chroma")[0]) * 255 < 1


def test_noise_gate_lets_the_coarse_correction_through_as_the_noise_rises():
    gate = (8.0, 16.0)
    fixed, gated = GaussianHighPass(3.0), GaussianHighPass(3.0, gate)
    g = torch.Generator().manual_seed(2)
    clean = smooth_image(64, 64)
    images = torch.cat([clean, clean + 10 / 255 * torch.randn(clean.shape, generator=g),
                        clean + 40 / 255 * torch.randn(clean.shape, generator=g)])  # fmt: skip
    residual = torch.randn(3, 3, 64, 64, generator=g) * 0.05 + torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    open_ = ((noise_level(images) * 255 - gate[0]) / (gate[1] - gate[0])).clamp(0, 1).view(3, 1, 1, 1)
    assert open_.flatten().tolist()[0] == 0.0 and 0.0 < open_.flatten()[1] < 1.0 and open_.flatten()[2] == 1.0
    out, high = gated(residual, images), fixed(residual)
    torch.testing.assert_close(out[0], high[0])  # clean: only the fine part, as the fixed high-pass
    torch.testing.assert_close(out[2], residual[2])  # strong noise: the whole correction
    torch.testing.assert_close(out[1], high[1] + open_[1, 0] * (residual[1] - high[1]))  # a linear blend between
    torch.testing.assert_close(gated(residual), high)  # without the image: the fixed high-pass


def test_a_coarse_gate_opens_up_to_its_sigma_only_and_reads_the_estimate_it_names():
    gate = (8.0, 16.0)
    g = torch.Generator().manual_seed(6)
    clean = smooth_image(64, 64)
    images = torch.cat([clean, clean + 12 / 255 * torch.randn(clean.shape, generator=g),
                        clean + 40 / 255 * torch.randn(clean.shape, generator=g)])  # fmt: skip
    shift = torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    residual = torch.randn(3, 3, 64, 64, generator=g) * 0.05 + shift
    for estimate, level in (("wavelet", noise_level), ("quiet_blocks", quiet_block_noise_level)):
        coarse = GaussianHighPass(3.0, gate, gate_estimate=estimate, coarse=12.0)
        open_ = ((level(images) * 255 - gate[0]) / (gate[1] - gate[0])).clamp(0, 1).view(3, 1, 1, 1)
        assert open_.flatten()[0] == 0.0 and 0.0 < open_.flatten()[1] < 1.0 and open_.flatten()[2] == 1.0
        fine, wide = GaussianHighPass(3.0)(residual), GaussianHighPass(12.0)(residual)
        out = coarse(residual, images)
        torch.testing.assert_close(out[0], fine[0])  # clean: the fine high-pass
        torch.testing.assert_close(out[2], wide[2])  # strong noise: open up to 12 px, not all the way
        torch.testing.assert_close(out[1], fine[1] + open_[1, 0] * (wide[1] - fine[1]))
    # A constant colour shift never gets through, at any noise level.
    assert coarse(shift.expand(3, 3, 64, 64), images).abs().max() < 1e-6
    with pytest.raises(ValueError, match="needs a gate"):
        GaussianHighPass(3.0, coarse=12.0)
    with pytest.raises(ValueError, match="above the high-pass sigma"):
        GaussianHighPass(3.0, gate, coarse=2.0)
    with pytest.raises(ValueError, match="noise estimate is one of"):
        GaussianHighPass(3.0, gate, gate_estimate="median")


def test_a_noise_gated_model_shifts_colour_only_in_the_noisy_image_of_a_batch():
    model = create_model("lka_nafnet", **TINY["lka_nafnet"], residual_highpass=3.0, residual_highpass_gate=[8, 16])
    with torch.no_grad():  # a residual that is a constant colour shift
        model.ending.weight.zero_()
        model.ending.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
    clean = smooth_image(32, 40)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(torch.cat([clean, noisy]))
    torch.testing.assert_close(out[0], clean[0])
    torch.testing.assert_close(out[1], noisy[0] + torch.tensor([0.1, -0.2, 0.05]).view(3, 1, 1))


HP = "  residual_highpass: 4\n"


@pytest.mark.parametrize(
    "key, value, extra, message",
    [
        ("gate", "[8, 16]", "", "must be two noise"),  # needs residual_highpass
        ("gate", "[16, 8]", HP, "must be two noise"),
        ("gate", "[1, 2, 3]", HP, "must be two noise"),
        ("luma", "8", "", "must be a Gaussian"),
        ("luma", "-1", HP, "must be a Gaussian"),
        ("flat", "[8, 16]", "", r"must be \[wide sigma"),
        ("flat", "[4, 16]", HP, r"must be \[wide sigma"),  # not wider than the high-pass
        ("flat", "[8]", HP, r"must be \[wide sigma"),
        ("coarse", "16", HP, "must be a Gaussian"),  # needs residual_highpass_gate
        ("coarse", "3", HP + "  residual_highpass_gate: [8, 16]\n", "must be a Gaussian"),  # not above 4
        ("gate_estimate", "median", HP, "must be one of"),
    ],
)
def test_bad_residual_filter_settings_are_config_errors(tmp_path, key, value, extra, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  name: lka_nafnet\n{extra}  residual_highpass_{key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"model.residual_highpass_{key} \(.*bad.yaml, line \d\) {message}"):
        load_config(path)


@pytest.mark.parametrize(
    "value, extra",
    [
        ("[0.6, 0.3]", HP),  # needs residual_highpass_flat
        ("[1.2, 0.3]", HP + "  residual_highpass_flat: [8, 16]\n"),
        ("[0.6]", HP + "  residual_highpass_flat: [8, 16]\n"),
    ],
)
def test_bad_nonlocal_means_blend_settings_are_config_errors(tmp_path, value, extra):
    path = tmp_path / "bad.yaml"
    path.write_text(f"model:\n  name: lka_nafnet\n{extra}  residual_nonlocal_means: {value}\n")
    with pytest.raises(
        ConfigError, match=r"model.residual_nonlocal_means \(.*bad.yaml, line \d\) must be two strengths"
    ):
        load_config(path)
    path.write_text(
        f"model:\n  name: lka_nafnet\n{HP}  residual_highpass_flat: [8, 16]\n  residual_nonlocal_means: [1, 0]\n"
    )
    assert load_config(path).model.args["residual_nonlocal_means"] == [1.0, 0.0]


def test_residual_filter_settings_from_overrides():
    overrides = ["model.residual_highpass=2", "model.residual_highpass_luma=12", "model.residual_highpass_flat=[4, 16]"]
    model = load_config(None, overrides).model
    expected = {"residual_highpass": 2.0, "residual_highpass_luma": 12.0, "residual_highpass_flat": [4.0, 16.0]}
    assert model.args == expected


def test_tlc_equals_plain_model_below_its_window_and_differs_above():
    torch.manual_seed(0)
    plain = randomize_scales(create_model("nafnet", **TINY["nafnet"])).eval()
    local = create_model("nafnet", tlc_train_size=16, **TINY["nafnet"]).eval()
    local.load_state_dict(plain.state_dict())
    # window 1.5 x 16 = 24 px at full resolution: any input up to 24 px falls back to the global pool
    small = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        torch.testing.assert_close(local(small), plain(small), atol=1e-6, rtol=0)
        large = torch.rand(1, 3, 64, 48)
        assert (local(large) - plain(large)).abs().max() > 1e-4
    local.train()  # TLC applies at inference only
    torch.testing.assert_close(local(large), plain.train()(large), atol=1e-6, rtol=0)
    pools = [m.kernel_size for m in local.modules() if type(m).__name__ == "LocalAvgPool2d"]
    assert pools[0] == (24, 24) and (6, 6) in pools  # level 0 and the bottom (factor 4: 4 * 24 // 16)


def test_seeded_golden_output():
    # Guards the numerics of the whole forward pass (verified equal to the official NAFNet code to 5e-7).
    model = create_model("nafnet", width=4, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            idx = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((torch.sin(idx * 0.37 + i) * 0.3).reshape(p.shape))
    x = torch.linspace(0, 1, 3 * 10 * 6, dtype=torch.float64).reshape(1, 3, 10, 6).float()
    with torch.no_grad():
        out = model.eval()(x)
    assert math.isfinite(out.sum().item())
    torch.testing.assert_close(out.sum().double(), torch.tensor(GOLDEN_SUM, dtype=torch.float64), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(
        out[0, :, 3, 2].double(), torch.tensor(GOLDEN_PIXEL, dtype=torch.float64), rtol=1e-5, atol=1e-5
    )


GOLDEN_SUM = 25.307350158691406  # the official NAFNet code gives the same (checked out of tree)
GOLDEN_PIXEL = [-0.6106347441673279, -0.7641499638557434, -0.16111886501312256]


# --- LSKA attention in the LKABlocks -------------------------------------------------------------------------


def test_lka_is_the_default_and_its_state_dict_keys_are_unchanged():
    default = create_model("lka_nafnet", **TINY["lka_nafnet"])
    explicit = create_model("lka_nafnet", attention="lka", kernel_size=23, **TINY["lka_nafnet"])
    sd = default.state_dict()
    assert {k: v.shape for k, v in sd.items()} == {k: v.shape for k, v in explicit.state_dict().items()}
    assert list(sd) == list(explicit.state_dict())
    assert tuple(sd["encoders.0.0.attn.spatial_gating_unit.conv0.weight"].shape) == (4, 1, 5, 5)
    assert tuple(sd["encoders.1.0.attn.spatial_gating_unit.conv_spatial.weight"].shape) == (8, 1, 7, 7)
    assert all(isinstance(m.attn.spatial_gating_unit, LargeKernelAttention) for e in default.encoders for m in e)
    lska = create_model("lka_nafnet", **TINY["lka_nafnet"], **LSKA).state_dict()
    assert tuple(lska["encoders.1.0.attn.spatial_gating_unit.conv0h.weight"].shape) == (8, 1, 1, 5)
    assert tuple(lska["encoders.1.0.attn.spatial_gating_unit.conv_spatial_v.weight"].shape) == (8, 1, 7, 1)
    # everything outside the gating unit keeps its key
    outside = [k for k in sd if ".spatial_gating_unit." not in k]
    assert outside == [k for k in lska if ".spatial_gating_unit." not in k]


@pytest.mark.parametrize(("attention", "kernel_size"), LARGE_KERNEL_CASES)
@pytest.mark.parametrize(("channels", "size"), [(3, (37, 53)), (1, (17, 9)), (3, (1, 5))])
def test_large_kernel_output_shape_equals_input_shape(attention, kernel_size, channels, size):
    model = create_model(
        "lka_nafnet", in_channels=channels, attention=attention, kernel_size=kernel_size, **TINY["lka_nafnet"]
    )
    x = torch.rand(2, channels, *size)
    assert model(x).shape == x.shape
    with torch.no_grad():
        assert model.eval()(x).shape == x.shape


def test_lska_every_parameter_gets_a_finite_gradient():
    model = randomize_scales(create_model("lka_nafnet", **TINY["lka_nafnet"], **LSKA))
    out = model(torch.rand(2, 3, 20, 12))
    out.square().mean().backward()
    names = [n for n, _ in model.named_parameters()]
    assert any(n.endswith("spatial_gating_unit.conv_spatial_h.weight") for n in names)
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_lska_model_gradcheck_in_float64():
    torch.manual_seed(0)
    args = dict(width=2, enc_blocks=[1], middle_blocks=1, dec_blocks=[1], attention="lska", kernel_size=7)
    model = randomize_scales(create_model("lka_nafnet", **args)).double()
    x = torch.rand(1, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,), eps=1e-6, atol=1e-5)


def test_lska_parameter_count_at_23_is_hand_derived():
    # Per LKABlock only the gating unit differs. With C channels:
    #   LKA:  5x5 depthwise (25C + C) + 7x7 depthwise dilated (49C + C) + 1x1 (C*C + C)
    #   LSKA(23): 1x5 and 5x1 depthwise (5C + C each) + 1x7 and 7x1 dilated depthwise (7C + C each) + 1x1 (C*C + C)
    def lka_unit(c: int) -> int:
        return (25 * c + c) + (49 * c + c) + (c * c + c)

    def lska_unit(c: int) -> int:
        return 2 * (5 * c + c) + 2 * (7 * c + c) + (c * c + c)

    lka = build_preset("lka-nafnet-w12.yaml")
    lska = build_preset("lka-nafnet-w12-lska.yaml")
    channels = [12] * 1 + [24] * 3 + [48] * 4  # LKABlocks [1, 3, 4, 0] at width 12, 24, 48
    expected = 444_927 - sum(lka_unit(c) for c in channels) + sum(lska_unit(c) for c in channels)
    assert expected == 444_927 - 48 * sum(channels) == 431_679  # 76C - 28C fewer per block
    assert sum(p.numel() for p in lka.parameters()) == 444_927
    assert sum(p.numel() for p in lska.parameters()) == expected
    units = [b.attn.spatial_gating_unit for e in lska.encoders for b in e]
    assert all(isinstance(u, LargeSeparableKernelAttention) and u.kernel_size == 23 for u in units)
    assert [sum(p.numel() for p in u.parameters()) for u in units] == [lska_unit(c) for c in channels]


@pytest.mark.parametrize("k", [23, 35, 53])
def test_lka_and_lska_macs_are_hand_derived(k):
    # Depthwise MACs per pixel and channel: LKA l*l + m*m (23: 5*5 + 7*7 = 74), LSKA 2l + 2m (23: 24); the rest equal.
    local, dilated, _ = LARGE_KERNELS[k]
    lka = create_model("lka_nafnet", **TINY["lka_nafnet"], attention="lka", kernel_size=k)
    lska = create_model("lka_nafnet", **TINY["lka_nafnet"], attention="lska", kernel_size=k)
    lka23 = create_model("lka_nafnet", **TINY["lka_nafnet"])
    size = 32
    pixels_times_channels = 4 * size**2 + 8 * (size // 2) ** 2  # one LKABlock at width 4 (full size), one at 8 (half)
    lka_dw, lska_dw = local**2 + dilated**2, 2 * local + 2 * dilated
    assert count_macs(lka, size) - count_macs(lska, size) == (lka_dw - lska_dw) * pixels_times_channels
    assert count_macs(lka, size) - count_macs(lka23, size) == (lka_dw - 74) * pixels_times_channels


def test_count_macs_leaves_the_model_as_it_found_it_even_when_the_forward_fails():
    model = create_model("lka_nafnet", **TINY["lka_nafnet"]).train()
    switchable = [m for m in model.modules() if hasattr(m, "plain")]
    assert switchable and not any(m.plain for m in switchable)
    assert count_macs(model, 32) > 0
    with pytest.raises(RuntimeError):
        count_macs(model, 32, in_channels=5)  # the intro conv takes 3 channels
    assert model.training and not any(m.plain for m in switchable)


@pytest.mark.parametrize("k", [23, 35, 53])
def test_lka_and_lska_parameter_counts_at_w12_are_hand_derived(k):
    # Only the gating units' depthwise convs differ from lka-nafnet-w12 (LKA 23: 25 + 49 weights and 2 biases per
    # channel): LKA l*l + m*m weights and 2 biases, LSKA 2l + 2m weights and 4 biases.
    local, dilated, _ = LARGE_KERNELS[k]
    channels = [12] * 1 + [24] * 3 + [48] * 4  # LKABlocks [1, 3, 4, 0] at width 12, 24, 48
    for attention, per_channel in (("lka", local**2 + dilated**2 + 2), ("lska", 2 * local + 2 * dilated + 4)):
        cfg = load_config(CONFIGS / "lka-nafnet-w12.yaml", [f"model.attention={attention}", f"model.kernel_size={k}"])
        model = build_model(cfg.model.name, cfg.model.args)
        expected = 444_927 + (per_channel - 76) * sum(channels)
        assert sum(p.numel() for p in model.parameters()) == expected, attention


@pytest.mark.parametrize(
    ("attention", "spatial", "shape"),
    [("lska", "conv_spatial_h", (16, 1, 1, 11)), ("lka", "conv_spatial", (16, 1, 11, 11))],
)
def test_config_with_kernel_35_loads_and_builds(tmp_path, attention, spatial, shape):
    path = tmp_path / "k35.yaml"
    path.write_text(
        "model:\n  name: lka_nafnet\n  width: 8\n  enc_blocks: [1, 1]\n  middle_blocks: 0\n"
        f"  dec_blocks: [1, 0]\n  attention: {attention}\n  kernel_size: 35\n"
    )
    cfg = load_config(path)
    assert cfg.model.args["attention"] == attention and cfg.model.args["kernel_size"] == 35
    model = build_model(cfg.model.name, cfg.model.args)
    units = [b.attn.spatial_gating_unit for e in model.encoders for b in e]
    assert len(units) == 2 and all(u.kernel_size == 35 for u in units)
    assert tuple(getattr(units[1], spatial).weight.shape) == shape  # 35 = 5 local + 11 dilated (d = 3)
    assert getattr(units[1], spatial).dilation == (3, 3)
    x = torch.rand(1, 3, 33, 40)
    with torch.no_grad():
        assert model.eval()(x).shape == x.shape


def test_bad_attention_settings_give_clear_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  name: lka_nafnet\n  attention: lska\n  kernel_size: 21\n")
    with pytest.raises(ConfigError, match=r"model.kernel_size \(.*bad.yaml, line 4\) must be 7 \| 11 \| 23 \| 35"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"model.attention .* must be one of 'lka', 'lska'; got 'lsk'"):
        load_config(None, ["model.attention=lsk"])
    with pytest.raises(ValueError, match=r"kernel_size must be one of 7, 11, 23, 35, 41, 53, 65; got 21"):
        create_model("lka_nafnet", attention="lska", kernel_size=21)
    with pytest.raises(ValueError, match=r"attention must be one of 'lka', 'lska'; got 'lsk'"):
        create_model("lka_nafnet", attention="lsk")
    # The kernel size applies to LKA too, and is checked the same way, even without LKABlocks.
    with pytest.raises(ValueError, match=r"kernel_size must be one of 7, 11, 23, 35, 41, 53, 65; got 21"):
        create_model("lka_nafnet", kernel_size=21, enc_blocks=[0], middle_blocks=0, dec_blocks=[0])
    with pytest.raises(ConfigError, match=r"model.kernel_size .* must be 7 \| 11 \| 23 \| 35"):
        load_config(None, ["model.attention=lka", "model.kernel_size=21"])
    assert isinstance(LKABlock(8, kernel_size=35).attn.spatial_gating_unit, LargeKernelAttention)
    assert sorted(LARGE_KERNELS) == [7, 11, 23, 35, 41, 53, 65]


@pytest.mark.parametrize(("attention", "kernel_size"), [("lska", 23), ("lka", 35), ("lka", 53)])
def test_large_kernel_tlc_equals_plain_model_below_its_window_and_differs_above(attention, kernel_size):
    torch.manual_seed(0)
    args = dict(width=4, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])
    args.update(attention=attention, kernel_size=kernel_size)
    plain = randomize_scales(create_model("lka_nafnet", **args)).eval()
    local = create_model("lka_nafnet", tlc_train_size=16, **args).eval()
    local.load_state_dict(plain.state_dict())
    assert local.tlc_enabled and not plain.tlc_enabled
    with torch.no_grad():
        small = torch.rand(1, 3, 24, 20)
        torch.testing.assert_close(local(small), plain(small), atol=1e-6, rtol=0)
        large = torch.rand(1, 3, 64, 48)
        assert local(large).shape == large.shape
        assert (local(large) - plain(large)).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("attention", "kernel_size", "error"), [("lska", 23, "missing"), ("lka", 35, "shape mismatch")]
)
def test_large_kernel_checkpoint_round_trips_and_does_not_load_into_lka_23(tmp_path, attention, kernel_size, error):
    args = {**TINY["lka_nafnet"], "attention": attention, "kernel_size": kernel_size}
    src = randomize_scales(create_model("lka_nafnet", **args)).eval()
    path = tmp_path / "large-kernel.pt"
    torch.save({"format_version": 1, "model_name": "lka_nafnet", "model_args": args, "model": src.state_dict()}, path)
    dst = load_spec(path).build()
    x = torch.rand(1, 3, 19, 22)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    with pytest.raises(CheckpointError, match=error):
        load_weights(create_model("lka_nafnet", **TINY["lka_nafnet"]), state_dict_from(read_checkpoint(path)), "w")


def test_weights_with_another_recorded_architecture_are_refused_with_a_config(tmp_path):
    # residual_highpass adds no parameters: without the check these weights would load into the plain network.
    args = {**TINY["lka_nafnet"], "residual_highpass": 4.0}
    path = tmp_path / "highpass.pt"
    state = create_model("lka_nafnet", **args).state_dict()
    torch.save({"format_version": 1, "model_name": "lka_nafnet", "model_args": args, "model": state}, path)
    config = tmp_path / "plain.yaml"
    blocks = "".join(f"  {k}: {v}\n" for k, v in TINY["lka_nafnet"].items())
    config.write_text("model:\n  name: lka_nafnet\n" + blocks)
    with pytest.raises(CheckpointError, match=r"highpass.pt was trained as a different architecture than .*plain.yaml "
                       r"describes \(residual_highpass: 4.0 there, None here\)"):  # fmt: skip
        load_spec(config, path)
    config.write_text("model:\n  name: lka_nafnet\n  residual_highpass: 4\n" + blocks)
    assert load_spec(config, path).model_args["residual_highpass"] == 4.0  # same architecture, defaults spelled out
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)  # no recorded architecture: the config decides
    assert load_spec(config, bare).state is not None


def test_list_models():
    assert list_models() == ["lka_nafnet", "nafnet", "noise_gated_pair"]
    with pytest.raises(KeyError, match="Valid names: lka_nafnet, nafnet, noise_gated_pair"):
        create_model("nafnett")


# --- weight loading ----------------------------------------------------------------------------------------


def tiny_nafnet() -> torch.nn.Module:
    return randomize_scales(create_model("nafnet", **TINY["nafnet"]))


@pytest.mark.parametrize("layout", ["bare", "params", "params_ema", "module", "compiled", "checkpoint"])
def test_weights_load_from_every_supported_layout(tmp_path, layout):
    src = tiny_nafnet()
    sd = src.state_dict()
    obj = {
        "bare": sd,
        "params": {"params": sd},
        "params_ema": {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
        "module": {f"module.{k}": v for k, v in sd.items()},
        "compiled": {f"_orig_mod.{k}": v for k, v in sd.items()},
        "checkpoint": {"model_name": "nafnet", "model_args": TINY["nafnet"], "model": sd, "format_version": 1},
    }[layout]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    ckpt = read_checkpoint(path)
    if layout == "checkpoint":
        dst = load_spec(path).build()
    else:
        dst = load_weights(create_model("nafnet", **TINY["nafnet"]), state_dict_from(ckpt), str(path))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(dst.eval()(x), src.eval()(x))


def test_wrong_preset_fails_with_one_clear_message(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"params": tiny_nafnet().state_dict()}, path)
    other = create_model("nafnet", width=8, enc_blocks=[1, 1, 1], middle_blocks=1, dec_blocks=[1, 1, 1])
    with pytest.raises(CheckpointError) as err:
        load_weights(other, state_dict_from(read_checkpoint(path)), str(path))
    msg = str(err.value)
    assert "missing" in msg and "shape mismatch" in msg and "--model" in msg and str(path) in msg


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


class MarkerPayload:
    """Unpickled, it creates the file ``path``: proof that the code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_carrying_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"params": {"x": torch.zeros(1)}, "hook": Payload()}, path)
    with pytest.raises(CheckpointError, match="Refusing to load"):
        read_checkpoint(path)


def test_truncated_or_missing_file_is_reported(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(tiny_nafnet().state_dict(), path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pth")


def test_bare_weights_without_architecture_ask_for_model(tmp_path):
    torch.save({"params": tiny_nafnet().state_dict()}, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="--model"):
        load_spec(tmp_path / "bare.pth")


# ------------------------------------------------------------------------------------------------------------
# Files that are not what they seem: each gets its own message, and only real code in a pickle "holds code"


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "holds code" not in message, message
    return message


def _save_pickle(obj, path: Path, how: str) -> None:
    """``obj`` written as torch.save does (zip or legacy) or as pickle.dump does (protocol 0, 2 or 4)."""
    import pickle

    if how == "torch":
        torch.save(obj, path)
    elif how == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=int(how[-1])))


@pytest.mark.parametrize("how", ["torch", "legacy", "pickle0", "pickle2", "pickle4"])
def test_pickle_carrying_code_says_it_holds_code_that_was_not_run(tmp_path, how):
    path, marker = tmp_path / "evil.pth", tmp_path / "code-ran"
    _save_pickle({"params": {"x": torch.zeros(1)}, "hook": MarkerPayload(marker)}, path, how)
    with pytest.raises(CheckpointError, match="holds code") as err:
        read_checkpoint(path)
    message = str(err.value)
    assert "io.open" in message and "It was not run" in message  # names the global it refused (open is io.open)
    assert "corrupt" not in message and "will likely succeed" not in message  # not torch's advice to retry
    assert not marker.exists()


def test_a_pickle_of_plain_data_torch_cannot_read_is_not_said_to_hold_code(tmp_path):
    _save_pickle({"a": [1, 2.0, "x"]}, tmp_path / "plain.pt", "pickle4")  # protocol 4: torch's reader stops early
    message = _refusal(tmp_path / "plain.pt")
    assert "cannot be read (Unsupported operand" in message and "weights_only" not in message


def test_infer_with_a_code_carrying_checkpoint_says_it_holds_code_and_ran_none(tmp_path):
    from typer.testing import CliRunner

    from nafrestore.cli import app

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")  # the model is loaded before any image is read
    marker, ckpt = tmp_path / "code-ran", tmp_path / "evil.pt"
    torch.save({"model_name": "nafnet", "model_args": TINY["nafnet"], "hook": MarkerPayload(marker)}, ckpt)
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ckpt", str(ckpt)])
    assert result.exit_code == 2, result.output
    assert f"error: Refusing to load {ckpt}: the file holds code" in result.output and "Traceback" not in result.output
    assert "It was not run" in result.output and not marker.exists()


def test_empty_checkpoint_is_reported(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty (0 bytes)" in _refusal(tmp_path / "empty.pt")


def test_random_bytes_are_not_a_checkpoint(tmp_path):
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 8)
    assert "not a PyTorch checkpoint" in _refusal(tmp_path / "noise.pth")
    (tmp_path / "noise.pt").write_bytes(b"\x80\x02" + bytes(range(256)) * 8)  # a pickle header, then garbage
    assert "not a PyTorch checkpoint" in _refusal(tmp_path / "noise.pt")
    import zipfile

    with zipfile.ZipFile(tmp_path / "photos.pt", "w") as archive:
        archive.writestr("a.txt", "not a checkpoint")
    assert "zip archive" in _refusal(tmp_path / "photos.pt")


def test_error_without_a_message_names_its_type(tmp_path, monkeypatch):
    torch.save(tiny_nafnet().state_dict(), tmp_path / "w.pth")

    def failing_load(*args, **kwargs):
        raise RuntimeError()  # an exception whose message is empty

    monkeypatch.setattr(torch, "load", failing_load)
    assert "RuntimeError" in _refusal(tmp_path / "w.pth")


# Crafted safetensors metadata: refused with the file and the entry named, before anything is built

GOOD_META = {"format_version": 1, "model_name": "nafnet", "model_args": TINY["nafnet"], "tlc_train_size": None,
             "config": {}}  # fmt: skip


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ("{not json", "its metadata (the 'nafrestore' entry of the safetensors header) is not valid JSON"),
        ("[1, 2]", "its metadata (the 'nafrestore' entry of the safetensors header) is a JSON list, not an object"),
        ({**GOOD_META, "format_version": 99}, "has format_version 99; this nafrestore reads version 1 only"),
        ({k: v for k, v in GOOD_META.items() if k != "format_version"}, "has format_version null"),
        ({**GOOD_META, "model_name": "nafnett"}, 'model_name is "nafnett", not a registered model'),
        ({**GOOD_META, "model_args": [4]}, "model_args is a list, not a mapping of arguments"),
        ({**GOOD_META, "tlc_train_size": "big"}, 'tlc_train_size is "big", not a size in pixels'),
        ({**GOOD_META, "config": {"train": {"lr": "fast"}}}, "train.lr (SRC, its config) must be a number"),
        ({**GOOD_META, "config": {"modle": {}}}, "Did you mean 'model'?"),
        (
            {**GOOD_META, "model_args": {**TINY["nafnet"], "width": 100000}},
            "would hold 2,620,039 M parameters and buffers",
        ),
        ({**GOOD_META, "model_args": {**TINY["nafnet"], "middle_blocks": 10**9}}, "has 1000000008 blocks and levels"),
        ({**GOOD_META, "model_args": {**TINY["nafnet"], "width": 10**30}}, "cannot be built with"),
    ],
)
def test_crafted_safetensors_metadata_is_refused_naming_the_file(tmp_path, metadata, expected):
    from safetensors.torch import save_file
    from typer.testing import CliRunner

    from nafrestore.cli import app

    path = tmp_path / "crafted.safetensors"
    state = {k: v.contiguous() for k, v in create_model("nafnet", **TINY["nafnet"]).state_dict().items()}
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    save_file(state, str(path), metadata={"nafrestore": text})
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"")  # the model is loaded before any image is read
    result = CliRunner().invoke(app, ["infer", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ckpt", str(path)])
    assert result.exit_code == 2, result.output
    message = result.output.replace("\n", " ")
    assert message.startswith("error: ") and str(path) in message and "Traceback" not in message
    assert expected.replace("SRC", str(path)) in message, message
    assert not (tmp_path / "out").exists()


def test_every_architecture_is_sized_before_it_is_built(tmp_path):
    from nafrestore.errors import NafrestoreError
    from nafrestore.loading import MAX_PARAMETERS, check_size

    # The skeleton holds what the network will: the presets (and the shipped pairs' configs) pass, at their sizes.
    for config in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(config)
        real = create_model(cfg.model.name, **cfg.model.args)
        size = sum(t.numel() for t in [*real.parameters(), *real.buffers()])
        assert check_size(cfg.model.name, cfg.model.args) == size < MAX_PARAMETERS
    assert check_size("nafnet", load_config(CONFIGS / "nafnet-sidd-width64.yaml").model.args) == 115_982_915
    wide = {**TINY["lka_nafnet"], "width": 100000, "drop_path_rate": 0.1}
    pair = {"mild": TINY["nafnet"], "strong": {**TINY["nafnet"], "enc_blocks": [600, 1], "dec_blocks": [600, 1]}}
    blur = {**TINY["nafnet"], "residual_highpass": 1e9}  # a Gaussian of 6e9 taps: 24 GB
    for name, args, expected in (("lka_nafnet", wide, "M parameters"), ("noise_gated_pair", pair, "has 1216 blocks"),
                                 ("nafnet", blur, "would hold 18,000 M")):  # fmt: skip
        with pytest.raises(NafrestoreError, match=expected):
            build_model(name, args)
    # a training checkpoint too (the same check, at the same place)
    state = create_model("lka_nafnet", **TINY["lka_nafnet"]).state_dict()
    torch.save({**GOOD_META, "model_args": wide, "model_name": "lka_nafnet", "model": state}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"would hold [\d,]+ M parameters .* \(architecture from .*w.pt\)"):
        load_spec(tmp_path / "w.pt").build()


def test_safetensors_bytes_load_whatever_the_suffix(tmp_path):
    from safetensors.torch import save_file

    state = tiny_nafnet().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "weights.pth"))
    loaded = read_checkpoint(tmp_path / "weights.pth")
    assert torch.equal(loaded["model"]["intro.weight"], state["intro.weight"])


def test_torchscript_without_embedded_weights_asks_for_a_re_export(tmp_path, recwarn):
    scripted = torch.jit.script(torch.nn.Conv2d(3, 3, 3, padding=1))
    torch.jit.save(scripted, str(tmp_path / "old.pt"))  # a TorchScript file without nafrestore's weights entry
    recwarn.clear()
    message = _refusal(tmp_path / "old.pt")
    assert "TorchScript" in message and "re-export" in message.lower()
    assert not [w for w in recwarn if "jit" in str(w.message).lower() or "TorchScript" in str(w.message)]
