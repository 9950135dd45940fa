"""`nafrestore infer`: a folder of mixed images, failures reported, skip/overwrite, official weights, options."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.data.io import load_image
from nafrestore.inference import fold_for_inference, restore
from nafrestore.inference import precision as precision_module
from nafrestore.models import create_model

runner = CliRunner()
ARGS = dict(width=4, enc_blocks=[1, 1], middle_blocks=1, dec_blocks=[1, 1])


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("nafnet", **ARGS).eval()
    with torch.no_grad():  # nonzero residual scales, a small ending: a mild, non-identity filter
        for key, p in model.named_parameters():
            if key.endswith(("beta", "gamma")):
                p.copy_(torch.randn(p.shape) * 0.2)
        model.ending.weight.mul_(0.1)
    return model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture
def ckpt(tmp_path, model) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save(
        {
            "format_version": 1,
            "model_name": "nafnet",
            "model_args": ARGS,
            "tlc_train_size": None,
            "config": {},
            "model": model.state_dict(),
        },
        path,
    )
    return path


def rng_image(shape, dtype=np.uint8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Good: 16-bit RGB PNG, RGBA PNG, gray PNG, 8-bit JPEG (in a subfolder). Bad: corrupt PNG, text as .jpg."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "deep.png"), rng_image((20, 30, 3), np.uint16, 1))
    cv2.imwrite(str(root / "rgba.png"), rng_image((24, 18, 4), np.uint8, 2))
    cv2.imwrite(str(root / "gray.png"), rng_image((17, 23), np.uint8, 3))
    cv2.imwrite(str(root / "sub" / "photo.jpg"), rng_image((32, 40, 3), np.uint8, 4))
    good = (root / "rgba.png").read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])
    (root / "notes.jpg").write_text("this is not an image\n")
    return root


def infer(*args: str):
    return runner.invoke(app, ["infer", *args, "--device", "cpu", "--quiet"])


def test_infer_folder_keeps_format_depth_channels_alpha_and_reports_failures(tmp_path, folder, ckpt, model):
    out = tmp_path / "out"
    # fp32 as the array API below computes it: auto may pick bf16 on a CPU with native bf16 (AVX512-BF16).
    result = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt), "--precision", "fp32")
    assert result.exit_code == 1, result.output
    assert "restored 4, skipped 0 (output exists), failed 2" in result.output
    assert "corrupt.png" in result.output and "notes.jpg" in result.output
    assert "Traceback" not in result.output

    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and deep.shape == (20, 30, 3)
    rgba_in = cv2.imread(str(folder / "rgba.png"), cv2.IMREAD_UNCHANGED)
    rgba = cv2.imread(str(out / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.dtype == np.uint8 and rgba.shape == (24, 18, 4)
    assert np.array_equal(rgba[..., 3], rgba_in[..., 3])  # alpha passed through exactly
    gray = cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED)
    assert gray.shape == (17, 23) and gray.dtype == np.uint8
    jpg = cv2.imread(str(out / "sub" / "photo.jpg"), cv2.IMREAD_UNCHANGED)
    assert jpg.shape == (32, 40, 3)  # relative path kept
    assert not (out / "corrupt.png").exists() and not (out / "notes.jpg").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left

    # The files hold what the array API computes (16-bit within one level: float32 vs float64 rounding).
    folded = fold_for_inference(model)
    expected = restore(folded, load_image(folder / "deep.png").rgb)
    got = load_image(out / "deep.png").rgb
    assert np.abs(got - expected).max() <= 1.5 / 65535
    assert np.abs(expected - load_image(folder / "deep.png").rgb).max() > 0.01  # and the model did something


def test_rerun_skips_existing_outputs_and_overwrite_redoes_them(tmp_path, folder, ckpt):
    out = tmp_path / "out"
    infer(str(folder), "-o", str(out), "--ckpt", str(ckpt))
    (out / "gray.png").write_bytes(b"stale")
    result = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt))
    assert result.exit_code == 1 and "restored 0, skipped 4" in result.output
    assert (out / "gray.png").read_bytes() == b"stale"
    result = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt), "--overwrite", "--glob", "*.png")
    assert "restored 3, skipped 0 (output exists), failed 1" in result.output  # corrupt.png still fails
    assert cv2.imread(str(out / "gray.png"), cv2.IMREAD_UNCHANGED).shape == (17, 23)


def test_official_state_dict_with_model_config(tmp_path, folder, model):
    torch.save({"params": model.state_dict()}, tmp_path / "NAFNet-tiny.pth")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n  name: nafnet\n  width: 4\n  enc_blocks: [1, 1]\n  middle_blocks: 1\n  dec_blocks: [1, 1]\n"
    )
    good = [str(folder / "deep.png"), str(folder / "sub")]
    args = [*good, "-o", str(tmp_path / "out"), "--model", str(config), "--ckpt", str(tmp_path / "NAFNet-tiny.pth")]
    result = infer(*args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "deep.png").exists() and (tmp_path / "out" / "photo.jpg").exists()

    bare = infer(*good, "-o", str(tmp_path / "o2"), "--ckpt", str(tmp_path / "NAFNet-tiny.pth"))
    assert bare.exit_code == 2 and "--model" in bare.output
    untrained = infer(*good, "-o", str(tmp_path / "o3"), "--model", str(config))
    assert untrained.exit_code == 2 and "no trained weights" in untrained.output


def test_suffix_ext_tiling_tta_and_batch(tmp_path, ckpt):
    root = tmp_path / "same"
    root.mkdir()
    for i in range(3):
        cv2.imwrite(str(root / f"im{i}.png"), rng_image((40, 36, 3), seed=i))
    base = ["-o", str(tmp_path / "a"), "--ckpt", str(ckpt)]
    assert infer(str(root), *base).exit_code == 0
    result = infer(str(root), "-o", str(tmp_path / "b"), "--ckpt", str(ckpt), "--batch", "2", "--suffix", "_x")
    assert result.exit_code == 0, result.output
    for i in range(3):
        a = cv2.imread(str(tmp_path / "a" / f"im{i}.png")).astype(int)
        b = cv2.imread(str(tmp_path / "b" / f"im{i}_x.png")).astype(int)
        assert np.abs(a - b).max() <= 1  # batched == one by one
    result = infer(str(root), "-o", str(tmp_path / "c"), "--ckpt", str(ckpt), "--ext", "tif", "--tile", "16",
                   "--overlap", "4", "--tta")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["im0.tif", "im1.tif", "im2.tif"]


def test_exif_orientation_is_applied(tmp_path, ckpt):
    root = tmp_path / "exif"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed 90 degrees clockwise
    Image.fromarray(rng_image((20, 50, 3))).save(root / "rot.jpg", exif=exif.tobytes())
    result = infer(str(root), "-o", str(tmp_path / "out"), "--ckpt", str(ckpt))
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out" / "rot.jpg") as out:
        assert out.size == (20, 50) and out.getexif().get(0x0112, 1) == 1  # upright, no orientation tag


def test_user_errors_exit_2(tmp_path, folder, ckpt):
    assert infer(str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt)).exit_code == 2
    result = infer(str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(tmp_path / "nope.pt"))
    assert result.exit_code == 2 and "does not exist" in result.output
    result = infer(str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--precision", "fp16")
    assert result.exit_code == 2 and "fp16" in result.output
    result = infer(str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--ext", "gif")
    assert result.exit_code == 2 and "gif" in result.output
    result = infer(str(folder), "-o", str(folder), "--ckpt", str(ckpt), "--glob", "gray.png")
    assert result.exit_code == 1 and "is an input file" in result.output  # never overwrite the inputs


def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path, folder, ckpt):
    out = folder / "restored"
    first = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt), "--glob", "*.png")
    assert "restored 3" in first.output  # deep, rgba, gray (corrupt.png fails)
    again = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt), "--glob", "*.png")
    assert "restored 0, skipped 3" in again.output and not (out / "restored").exists()


def test_infer_keeps_gray_alpha_and_refuses_animated_files(tmp_path, ckpt):
    root = tmp_path / "in"
    root.mkdir()
    la = rng_image((19, 21, 2), np.uint8, 5)
    Image.fromarray(la).save(root / "la.png")  # (H, W, 2) uint8: gray + alpha, PNG colour type 4
    frames = [Image.fromarray(rng_image((8, 8, 3), np.uint8, seed)) for seed in range(3)]
    frames[0].save(root / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out"
    result = infer(str(root), "-o", str(out), "--ckpt", str(ckpt))
    assert "restored 1, skipped 0 (output exists), failed 1" in result.output, result.output
    assert "anim.png" in result.output and "3 frames" in result.output and "Traceback" not in result.output
    with Image.open(out / "la.png") as written:
        assert written.mode == "LA"
        np.testing.assert_array_equal(np.asarray(written)[..., 1], la[..., 1])  # alpha bit-exact


def test_running_twice_into_the_input_folder_never_restores_its_own_outputs(tmp_path, ckpt):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(folder / f"{name}.png"), rng_image((20, 24, 3)))
    args = ["infer", str(folder), "-o", str(folder), "--suffix", "_r", "--ckpt", str(ckpt), "--quiet"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "restored 2, skipped 0" in first.output, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and "restored 0, skipped 2 (output exists), failed 0" in second.output, second.output
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_r.png", "b.png", "b_r.png"]


def test_a_bad_overlap_fails_once_before_any_file(tmp_path, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(folder / f"{name}.png"), rng_image((20, 24, 3)))
    result = runner.invoke(app, ["infer", str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt),
                                 "--tile", "32", "--overlap", "16", "--quiet"])  # fmt: skip
    assert result.exit_code == 2 and result.output.count("error:") == 1 and "below half the tile" in result.output
    assert not (tmp_path / "o").exists()


def test_another_runs_output_is_never_replaced_without_overwrite(tmp_path, ckpt, monkeypatch):
    # Two runs into one folder: the other run writes b's output while this one is working on a.
    from nafrestore.inference import batch

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        cv2.imwrite(str(folder / f"{name}.png"), rng_image((20, 24, 3)))
    out = tmp_path / "out"
    out.mkdir()
    real_save = batch._Runner.save

    def save(self, job, image, restored, exclusive):
        if job.source.name == "a.png":
            (out / "b.png").write_bytes(b"the other run's file")
        real_save(self, job, image, restored, exclusive)

    monkeypatch.setattr(batch._Runner, "save", save)
    result = runner.invoke(app, ["infer", str(folder), "-o", str(out), "--ckpt", str(ckpt), "--quiet"])
    assert result.exit_code == 0 and "restored 1, skipped 1 (output exists), failed 0" in result.output, result.output
    assert (out / "b.png").read_bytes() == b"the other run's file"


@pytest.fixture
def shipped_default(tmp_path, monkeypatch, model):
    """A default model 'shipped' in a temporary weights folder: a safetensors export of the tiny model."""
    from nafrestore.inference.export import export_model
    from nafrestore.models import pretrained

    source = tmp_path / "tiny-ckpt.pt"
    torch.save({"format_version": 1, "model_name": "nafnet", "model_args": ARGS, "tlc_train_size": None,
                "config": {}, "model": model.state_dict()}, source)  # fmt: skip
    weights = tmp_path / "weights"
    entry = pretrained.find_pretrained("default")
    export_model(source, weights / entry.file, format="safetensors")
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", weights)
    return weights / entry.file


def test_infer_without_a_checkpoint_uses_the_default_model_and_says_so(tmp_path, shipped_default, model):
    import nafrestore

    folder = tmp_path / "in"
    folder.mkdir()
    image = rng_image((20, 24, 3))
    cv2.imwrite(str(folder / "a.png"), image)
    # fp32 as restore() below: `--precision auto` may pick bf16 on a CPU with native bf16 (then not bit-equal)
    result = runner.invoke(app, ["infer", str(folder), "-o", str(tmp_path / "out"), "--quiet", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert result.output.count("default model") == 1 and "lka-nafnet-w12-denoise-real-v5" in result.output
    default = nafrestore.load_model("default")
    expected = restore(default, image[:, :, ::-1].copy())
    assert np.array_equal(cv2.imread(str(tmp_path / "out" / "a.png"))[:, :, ::-1], expected)


def test_strength_blends_the_restored_image_with_the_input(tmp_path, ckpt, model):
    folder = tmp_path / "in"
    folder.mkdir()
    image = rng_image((20, 24, 3)).astype(np.float32) / 255
    cv2.imwrite(str(folder / "a.png"), (image * 255).round().astype(np.uint8))
    outs = {}
    for strength in ("0", "0.5", "1"):
        out = tmp_path / f"out{strength}"
        result = runner.invoke(app, ["infer", str(folder), "-o", str(out), "--ckpt", str(ckpt), "--quiet",
                                     "--strength", strength])  # fmt: skip
        assert result.exit_code == 0, result.output
        outs[strength] = cv2.imread(str(out / "a.png")).astype(np.float64)
    original = cv2.imread(str(folder / "a.png")).astype(np.float64)
    assert np.array_equal(outs["0"], original)  # strength 0: the input, untouched
    assert not np.array_equal(outs["1"], original)
    # Halfway, up to 8-bit rounding, where the full-strength output was not clipped (the blend comes before it).
    inside = (outs["1"] > 0) & (outs["1"] < 255)
    assert inside.mean() > 0.5
    assert np.abs(outs["0.5"] - (outs["0"] + outs["1"]) / 2)[inside].max() <= 1.0


@pytest.mark.parametrize("value", ["nan", "1.5", "-0.1", "inf"])
def test_a_strength_outside_0_to_1_is_refused_saying_so(tmp_path, value):
    """NaN too: typer's range check let it through to "should be less than or equal to 1"."""
    result = runner.invoke(app, ["infer", str(tmp_path), "-o", str(tmp_path / "x"), "--ckpt", "never-loaded.pt",
                                 "--strength", value])  # fmt: skip
    text = " ".join(result.output.replace("\u2502", " ").split())  # the usage error's box, unwrapped
    assert result.exit_code == 2, result.output
    assert f"'--strength': must be a number in 0..1 (0: the input, 1: fully restored), got {float(value)}." in text
    assert "less than or equal" not in text and "never-loaded" not in text  # refused before any model is read


def test_infer_says_which_precision_auto_chose(tmp_path, ckpt, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.full((20, 20, 3), 128, np.uint8))
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    result = infer(str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt))
    assert result.exit_code == 0, result.output
    assert "precision fp32 (auto: this CPU has no native bf16)" in result.output
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision_module, "measure_bf16", lambda *a, **k: (1.9, 57.0))
    result = infer(str(folder), "-o", str(tmp_path / "o2"), "--ckpt", str(ckpt))
    assert result.exit_code == 0, result.output
    assert "precision bf16 (auto: bf16 x1.90 the speed of fp32 at 57.0 dB" in result.output
    forced = infer(str(folder), "-o", str(tmp_path / "o3"), "--ckpt", str(ckpt), "--precision", "fp32")
    assert forced.exit_code == 0 and "auto" not in forced.output


# ------------------------------------------------------------------------------------------------------------
# Outputs stay in -o; the tiling threshold is a number; leftovers of killed runs go; concurrent runs share the work


@pytest.mark.parametrize("option", [("--suffix", "/../../other/q"), ("--suffix", "_a/b"), ("--ext", "/../x.png")])
def test_a_suffix_or_ext_with_a_folder_is_refused_and_nothing_outside_o_changes(tmp_path, ckpt, option):
    """Issue 33, item 1: `--suffix "/../../other/q"` replaced an unrelated T/other/q.png and reported success."""
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), rng_image((20, 24, 3)))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "q.png").write_bytes(b"an unrelated file")
    result = infer(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--overwrite", *option)
    assert result.exit_code == 2, result.output
    assert f"{option[0]} {option[1]!r} holds a path separator" in " ".join(result.output.split())
    assert (tmp_path / "other" / "q.png").read_bytes() == b"an unrelated file"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["in/a.png", "other/q.png"]


def test_an_output_that_resolves_outside_o_through_a_link_fails_and_the_rest_is_restored(tmp_path, ckpt):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "in" / "a.png"), rng_image((20, 24, 3)))
    cv2.imwrite(str(tmp_path / "in" / "sub" / "q.png"), rng_image((20, 24, 3), seed=1))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "q.png").write_bytes(b"an unrelated file")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "sub").symlink_to(tmp_path / "other")  # o/sub/q.png would be other/q.png
    result = infer(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--overwrite")
    assert result.exit_code == 1, result.output
    assert "restored 1, skipped 0 (output exists), failed 1" in result.output
    assert "outside the output folder" in result.output and "q.png" in result.output
    assert (tmp_path / "other" / "q.png").read_bytes() == b"an unrelated file"
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["q.png"]  # no temporary or claim file either
    assert (tmp_path / "o" / "a.png").is_file()


@pytest.mark.parametrize("value", ["nan", "-1", "0"])
def test_a_max_megapixels_that_is_not_a_positive_number_is_refused(tmp_path, ckpt, value):
    """Issue 33, item 10: NaN turned automatic tiling off (a 4000x3000 photograph then ran out of memory)."""
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), rng_image((20, 24, 3)))
    result = infer(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--max-megapixels", value)
    assert result.exit_code == 2, result.output
    assert "--max-megapixels must be a positive number of megapixels (e.g. 4; inf: never tile)" in result.output
    assert result.output.count("error:") == 1 and not (tmp_path / "o").exists()
    fine = infer(str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--max-megapixels", "inf")
    assert fine.exit_code == 0 and "restored 1" in fine.output, fine.output


def test_a_rerun_removes_what_killed_runs_left_but_not_a_live_runs_files(tmp_path, ckpt):
    """Issue 33, item 14: hidden `.NAME.XXXXXXXX.tmp` files of killed runs stayed forever. A later run removes the
    temporary and claim files of its outputs (restored or skipped alike), but not those of an output another live
    run is writing (it holds the claim), nor files that are not leftovers of its outputs."""
    from nafrestore.utils.files import OutputClaim

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a", "b", "c"):
        cv2.imwrite(str(folder / f"{name}.png"), rng_image((20, 24, 3)))
    out.mkdir()
    (out / "b.png").write_bytes(b"restored earlier")  # skipped by the rerun; its leftovers go too
    stale = [out / ".a.png.1a2b3c4d.tmp", out / ".b.png.0f0f0f0f.tmp", out / ".a.png.lock"]
    for path in stale:
        path.write_bytes(b"\0" * 1000)
    other = [out / ".notes.txt.1a2b3c4d.tmp", out / "x.png.lock"]  # not leftovers of this run's outputs
    for path in other:
        path.write_bytes(b"keep")
    live = OutputClaim(out / "c.png")  # another run is writing c.png now
    assert live.acquire()
    live_tmp = out / ".c.png.12345678.tmp"
    live_tmp.write_bytes(b"being written")
    try:
        result = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt))
        assert result.exit_code == 0, result.output
        assert "restored 1, skipped 2 (output exists), failed 0" in result.output  # c: the other run's
        assert live_tmp.read_bytes() == b"being written" and live.lock.exists()
    finally:
        live.release()
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"keep" for path in other)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [
        ".c.png.12345678.tmp",
        ".notes.txt.1a2b3c4d.tmp",
    ]
    assert (out / "b.png").read_bytes() == b"restored earlier" and (out / "a.png").is_file()
    again = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt))  # the other run died: its file goes now
    assert "restored 1, skipped 2" in again.output and not live_tmp.exists(), again.output


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_runs_into_one_folder_at_once_restore_each_image_once(tmp_path, model, overwrite):
    """Issue 33, item 14: two concurrent `infer` runs on one folder both computed every image."""
    import threading
    import time

    from nafrestore.inference.batch import restore_files

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"im{i}.png"), rng_image((16, 16, 3), seed=i))
    if overwrite:
        out.mkdir()
        for i in range(6):
            (out / f"im{i}.png").write_bytes(b"an old output")
    calls, lock = [], threading.Lock()

    class Slow(torch.nn.Module):  # the tiny network, slow enough for the two runs to overlap
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x):
            with lock:
                calls.append(threading.current_thread().name)
            time.sleep(0.15)
            return self.net(x)

    slow = Slow().eval()
    reports = {}

    def run(name: str) -> None:
        reports[name] = restore_files(slow, folder, out, overwrite=overwrite, precision="fp32", progress=False)

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 6  # each image once (before: 12, each run computed every image)
    assert sum(len(r.restored) for r in reports.values()) == 6 and all(r.ok for r in reports.values())
    assert sum(len(r.skipped) for r in reports.values()) == 6
    assert all(cv2.imread(str(out / f"im{i}.png")) is not None for i in range(6))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_an_animated_png_whose_animation_chunk_follows_a_large_text_chunk_is_refused(tmp_path, ckpt):
    """Issue 33, item 13: the frame count was looked for in the first 64 kB only, so an APNG with a large text
    chunk first was restored as its first frame."""
    import struct
    import zlib

    root = tmp_path / "in"
    root.mkdir()
    frames = [Image.fromarray(rng_image((8, 8, 3), np.uint8, seed)) for seed in range(3)]
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:], duration=100)
    data = (tmp_path / "anim.png").read_bytes()
    text = b"Comment\0" + b"x" * 100_000
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its 13 bytes, its CRC
    (root / "anim.png").write_bytes(data[:ihdr_end] + chunk + data[ihdr_end:])
    assert (root / "anim.png").read_bytes().index(b"acTL") > 100_000
    with Image.open(root / "anim.png") as check:
        assert check.n_frames == 3  # still a valid APNG
    result = infer(str(root), "-o", str(tmp_path / "out"), "--ckpt", str(ckpt))
    assert result.exit_code == 1, result.output
    assert "anim.png holds 3 frames" in result.output and not (tmp_path / "out" / "anim.png").exists()


# A command-line run whose writes can be made slow (each output's temporary file is written, then the process
# waits before renaming it), and which prints a line for each image it restores: for killing a run in the middle
# of a write, and for two runs side by side.
_SLOW_INFER = """
import sys, time
import nafrestore.utils.files as files
from nafrestore.inference import batch
publish, restore_one = files._publish, batch._Runner.restore_one
pause = float(sys.argv[1])
def slow_publish(tmp, path, exclusive):
    print(f"writing {path.name}", flush=True)
    time.sleep(pause)
    publish(tmp, path, exclusive)
def counted(self, image):
    print(f"restoring {image.path.name}", flush=True)
    return restore_one(self, image)
files._publish, batch._Runner.restore_one = slow_publish, counted
from nafrestore.cli import main
sys.argv = ["nafrestore", "infer", *sys.argv[2:]]
main()
"""


def _slow_infer(pause: float, *args: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-c",
        _SLOW_INFER,
        str(pause),
        *args,
        "--device",
        "cpu",
        "--quiet",
        "--precision",
        "fp32",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # command-line runs in subprocesses
def test_kill_9_during_a_write_then_rerun_leaves_no_hidden_files(tmp_path, ckpt):
    """Issue 33, item 14, as the trial ran it: a run killed while writing left `.NAME.XXXXXXXX.tmp` (and now its
    claim file) behind; the next run removes them and restores the file."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), rng_image((24, 32, 3)))
    proc = _slow_infer(60, str(folder), "-o", str(out), "--ckpt", str(ckpt))
    try:
        for line in proc.stdout:
            if line.startswith("writing a.png"):
                break
        hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    finally:
        proc.kill()
        proc.wait()
    assert len(hidden) == 2 and hidden[1] == ".a.png.lock", hidden
    assert re.fullmatch(r"\.a\.png\.[0-9a-f]{8}\.tmp", hidden[0]) and (out / hidden[0]).stat().st_size > 0, hidden
    assert not (out / "a.png").exists()
    result = infer(str(folder), "-o", str(out), "--ckpt", str(ckpt))
    assert result.exit_code == 0 and "restored 1, skipped 0" in result.output, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]


@pytest.mark.slow  # command-line runs in subprocesses
def test_two_command_line_runs_side_by_side_restore_each_image_once(tmp_path, ckpt):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"im{i}.png"), rng_image((24, 32, 3), seed=i))
    procs = [_slow_infer(0.5, str(folder), "-o", str(out), "--ckpt", str(ckpt)) for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    restored = [line.split()[1] for text in outputs for line in text.splitlines() if line.startswith("restoring ")]
    assert sorted(restored) == [f"im{i}.png" for i in range(6)], outputs  # each image once, by one of the runs
    assert sorted(p.name for p in out.iterdir()) == [f"im{i}.png" for i in range(6)]
