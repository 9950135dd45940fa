"""The noise-gated pair (nafrestore.models.gated): routing per image by the estimated noise level, which network
runs and learns, composition from two networks' weights (loading.pair_spec), export, and the shipped pair config."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nafrestore.errors import CheckpointError
from nafrestore.inference import export_model, load_model
from nafrestore.inference.export import export_spec
from nafrestore.loading import build_model, pair_spec
from nafrestore.models import create_model
from nafrestore.models.gated import texture_fade_weights
from nafrestore.models.layers import gate_weights, noise_level, quiet_block_noise_level

ROOT = Path(__file__).resolve().parents[1]
NET = dict(width=4, enc_blocks=[1, 1], middle_blocks=0, dec_blocks=[1, 0])
STRONG = dict(NET, residual_highpass=2.0)
GATE = [8.0, 16.0]


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Zero-initialised residual scales and biases given random values, so that every network changes its input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return module.eval()


def smooth(h: int = 32, w: int = 40) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.5 - 0.2 * xx * yy])[None]


def images() -> torch.Tensor:
    """(3, 3, 32, 40): clean (level 0), mid-gate noise (level about 12 of 0-255), strong noise (about 40)."""
    g = torch.Generator().manual_seed(5)
    clean = smooth()
    return torch.cat([clean, clean + 12 / 255 * torch.randn(clean.shape, generator=g),
                      clean + 40 / 255 * torch.randn(clean.shape, generator=g)])  # fmt: skip


@pytest.fixture
def pair() -> torch.nn.Module:
    return randomized(create_model("noise_gated_pair", mild=NET, strong=STRONG, gate=GATE), seed=1)


def test_each_image_gets_its_networks_output_by_its_noise_level(pair):
    x = images()
    g = gate_weights(x, *GATE)
    assert g[0] == 0 and 0 < g[1] < 1 and g[2] == 1
    with torch.no_grad():
        out, mild, strong = pair(x), pair.mild(x), pair.strong(x)
        torch.testing.assert_close(out[0], mild[0])
        torch.testing.assert_close(out[2], strong[2])
        torch.testing.assert_close(out[1], (1 - g[1]) * mild[1] + g[1] * strong[1])
        assert not torch.allclose(mild, strong, atol=1e-3)  # the two networks differ, so the routing shows
        torch.testing.assert_close(pair(x[:1]), pair.mild(x[:1]))  # batch of one, below the gate


def test_only_the_selected_network_runs_and_learns(pair):
    calls = {"mild": 0, "strong": 0}
    for name in calls:
        getattr(pair, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    x = images()
    pair.train()
    pair(x[:1]).sum().backward()  # clean: the mild network only
    assert calls == {"mild": 1, "strong": 0}
    assert all(p.grad is None for p in pair.strong.parameters())
    pair.zero_grad(set_to_none=True)
    pair(x[2:]).sum().backward()  # strong noise: the strong network only
    assert calls == {"mild": 1, "strong": 1}
    assert all(p.grad is None for p in pair.mild.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pair.strong.parameters())
    pair(x).sum().backward()  # a mixed batch runs both
    assert calls == {"mild": 2, "strong": 2}


def test_bad_pairs_are_refused():
    with pytest.raises(ValueError, match="low < high"):
        create_model("noise_gated_pair", mild=NET, strong=NET, gate=[16, 8])
    with pytest.raises(ValueError, match="not 'unet'"):
        create_model("noise_gated_pair", mild=NET, strong=NET, model="unet")


def test_a_texture_fade_scales_the_mild_correction_by_the_wavelet_level():
    fade = [4.0, 20.0, 0.5]
    faded = randomized(create_model("noise_gated_pair", mild=NET, strong=STRONG, gate=[30, 40], texture_fade=fade), 1)
    x = images()[:2]  # wavelet levels about 0 and 12: both below the gate, the mild network only
    s = texture_fade_weights(x, *fade)
    expected = 1 - 0.5 * ((noise_level(x) * 255 - 4) / 16).clamp(0, 1)
    torch.testing.assert_close(s, expected)
    assert s[0] == 1 and 0.5 < s[1] < 1
    with torch.no_grad():
        mild = faded.mild(x)
        torch.testing.assert_close(faded(x), x + s.view(-1, 1, 1, 1) * (mild - x))
    for bad in ([4, 20], [20, 4, 0.5], [4, 20, 1.5]):
        with pytest.raises(ValueError, match="texture fade needs"):
            create_model("noise_gated_pair", mild=NET, strong=NET, texture_fade=bad)


@pytest.mark.slow  # two exports, about a minute
def test_a_pair_gated_on_quiet_blocks_exports_with_its_fade_and_coarse_filter(tmp_path):
    """The default v5's parts (quiet-blocks gate, texture fade, a coarse strong filter) in ONNX and TorchScript."""
    strong = dict(NET, residual_highpass=2.0, residual_highpass_gate=[8, 16],
                  residual_highpass_gate_estimate="quiet_blocks", residual_highpass_coarse=8.0)  # fmt: skip
    pair = randomized(create_model("noise_gated_pair", mild=NET, strong=strong, gate=GATE,
                                   gate_estimate="quiet_blocks", texture_fade=[2, 30, 0.5]), 3)  # fmt: skip
    g = torch.Generator().manual_seed(6)
    clean = torch.nn.functional.interpolate(smooth(), size=(64, 80), mode="bilinear")
    x = torch.cat([clean, clean + 12 / 255 * torch.randn(clean.shape, generator=g),
                   clean + 40 / 255 * torch.randn(clean.shape, generator=g)])  # fmt: skip
    w = gate_weights(x, *GATE, "quiet_blocks")
    torch.testing.assert_close(w, ((quiet_block_noise_level(x) * 255 - 8) / 8).clamp(0, 1))
    assert w[0] == 0 and 0 < w[1] < 1 and w[2] == 1
    config = tmp_path / "pair.yaml"
    config.write_text(
        f"model:\n  name: noise_gated_pair\n  gate: {GATE}\n  gate_estimate: quiet_blocks\n"
        f"  texture_fade: [2, 30, 0.5]\n  mild: {NET}\n  strong: {strong}\n".replace("'", "")
    )
    spec = pair_spec(config, save_checkpoint(tmp_path / "m.pt", pair.mild, NET),
                     save_checkpoint(tmp_path / "s.pt", pair.strong, strong))  # fmt: skip
    out = export_spec(spec, tmp_path / "pair.safetensors", format="safetensors")
    with torch.no_grad():
        expected = pair(x)
        torch.testing.assert_close(load_model(out)(x), expected)
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_model(out, tmp_path / "p.onnx", format="onnx")))
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected.numpy(), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x
        scripted = torch.jit.load(str(export_model(out, tmp_path / "p.ts", format="torchscript")))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), expected, atol=1e-4, rtol=0)


def write_pair_config(path: Path) -> Path:
    path.write_text(
        f"model:\n  name: noise_gated_pair\n  gate: [8, 16]\n  mild: {NET}\n  strong: {STRONG}\n".replace("'", "")
        + "data:\n  format: sample\n  degradations: [{type: gaussian_noise, sigma: 25}]\n"
    )
    return path


def save_checkpoint(path: Path, model: torch.nn.Module, args: dict) -> Path:
    torch.save({"format_version": 1, "model_name": "lka_nafnet", "model_args": args, "tlc_train_size": None,
                "config": {}, "model": model.state_dict()}, path)  # fmt: skip
    return path


def test_a_pair_composed_from_two_networks_loads_and_exports(tmp_path, pair):
    config = write_pair_config(tmp_path / "pair.yaml")
    mild = save_checkpoint(tmp_path / "mild.pt", pair.mild, NET)
    strong = save_checkpoint(tmp_path / "strong.pt", pair.strong, STRONG)
    spec = pair_spec(config, mild, strong)
    assert spec.model_name == "noise_gated_pair" and spec.config["model"]["name"] == "noise_gated_pair"
    out = export_spec(spec, tmp_path / "pair.safetensors", format="safetensors")
    loaded = load_model(out)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), pair(x))
    # The networks swapped: the strong one's recorded high-pass does not match the mild role.
    with pytest.raises(CheckpointError, match="different architecture"):
        pair_spec(config, strong, mild)
    with pytest.raises(CheckpointError, match="not a noise_gated_pair"):
        pair_spec(ROOT / "configs" / "lka-nafnet-w12.yaml", mild, strong)
    # Refiltered: the strong network's weights in the mild role, with the mild role's high-pass (none), on request.
    refiltered = load_model(export_spec(pair_spec(config, strong, strong, refilter=True),
                                        tmp_path / "refiltered.safetensors", format="safetensors"))  # fmt: skip
    unfiltered = create_model("lka_nafnet", **NET)
    unfiltered.load_state_dict(pair.strong.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(refiltered.mild(x), unfiltered.eval()(x))
        assert not torch.allclose(refiltered.mild(x), pair.strong(x), atol=1e-3)
    # A new pair keeps one network of an old pair: given the pair for that role, it takes the pair's own network.
    other = randomized(create_model("lka_nafnet", **NET), seed=7)
    renewed = load_model(export_spec(pair_spec(config, save_checkpoint(tmp_path / "m2.pt", other, NET), out),
                                     tmp_path / "renewed.safetensors", format="safetensors"))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(renewed.strong(x), pair.strong(x))
        torch.testing.assert_close(renewed.mild(x), other(x))
        assert not torch.allclose(renewed.mild(x), pair.mild(x), atol=1e-3)
    # ONNX and TorchScript run both networks and blend them without a branch: the same outputs.
    import onnxruntime as ort

    session = ort.InferenceSession(str(export_model(out, tmp_path / "p.onnx", format="onnx")))
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], pair(x).detach().numpy(), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x
        scripted = torch.jit.load(str(export_model(out, tmp_path / "p.ts", format="torchscript")))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), pair(x), atol=1e-4, rtol=0)


def test_the_default_pair_config_builds_its_gate_from_the_noise_statistics():
    from nafrestore.config import load_config

    cfg = load_config(ROOT / "configs" / "lka-nafnet-w12-denoise-real-v2.yaml")
    model = build_model(cfg.model.name, cfg.model.args)
    assert (model.gate_low, model.gate_high) == (8.0, 16.0)
    # The mild network is the first default's architecture, so its weights load into it unchanged.
    first = load_config(ROOT / "configs" / "lka-nafnet-w12-denoise-real.yaml").model.args
    assert {k: v for k, v in first.items()} == cfg.model.args["mild"]
    assert float(noise_level(smooth())[0]) * 255 < cfg.model.args["gate"][0]
