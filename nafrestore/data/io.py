"""Image files in and out, with OpenCV doing the codecs.

Reading gives float32 RGB in [0, 1] whatever the file holds (8- or 16-bit; grayscale, gray+alpha, RGB or RGBA;
PNG, TIFF, JPEG, WebP, BMP, told by their content; other formats OpenCV knows, such as Radiance HDR or PAM, are refused
unread whatever their extension), with the alpha channel kept aside untouched and the EXIF orientation applied. Files
with several frames (animated PNG/WebP, multi-page TIFF) are refused rather than read as their first frame, and so
are images with more pixels than :mod:`nafrestore.utils.limits` allows (decompression bombs): their size is read
from the header, and nothing is decoded. Writing is
atomic: the encoded bytes go to a temporary file in the destination folder, which is then renamed over the final
name, so an interrupted run never leaves a truncated image behind under the name a later run would trust.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from ..errors import DataError, ImageWriteError, OutputError, OutputExistsError
from ..utils.files import atomic_write
from ..utils.limits import check_image_pixels
from ..utils.pixels import from_float, to_float

if TYPE_CHECKING:  # PIL is imported where it is used: a plain PNG never needs it
    from PIL.Image import Image as PILImage

__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "decode_png",
    "encode_png",
    "list_images",
    "load_image",
    "load_rgb_integer",
    "read_image",
    "read_image_size",
    "save_image",
]

#: File extensions (lower case, with the dot) that are read and written as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")

# Formats that carry an EXIF orientation tag in practice (cameras and phones write JPEG; scanners and raw
# converters write TIFF). WebP/PNG can hold EXIF too but almost never an orientation, and opening every PNG with
# PIL on top of OpenCV would cost time on large datasets.
_EXIF_EXTENSIONS = (".jpg", ".jpeg", ".tif", ".tiff")
# Formats without 16-bit samples: 16-bit requests fall back to 8 bits.
_EIGHT_BIT_ONLY = (".jpg", ".jpeg", ".webp", ".bmp")
# Formats without an alpha channel: alpha is dropped.
_NO_ALPHA = (".jpg", ".jpeg")

_EXIF_ORIENTATION = 0x0112
_NEW_SUBFILE_TYPE = 254  # TIFF tag; bit 0 set: a reduced-resolution copy (preview) of another page
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_ALPHA = 4  # PNG colour type of gray + alpha
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little/big endian, classic/BigTIFF
# OpenCV's own decompression-bomb limit, read from the environment when cv2 is loaded (its default: 2**30 pixels).
_OPENCV_SETTING = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip()
_OPENCV_MAX_PIXELS = int(_OPENCV_SETTING) if _OPENCV_SETTING.isdigit() else 1 << 30


@dataclass
class LoadedImage:
    """A decoded image file.

    Attributes:
        rgb: (H, W, 3) float32 in [0, 1], RGB order; grayscale files are replicated to three channels.
        alpha: (H, W) alpha channel in the file's own dtype (uint8 or uint16), untouched; None without one.
        bit_depth: 8 or 16, the file's bits per sample.
        channels: the channels as stored in the file: 1 (gray), 2 (gray+alpha PNG), 3 (RGB) or 4 (RGBA).
        path: the file that was read.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    channels: int
    path: Path


def _decode(path: Path) -> np.ndarray:
    """The file's samples as OpenCV gives them: (H, W) or (H, W, C) BGR(A), uint8 or uint16, EXIF-oriented.

    Raises:
        ImageTooLargeError: the header declares more pixels than the limit (nothing is decoded then).
        DataError: the file is missing, unreadable, not a supported image, or holds several frames.
    """
    _check_file(path)
    header = _header(path)
    if header is not None:
        check_image_pixels(path, header.height, header.width)
    try:
        # np.fromfile + imdecode instead of imread: imread cannot open non-ASCII paths on Windows and only
        # returns None without saying why.
        buffer = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"Image file {path} cannot be read ({exc}). Check its permissions.") from exc
    _refuse_several_frames(path, buffer)
    is_png = buffer[:8].tobytes() == _PNG_SIGNATURE
    with _quiet_stderr() if is_png else contextlib.nullcontext():
        array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if array is None and header is not None and header.height * header.width > _OPENCV_MAX_PIXELS:
        raise DataError(
            f"Image file {path} is {header.width}x{header.height} pixels, more than OpenCV decodes "
            f"({_OPENCV_MAX_PIXELS:,} pixels). Set OPENCV_IO_MAX_IMAGE_PIXELS to a larger number of pixels in the "
            f"environment before nafrestore starts."
        )
    if array is None:
        raise DataError(
            f"Image file {path} cannot be decoded: it is empty, truncated, corrupt or not an image in a supported "
            f"format ({', '.join(IMAGE_EXTENSIONS)}). Re-export or remove it."
        )
    if header is None:  # no header could be read: the limit still holds, if only after decoding (within OpenCV's)
        check_image_pixels(path, array.shape[0], array.shape[1])
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"Image file {path} holds {array.dtype} samples; only 8- and 16-bit integer images are supported. "
            "Convert it to an 8- or 16-bit PNG or TIFF."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if is_png and array.ndim == 3 and array.shape[2] == 4 and buffer.size > 25 and buffer[25] == _PNG_GRAY_ALPHA:
        # OpenCV expands gray+alpha PNGs to BGRA (gray copied to B, G and R); keep what the file holds. Byte 25
        # is the colour type in the IHDR chunk, which the PNG format requires to come first.
        array = np.ascontiguousarray(array[:, :, [0, 3]])
    if path.suffix.lower() in _EXIF_EXTENSIONS:
        # IMREAD_UNCHANGED ignores the EXIF orientation (IMREAD_COLOR would apply it but drops alpha and 16 bits).
        array = _apply_orientation(array, header.orientation if header is not None else 1)
    return array


def _content_format(head: bytes) -> str | None:
    """The supported format a file's first bytes say it holds (whatever its extension), None for any other."""
    if head.startswith(_PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in _TIFF_MAGIC:
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def _check_file(path: Path) -> None:
    """Raises DataError for a missing file, or one whose content is not PNG, JPEG, TIFF, WebP or BMP, before
    anything decodes it.

    OpenCV decodes by content, not by extension, and also reads formats whose size neither PIL nor this module
    parses (Radiance HDR, PAM/PPM, OpenEXR, JPEG 2000, ...): under an image suffix they were decoded in full,
    past the pixel limit (a 4 MB HDR named ``.png`` decoded to 2.4 GB). Those formats are not supported, so they
    are refused unread.
    """
    if not path.is_file():
        raise DataError(f"Image file {path} does not exist (or is not a file). Check the path and the data config.")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise DataError(f"Image file {path} cannot be read ({exc}). Check its permissions.") from exc
    if _content_format(head) is not None:
        return
    what = "is empty" if not head else f"does not hold a PNG, JPEG, TIFF, WebP or BMP image (it begins {head[:8]!r})"
    raise DataError(
        f"Image file {path} {what}, whatever its extension: it is corrupt, or in a format nafrestore does not read "
        f"(e.g. Radiance HDR, PAM, OpenEXR), and was not decoded. Convert it to PNG or TIFF, or remove it."
    )


@dataclass(frozen=True)
class _Header:
    """What an image file's header says: its stored size and its EXIF orientation (1-8; 1 when it has none)."""

    height: int
    width: int
    orientation: int = 1


_pil_lock = threading.Lock()  # PIL's MAX_IMAGE_PIXELS is switched off for one header read at a time


@contextlib.contextmanager
def _pil_open(source: Path | io.BytesIO) -> Iterator[PILImage]:
    """PIL's lazy view of an image (its header read, no pixel decoded), without PIL's own decompression-bomb check.

    ``Image.open`` refuses images over ``Image.MAX_IMAGE_PIXELS`` (179 megapixels by default) with an error that
    does not say their size; nafrestore reads the size from the header and applies its own limit
    (:func:`~nafrestore.utils.limits.check_image_pixels`) before anything is decoded. PIL's setting is a module
    global, switched off only around the header read, under a lock.
    """
    from PIL import Image

    with _pil_lock:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with image:
        yield image


def _header(source: Path | io.BytesIO, suffix: str | None = None) -> _Header | None:
    """The header of an image file (or of its bytes), read without decoding: by PIL, or for a PNG that PIL cannot
    parse from its IHDR chunk (which must come first). None when neither can (the decoder then says what is wrong;
    OpenCV's own pixel limit still applies). The EXIF orientation is read for the formats that carry one in
    practice (by ``suffix``, default: the file's)."""
    if suffix is None:
        suffix = source.suffix if isinstance(source, Path) else ""
    try:
        with _pil_open(source) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1) if suffix.lower() in _EXIF_EXTENSIONS else 1
    except Exception:  # PIL cannot parse everything OpenCV decodes; no readable tag means upright
        return _png_header(source)
    return _Header(int(height), int(width), int(orientation) if orientation in range(1, 9) else 1)


def _png_header(source: Path | io.BytesIO) -> _Header | None:
    """The size in a PNG's IHDR chunk (bytes 8-24: length, ``IHDR``, width, height), None for other files."""
    try:
        if isinstance(source, Path):
            with open(source, "rb") as f:
                head = f.read(24)
        else:
            head = source.getvalue()[:24]
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return _Header(int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big"))


# Decoders that print to the process's stderr (libpng's "libpng error: ...", OpenCV's own "[ WARN:0@...]" lines)
# write to file descriptor 2 directly, past Python's sys.stderr: the file is still reported by our DataError, so
# the only way to keep that message the only output is to point fd 2 at /dev/null while decoding. fd 2 belongs to
# the whole process, so (1) nested or concurrent uses are counted: the first one in redirects, the last one out
# restores; (2) what another thread writes to stderr during a decode (milliseconds) is lost too, which is why this
# is used only around the PNG decoder, the one that prints.
_quiet_lock = threading.Lock()
_quiet_users = 0
_saved_stderr: int | None = None


def _redirect_stderr_to_null() -> int | None:
    """Points fd 2 at /dev/null; returns a duplicate of the previous fd 2 (None if there was none or it failed)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()  # what Python already buffered belongs to the real stderr
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 at all (e.g. a daemon): nothing to protect
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Discards what native code writes to file descriptor 2 inside the block (restored in all cases)."""
    global _quiet_users, _saved_stderr
    with _quiet_lock:
        if _quiet_users == 0:
            _saved_stderr = _redirect_stderr_to_null()
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_users -= 1
            if _quiet_users == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None


def _refuse_several_frames(path: Path, buffer: np.ndarray) -> None:
    """Raises DataError for an animated PNG/WebP or a multi-page TIFF, which OpenCV would read as its first frame.

    Only files whose bytes say they may hold several frames are opened with PIL (APNG: an ``acTL`` chunk;
    WebP: the animation flag; TIFF: always, it is already opened for EXIF; GIF, should it ever be accepted), so
    plain PNGs cost no extra read.
    """
    frames = _frame_count(path, buffer)
    if frames > 1:
        raise DataError(
            f"Image file {path} holds {frames} frames (an animated or multi-page image); nafrestore restores "
            f"single images and would otherwise use only the first one. Extract the frames and restore those, e.g. "
            f"`ffmpeg -i {path.name} frame_%04d.png`, or save the one you want as its own file."
        )


def _frame_count(path: Path, buffer: np.ndarray) -> int:
    """Frames (pages) in an image file; 1 for single images and whenever the container cannot be parsed (the
    decoder then says what is wrong)."""
    head = buffer[:21].tobytes()
    if head.startswith(_PNG_SIGNATURE):
        return _apng_frames(buffer)
    is_webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    if is_webp and not (head[12:16] == b"VP8X" and len(head) > 20 and head[20] & 0x02):
        return 1  # a still WebP (the animation flag of the extended header is off)
    if not is_webp and head[:4] not in _TIFF_MAGIC and head[:6] not in (b"GIF87a", b"GIF89a"):
        return 1
    try:
        with _pil_open(path) as image:
            total = int(getattr(image, "n_frames", 1))
            if total <= 1 or image.format != "TIFF":
                return total
            pages = 0
            for index in range(total):  # TIFF: previews of another page do not count as pages
                image.seek(index)
                pages += not int(image.tag_v2.get(_NEW_SUBFILE_TYPE, 0)) & 1
            return max(pages, 1)
    except Exception:  # PIL cannot parse everything OpenCV decodes
        return 1


def _apng_frames(buffer: np.ndarray) -> int:
    """The frame count of an animated PNG's ``acTL`` chunk (it must come before the image data); 1 without one.

    The chunks are walked over the whole file, not a first block of it: a large text or ICC chunk may come before
    ``acTL`` (an APNG with a 100 kB text chunk first was read as its first frame when only 64 kB were looked at).
    """
    offset, size = 8, buffer.size
    while offset + 8 <= size:
        length = int.from_bytes(buffer[offset : offset + 4].tobytes(), "big")
        kind = buffer[offset + 4 : offset + 8].tobytes()
        if kind == b"acTL" and offset + 12 <= size:
            return max(int.from_bytes(buffer[offset + 8 : offset + 12].tobytes(), "big"), 1)
        if kind in (b"IDAT", b"IEND"):
            break
        offset += 12 + length
    return 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turns stored pixels upright for an EXIF orientation (the same result as PIL's ``exif_transpose``)."""
    if orientation == 2:  # mirrored left-right
        array = array[:, ::-1]
    elif orientation == 3:  # rotated 180
        array = array[::-1, ::-1]
    elif orientation == 4:  # mirrored top-bottom
        array = array[::-1]
    elif orientation == 5:  # transposed
        array = array.swapaxes(0, 1)
    elif orientation == 6:  # stored rotated 90 counter-clockwise: turn it 90 clockwise
        array = np.rot90(array, -1)
    elif orientation == 7:  # transversed
        array = array.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:  # stored rotated 90 clockwise: turn it 90 counter-clockwise
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _split(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(RGB (H, W, 3) in the file dtype, alpha (H, W) or None, channels in the file) from a decoded array."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2), None, 1
    channels = array.shape[2]
    if channels == 2:  # gray + alpha (see _decode)
        return np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1].copy(), 2
    rgb = np.ascontiguousarray(array[:, :, 2::-1])  # BGR(A) -> RGB
    alpha = array[:, :, 3].copy() if channels >= 4 else None
    return rgb, alpha, 4 if alpha is not None else 3


def load_rgb_integer(path: str | Path) -> np.ndarray:
    """The RGB samples of an image without conversion to float: (H, W, 3) uint8 or uint16, alpha dropped.

    Datasets cache this form (a quarter of the float32 size for 8-bit files) and convert crops to float on use
    (:func:`nafrestore.utils.pixels.to_float`).
    """
    rgb, _, _ = _split(_decode(Path(path)))
    return rgb


def encode_png(rgb: np.ndarray, *, compression: int = 1) -> bytes:
    """Lossless PNG bytes of an (H, W, 3) uint8 or uint16 RGB array (the samples as they are, 8 or 16 bits).

    ``compression`` is zlib's level, 0-9: higher levels make smaller files more slowly; decoding takes about as
    long at every level.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png expects (H, W, 3) uint8 or uint16 samples, got {rgb.dtype} {rgb.shape}")
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    ok, encoded = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise DataError(f"OpenCV could not encode a {rgb.shape} {rgb.dtype} array as PNG.")
    return encoded.tobytes()


def decode_png(data: bytes, source: str) -> np.ndarray:
    """The RGB samples of PNG bytes (as :func:`encode_png` writes them): (H, W, 3) uint8 or uint16, alpha dropped.

    Raises:
        ImageTooLargeError: the PNG header declares more pixels than the limit (nothing is decoded then).
        DataError: the bytes are not a PNG image; the message names ``source`` (where the bytes came from).
    """
    if not data.startswith(_PNG_SIGNATURE):  # checked first: OpenCV would decode any format it knows, unbounded
        raise DataError(f"{source} is not a readable PNG image (empty, truncated, corrupt or another format).")
    header = _header(io.BytesIO(data), ".png")
    if header is not None:
        check_image_pixels(source, header.height, header.width)
    buffer = np.frombuffer(data, dtype=np.uint8)
    with _quiet_stderr():
        array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if array is None:
        raise DataError(f"{source} is not a readable PNG image (empty, truncated or corrupt).")
    rgb, _, _ = _split(array)
    return rgb


def load_image(path: str | Path) -> LoadedImage:
    """Reads an image file (8/16-bit PNG or TIFF, JPEG, WebP, BMP; gray, gray+alpha, RGB or RGBA), EXIF-oriented.

    Returns:
        A :class:`LoadedImage`; ``rgb`` is (H, W, 3) float32 in [0, 1] in RGB order.

    Raises:
        ImageTooLargeError: the image has more pixels than the limit (:mod:`nafrestore.utils.limits`); its header
            says so, and nothing is decoded.
        DataError: the file is missing, unreadable, corrupt, not an image, or holds several frames (animated
            PNG/WebP, multi-page TIFF), naming it.
    """
    path = Path(path)
    array = _decode(path)
    rgb, alpha, channels = _split(array)
    return LoadedImage(
        rgb=to_float(rgb),
        alpha=alpha,
        bit_depth=16 if array.dtype == np.uint16 else 8,
        channels=channels,
        path=path,
    )


def read_image(path: str | Path) -> torch.Tensor:
    """Reads an image file as a (3, H, W) float32 tensor in [0, 1], RGB; alpha is dropped (see :func:`load_image`)."""
    return torch.from_numpy(np.ascontiguousarray(load_image(path).rgb.transpose(2, 0, 1)))


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image as :func:`load_image` would return it (EXIF orientation applied).

    Reads only the header through PIL when it can (milliseconds even for large files); falls back to decoding.

    Raises:
        ImageTooLargeError: the image has more pixels than :func:`load_image` decodes (so that a dataset or a plan
            refuses it before anything is decoded).
        DataError: the file is missing or cannot be read (when PIL cannot parse its header).
    """
    path = Path(path)
    _check_file(path)
    header = _header(path)
    if header is None:  # PIL does not know the format variant, or the file is broken: let the decoder decide
        array = _decode(path)
        return int(array.shape[0]), int(array.shape[1])
    check_image_pixels(path, header.height, header.width)
    if header.orientation in (5, 6, 7, 8):  # these orientations swap the axes
        return header.width, header.height
    return header.height, header.width


def _to_hwc(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W, 3) float array from an (H, W, 3)/(H, W) array or a (3, H, W)/(1, 3, H, W)/(H, W) tensor."""
    if isinstance(rgb, torch.Tensor):
        tensor = rgb.detach().to("cpu", torch.float32)
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim == 3:
            tensor = tensor.permute(1, 2, 0)
        array = tensor.numpy()
    else:
        array = np.asarray(rgb)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(
            f"save_image expects an (H, W, 3) array or a (3, H, W) tensor, got shape {tuple(np.shape(rgb))}"
        )
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array


def rgb_to_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an (..., 3) float array in [0, 1], as (...) in its dtype."""
    return rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)


def _alpha_to(alpha: np.ndarray, bit_depth: int, shape: tuple[int, int]) -> np.ndarray:
    """Alpha in the output dtype: kept bit for bit when it already has it; rescaled exactly otherwise."""
    alpha = np.asarray(alpha)
    if alpha.ndim == 3 and alpha.shape[2] == 1:
        alpha = alpha[:, :, 0]
    if alpha.shape != shape:
        raise ValueError(f"alpha has shape {alpha.shape}, expected {shape} to match the image")
    target = np.uint16 if bit_depth == 16 else np.uint8
    if alpha.dtype == target:
        return alpha
    if np.issubdtype(alpha.dtype, np.floating):
        return from_float(alpha, bit_depth)
    if alpha.dtype == np.uint8:  # 8 -> 16 bits: 255 * 257 is the 16-bit peak, exact
        return alpha.astype(np.uint16) * np.uint16(257)
    if alpha.dtype == np.uint16:  # 16 -> 8 bits
        return np.rint(alpha / 257.0).astype(np.uint8)
    raise ValueError(f"alpha must be uint8, uint16 or float in [0, 1], got {alpha.dtype}")


def save_image(
    path: str | Path,
    rgb: np.ndarray | torch.Tensor,
    *,
    bit_depth: int = 8,
    grayscale: bool = False,
    alpha: np.ndarray | None = None,
    quality: int = 95,
    exclusive: bool = False,
) -> Path:
    """Writes an image atomically; the format follows the extension.

    Args:
        path: destination; parent folders are created. The extension picks the format (one of
            :data:`IMAGE_EXTENSIONS`).
        rgb: (H, W, 3) float array in [0, 1], RGB order, or a (3, H, W) tensor (any device; a leading batch
            dimension of 1 is accepted). Values are clamped to [0, 1] and rounded to the nearest level.
        bit_depth: 8 or 16. JPEG, WebP and BMP have no 16-bit samples and are written with 8.
        grayscale: write one channel, the BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (not the mean), the same
            weights as the Y channel used for scoring.
        alpha: (H, W) alpha appended as a fourth channel. Integer alpha of the output depth is written unchanged
            (a uint8 alpha from :func:`load_image` round-trips exactly); uint8/uint16 alpha of the other depth is
            rescaled exactly (x257) or rounded; float alpha is read as [0, 1]. JPEG cannot store alpha, which is
            dropped. ``grayscale`` with alpha writes an 8-bit PNG as gray+alpha (PNG colour type 4, PIL mode
            ``LA``: OpenCV cannot write it); a 16-bit PNG (PIL has no 16-bit gray+alpha mode) and the other
            formats are written as RGBA with equal colour channels.
        quality: JPEG/WebP quality, 1-100.
        exclusive: never replace an existing file (for a batch that must not overwrite another run's output).

    Returns:
        The path written.

    Raises:
        DataError: the extension is not a supported image format; :class:`~nafrestore.errors.ImageWriteError`
            (a DataError and an OutputError, exit code 1) when the file cannot be written, naming it and the
            reason; the previous file is then unchanged.
        OutputExistsError: ``exclusive`` and the file exists (also a ``FileExistsError``); it is left unchanged.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise DataError(
            f"Cannot save {path}: {suffix or 'no extension'!r} is not an image format. "
            f"Use one of {', '.join(IMAGE_EXTENSIONS)}."
        )
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if suffix in _EIGHT_BIT_ONLY:
        bit_depth = 8
    array = _to_hwc(rgb)
    height, width = array.shape[:2]
    if grayscale and alpha is not None and suffix == ".png" and bit_depth == 8:
        gray_alpha = np.dstack([from_float(rgb_to_luma(array), 8), _alpha_to(alpha, 8, (height, width))])
        _write_atomic(path, _encode_gray_alpha_png(gray_alpha), exclusive)
        return path
    if grayscale:
        luma = rgb_to_luma(array)
        samples = from_float(luma, bit_depth)
        if alpha is not None and suffix not in _NO_ALPHA:
            samples = np.repeat(samples[:, :, None], 3, axis=2)
    else:
        samples = from_float(array[:, :, ::-1], bit_depth)  # RGB -> BGR for OpenCV
    if alpha is not None and suffix not in _NO_ALPHA:
        samples = np.concatenate([samples, _alpha_to(alpha, bit_depth, (height, width))[:, :, None]], axis=2)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(samples), params)
    if not ok:
        raise DataError(f"OpenCV could not encode {path} as {suffix} ({samples.shape}, {samples.dtype}).")
    _write_atomic(path, encoded.tobytes(), exclusive)
    return path


def _encode_gray_alpha_png(gray_alpha: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 2) uint8 gray+alpha array, through PIL (OpenCV writes 1, 3 or 4 channels only)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(gray_alpha))  # (H, W, 2) uint8 is mode "LA"
    assert image.mode == "LA", image.mode
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _write_atomic(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Writes bytes atomically (:func:`~nafrestore.utils.files.atomic_write`).

    Failures come from the shared writer as one message naming the file and the reason; they are raised as
    :class:`ImageWriteError`, the same message and exit code, which is also the :class:`DataError` that
    :func:`save_image` has always raised for unwritable files.
    """
    try:
        with atomic_write(path, exclusive=exclusive) as f:
            f.write(data)
    except OutputExistsError:
        raise
    except OutputError as exc:
        err = ImageWriteError(str(exc))
        err.path = exc.path
        raise err from exc.__cause__


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(
    inputs: str | Path | Iterable[str | Path], *, recursive: bool = True, glob: str | None = None
) -> list[Path]:
    """Image files among files and folders, sorted.

    Args:
        inputs: a file or folder, or several. Folders are searched (recursively by default) for files with an
            image extension (case-insensitive, :data:`IMAGE_EXTENSIONS`); hidden files and folders (leading dot)
            are skipped, which also skips macOS ``._x.png`` companions and leftover temporary files. Named files
            without an image extension are skipped too, so a shell glob like ``inputs/*`` works.
        recursive: descend into sub-folders.
        glob: optional ``fnmatch`` pattern; a file is kept when its name or its path relative to the input folder
            (with ``/``) matches, e.g. ``"*_noisy.png"`` or ``"scene1/*"``.

    Returns:
        Unique paths sorted by their string form.

    Raises:
        DataError: an input does not exist.
    """
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            candidates = root.rglob("*") if recursive else root.glob("*")
            for path in candidates:
                relative = path.relative_to(root)
                if any(part.startswith(".") for part in relative.parts) or not path.is_file() or not _is_image(path):
                    continue
                if glob is None or fnmatch.fnmatch(path.name, glob) or fnmatch.fnmatch(relative.as_posix(), glob):
                    found.add(path)
        elif root.is_file():
            if _is_image(root) and (glob is None or fnmatch.fnmatch(root.name, glob)):
                found.add(root)
        else:
            raise DataError(f"Input {root} does not exist. Give an existing image file or folder of images.")
    return sorted(found, key=lambda p: str(p))
