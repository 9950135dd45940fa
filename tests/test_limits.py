"""The pixel limit (nafrestore.utils.limits): decompression bombs are refused from their header, before anything is
decoded, by `infer` (the batch goes on), `eval`, `prepare` and training; the limit comes from the option or the
environment variable.

The 400-megapixel bomb is decoded nowhere: in this process cv2.imdecode is replaced by a function that fails the
test, and the command-line run in a subprocess has its data segment bounded (RLIMIT_DATA) and its peak memory
measured.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from test_infer_cli import ARGS, tiny_model  # the infer tests' tiny network
from typer.testing import CliRunner

from nafrestore.cli import app
from nafrestore.data import io as io_module
from nafrestore.data.io import decode_png, load_image, read_image_size
from nafrestore.errors import ConfigError, DataError, ImageTooLargeError
from nafrestore.utils.limits import (
    DEFAULT_MAX_IMAGE_MEGAPIXELS,
    ENV_MAX_IMAGE_MEGAPIXELS,
    image_limit,
    max_image_megapixels,
)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.name=nafnet", "model.width=4", "model.enc_blocks=[1,1]", "model.middle_blocks=0",
        "model.dec_blocks=[1,1]"]  # fmt: skip


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid RGB PNG of ``width`` x ``height`` black pixels: zero rows compress about 1000:1, so 20000 x 20000
    (1.2 GB decoded, 4.8 GB as float32) is a 5 MB file."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    rows = bytes((1 + 3 * width) * min(height, 100))  # each row: filter byte 0, then zeros
    idat = [packer.compress(rows) for _ in range(height // 100)]
    idat += [packer.compress(bytes((1 + 3 * width) * (height % 100))), packer.flush()]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, colour type 2 (RGB)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's file: 20000 x 20000 RGB, 400 megapixels, above the default limit of 250."""
    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", 20000, 20000)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding anything fails the test (and allocates nothing)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(io_module.cv2, "imdecode", refuse)


def _png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb)
    return path


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------------------------
# The limit and the readers


def test_a_bomb_is_refused_from_its_header_by_every_reader(bomb, no_decoding):
    assert bomb.stat().st_size < 6e6 and max_image_megapixels() == DEFAULT_MAX_IMAGE_MEGAPIXELS == 250
    message = (
        f"Image file {bomb} is 20000x20000 pixels (400 megapixels), more than the limit of 250 megapixels, so it "
        f"was not decoded: the limit guards against decompression bombs, small files that decode to enough pixels "
        f"to exhaust the memory. If the image is genuine, raise the limit with --max-image-megapixels 400 or "
        f"NAFRESTORE_MAX_IMAGE_MEGAPIXELS=400."
    )
    for read in (load_image, read_image_size, io_module.load_rgb_integer):
        with pytest.raises(ImageTooLargeError) as err:
            read(bomb)
        assert str(err.value) == message
    with pytest.raises(ImageTooLargeError, match=r"^Image file shard-0/x.lq.png is 20000x20000 pixels"):
        decode_png(bomb.read_bytes(), "shard-0/x.lq.png")  # a sample of a shard


def test_the_limit_comes_from_the_option_or_the_environment(tmp_path, monkeypatch):
    path = _png(tmp_path / "x.png", 30, 40)  # 1200 pixels
    with image_limit(0.001):  # 1000 pixels
        assert os.environ[ENV_MAX_IMAGE_MEGAPIXELS] == "0.001"
        with pytest.raises(
            ImageTooLargeError, match=r"40x30 pixels \(0.0012 megapixels\), more than the limit of 0.001 "
        ):
            load_image(path)
    assert ENV_MAX_IMAGE_MEGAPIXELS not in os.environ  # restored
    monkeypatch.setenv(ENV_MAX_IMAGE_MEGAPIXELS, "0.001")
    with pytest.raises(ImageTooLargeError):
        read_image_size(path)
    with image_limit(0.0012):  # the option wins over the variable, for the block
        assert load_image(path).rgb.shape == (30, 40, 3)
    assert os.environ[ENV_MAX_IMAGE_MEGAPIXELS] == "0.001"
    monkeypatch.setenv(ENV_MAX_IMAGE_MEGAPIXELS, "inf")
    assert load_image(path).rgb.shape == (30, 40, 3)
    for bad in ("abc", "0", "-5", "nan"):
        monkeypatch.setenv(ENV_MAX_IMAGE_MEGAPIXELS, bad)
        with pytest.raises(ConfigError, match=rf"^\$NAFRESTORE_MAX_IMAGE_MEGAPIXELS must be a positive number .*{bad}"):
            load_image(path)


def test_jpeg_and_tiff_headers_and_pils_own_limit(tmp_path, monkeypatch, no_decoding):
    """Other formats are measured by PIL, whose own bomb check (a smaller limit here) is not what decides."""
    image = Image.fromarray(np.zeros((40, 60, 3), np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: the size as read is 60 x 40
    image.save(tmp_path / "r.jpg", exif=exif.tobytes())
    image.save(tmp_path / "t.tif")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL would refuse both as bombs
    assert read_image_size(tmp_path / "r.jpg") == (60, 40) and read_image_size(tmp_path / "t.tif") == (40, 60)
    assert Image.MAX_IMAGE_PIXELS == 100  # PIL's setting is left as it was
    with image_limit(0.002):  # 2000 pixels < 2400
        for name in ("r.jpg", "t.tif"):
            with pytest.raises(ImageTooLargeError, match=rf"{name} is (60x40|40x60) pixels"):
                load_image(tmp_path / name)


# ------------------------------------------------------------------------------------------------------------
# The commands


@pytest.fixture
def ckpt(tmp_path) -> Path:
    path = tmp_path / "tiny.pt"
    torch.save({"model_name": "nafnet", "model_args": ARGS, "config": {}, "model": tiny_model().state_dict()}, path)
    return path


def test_infer_reports_a_refused_image_among_its_failures_and_goes_on(tmp_path, ckpt, monkeypatch):
    folder = tmp_path / "in"
    _png(folder / "a-big.png", 30, 40)
    _png(folder / "b-small.png", 20, 20)
    for how in (["--max-image-megapixels", "0.001"], []):
        if not how:
            monkeypatch.setenv(ENV_MAX_IMAGE_MEGAPIXELS, "0.001")
        out = tmp_path / f"out{len(how)}"
        result = runner.invoke(app, ["infer", str(folder), "-o", str(out), "--ckpt", str(ckpt), "--quiet",
                                     "--precision", "fp32", *how])  # fmt: skip
        assert result.exit_code == 1, result.output
        assert "restored 1, skipped 0 (output exists), failed 1" in result.output
        assert f"FAILED {folder / 'a-big.png'}: Image file {folder / 'a-big.png'} is 40x30 pixels" in result.output
        assert "--max-image-megapixels 1 or NAFRESTORE_MAX_IMAGE_MEGAPIXELS=1." in result.output
        assert sorted(p.name for p in out.iterdir()) == ["b-small.png"]
    monkeypatch.delenv(ENV_MAX_IMAGE_MEGAPIXELS)
    result = runner.invoke(app, ["infer", str(folder), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt),
                                 "--max-image-megapixels", "0"])  # fmt: skip
    assert result.exit_code == 2 and not (tmp_path / "o").exists()
    assert result.stderr.startswith("error: --max-image-megapixels must be a positive number of megapixels")


def test_eval_prepare_and_train_refuse_an_image_above_the_limit(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt, pred):
        _png(folder / "a.png", 30, 40)
    limit = ["--max-image-megapixels", "0.001"]
    result = runner.invoke(app, ["eval", "--pred", str(pred), "--gt", str(gt), "--quiet", *limit])
    assert result.exit_code == 2, result.output
    assert _one_line(result.stderr).startswith(f"error: Image file {pred / 'a.png'} is 40x30 pixels")

    for name in ("lq", "gt"):
        _png(tmp_path / "pairs" / name / "a.png", 30, 40)
        _png(tmp_path / "pairs" / name / "b.png", 20, 20)
    dst = tmp_path / "shards"
    result = runner.invoke(app, ["prepare", "folder", str(tmp_path / "pairs"), str(dst), "--crop-size", "16",
                                 "--step", "16", "--workers", "0", "--quiet", *limit])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "is 40x30 pixels" in result.stderr and "a.png" in result.stderr and not list(dst.glob("*.tar"))

    config = ROOT / "configs" / "nafnet-gopro-width32.yaml"
    data = ["data.format=synthetic", f"data.train_dir={gt}", f"data.val_dir={gt}", "data.patch_size=16",
            "data.num_workers=0", "train.batch_size=1", "train.iters=2", "run.device=cpu",
            f"run.dir={tmp_path / 'run'}"]  # fmt: skip
    result = runner.invoke(app, ["train", str(config), "--quiet", *limit, *TINY, *data])
    assert result.exit_code == 2, result.output
    assert f"error: Image file {gt / 'a.png'} is 40x30 pixels" in _one_line(result.stderr)
    assert ENV_MAX_IMAGE_MEGAPIXELS not in os.environ


# ------------------------------------------------------------------------------------------------------------
# The run: the bomb and a photograph in one folder, in a subprocess with bounded, measured memory

DATA_LIMIT = 2 << 30  # bytes of data segment the command may map: decoding the bomb takes 1.2 GB, then 4.8 GB more


def _run_measured(args: list[str], log: Path) -> tuple[int, float]:
    """Runs the CLI with its data segment bounded; (exit code, its own peak resident memory in MB)."""

    def bound() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (DATA_LIMIT, DATA_LIMIT))

    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "nafrestore", *args], stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=bound, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        try:
            _, status, usage = os.wait4(process.pid, 0)  # this child's own usage, not every child's
        finally:
            process.returncode = 0  # reaped by wait4: Popen must not wait for it again
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024  # kilobytes on Linux


@pytest.mark.slow  # two CLI processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and ru_maxrss in kB are Linux's")
def test_infer_refuses_the_bomb_within_a_memory_bound_and_restores_the_next_file(tmp_path, bomb, ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(bomb.read_bytes())
    photo = _png(folder / "photo.png", 48, 64)  # after the bomb in the batch's order
    args = ["--ckpt", str(ckpt), "--device", "cpu", "--precision", "fp32", "--quiet"]

    code, peak = _run_measured(["infer", str(folder), "-o", str(tmp_path / "out"), *args], tmp_path / "log")
    log = (tmp_path / "log").read_text()
    assert code == 1, log  # the batch convention: some file failed
    assert f"FAILED {folder / 'bomb.png'}: Image file {folder / 'bomb.png'} is 20000x20000 pixels (400 mega" in log
    assert "restored 1, skipped 0 (output exists), failed 1" in log
    assert cv2.imread(str(tmp_path / "out" / "photo.png")).shape == (48, 64, 3)

    code, baseline = _run_measured(["infer", str(photo), "-o", str(tmp_path / "out2"), *args], tmp_path / "log2")
    assert code == 0, (tmp_path / "log2").read_text()
    # Refusing the bomb costs no memory to speak of (decoding it would take 1.2 GB at least).
    assert peak < baseline + 100, (peak, baseline)


def _other_formats(folder: Path) -> list[Path]:
    """Files OpenCV decodes but nafrestore does not read, each under an image suffix: a Radiance HDR, a PAM, and a
    PAM whose header declares 30000 x 30000 (OpenCV tried to allocate 10.8 GB for it)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(folder / "hdr.hdr"), rng.random((64, 64, 3), dtype=np.float32))
    assert cv2.imwrite(str(folder / "pam.pam"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (folder / "hdr.hdr").rename(folder / "hdr.png")
    (folder / "pam.pam").rename(folder / "pam.tif")
    huge = b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + bytes(1000)
    (folder / "huge.jpg").write_bytes(huge)
    return [folder / "hdr.png", folder / "pam.tif", folder / "huge.jpg"]


def test_formats_nafrestore_does_not_read_are_refused_unread_whatever_their_suffix(tmp_path, no_decoding):
    """Issue 33, item 6: HDR or PAM named .png were decoded in full, past the pixel limit."""
    for path in _other_formats(tmp_path):
        for read in (load_image, read_image_size):
            with pytest.raises(DataError, match="does not hold a PNG, JPEG, TIFF, WebP or BMP image") as info:
                read(path)
            assert str(path) in str(info.value) and "was not decoded" in str(info.value)
    with pytest.raises(DataError, match="is not a readable PNG image"):
        decode_png((tmp_path / "hdr.png").read_bytes(), "shard 0, sample 3")


def test_infer_refuses_other_formats_past_the_limit_and_restores_the_rest(tmp_path, ckpt):
    """Through the command line, as the issue's trial ran it: a 2000x2000 PAM was restored despite
    `--max-image-megapixels 1`."""
    folder = tmp_path / "in"
    bad = _other_formats(folder)
    assert cv2.imwrite(str(folder / "big.pam"), np.zeros((1100, 1000, 3), np.uint8))
    (folder / "big.pam").rename(folder / "big.png")
    _png(folder / "good.png", 20, 24)
    out = tmp_path / "out"
    result = runner.invoke(app, ["infer", str(folder), "-o", str(out), "--ckpt", str(ckpt), "--quiet",
                                 "--max-image-megapixels", "1"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "restored 1, skipped 0 (output exists), failed 4" in result.output
    for path in [*bad, folder / "big.png"]:
        assert f"FAILED {path}: Image file {path} does not hold a PNG, JPEG, TIFF, WebP or BMP image" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_the_limit_holds_for_a_supported_file_whose_header_cannot_be_read(tmp_path, monkeypatch):
    """Where neither PIL nor the PNG reader parses a header (a variant of a supported format), the limit is still
    applied, to the decoded size (then within OpenCV's own limit only)."""
    path = _png(tmp_path / "a.png", 30, 40)
    monkeypatch.setattr(io_module, "_header", lambda *args, **kwargs: None)
    with image_limit(0.001), pytest.raises(ImageTooLargeError, match="is 40x30 pixels"):
        load_image(path)
    assert load_image(path).rgb.shape == (30, 40, 3)
