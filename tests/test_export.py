"""`nafrestore export`: ONNX with dynamic size (checked in onnxruntime), safetensors round trip, TorchScript."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.errors import CheckpointError, NafrestoreError
from nafrestore.inference import export_model, load_model
from nafrestore.loading import read_checkpoint
from nafrestore.models import create_model, nonlocal_means

runner = CliRunner()
# LKA blocks in the encoder, NAF blocks in the middle and decoder; TLC with a small training size so that both
# local windows and the whole-map fallback occur at the test sizes.
ARGS = dict(width=4, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])
TLC = 16


def randomized(tlc: int | None, args: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("lka_nafnet", tlc_train_size=tlc, **(args or ARGS)).eval()
    with torch.no_grad():
        for key, p in model.named_parameters():
            if p.ndim == 1 or key.endswith(("beta", "gamma")):
                p.add_(torch.randn(p.shape) * 0.3)
    return model


@pytest.fixture(scope="module")
def tlc_model() -> torch.nn.Module:
    return randomized(TLC)


def save_tlc_checkpoint(path: Path, model: torch.nn.Module, args: dict) -> Path:
    """A nafrestore checkpoint of ``model`` (built with ``args``) with TLC on, as ``train`` writes it."""
    config = {"model": {"name": "lka_nafnet", "tlc": True, "tlc_train_size": TLC, **args}}
    torch.save(
        {"format_version": 1, "model_name": "lka_nafnet", "model_args": args, "tlc_train_size": TLC,
         "config": config, "model": model.state_dict()},
        path,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tlc_model):
    return save_tlc_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tlc_model, ARGS)


SIZES = [(36, 44), (61, 23)]  # 61 x 23: not a multiple of 2**levels = 4

# The same network with larger kernels: LSKA 35 (dilated 1 x 11 / 11 x 1 convs, wider than the 23-px test image)
# and LKA 53 (5 x 5, then 17 x 17 with dilation 3: a 53-px window on 23- to 61-px images).
# Then a high-passed residual (its blur kernel is wider than the 23-px side, so it relies on the padding), fixed and
# noise-gated (the gate's median as ONNX TopK; the test's first image is half as noisy, so the two are gated apart),
# with luma and chroma filtered apart, and widened where the image is flat.
LARGE_KERNEL_ARGS = [
    dict(ARGS, attention="lska", kernel_size=35),
    dict(ARGS, attention="lka", kernel_size=53),
    dict(ARGS, residual_highpass=4.0),
    dict(ARGS, residual_highpass=4.0, residual_highpass_gate=[50.0, 100.0]),
    dict(ARGS, residual_highpass=2.0, residual_highpass_luma=6.0),
    dict(ARGS, residual_highpass=2.0, residual_highpass_flat=[4.0, 200.0]),
]


def test_onnx_matches_torch_at_two_sizes(tmp_path, ckpt, tlc_model):
    import onnxruntime as ort

    path = export_model(ckpt, tmp_path / "m.onnx", format="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w)
        with torch.inference_mode():
            want = tlc_model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # written atomically, nothing left over


def test_safetensors_round_trips_through_load_model(tmp_path, ckpt):
    path = export_model(ckpt, tmp_path / "m.safetensors", format="safetensors")
    stored = read_checkpoint(path)
    assert stored["model_name"] == "lka_nafnet" and stored["model_args"] == ARGS
    assert stored["tlc_train_size"] == TLC and stored["format_version"] == 1
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["nafrestore"])["config"]["model"]["tlc"] is True
    x = torch.rand(1, 3, 29, 38)
    a, b = load_model(ckpt), load_model(path)
    assert b.tlc_enabled
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_torchscript_has_dynamic_size(tmp_path, ckpt, tlc_model):
    path = export_model(ckpt, tmp_path / "m.pt", format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x
        scripted = torch.jit.load(str(path))
    for h, w in SIZES:
        x = torch.rand(1, 3, h, w)
        with torch.inference_mode():
            assert torch.allclose(scripted(x), tlc_model(x), atol=1e-4)


@pytest.mark.parametrize("args", LARGE_KERNEL_ARGS, ids=lambda a: "-".join(f"{k}{a[k]}" for k in a if k not in ARGS))
def test_large_kernel_onnx_and_torchscript_match_torch(tmp_path, args):
    import onnxruntime as ort

    model = randomized(TLC, args)
    ckpt = save_tlc_checkpoint(tmp_path / "large-kernel.pt", model, args)
    onnx_path = export_model(ckpt, tmp_path / "m.onnx", format="onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ts_path = export_model(ckpt, tmp_path / "m.ts", format="torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x
        scripted = torch.jit.load(str(ts_path))
    for h, w in SIZES:
        x = torch.rand(2, 3, h, w) * torch.tensor([0.5, 1.0]).view(2, 1, 1, 1)
        with torch.inference_mode():
            want = model(x)
            got_ts = scripted(x)
        got_onnx = session.run(None, {"input": x.numpy()})[0]
        assert got_onnx.shape == tuple(want.shape)
        assert np.abs(got_onnx - want.numpy()).max() < 1e-4
        assert torch.allclose(got_ts, want, atol=1e-4)
    stored = read_checkpoint(export_model(ckpt, tmp_path / "m.safetensors", format="safetensors"))
    assert stored["model_args"] == args


@pytest.mark.slow  # about a minute: the ONNX export
def test_nonlocal_means_blend_exports_branchless_and_matches_torch(tmp_path, monkeypatch):
    import onnxruntime as ort

    # A 3 x 3 search: the shipped 11 x 11 offsets take minutes to export, and each offset is the same few ops.
    monkeypatch.setattr(nonlocal_means, "SEARCH_RADIUS", 2)
    args = dict(ARGS, residual_highpass=2.0, residual_highpass_flat=[4.0, 200.0], residual_nonlocal_means=[0.6, 0.3])
    model = randomized(TLC, args)
    ckpt = save_tlc_checkpoint(tmp_path / "nlm.pt", model, args)
    session = ort.InferenceSession(str(export_model(ckpt, tmp_path / "m.onnx", format="onnx")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in PyTorch 2.x
        scripted = torch.jit.load(str(export_model(ckpt, tmp_path / "m.ts", format="torchscript")))
    # A smooth ramp with mild noise (below the blend's fade: non-local means runs) and with strong noise (above it).
    ramp = torch.linspace(0.2, 0.7, 44).expand(2, 3, 36, 44)
    x = ramp + torch.tensor([1 / 255, 30 / 255]).view(2, 1, 1, 1) * torch.randn(2, 3, 36, 44)
    with torch.inference_mode():
        want = model(x)
        without_blend = model.residual_filter.highpass
        model.residual_filter = without_blend
        assert (want[0] - model(x)[0]).abs().max() > 1e-4  # the blend changes the mild image
        got_ts = scripted(x)
    got_onnx = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got_onnx - want.numpy()).max() < 1e-4
    assert torch.allclose(got_ts, want, atol=1e-4)


def test_export_options_and_errors(tmp_path, ckpt):
    with pytest.raises(NafrestoreError, match="format"):
        export_model(ckpt, tmp_path / "m.bin", format="tflite")
    path = export_model(ckpt, tmp_path / "off.safetensors", format="safetensors", tlc=False)
    assert not load_model(path).tlc_enabled


def test_export_cli(tmp_path, ckpt, tlc_model):
    out = tmp_path / "cli.safetensors"
    result = runner.invoke(app, ["export", str(ckpt), "--format", "safetensors", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.is_file()
    torch.save({"params": tlc_model.state_dict()}, tmp_path / "bare.pth")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n  name: lka_nafnet\n  width: 4\n  enc_blocks: [1, 1]\n  middle_blocks: 1\n  dec_blocks: [1, 1]\n"
    )
    args = ["export", "--model", str(config), "--ckpt", str(tmp_path / "bare.pth"), "-f", "safetensors"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "bare.safetensors")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", str(ckpt), "--format", "tflite", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "tflite" in result.output
    result = runner.invoke(app, ["export", "--model", str(config), "--format", "onnx", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "no trained weights" in result.output


# ------------------------------------------------------------------------------------------------------------
# Exports passed back where a checkpoint is expected


def test_torchscript_export_loads_as_the_model_it_came_from(tmp_path, ckpt, recwarn):
    path = export_model(ckpt, tmp_path / "m.pt", format="torchscript")
    recwarn.clear()
    stored = read_checkpoint(path)  # read from the archive's extra files: no torch.jit.load, no code run
    assert not [w for w in recwarn if "jit" in str(w.message).lower() or "TorchScript" in str(w.message)]
    assert stored["model_name"] == "lka_nafnet" and stored["model_args"] == ARGS and stored["tlc_train_size"] == TLC
    x = torch.rand(1, 3, 29, 38)
    a, b = load_model(ckpt), load_model(path)
    assert b.tlc_enabled
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))


def test_onnx_export_passed_as_a_checkpoint_says_what_it_is(tmp_path, ckpt):
    path = export_model(ckpt, tmp_path / "demo.onnx", format="onnx")
    renamed = tmp_path / "demo.pt"  # recognised by its bytes, not only by its name
    renamed.write_bytes(path.read_bytes())
    for candidate in (path, renamed):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(candidate)
        message = str(err.value)
        assert "ONNX" in message and "onnxruntime" in message and "would run code" not in message, message
    image = tmp_path / "in.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    result = runner.invoke(app, ["infer", str(image), "-o", str(tmp_path / "out"), "--ckpt", str(path), "--quiet"])
    assert result.exit_code == 2 and "ONNX" in result.output and "Traceback" not in result.output


def test_export_to_an_unwritable_place_is_one_message(tmp_path, ckpt):
    (tmp_path / "exports").write_text("a file where a folder should be")
    out = tmp_path / "exports" / "m.safetensors"
    result = runner.invoke(app, ["export", str(ckpt), "--format", "safetensors", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert str(out) in result.output and "is a file, not a folder" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # a clean exit, no crash
