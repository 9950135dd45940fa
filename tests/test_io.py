"""Image I/O: round trips, formats, alpha, EXIF orientation, corrupt files, atomic writes, listing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from nafrestore.data.io import (
    IMAGE_EXTENSIONS,
    decode_png,
    encode_png,
    list_images,
    load_image,
    read_image,
    read_image_size,
    save_image,
)
from nafrestore.errors import DataError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _write_bgr(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


@pytest.mark.parametrize("bit_depth,ext", [(8, ".png"), (16, ".png"), (8, ".tif"), (16, ".tiff"), (8, ".bmp")])
def test_lossless_round_trip_keeps_levels_exactly(tmp_path, rng, bit_depth, ext):
    peak = 2**bit_depth - 1
    levels = rng.integers(0, peak + 1, size=(64, 48, 3))
    path = save_image(tmp_path / f"x{ext}", (levels / peak).astype(np.float64), bit_depth=bit_depth)
    loaded = load_image(path)
    assert loaded.bit_depth == bit_depth and loaded.channels == 3 and loaded.alpha is None
    assert loaded.rgb.dtype == np.float32 and loaded.rgb.shape == (64, 48, 3)
    np.testing.assert_array_equal(np.rint(loaded.rgb.astype(np.float64) * peak), levels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_bytes_round_trip_exactly(rng, dtype):
    rgb = rng.integers(0, np.iinfo(dtype).max + 1, size=(20, 12, 3)).astype(dtype)
    data = encode_png(rgb[2:18, 1:11], compression=1)  # a view: the shards store crops of decoded frames
    np.testing.assert_array_equal(decode_png(data, "x.png"), rgb[2:18, 1:11])
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)[0, 0, 2] == rgb[2, 1, 0]  # RGB order
    with pytest.raises(DataError, match="sample 7.gt.png is not a readable PNG"):
        decode_png(data[: len(data) // 2], "sample 7.gt.png")


def test_channel_order_is_rgb(tmp_path):
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # red in OpenCV's BGR order
    image = read_image(_write_bgr(tmp_path / "red.png", bgr))
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert image[0].min() == 1 and image[1:].max() == 0
    save_image(tmp_path / "again.png", image)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "again.png")), bgr)


def test_grayscale_file_replicated_to_three_channels(tmp_path, rng):
    gray = rng.integers(0, 65536, size=(16, 20)).astype(np.uint16)
    loaded = load_image(_write_bgr(tmp_path / "g.png", gray))
    assert loaded.channels == 1 and loaded.bit_depth == 16
    assert loaded.rgb.shape == (16, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(np.rint(loaded.rgb[..., c] * 65535.0), gray)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_rgba_alpha_preserved_exactly(tmp_path, rng, bit_depth):
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    bgra = rng.integers(0, np.iinfo(dtype).max + 1, size=(12, 10, 4)).astype(dtype)
    loaded = load_image(_write_bgr(tmp_path / "a.png", bgra))
    assert loaded.channels == 4 and loaded.bit_depth == bit_depth
    assert loaded.alpha.dtype == dtype
    np.testing.assert_array_equal(loaded.alpha, bgra[..., 3])
    # ... and written back untouched next to the colour channels.
    out = save_image(tmp_path / "b.png", loaded.rgb, bit_depth=bit_depth, alpha=loaded.alpha)
    np.testing.assert_array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), bgra)


def test_gray_alpha_png(tmp_path, rng):
    la = rng.integers(0, 256, size=(9, 7, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(loaded.alpha, la[..., 1])
    np.testing.assert_array_equal(np.rint(loaded.rgb[..., 1] * 255), la[..., 0])


def test_lossy_formats_read_back_close(tmp_path, rng):
    smooth = cv2.GaussianBlur(rng.random((64, 64, 3)).astype(np.float32), (0, 0), 4)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    for ext in (".jpg", ".jpeg", ".webp"):
        back = load_image(save_image(tmp_path / f"x{ext}", smooth, quality=95, bit_depth=16))
        assert back.bit_depth == 8  # no 16-bit JPEG/WebP: falls back to 8 bits
        assert np.abs(back.rgb - smooth).mean() < 0.02


def test_save_tensor_grayscale_uses_luma(tmp_path):
    rgb = torch.zeros(3, 4, 4)
    rgb[1] = 1.0  # pure green: luma 0.587
    path = save_image(tmp_path / "sub" / "dir" / "g.png", rgb, grayscale=True)
    written = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert written.shape == (4, 4)
    assert (written == round(0.587 * 255)).all()
    assert load_image(path).channels == 1


def test_save_clamps_and_handles_nan(tmp_path):
    values = np.array([[-0.5, 0.5, 1.7]], np.float32)[:, :, None].repeat(3, axis=2)
    values[0, 1, 0] = np.nan
    written = cv2.imread(str(save_image(tmp_path / "c.png", values)), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert written[0, :, 1].tolist() == [0, 128, 255]
    assert written[0, 1, 0] == 0


def test_atomic_save_leaves_no_temporary_files(tmp_path, monkeypatch):
    save_image(tmp_path / "x.png", np.full((8, 8, 3), 0.25))
    save_image(tmp_path / "x.png", np.full((8, 8, 3), 0.75))  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
    assert abs(float(load_image(tmp_path / "x.png").rgb.mean()) - 191 / 255) < 1e-6

    # A failure between writing and renaming leaves the old file intact and no temporary behind.
    import nafrestore.utils.files as files_module  # where save_image's rename happens

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", broken_replace)
    with pytest.raises(DataError, match="x.png"):
        save_image(tmp_path / "x.png", np.zeros((8, 8, 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
    assert abs(float(load_image(tmp_path / "x.png").rgb.mean()) - 191 / 255) < 1e-6


def test_save_unknown_extension_raises(tmp_path):
    with pytest.raises(DataError, match="out.gif"):
        save_image(tmp_path / "out.gif", np.zeros((4, 4, 3)))


def test_unreadable_files_raise_data_error_naming_them(tmp_path, rng):
    good = tmp_path / "good.png"
    _write_bgr(good, rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[:100] + b"\x00garbage\xff" * 20 + data[300:])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (truncated, corrupt, text, empty, tmp_path / "missing.png"):
        with pytest.raises(DataError, match=path.name):
            load_image(path)


def _exif_jpeg(path: Path, pixels: np.ndarray, orientation: int) -> Path:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=98)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    # Large flat blocks so JPEG loss cannot blur which corner is which.
    pixels = np.zeros((32, 48, 3), np.uint8)
    pixels[:16, :16] = (255, 0, 0)
    pixels[16:, 32:] = (0, 0, 255)
    pixels[:16, 32:] = (0, 255, 0)
    path = _exif_jpeg(tmp_path / f"o{orientation}.jpg", pixels, orientation)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"), np.float32) / 255
    loaded = load_image(path)
    assert loaded.rgb.shape == expected.shape
    assert np.abs(loaded.rgb - expected).mean() < 0.02
    assert read_image_size(path) == expected.shape[:2]
    if orientation == 6:  # 90 degrees clockwise: the stored top-left red block ends up top-right
        assert loaded.rgb.shape == (48, 32, 3)
        assert loaded.rgb[:8, -8:, 0].mean() > 0.9


def test_read_image_size_from_header(tmp_path):
    path = save_image(tmp_path / "x.png", np.zeros((20, 30, 3)))
    assert read_image_size(path) == (20, 30)


def test_list_images_filters_sorts_and_globs(tmp_path):
    for name in ("b.PNG", "a.jpg", "sub/c.tif", "sub/deep/d.webp", "notes.txt", ".hidden.png", ".cache/e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "sub/c.tif", "sub/deep/d.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.jpg", "b.PNG"]
    assert [p.name for p in list_images(tmp_path, glob="sub/*")] == ["c.tif", "d.webp"]
    assert [p.name for p in list_images(tmp_path, glob="*.jpg")] == ["a.jpg"]
    # Files and folders mixed, duplicates once, non-images named explicitly skipped.
    mixed = list_images([tmp_path / "sub", tmp_path / "a.jpg", tmp_path / "sub" / "c.tif", tmp_path / "notes.txt"])
    assert [p.name for p in mixed] == ["a.jpg", "c.tif", "d.webp"]
    with pytest.raises(DataError, match="nowhere"):
        list_images(tmp_path / "nowhere")
    assert ".png" in IMAGE_EXTENSIONS and ".jpg" in IMAGE_EXTENSIONS


# ------------------------------------------------------------------------------------------------------------
# Gray+alpha, multi-frame files, decoder noise on stderr


def test_gray_alpha_png_comes_back_gray_alpha(tmp_path, rng):
    la = rng.integers(0, 256, size=(9, 7, 2)).astype(np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    loaded = load_image(tmp_path / "la.png")
    assert loaded.channels == 2 and loaded.bit_depth == 8
    # As `infer` writes it back (nafrestore.inference.batch._Runner.save).
    out = save_image(
        tmp_path / "out.png", loaded.rgb, bit_depth=loaded.bit_depth, grayscale=loaded.channels in (1, 2),
        alpha=loaded.alpha,
    )  # fmt: skip
    with Image.open(out) as written:
        assert written.mode == "LA"
        back = np.asarray(written)
    np.testing.assert_array_equal(back[..., 1], la[..., 1])  # alpha bit-exact
    np.testing.assert_array_equal(back[..., 0], la[..., 0])  # and the gray levels (no restoration here)
    assert load_image(out).channels == 2


def test_sixteen_bit_gray_alpha_falls_back_to_rgba(tmp_path, rng):
    gray = rng.integers(0, 65536, size=(6, 5)).astype(np.uint16)
    alpha = rng.integers(0, 65536, size=(6, 5)).astype(np.uint16)
    rgb = np.repeat((gray / 65535.0)[:, :, None], 3, axis=2)
    out = save_image(tmp_path / "la16.png", rgb, bit_depth=16, grayscale=True, alpha=alpha)
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (6, 5, 4) and written.dtype == np.uint16  # PIL has no 16-bit LA mode
    np.testing.assert_array_equal(written[..., 3], alpha)
    np.testing.assert_array_equal(written[..., 0], gray)


def _frames(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)) for i in range(n)]


@pytest.mark.parametrize("name,frames", [("anim.png", 3), ("anim.webp", 3), ("pages.tif", 2)])
def test_multi_frame_images_are_refused(tmp_path, name, frames):
    first, *rest = _frames(frames)
    first.save(tmp_path / name, save_all=True, append_images=rest, duration=100)
    with pytest.raises(DataError, match=rf"{name}.*{frames} frames.*ffmpeg"):
        load_image(tmp_path / name)
    with pytest.raises(DataError, match=name):  # datasets read through the same decoder
        from nafrestore.data.io import load_rgb_integer

        load_rgb_integer(tmp_path / name)


def test_single_frame_files_of_multi_frame_formats_still_load(tmp_path):
    (frame,) = _frames(1)
    frame.save(tmp_path / "one.png")
    frame.save(tmp_path / "one.webp", lossless=True)
    frame.save(tmp_path / "one.tif")
    frame.save(tmp_path / "one_apng.png", save_all=True, append_images=[], duration=100)  # APNG with one frame
    # A TIFF whose second directory is a reduced-resolution preview (NewSubfileType 1) is one image, not two pages.
    from PIL import TiffImagePlugin

    with TiffImagePlugin.AppendingTiffWriter(str(tmp_path / "thumb.tif"), True) as tiff:
        frame.save(tiff, format="TIFF")
        tiff.newFrame()
        frame.resize((4, 4)).save(tiff, format="TIFF", tiffinfo={254: 1})
    with Image.open(tmp_path / "thumb.tif") as written:
        assert written.n_frames == 2
    for name in ("one.png", "one.webp", "one.tif", "one_apng.png", "thumb.tif"):
        assert load_image(tmp_path / name).rgb.shape == (8, 8, 3), name


def test_corrupt_png_prints_nothing_on_stderr(tmp_path, rng, capfd):
    good = _write_bgr(tmp_path / "good.png", rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8))
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "crc.png").write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])  # a bad chunk checksum
    capfd.readouterr()
    for name in ("truncated.png", "crc.png"):
        with pytest.raises(DataError, match=name):
            load_image(tmp_path / name)
    import sys

    print("stderr still works", file=sys.stderr)
    captured = capfd.readouterr()
    assert captured.err == "stderr still works\n", captured.err
